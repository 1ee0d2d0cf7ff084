"""IO Agent: receives the seed's notifications and shows them as tickets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException

from services.io import store
from shared.agent import AgentSpec, EngineDep, TaskContext
from shared.models import (
    ApprovalRequired,
    ErrorNotice,
    NewTicket,
    StatusUpdate,
    TicketClosed,
)
from shared.settings import Settings

spec = AgentSpec(
    name="io",
    title="IO Agent",
    description="Operator console: tickets, their timelines, approvals, REST for ticketing tools",
    migrations=store.MIGRATIONS,
)
router = APIRouter(prefix="/api/v1", tags=["tickets"])
spec.include_router(router)


def _payload(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


@spec.task("new_ticket", NewTicket, "Open a ticket for a new incident", tags=["ticket"])
async def new_ticket(payload: NewTicket, ctx: TaskContext) -> dict[str, Any]:
    data = _payload(payload)
    await store.record(
        ctx.engine,
        incident_id=payload.incident_id,
        task_type="new_ticket",
        payload=data,
        changes={
            "severity": payload.severity,
            "status": payload.status,
            "summary": payload.summary,
            "degraded_links": payload.degraded_links,
            "affected_services_count": len(payload.affected_services) or None,
            "source_agent": payload.source_agent,
            "created_at": payload.created_at,
        },
    )
    return {"incident_id": payload.incident_id, "stored": True}


@spec.task(
    "status_update", StatusUpdate, "Record a phase transition of an incident", tags=["ticket"]
)
async def status_update(payload: StatusUpdate, ctx: TaskContext) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "status": payload.status,
        "phase": payload.phase,
        "message": payload.message,
    }
    if "total_affected" in payload.details:
        changes["affected_services_count"] = int(payload.details["total_affected"])
    if payload.details.get("degraded_links"):
        changes["degraded_links"] = list(payload.details["degraded_links"])
    await store.record(
        ctx.engine,
        incident_id=payload.incident_id,
        task_type="status_update",
        payload=_payload(payload),
        changes=changes,
    )
    return {"incident_id": payload.incident_id, "stored": True}


@spec.task("ticket_closed", TicketClosed, "Close a ticket with its resolution", tags=["ticket"])
async def ticket_closed(payload: TicketClosed, ctx: TaskContext) -> dict[str, Any]:
    status = "escalated" if payload.resolution == "escalated" else "closed"
    changes: dict[str, Any] = {
        "status": status,
        "resolution": payload.resolution,
        "closed_at": payload.closed_at,
        "message": payload.summary,
    }
    if "affected_services_count" in payload.details:
        changes["affected_services_count"] = int(payload.details["affected_services_count"])
    await store.record(
        ctx.engine,
        incident_id=payload.incident_id,
        task_type="ticket_closed",
        payload=_payload(payload),
        changes=changes,
    )
    return {"incident_id": payload.incident_id, "stored": True}


@spec.task(
    "error", ErrorNotice, "Record an error raised while handling an incident", tags=["ticket"]
)
async def error(payload: ErrorNotice, ctx: TaskContext) -> dict[str, Any]:
    incident = payload.incident_id or "unassigned"
    await store.record(
        ctx.engine, incident_id=incident, task_type="error", payload=_payload(payload), changes={}
    )
    return {"incident_id": incident, "stored": True}


@spec.task(
    "approval_required", ApprovalRequired, "Ask an operator to approve an action", tags=["approval"]
)
async def approval_required(payload: ApprovalRequired, ctx: TaskContext) -> dict[str, Any]:
    await store.record(
        ctx.engine,
        incident_id=payload.incident_id,
        task_type="approval_required",
        payload=_payload(payload),
        changes={"status": "waiting_approval"},
    )
    return {"approval_id": payload.approval_id, "stored": True}


@router.get("/tickets")
async def list_tickets(
    engine: EngineDep,
    status: str | None = None,
    severity: str | None = None,
    q: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The current view of every ticket, newest first."""
    return await store.list_tickets(
        engine, status=status, severity=severity, q=q, limit=max(1, min(limit, 1000))
    )


@router.get("/tickets/{incident_id}")
async def get_ticket(incident_id: str, engine: EngineDep) -> dict[str, Any]:
    """One ticket with ``events``: every task received for it, in order."""
    ticket = await store.get_ticket(engine, incident_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {incident_id!r}")
    return ticket


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

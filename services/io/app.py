"""IO Agent (8009): receives the seed's notifications, shows them as tickets, takes approvals.

The task handlers here store what arrives (``store``), keep approvals in step
(``approvals``) and publish every change to the consoles' live stream (``stream``). The
HTTP side is split by concern: ``tickets`` (tickets, figures, topology), ``approvals``,
``auth`` (users, tokens), ``peers`` (audit trail, lab), ``runbooks`` (runbooks, sessions,
connections, credentials: forwarded to the orchestrator), ``console`` (the page, /docs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from services.io import approvals, auth, console, peers, runbooks, store, stream, tickets
from services.io.settings import IoSettings
from services.io.topology import TopologyCache
from shared.agent import Access, AgentSpec, RouteAuth, TaskContext
from shared.contracts import (
    APPROVAL_REQUIRED,
    ERROR_NOTICE,
    NEW_TICKET,
    STATUS_UPDATE,
    TICKET_CLOSED,
)
from shared.logs import get_logger
from shared.models import (
    TIERS,
    ApprovalRequired,
    ApprovalStored,
    ErrorNotice,
    NewTicket,
    StatusUpdate,
    TicketClosed,
    TicketStored,
)
from shared.settings import Settings
from shared.southbound import cnc_client

log = get_logger(__name__)


@asynccontextmanager
async def _resources(app: FastAPI) -> AsyncIterator[None]:
    """The stream, peer clients, topology cache, the bootstrap admin and the expiry sweeper."""
    settings: Settings = app.state.settings
    io: IoSettings = app.state.io_settings
    app.state.broadcaster = stream.Broadcaster(history=io.stream_history)
    app.state.approval_locks = {}
    app.state.approvals_inflight = set()
    app.state.http = httpx.AsyncClient(
        timeout=io.peer_timeout_s, transport=app.state.peer_transport
    )
    cnc = cnc_client(
        settings,
        transport=app.state.southbound_transport,
        timeout_s=io.peer_timeout_s,
        session="io",
    )
    app.state.topology = TopologyCache(cnc, settings.scaled(io.topology_ttl_s))
    await auth.bootstrap_admin(
        app.state.engine, data_dir=settings.data_dir, username=io.bootstrap_admin
    )
    sweeper = asyncio.create_task(_sweep_forever(app, io.expiry_sweep_s))
    try:
        yield
    finally:
        app.state.broadcaster.close()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await cnc.aclose()
        await app.state.http.aclose()


async def _sweep_forever(app: FastAPI, every_s: float) -> None:
    """Expire approvals past their deadline even when nobody is looking at them."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await approvals.sweep(app)
        except Exception as exc:  # a broken sweep must not end the loop; it is logged
            log.warning("approval expiry sweep failed", error=f"{type(exc).__name__}: {exc}")


spec = AgentSpec(
    name="io",
    title="IO Agent",
    description="Operator console: tickets, their timelines, approvals, REST for ticketing tools",
    # by version: each module adds its own, and a later step may belong to an earlier module
    migrations=sorted(
        (*store.MIGRATIONS, *approvals.MIGRATIONS, *auth.MIGRATIONS), key=lambda m: m.version
    ),
    resources=_resources,
    outbox=True,
)
USER_AUTH = RouteAuth(
    Access.USER,
    "people and ticketing tools hold an IO user token, not the mesh token: "
    "services.io.auth checks it and the route's role (401 without, 403 below the role)",
)
for _router in (
    tickets.router,
    approvals.router,
    stream.router,
    auth.router,
    peers.router,
    runbooks.router,
):
    spec.include_router(_router, auth=USER_AUTH)


def _payload(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


async def _record(
    ctx: TaskContext,
    incident_id: str,
    task_type: str,
    payload: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    """Store, then tell every open console: the ticket's new view and the task that changed it."""
    ticket, event = await store.record(
        ctx.engine, incident_id=incident_id, task_type=task_type, payload=payload, changes=changes
    )
    ctx.state.broadcaster.publish("ticket", {"ticket": ticket, "event": event})


async def _end_approvals(
    ctx: TaskContext, incident_id: str, status: approvals.Status, why: str
) -> None:
    moved = await approvals.end_for_incident(
        ctx.engine,
        incident_id,
        status=status,
        reason=why,
        skip=frozenset(ctx.state.approvals_inflight),
    )
    approvals.publish(ctx.app, moved)


@spec.serve(NEW_TICKET)
async def new_ticket(payload: NewTicket, ctx: TaskContext) -> TicketStored:
    await _record(
        ctx,
        payload.incident_id,
        "new_ticket",
        _payload(payload),
        {
            "severity": payload.severity,
            "status": payload.status,
            "summary": payload.summary,
            "degraded_links": payload.degraded_links,
            "affected_services_count": len(payload.affected_services) or None,
            "source_agent": payload.source_agent,
            "created_at": payload.created_at,
            "kind": payload.kind,
            # once proactive, always: a new_ticket that arrives late never unmarks the ticket
            **({"proactive": True} if payload.proactive else {}),
        },
    )
    return TicketStored(incident_id=payload.incident_id)


def _highest_tier(by_tier: dict[str, Any]) -> str | None:
    for tier in TIERS:
        try:
            if int(by_tier.get(tier) or 0) > 0:
                return tier
        except (TypeError, ValueError):
            continue
    return None


@spec.serve(STATUS_UPDATE)
async def status_update(payload: StatusUpdate, ctx: TaskContext) -> TicketStored:
    changes: dict[str, Any] = {
        "status": payload.status,
        "phase": payload.phase,
        "message": payload.message,
    }
    details = payload.details
    if "total_affected" in details:
        changes["affected_services_count"] = int(details["total_affected"])
    if details.get("degraded_links"):
        changes["degraded_links"] = list(details["degraded_links"])
    if isinstance(details.get("services_by_tier"), dict):
        changes["services_by_tier"] = details["services_by_tier"]
        changes["highest_tier"] = details.get("highest_tier") or _highest_tier(
            details["services_by_tier"]
        )
    # a host ticket: the runbooks suggested on arrival, and the session that runs (one started
    # by itself, or any session's own updates)
    if isinstance(details.get("matches"), list):
        changes["runbook_matches"] = details["matches"][:3]
    session_id = details.get("runbook_session_id") or (
        details.get("session_id") if payload.phase == "runbook" else None
    )
    if isinstance(session_id, str):
        changes["runbook_session_id"] = session_id
    # the orchestrator's proactive branch says so in every update (and its load chart), so a
    # ticket whose new_ticket was lost is still marked
    if details.get("proactive") is True:
        changes["proactive"] = True
    await _record(ctx, payload.incident_id, "status_update", _payload(payload), changes)
    if payload.status in ("escalated", "closed"):
        await _end_approvals(
            ctx,
            payload.incident_id,
            "expired" if payload.status == "escalated" else "cancelled",
            f"incident {payload.status}",
        )
    return TicketStored(incident_id=payload.incident_id)


@spec.serve(TICKET_CLOSED)
async def ticket_closed(payload: TicketClosed, ctx: TaskContext) -> TicketStored:
    status = "escalated" if payload.resolution == "escalated" else "closed"
    changes: dict[str, Any] = {
        "status": status,
        "resolution": payload.resolution,
        "closed_at": payload.closed_at,
        "message": payload.summary,
    }
    if "affected_services_count" in payload.details:
        changes["affected_services_count"] = int(payload.details["affected_services_count"])
    await _record(ctx, payload.incident_id, "ticket_closed", _payload(payload), changes)
    await _end_approvals(ctx, payload.incident_id, "cancelled", f"ticket {status}")
    return TicketStored(incident_id=payload.incident_id)


@spec.serve(ERROR_NOTICE)
async def error(payload: ErrorNotice, ctx: TaskContext) -> TicketStored:
    incident = payload.incident_id or "unassigned"
    await _record(ctx, incident, "error", _payload(payload), {})
    return TicketStored(incident_id=incident)


@spec.serve(APPROVAL_REQUIRED)
async def approval_required(payload: ApprovalRequired, ctx: TaskContext) -> ApprovalStored:
    row = await approvals.record_required(ctx.engine, payload)
    await _record(
        ctx,
        payload.incident_id,
        "approval_required",
        _payload(payload),
        {"status": "waiting_approval"} if row is not None else {},
    )
    if row is not None:
        approvals.publish(ctx.app, [row])
    return ApprovalStored(approval_id=payload.approval_id)


def create_app(
    settings: Settings,
    *,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
    southbound_transport: httpx.AsyncBaseTransport | None = None,
    peer_transport: httpx.AsyncBaseTransport | None = None,
    io_settings: IoSettings | None = None,
) -> FastAPI:
    """Build the agent; tests pass transports to reach in-process peers, CNC and the lab."""
    app = spec.create_app(settings, mesh_transport=mesh_transport)
    app.state.io_settings = io_settings or IoSettings()
    app.state.southbound_transport = southbound_transport
    app.state.peer_transport = peer_transport
    console.install(app)
    return app

"""The tickets API for the console and ticketing tools: tickets, figures and the topology."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from services.io import approvals, store
from services.io.auth import ViewerDep
from services.io.topology import TopologyCache
from shared.agent import EngineDep

router = APIRouter(prefix="/api/v1", tags=["tickets"])


@router.get("/tickets")
async def list_tickets(
    engine: EngineDep,
    _user: ViewerDep,
    status: str | None = None,
    severity: str | None = None,
    tier: str | None = None,
    q: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The current view of every ticket, newest first (``status=open``: all but closed)."""
    return await store.list_tickets(
        engine, status=status, severity=severity, tier=tier, q=q, limit=max(1, min(limit, 1000))
    )


@router.get("/tickets/{incident_id}")
async def get_ticket(incident_id: str, engine: EngineDep, _user: ViewerDep) -> dict[str, Any]:
    """One ticket with ``events`` (every task received for it, in order) and its approvals."""
    ticket = await store.get_ticket(engine, incident_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {incident_id!r}")
    ticket["approvals"] = await approvals.list_approvals(
        engine, status="all", incident_id=incident_id
    )
    return ticket


@router.get("/stats")
async def stats(engine: EngineDep, _user: ViewerDep) -> dict[str, Any]:
    """Open incidents, MTTR (mean seconds from creation to close), incidents by tier."""
    figures = await store.stats(engine)
    figures["pending_approvals"] = len(await approvals.list_approvals(engine, status="pending"))
    return figures


@router.get("/topology")
async def topology(request: Request, _user: ViewerDep, refresh: bool = False) -> dict[str, Any]:
    """CNC's topology with a layout, cached; ``available: false`` and why when unreachable."""
    cache: TopologyCache = request.app.state.topology
    return await cache.get(refresh=refresh)

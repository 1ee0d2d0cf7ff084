"""The tickets API for the console and ticketing tools: tickets, figures and the topology."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from services.io import approvals, store
from services.io.auth import OperatorDep, ViewerDep
from services.io.topology import TopologyCache
from shared.agent import EngineDep
from shared.contracts import AUDIT_EVENT, DELETE_TUNNEL
from shared.errors import MeshError, MeshUnavailable
from shared.logs import get_logger
from shared.models import AuditEvent, DeleteTunnel

log = get_logger(__name__)

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


class RemoveTunnelBody(BaseModel):
    notes: str = Field(default="", max_length=2000)


@router.post("/tickets/{incident_id}/tunnel/remove")
async def remove_tunnel(
    incident_id: str, request: Request, user: OperatorDep, body: RemoveTunnelBody | None = None
) -> dict[str, Any]:
    """Take down every policy an escalation left carrying the protected traffic.

    The flow has ended, so this is the operator's call: for each policy left up, the tunnel
    agent moves its traffic back and deletes it, the ticket records who did it (one
    ``tunnel_removed`` per policy) and audit hears of it. They are removed one by one so that,
    when the tunnel agent fails half-way, the ones already gone are recorded and a retry only
    asks for the rest.
    """
    app = request.app
    ticket = await store.get_ticket(app.state.engine, incident_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {incident_id!r}")
    left_up = list(ticket.get("tunnels_left_up") or [])  # the rule: services/io/protection.py
    if not left_up and ticket.get("tunnel_left_up"):
        left_up = [ticket["tunnel_left_up"]]
    if not left_up:
        raise HTTPException(
            409,
            f"{incident_id} has no tunnel left up (only an escalation after traffic was "
            "steered leaves one, and it is removed once)",
        )
    notes = (body or RemoveTunnelBody()).notes
    removed: list[dict[str, Any]] = []
    for tunnel_id in left_up:
        done = [r["tunnel_id"] for r in removed]
        removed.append(
            await _remove_one(request, incident_id, tunnel_id, user.username, notes, done)
        )
    # the first policy's answer as it always was, plus every policy removed
    return {**removed[0], "tunnel_ids": left_up, "removed": removed}


async def _remove_one(
    request: Request,
    incident_id: str,
    tunnel_id: str,
    username: str,
    notes: str,
    done: list[str],
) -> dict[str, Any]:
    """Delete one policy left up, record and audit it; an error names what ``done`` removed."""
    app = request.app
    unchanged = (
        f"removed {', '.join(done)}; {tunnel_id} and the rest unchanged"
        if done
        else "nothing changed"
    )
    try:
        answer = await app.state.mesh.call(
            DELETE_TUNNEL,
            DeleteTunnel(incident_id=incident_id, tunnel_id=tunnel_id),
            incident_id=incident_id,
            idempotency_key=f"io-remove-tunnel-{incident_id}-{tunnel_id}",
            timeout=app.state.io_settings.peer_timeout_s,
        )
    except MeshUnavailable as exc:
        raise HTTPException(503, f"the tunnel agent is unreachable; {unchanged} ({exc})") from None
    except MeshError as exc:
        refused = f"the tunnel agent refused to remove {tunnel_id}: {exc}"
        raise HTTPException(502, f"{refused} ({unchanged})" if done else refused) from None
    payload = {
        "incident_id": incident_id,
        "tunnel_id": tunnel_id,
        "removed_by": username,
        "notes": notes,
        "already_absent": answer.already_absent,
    }
    view, event = await store.record(
        app.state.engine,
        incident_id=incident_id,
        task_type="tunnel_removed",
        payload=payload,
        changes={},
    )
    app.state.broadcaster.publish("ticket", {"ticket": view, "event": event})
    await app.state.outbox.put(
        AUDIT_EVENT,
        AuditEvent(
            event_type="state_change",
            incident_id=incident_id,
            source_agent="io",
            details={"action": "tunnel_removed", **payload},
        ),
        key=f"io-audit-tunnel-removed-{incident_id}-{tunnel_id}",
        incident_id=incident_id,
    )
    log.info(
        "tunnel removed by operator", incident_id=incident_id, tunnel_id=tunnel_id, by=username
    )
    return payload

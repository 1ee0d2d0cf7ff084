"""Host tickets as the orchestrator knows them: arrival, what their sessions say, a person's close.

A network incident is a graph run with a row in ``orchestrator_incidents``; a host ticket is
not (its work happens in runbook sessions, several per ticket at most). Without a row of its
own the orchestrator answered 404 for it: ``GET /api/v1/incidents/{id}`` could not show it,
and a person resolving its ServiceNow record (the ``operator_resolved`` signal) was refused, so
the ticket stayed open in CXM. ``orchestrator_host_tickets`` records the ticket when it
arrives and when a person closes it; everything else (its status) is read from its sessions,
so there is one truth for it and nothing to keep in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks.sessions import sessions
from shared.agent import TaskContext
from shared.contracts import AUDIT_EVENT, INCIDENT_CLOSED, TICKET_CLOSED
from shared.db import Migration, UtcDateTime, create_tables, migrate
from shared.logs import get_logger
from shared.models import (
    AuditEvent,
    IncidentClosed,
    IncidentSignal,
    SignalResult,
    StartIncident,
    TicketClosed,
    utcnow,
)

log = get_logger(__name__)

OWNER = "orchestrator.host_tickets"
_meta = sa.MetaData()
host_tickets = sa.Table(
    "orchestrator_host_tickets",
    _meta,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("closed_by", sa.String(128), nullable=True),
    sa.Column("resolution", sa.String(32), nullable=True),
)
MIGRATIONS = (Migration(1, "host tickets", create_tables(_meta, "orchestrator_host_tickets")),)


async def init(engine: AsyncEngine) -> list[int]:
    return await migrate(engine, OWNER, MIGRATIONS)


async def record(engine: AsyncEngine, start: StartIncident) -> None:
    """Remember the ticket once (a replayed ``start_incident`` changes nothing)."""
    async with engine.begin() as conn:
        known = await conn.scalar(
            sa.select(host_tickets.c.incident_id).where(
                host_tickets.c.incident_id == start.incident_id
            )
        )
        if known is None:
            await conn.execute(
                host_tickets.insert().values(
                    incident_id=start.incident_id,
                    severity=start.severity,
                    host=start.host,
                    title=start.title or start.incident_id,
                    created_at=utcnow(),
                )
            )


async def _sessions(engine: AsyncEngine, incident_id: str) -> list[dict[str, Any]]:
    s = sessions
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(s.c.session_id, s.c.runbook_id, s.c.status, s.c.final, s.c.view)
            .where(s.c.incident_id == incident_id)
            .order_by(s.c.created_at)
        )
        return [
            {
                "session_id": r.session_id,
                "runbook_id": r.runbook_id,
                "status": "running" if r.status == "new" else r.status,
                "final": r.final,
                "outcome": ((r.view or {}).get("verification") or {}).get("outcome"),
            }
            for r in rows
        ]


def _status(row: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[str, bool]:
    """The ticket's status and whether it is over, from its close and its latest session."""
    if row["closed_at"] is not None:
        return row["resolution"] or "resolved", True
    if not runs:
        return "analyzing", False
    last = runs[-1]
    if not last["final"]:
        status = "waiting_approval" if last["status"] == "waiting_approval" else "in_progress"
        return status, False
    outcome = last["outcome"] or "escalated"
    return outcome, outcome != "in_progress"


async def describe(engine: AsyncEngine, incident_id: str) -> dict[str, Any] | None:
    """The ticket the way ``GET /api/v1/incidents/{id}`` shows an incident (``kind: host``)."""
    async with engine.connect() as conn:
        found = (
            (
                await conn.execute(
                    sa.select(host_tickets).where(host_tickets.c.incident_id == incident_id)
                )
            )
            .mappings()
            .first()
        )
    if found is None:
        return None
    row = dict(found)
    runs = await _sessions(engine, incident_id)
    status, final = _status(row, runs)
    return {
        "incident_id": incident_id,
        "kind": "host",
        "severity": row["severity"],
        "status": status,
        "phase": "runbook",
        "tier": None,
        "final": final,
        "host": row["host"],
        "title": row["title"],
        "runbook_sessions": runs,
        "runbook_session_id": runs[-1]["session_id"] if runs else None,
        "closed_by": row["closed_by"],
        "created_at": _iso(row["created_at"]),
        "closed_at": _iso(row["closed_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def signal(payload: IncidentSignal, ctx: TaskContext) -> SignalResult | None:
    """A signal about a host ticket (``None`` when no such ticket exists).

    Only ``operator_resolved`` (a person resolved or closed the ServiceNow record) acts: the
    ticket closes in CXM, IO and the correlator hear it, and the audit says who. That holds
    for a ticket nobody ran a runbook on, one left for manual review and one escalated to
    people; it is refused while a session still runs (the session decides, and closes the
    ticket itself) and once the ticket is resolved. The other signals are about links.
    """
    engine: AsyncEngine = ctx.app.state.engine
    view = await describe(engine, payload.incident_id)
    if view is None:
        return None
    runs = view["runbook_sessions"]
    running = bool(runs) and not runs[-1]["final"]
    if payload.signal != "operator_resolved" or view["status"] == "resolved" or running:
        return SignalResult(incident_id=payload.incident_id, accepted=False, status=view["status"])
    who = str(payload.details.get("resolved_by") or payload.details.get("by") or "servicenow")
    async with engine.begin() as conn:
        closed = await conn.execute(
            host_tickets.update()
            .where(
                host_tickets.c.incident_id == payload.incident_id,
                host_tickets.c.closed_at.is_(None),
            )
            .values(closed_at=utcnow(), closed_by=who, resolution="resolved")
        )
    if closed.rowcount:
        await _announce_close(ctx, view, who, payload.details)
    log.info("host ticket resolved by a person", incident_id=payload.incident_id, by=who)
    return SignalResult(incident_id=payload.incident_id, accepted=True, status="resolved")


async def _announce_close(
    ctx: TaskContext, view: dict[str, Any], who: str, details: dict[str, Any]
) -> None:
    iid = view["incident_id"]
    opened = datetime.fromisoformat(view["created_at"])
    source = str(details.get("source") or "outside CXM")
    notes = details.get("close_notes")
    summary = f"Resolved by {who} ({source})" + (f": {notes}" if notes else "")
    about = {
        "close_reason": "operator_resolved",
        "resolved_by": who,
        "final_status": "resolved",
        **{k: details[k] for k in ("close_code", "close_notes", "number") if details.get(k)},
    }
    if ctx.settings.io_enabled:
        await ctx.outbox.put(
            TICKET_CLOSED,
            TicketClosed(
                incident_id=iid,
                resolution="resolved",
                duration_seconds=round((utcnow() - opened).total_seconds(), 3),
                summary=summary,
                details={**about, "source": source},
            ),
            key=f"host-close:{iid}:io",
            incident_id=iid,
        )
    await ctx.outbox.put(
        INCIDENT_CLOSED,
        IncidentClosed(incident_id=iid, resolution="resolved"),
        key=f"host-close:{iid}:correlator",
        incident_id=iid,
    )
    await ctx.outbox.put(
        AUDIT_EVENT,
        AuditEvent(
            event_type="state_change",
            incident_id=iid,
            source_agent="orchestrator",
            details={**about, "to": "resolved", "from": view["status"], "message": summary},
        ),
        key=f"audit:host-close:{iid}",
        incident_id=iid,
    )

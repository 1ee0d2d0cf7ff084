"""Tickets as IO sees them: a current view per incident plus every task received for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.io import protection
from shared.db import Migration, UtcDateTime, create_tables
from shared.models import TIERS, utcnow

metadata = sa.MetaData()

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("phase", sa.String(16), nullable=True),
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("degraded_links", sa.JSON, nullable=False, default=list),
    sa.Column("affected_services_count", sa.Integer, nullable=True),
    sa.Column("resolution", sa.String(32), nullable=True),
    sa.Column("source_agent", sa.String(40), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("services_by_tier", sa.JSON, nullable=True),
    sa.Column("highest_tier", sa.String(16), nullable=True),
    # what protects the traffic, folded from the tasks by ``protection.fold``
    sa.Column("tunnel", sa.JSON, nullable=True),
    sa.Column("protection_path", sa.JSON, nullable=True),
    sa.Column("tunnel_left_up", sa.String(200), nullable=True),
    # every policy of an incident (one per group of services with the same ends)
    sa.Column("tunnels", sa.JSON, nullable=True),
    sa.Column("tunnels_left_up", sa.JSON, nullable=True),
    sa.Column("unprotected_services", sa.JSON, nullable=True),
    # a host ticket (not about a link): its kind, suggested runbooks and the session running
    sa.Column("kind", sa.String(16), nullable=True),
    sa.Column("runbook_matches", sa.JSON, nullable=True),
    sa.Column("runbook_session_id", sa.String(64), nullable=True),
    # predicted congestion, not a measured fault (issue 14): the console marks and charts it
    sa.Column("proactive", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)

events = sa.Table(
    "ticket_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(40), nullable=False, index=True),
    sa.Column("task_type", sa.String(40), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
)

TIER_COLUMNS = {"services_by_tier": "JSON", "highest_tier": "VARCHAR(16)"}


def _add_tier_columns(conn: Connection) -> None:
    """Tickets learn their impact by tier (phase 2); older databases get the columns added."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
    for name, sql_type in TIER_COLUMNS.items():
        if name not in present:
            conn.execute(sa.text(f"ALTER TABLE tickets ADD COLUMN {name} {sql_type}"))


PROTECTION_COLUMNS = {"tunnel": "JSON", "protection_path": "JSON", "tunnel_left_up": "VARCHAR(200)"}
POLICY_COLUMNS = {"tunnels": "JSON", "tunnels_left_up": "JSON", "unprotected_services": "JSON"}


def _replay_into(conn: Connection, columns: dict[str, str]) -> None:
    """Add ``columns`` where missing and fill them by replaying each ticket's stored events.

    Only ``columns`` are written: a migration runs against the table as it was at its version,
    so a later migration's columns may not exist yet.
    """
    present = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
    for name, sql_type in columns.items():
        if name not in present:
            conn.execute(sa.text(f"ALTER TABLE tickets ADD COLUMN {name} {sql_type}"))
    history: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for row in conn.execute(
        sa.select(events.c.incident_id, events.c.task_type, events.c.payload).order_by(events.c.id)
    ):
        history.setdefault(row.incident_id, []).append((row.task_type, row.payload))
    for incident_id, seen in history.items():
        fields = protection.replay(seen)
        conn.execute(
            tickets.update()
            .where(tickets.c.incident_id == incident_id)
            .values(**{name: fields[name] for name in columns})
        )


def _add_protection_columns(conn: Connection) -> None:
    """Add the tunnel, protection path and left-up fields, filled by replaying each ticket.

    Replaying matters: a ticket an escalation closed before the upgrade still has its tunnel
    carrying traffic, and the operator must still be able to remove it from the console.
    """
    _replay_into(conn, PROTECTION_COLUMNS)


def _add_policy_columns(conn: Connection) -> None:
    """Add every policy, the policies left up and the unprotected services, by replaying.

    The first three fields are replayed again too: a multi-policy incident recorded before
    this version had ``tunnel`` replaced by whichever policy an update named last (a re-route
    of the second policy), and only its first policy could have been left up and removed.
    """
    _replay_into(conn, {**PROTECTION_COLUMNS, **POLICY_COLUMNS})


RUNBOOK_COLUMNS = {
    "kind": "VARCHAR(16)",
    "runbook_matches": "JSON",
    "runbook_session_id": "VARCHAR(64)",
}


def _add_runbook_columns(conn: Connection) -> None:
    """Tickets that are not about a link (#12): older rows are network tickets (null kind)."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
    for name, sql_type in RUNBOOK_COLUMNS.items():
        if name not in present:
            conn.execute(sa.text(f"ALTER TABLE tickets ADD COLUMN {name} {sql_type}"))


def _add_proactive_column(conn: Connection) -> None:
    """Proactive tickets (#14): every older row is reactive, unless its new_ticket said otherwise.

    The column has a default, so rows written by an older IO and new rows alike read false; a
    ``new_ticket`` stored with ``proactive: true`` before this version (the payload keeps what
    the sender added) is honoured by looking at the stored events.
    """
    present = {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
    if "proactive" not in present:
        conn.execute(
            sa.text("ALTER TABLE tickets ADD COLUMN proactive BOOLEAN NOT NULL DEFAULT FALSE")
        )
    marked = {
        row.incident_id
        for row in conn.execute(
            sa.select(events.c.incident_id, events.c.payload).where(
                events.c.task_type == "new_ticket"
            )
        )
        if isinstance(row.payload, dict) and row.payload.get("proactive") is True
    }
    for incident_id in marked:
        conn.execute(
            tickets.update().where(tickets.c.incident_id == incident_id).values(proactive=True)
        )


MIGRATIONS = (
    Migration(1, "tickets and their events", create_tables(metadata, "tickets", "ticket_events")),
    Migration(2, "tickets: services by tier", _add_tier_columns),
    Migration(6, "tickets: tunnel, protection path, tunnel left up", _add_protection_columns),
    Migration(7, "tickets: every policy, left up, unprotected services", _add_policy_columns),
    Migration(8, "tickets: kind, runbook matches, runbook session", _add_runbook_columns),
    Migration(9, "tickets: proactive", _add_proactive_column),
)

TICKET_FIELDS = (
    "incident_id",
    "severity",
    "status",
    "phase",
    "summary",
    "message",
    "degraded_links",
    "affected_services_count",
    "resolution",
    "source_agent",
    "created_at",
    "updated_at",
    "closed_at",
    "services_by_tier",
    "highest_tier",
    *protection.FIELDS,
    "kind",
    "runbook_matches",
    "runbook_session_id",
    "proactive",
)


async def record(
    engine: AsyncEngine,
    *,
    incident_id: str,
    task_type: str,
    payload: dict[str, Any],
    changes: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Store the task as an event and fold ``changes`` into the ticket, in one transaction.

    The ticket's tunnel, protection path and tunnel left up are folded here too
    (``protection.fold``), so every task — from the mesh or an operator's removal — keeps them
    current in the same transaction that stores it, and the view pushed on the stream carries
    them. A ticket that IO has not heard of yet (its new_ticket was lost) is created from what
    the task says, so no update is ever dropped. Returns the ticket's new view and the event,
    which the caller publishes to the live stream.
    """
    now = utcnow()
    async with engine.begin() as conn:
        # the write comes first: on SQLite (WAL) it takes the write lock up front, where a
        # read first could fail instead of waiting when another writer commits in between
        await conn.execute(
            events.insert().values(
                incident_id=incident_id, task_type=task_type, payload=payload, received_at=now
            )
        )
        # locked on PostgreSQL, so two tasks for one ticket never fold from the same "before"
        exists = (
            await conn.execute(
                sa.select(*(tickets.c[name] for name in protection.FIELDS))
                .where(tickets.c.incident_id == incident_id)
                .with_for_update()
            )
        ).first()
        before = dict(exists._mapping) if exists is not None else {}
        changes = {**changes, **protection.fold(before, task_type, payload)}
        if exists is None:
            row = {
                "severity": "unknown",
                "status": "new",
                "summary": "",
                "degraded_links": [],
                "created_at": now,
                **changes,
                "incident_id": incident_id,
                "updated_at": now,
            }
            await conn.execute(tickets.insert().values(**row))
        elif changes:
            await conn.execute(
                tickets.update()
                .where(tickets.c.incident_id == incident_id)
                .values(**changes, updated_at=now)
            )
        row_now = (
            await conn.execute(sa.select(tickets).where(tickets.c.incident_id == incident_id))
        ).one()
    event = {"task_type": task_type, "payload": payload, "received_at": now.isoformat()}
    return _ticket(row_now), event


def _ticket(row: sa.Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("tunnels", "tunnels_left_up", "unprotected_services"):
        if data.get(key) is None:
            data[key] = []  # lists are never null for clients, whatever the row holds
    data["kind"] = data.get("kind") or "network"  # rows from before kinds were network ones
    if data.get("runbook_matches") is None:
        data["runbook_matches"] = []
    data["proactive"] = bool(data.get("proactive"))
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return data


async def list_tickets(
    engine: AsyncEngine,
    *,
    status: str | None = None,
    severity: str | None = None,
    q: str | None = None,
    tier: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Newest first; ``status="open"`` means every status but closed."""
    query = sa.select(tickets).order_by(tickets.c.created_at.desc()).limit(limit)
    if status == "open":
        query = query.where(tickets.c.status != "closed")
    elif status:
        query = query.where(tickets.c.status == status)
    if tier:
        query = query.where(tickets.c.highest_tier == tier)
    if severity:
        query = query.where(tickets.c.severity == severity)
    if q:
        like = f"%{q}%"
        query = query.where(
            sa.or_(
                tickets.c.incident_id.ilike(like),
                tickets.c.summary.ilike(like),
                tickets.c.message.ilike(like),
                sa.cast(tickets.c.degraded_links, sa.Text).ilike(like),
            )
        )
    async with engine.connect() as conn:
        return [_ticket(r) for r in await conn.execute(query)]


async def get_ticket(engine: AsyncEngine, incident_id: str) -> dict[str, Any] | None:
    # Events first, then the row: two reads are two snapshots (PostgreSQL's read committed,
    # SQLite outside a transaction), and a task is stored with its event and its row change
    # together, so this order never shows an event whose change the row lacks.
    async with engine.connect() as conn:
        found = await _events(conn, incident_id)
        row = (
            await conn.execute(sa.select(tickets).where(tickets.c.incident_id == incident_id))
        ).first()
        if row is None:
            return None
        ticket = _ticket(row)
        ticket["events"] = found
    return ticket


async def _events(conn: AsyncConnection, incident_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(events.c.task_type, events.c.payload, events.c.received_at)
        .where(events.c.incident_id == incident_id)
        .order_by(events.c.id)
    )
    return [
        {"task_type": r.task_type, "payload": r.payload, "received_at": r.received_at.isoformat()}
        for r in rows
    ]


async def stats(engine: AsyncEngine) -> dict[str, Any]:
    """Open incidents, mean time to resolve, and incidents by tier, severity and status."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    tickets.c.status,
                    tickets.c.severity,
                    tickets.c.highest_tier,
                    tickets.c.resolution,
                    tickets.c.created_at,
                    tickets.c.closed_at,
                )
            )
        ).all()
    by_tier: dict[str, int] = {tier: 0 for tier in TIERS}
    by_tier["unknown"] = 0
    by_severity: dict[str, int] = {}
    by_status: dict[str, int] = {}
    resolved: list[float] = []
    for row in rows:
        by_tier[row.highest_tier if row.highest_tier in by_tier else "unknown"] += 1
        by_severity[row.severity] = by_severity.get(row.severity, 0) + 1
        by_status[row.status] = by_status.get(row.status, 0) + 1
        if row.status == "closed" and row.closed_at is not None:
            resolved.append(max(0.0, (row.closed_at - row.created_at).total_seconds()))
    return {
        "total": len(rows),
        "open": sum(1 for r in rows if r.status != "closed"),
        "closed": len(resolved),
        "escalated": by_status.get("escalated", 0),
        "mttr_seconds": round(sum(resolved) / len(resolved), 1) if resolved else None,
        "by_tier": by_tier,
        "by_severity": by_severity,
        "by_status": by_status,
    }

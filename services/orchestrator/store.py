"""The orchestrator's own tables: one row per incident (its timer and pending approval) and
an inbox of resume values (approval decisions, signals) waiting to be fed to the graph.

The LangGraph checkpoint is the truth about where an incident's flow stands; this row is the
index the scheduler and the REST API read: when the incident is due next, and which approval
it waits for. Claiming an approval is one conditional UPDATE, so a decision and a timeout (or
two operators) can never both win.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.models import utcnow

_meta = sa.MetaData()
incidents = sa.Table(
    "orchestrator_incidents",
    _meta,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("phase", sa.String(8), nullable=False),
    sa.Column("tier", sa.String(16), nullable=True),
    sa.Column("waiting", sa.String(16), nullable=True),
    sa.Column("wait_reason", sa.String(64), nullable=True),
    sa.Column("due_at", UtcDateTime, nullable=True),
    sa.Column("approval_id", sa.String(128), nullable=True),
    sa.Column("approval_claimed", sa.String(128), nullable=True),
    sa.Column("approval_action", sa.String(32), nullable=True),
    sa.Column("approval_expires_at", UtcDateTime, nullable=True),
    sa.Column("final", sa.Boolean, nullable=False, default=False),
    sa.Column("start", sa.JSON, nullable=False),
    sa.Column("view", sa.JSON, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_orchestrator_incidents_due", "final", "due_at"),
)
inbox = sa.Table(
    "orchestrator_inbox",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(64), nullable=False, index=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (
    Migration(
        1,
        "incidents and inbox",
        create_tables(_meta, "orchestrator_incidents", "orchestrator_inbox"),
    ),
)


async def create(
    engine: AsyncEngine, *, incident_id: str, severity: str, start: dict[str, Any]
) -> bool:
    """Insert a new incident, due now; False when it already exists."""
    now = utcnow()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                incidents.insert().values(
                    incident_id=incident_id,
                    severity=severity,
                    status="new",
                    phase="0",
                    waiting="run",
                    due_at=now,
                    final=False,
                    start=start,
                    view={},
                    failures=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


async def get(engine: AsyncEngine, incident_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(incidents).where(incidents.c.incident_id == incident_id))
        ).first()
    return dict(row._mapping) if row is not None else None


async def list_all(engine: AsyncEngine, *, open_only: bool = False) -> list[dict[str, Any]]:
    query = sa.select(incidents).order_by(incidents.c.created_at)
    if open_only:
        query = query.where(incidents.c.final.is_(False))
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def update(engine: AsyncEngine, incident_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            incidents.update()
            .where(incidents.c.incident_id == incident_id)
            .values(updated_at=utcnow(), **values)
        )


async def set_pending_approval(engine: AsyncEngine, incident_id: str, approval_id: str) -> None:
    """Show ``approval_id`` as pending unless a decision (or the timeout) has claimed it."""
    async with engine.begin() as conn:
        await conn.execute(
            incidents.update()
            .where(
                incidents.c.incident_id == incident_id,
                sa.or_(
                    incidents.c.approval_claimed.is_(None),
                    incidents.c.approval_claimed != approval_id,
                ),
            )
            .values(approval_id=approval_id)
        )


async def due(engine: AsyncEngine, now: datetime) -> list[str]:
    """Open incidents whose timer is due or whose inbox holds something."""
    i = incidents
    has_inbox = sa.exists().where(inbox.c.incident_id == i.c.incident_id)
    query = sa.select(i.c.incident_id).where(
        i.c.final.is_(False), sa.or_(i.c.due_at <= now, has_inbox)
    )
    async with engine.connect() as conn:
        return [r[0] for r in (await conn.execute(query)).all()]


async def next_due(engine: AsyncEngine) -> datetime | None:
    async with engine.connect() as conn:
        value: datetime | None = await conn.scalar(
            sa.select(sa.func.min(incidents.c.due_at)).where(incidents.c.final.is_(False))
        )
    if value is not None and value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


async def push(engine: AsyncEngine, incident_id: str, value: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            inbox.insert().values(incident_id=incident_id, value=value, created_at=utcnow())
        )


async def peek(engine: AsyncEngine, incident_id: str) -> tuple[int, dict[str, Any]] | None:
    """The oldest inbox value of an incident, left in place until the graph has taken it."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(inbox.c.id, inbox.c.value)
                .where(inbox.c.incident_id == incident_id)
                .order_by(inbox.c.id)
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    value: dict[str, Any] = row.value
    return int(row.id), value


async def delete(engine: AsyncEngine, inbox_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(inbox.delete().where(inbox.c.id == inbox_id))


async def drop_inbox(engine: AsyncEngine, incident_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(inbox.delete().where(inbox.c.incident_id == incident_id))


async def claim_approval(
    engine: AsyncEngine, incident_id: str, approval_id: str, resume: dict[str, Any] | None
) -> bool:
    """Atomically take a pending approval; queue ``resume`` for the graph when given."""
    async with engine.begin() as conn:
        result = await conn.execute(
            incidents.update()
            .where(
                incidents.c.incident_id == incident_id,
                incidents.c.approval_id == approval_id,
                incidents.c.final.is_(False),
            )
            .values(approval_id=None, approval_claimed=approval_id, updated_at=utcnow())
        )
        if result.rowcount != 1:
            return False
        if resume is not None:
            await conn.execute(
                inbox.insert().values(incident_id=incident_id, value=resume, created_at=utcnow())
            )
    return True

"""The notify agent's tables: the delivery log and the CXM incident ↔ ServiceNow mapping.

The delivery log is keyed by (idempotency key, channel): a notify that is retried with the
same key after a crash finds the channels that already went out and does not send them again.
It is also the redelivery queue: a ``retrying`` row keeps its ``Notify`` payload and the time
of its next attempt, so it survives a restart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.models import utcnow

meta = sa.MetaData()

deliveries = sa.Table(
    "notify_deliveries",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("incident_id", sa.String(40), nullable=True, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.UniqueConstraint("dedup_key", "channel", name="uq_notify_deliveries_key_channel"),
    sa.Index("ix_notify_deliveries_status", "status", "channel"),
)
REDELIVERY_COLUMNS = ("next_attempt_at", "payload")

snow_incidents = sa.Table(
    "notify_servicenow_incidents",
    meta,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("sys_id", sa.String(64), nullable=False, unique=True),
    sa.Column("number", sa.String(40), nullable=True, index=True),
    sa.Column("state", sa.String(16), nullable=True),
    sa.Column("resolved_by_cxm", sa.Boolean, nullable=False, default=False),
    sa.Column("last_status", sa.String(40), nullable=True),
    sa.Column("last_phase", sa.String(40), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)


def _add_redelivery_columns(conn: Connection) -> None:
    """Logs created before redelivery get its columns; a new log already has them."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("notify_deliveries")}
    for name in REDELIVERY_COLUMNS:
        if name not in present:
            sql_type = deliveries.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE notify_deliveries ADD COLUMN {name} {sql_type}"))
    for index in deliveries.indexes:
        index.create(conn, checkfirst=True)


MIGRATIONS = (
    Migration(1, "delivery log", create_tables(meta, "notify_deliveries")),
    Migration(2, "servicenow mapping", create_tables(meta, "notify_servicenow_incidents")),
    Migration(3, "delivery log: redelivery of failed channels", _add_redelivery_columns),
)


async def claim(
    engine: AsyncEngine, *, key: str, channel: str, incident_id: str | None, event: str
) -> dict[str, Any]:
    """The log row of (key, channel): the one already there, or a new ``pending`` one."""
    now = utcnow()
    where = (deliveries.c.dedup_key == key, deliveries.c.channel == channel)
    async with engine.begin() as conn:
        row = (await conn.execute(sa.select(deliveries).where(*where))).first()
        if row is None:
            await conn.execute(
                deliveries.insert().values(
                    dedup_key=key,
                    channel=channel,
                    incident_id=incident_id,
                    event=event,
                    status="pending",
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = (await conn.execute(sa.select(deliveries).where(*where))).one()
    return dict(row._mapping)


async def finish(
    engine: AsyncEngine,
    row_id: int,
    *,
    status: str,
    attempts: int,
    error: str | None,
    external_id: str | None = None,
    next_attempt_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Record an outcome; ``retrying`` also keeps what its redelivery needs."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "error": error[:2000] if error else None,
        "external_id": external_id,
        "next_attempt_at": next_attempt_at,
        "updated_at": now,
    }
    if status == "sent":
        values["sent_at"] = now
    if payload is not None:
        values["payload"] = payload
    async with engine.begin() as conn:
        await conn.execute(deliveries.update().where(deliveries.c.id == row_id).values(**values))


def _pair(incident_id: str | None, channel: str) -> sa.ColumnElement[bool]:
    t = deliveries
    return sa.and_(
        t.c.status == "retrying",
        t.c.channel == channel,
        t.c.incident_id.is_not_distinct_from(incident_id),
    )


async def waiting_before(
    engine: AsyncEngine, row_id: int, incident_id: str | None, channel: str
) -> int | None:
    """The id of an older delivery of this (incident, channel) still waiting for redelivery."""
    t = deliveries
    async with engine.connect() as conn:
        found: int | None = await conn.scalar(
            sa.select(sa.func.min(t.c.id)).where(_pair(incident_id, channel), t.c.id < row_id)
        )
    return found


async def retrying_pairs(engine: AsyncEngine) -> list[tuple[str | None, str]]:
    """Every (incident, channel) with deliveries waiting for redelivery."""
    t = deliveries
    query = sa.select(t.c.incident_id, t.c.channel).where(t.c.status == "retrying").distinct()
    async with engine.connect() as conn:
        return [(r.incident_id, r.channel) for r in await conn.execute(query)]


async def next_retrying(
    engine: AsyncEngine, incident_id: str | None, channel: str
) -> dict[str, Any] | None:
    """The oldest waiting delivery of the pair: the only one that may go next."""
    t = deliveries
    query = sa.select(t).where(_pair(incident_id, channel)).order_by(t.c.id).limit(1)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def backlog(engine: AsyncEngine) -> dict[str, int]:
    """Deliveries waiting for redelivery, per channel."""
    t = deliveries
    query = (
        sa.select(t.c.channel, sa.func.count())
        .where(t.c.status == "retrying")
        .group_by(t.c.channel)
    )
    async with engine.connect() as conn:
        return {channel: int(n) for channel, n in await conn.execute(query)}


async def list_deliveries(
    engine: AsyncEngine,
    *,
    incident_id: str | None,
    channel: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    t = deliveries
    columns = [c for c in t.c if c.name != "payload"]
    query = sa.select(*columns).order_by(t.c.id).limit(limit)
    if incident_id:
        query = query.where(t.c.incident_id == incident_id)
    if channel:
        query = query.where(t.c.channel == channel)
    if status:
        query = query.where(t.c.status == status)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_json(dict(r._mapping)) for r in rows]


async def mapping_for(engine: AsyncEngine, incident_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(snow_incidents).where(snow_incidents.c.incident_id == incident_id)
            )
        ).first()
    return dict(row._mapping) if row else None


async def mapping_by_ref(
    engine: AsyncEngine, *, sys_id: str | None, number: str | None
) -> dict[str, Any] | None:
    t = snow_incidents
    cond = t.c.sys_id == sys_id if sys_id else t.c.number == number
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t).where(cond))).first()
    return dict(row._mapping) if row else None


async def save_mapping(
    engine: AsyncEngine, *, incident_id: str, sys_id: str, number: str | None, state: str | None
) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        existing = (
            await conn.execute(
                sa.select(snow_incidents.c.incident_id).where(
                    snow_incidents.c.incident_id == incident_id
                )
            )
        ).first()
        if existing is None:
            await conn.execute(
                snow_incidents.insert().values(
                    incident_id=incident_id,
                    sys_id=sys_id,
                    number=number,
                    state=state,
                    resolved_by_cxm=False,
                    created_at=now,
                    updated_at=now,
                )
            )


async def update_mapping(engine: AsyncEngine, incident_id: str, **values: Any) -> None:
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return
    async with engine.begin() as conn:
        await conn.execute(
            snow_incidents.update()
            .where(snow_incidents.c.incident_id == incident_id)
            .values(updated_at=utcnow(), **values)
        )


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}

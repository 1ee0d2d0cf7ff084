"""The notify agent's tables: the delivery log and the CXM incident ↔ ServiceNow mapping.

The delivery log is keyed by (idempotency key, channel): a notify that is retried with the
same key after a crash finds the channels that already went out and does not send them again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
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
    sa.UniqueConstraint("dedup_key", "channel", name="uq_notify_deliveries_key_channel"),
)

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

MIGRATIONS = (
    Migration(1, "delivery log", create_tables(meta, "notify_deliveries")),
    Migration(2, "servicenow mapping", create_tables(meta, "notify_servicenow_incidents")),
)


async def claim(
    engine: AsyncEngine, *, key: str, channel: str, incident_id: str | None, event: str
) -> dict[str, Any] | None:
    """Open the log row of (key, channel); return the existing row when one was already there."""
    now = utcnow()
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                sa.select(deliveries).where(
                    deliveries.c.dedup_key == key, deliveries.c.channel == channel
                )
            )
        ).first()
        if row is not None:
            return dict(row._mapping)
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
    return None


async def finish(
    engine: AsyncEngine,
    *,
    key: str,
    channel: str,
    status: str,
    attempts: int,
    error: str | None,
    external_id: str | None,
) -> None:
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "error": error[:2000] if error else None,
        "external_id": external_id,
        "updated_at": now,
    }
    if status == "sent":
        values["sent_at"] = now
    async with engine.begin() as conn:
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.dedup_key == key, deliveries.c.channel == channel)
            .values(**values)
        )


async def list_deliveries(
    engine: AsyncEngine,
    *,
    incident_id: str | None,
    channel: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    t = deliveries
    query = sa.select(t).order_by(t.c.id).limit(limit)
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

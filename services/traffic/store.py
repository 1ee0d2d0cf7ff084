"""Load samples per link (CNC's rates): the recent ones give a forecast.

Version 1 kept cumulative octet counters (utilisation was the delta between two samples);
CNC's performance metrics give a rate, so version 2 keeps ``rate_mbps`` and leaves
``octets`` empty. Version 3 adds ``link_alerts``: the proactive alerts firing now, so a
restarted agent still resolves what it raised.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import Migration, create_tables

metadata = sa.MetaData()
samples = sa.Table(
    "link_samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link_id", sa.String(200), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("octets", sa.JSON, nullable=False),
    sa.Column("capacity_mbps", sa.Float, nullable=True),
    sa.Column("utilisation_pct", sa.Float, nullable=True),
    sa.Column("directions", sa.JSON, nullable=True),
    sa.Column("rate_mbps", sa.Float, nullable=True),
)
_v1 = sa.MetaData()
sa.Table(
    "link_samples",
    _v1,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link_id", sa.String(200), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("octets", sa.JSON, nullable=False),
    sa.Column("capacity_mbps", sa.Float, nullable=True),
    sa.Column("utilisation_pct", sa.Float, nullable=True),
    sa.Column("directions", sa.JSON, nullable=True),
)


alerts = sa.Table(
    "link_alerts",
    metadata,
    sa.Column("link_id", sa.String(200), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_sent_at", sa.Float, nullable=False),
    sa.Column("below_since", sa.Float, nullable=True),
    sa.Column("sent", sa.Integer, nullable=False),
)


def _add_rate(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE link_samples ADD COLUMN rate_mbps FLOAT"))


MIGRATIONS = (
    Migration(1, "link counter samples", create_tables(_v1, "link_samples")),
    Migration(2, "link rates", _add_rate),
    Migration(3, "proactive alerts firing", create_tables(metadata, "link_alerts")),
)


async def latest(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """The newest sample of every link."""
    newest = (
        sa.select(samples.c.link_id, sa.func.max(samples.c.id).label("id"))
        .group_by(samples.c.link_id)
        .subquery()
    )
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(samples).join(newest, samples.c.id == newest.c.id))
        return {row.link_id: dict(row._mapping) for row in rows}


async def add(engine: AsyncEngine, rows: list[dict[str, Any]], *, keep: int) -> None:
    """Store one sample per link and drop what is older than the last ``keep``."""
    if not rows:
        return
    async with engine.begin() as conn:
        await conn.execute(samples.insert(), rows)
        for link_id in {r["link_id"] for r in rows}:
            cutoff = (
                sa.select(samples.c.id)
                .where(samples.c.link_id == link_id)
                .order_by(samples.c.id.desc())
                .offset(keep)
                .limit(1)
                .scalar_subquery()
            )
            await conn.execute(
                samples.delete().where(samples.c.link_id == link_id, samples.c.id <= cutoff)
            )


async def history(engine: AsyncEngine, *, limit: int) -> dict[str, list[tuple[float, float]]]:
    """(time, utilisation %) per link, oldest first, for samples that have a utilisation."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(samples.c.link_id, samples.c.ts, samples.c.utilisation_pct)
            .where(samples.c.utilisation_pct.is_not(None))
            .order_by(samples.c.id)
        )
        out: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            out.setdefault(row.link_id, []).append((row.ts, row.utilisation_pct))
    return {link: points[-limit:] for link, points in out.items()}


async def firing(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """The proactive alerts firing now, by link."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts))
        return {row.link_id: dict(row._mapping) for row in rows}


async def save_alerts(
    conn: AsyncConnection, *, upsert: list[dict[str, Any]], cleared: list[str]
) -> None:
    """Write the watcher's changes in the caller's transaction (with the outbox rows they send)."""
    if cleared or upsert:
        gone = cleared + [row["link_id"] for row in upsert]
        await conn.execute(alerts.delete().where(alerts.c.link_id.in_(gone)))
    if upsert:
        await conn.execute(alerts.insert(), upsert)

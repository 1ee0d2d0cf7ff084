"""The tunnel table: one protection tunnel per incident, so provisioning is idempotent.

A row is written (state ``provisioning``) with its identifiers before CNC is called, so a
crash or a retry reuses the same tunnel id, binding SID and color instead of allocating new
ones, and CNC can be asked whether the policy already exists under that path-name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.models import utcnow

metadata = sa.MetaData()
tunnels = sa.Table(
    "tunnels",
    metadata,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("tunnel_id", sa.String(200), nullable=False, unique=True),
    sa.Column("binding_sid", sa.Integer, nullable=False, unique=True),
    sa.Column("color", sa.Integer, nullable=False),
    sa.Column("head_end", sa.String(64), nullable=False),
    sa.Column("end_point", sa.String(64), nullable=False),
    sa.Column("te_type", sa.String(16), nullable=False),
    sa.Column("path", sa.JSON, nullable=False),
    sa.Column("hops", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("protection_pct", sa.Integer, nullable=False, default=0),
    sa.Column("services", sa.JSON, nullable=False, default=list),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (Migration(1, "tunnels by incident", create_tables(metadata, "tunnels")),)


async def by_incident(engine: AsyncEngine, incident_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(tunnels).where(tunnels.c.incident_id == incident_id))
        ).first()
    return dict(row._mapping) if row else None


async def by_tunnel(engine: AsyncEngine, tunnel_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(tunnels).where(tunnels.c.tunnel_id == tunnel_id))
        ).first()
    return dict(row._mapping) if row else None


async def allocated(engine: AsyncEngine) -> tuple[int, set[int], set[int]]:
    """The highest sequence number, and every binding SID and color already taken."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(tunnels.c.seq, tunnels.c.binding_sid, tunnels.c.color))
        ).all()
    return (
        max((r.seq for r in rows), default=0),
        {r.binding_sid for r in rows},
        {r.color for r in rows},
    )


async def insert(engine: AsyncEngine, **values: Any) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(tunnels.insert().values(created_at=now, updated_at=now, **values))


async def update(engine: AsyncEngine, incident_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            tunnels.update()
            .where(tunnels.c.incident_id == incident_id)
            .values(updated_at=utcnow(), **values)
        )

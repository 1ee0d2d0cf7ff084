"""The tunnel table: one protection policy per incident and pair of ends (an incident protects
each group of services with the same ends by a policy of its own), so provisioning is
idempotent per group.

A row is written (state ``provisioning``) with its identifiers before CNC is called, so a
crash or a retry reuses the same tunnel id, binding SID and color instead of allocating new
ones, and CNC can be asked whether the policy already exists under that path-name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.models import utcnow

metadata = sa.MetaData()
policies = sa.Table(
    "tunnel_policies",
    metadata,
    sa.Column("tunnel_id", sa.String(200), primary_key=True),
    sa.Column("incident_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
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
    sa.UniqueConstraint("incident_id", "head_end", "end_point", name="uq_policy_group"),
)
_legacy = sa.MetaData()
_legacy_tunnels = sa.Table(
    "tunnels",
    _legacy,
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
"""Version 1's table, keyed by incident alone (one policy per incident)."""


def _one_policy_per_group(conn: Connection) -> None:
    """Move version 1's rows (one per incident) into the table keyed by policy."""
    metadata.create_all(conn, tables=[policies])
    rows = [dict(r._mapping) for r in conn.execute(sa.select(_legacy_tunnels))]
    if rows:
        conn.execute(policies.insert(), rows)
    _legacy_tunnels.drop(conn)


MIGRATIONS = (
    Migration(1, "tunnels by incident", create_tables(_legacy, "tunnels")),
    Migration(2, "one policy per incident and pair of ends", _one_policy_per_group),
)


async def by_group(
    engine: AsyncEngine, incident_id: str, head_end: str, end_point: str
) -> dict[str, Any] | None:
    """The incident's policy from ``head_end`` to ``end_point``, if one was planned."""
    t = policies
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(t).where(
                    t.c.incident_id == incident_id,
                    t.c.head_end == head_end,
                    t.c.end_point == end_point,
                )
            )
        ).first()
    return dict(row._mapping) if row else None


async def by_incident(engine: AsyncEngine, incident_id: str) -> list[dict[str, Any]]:
    """Every policy planned for the incident (a batch reads them once, not one per policy)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(policies).where(policies.c.incident_id == incident_id))
        ).all()
    return [dict(row._mapping) for row in rows]


async def by_tunnel(engine: AsyncEngine, tunnel_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(policies).where(policies.c.tunnel_id == tunnel_id))
        ).first()
    return dict(row._mapping) if row else None


async def allocated(engine: AsyncEngine) -> tuple[int, set[int], set[int]]:
    """The highest sequence number, and every binding SID and color already taken."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(policies.c.seq, policies.c.binding_sid, policies.c.color))
        ).all()
    return (
        max((r.seq for r in rows), default=0),
        {r.binding_sid for r in rows},
        {r.color for r in rows},
    )


async def insert_many(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """Insert several rows in one transaction (a batch's newly planned policies)."""
    if not rows:
        return
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            policies.insert(), [{"created_at": now, "updated_at": now, **row} for row in rows]
        )


async def update(engine: AsyncEngine, tunnel_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            policies.update()
            .where(policies.c.tunnel_id == tunnel_id)
            .values(updated_at=utcnow(), **values)
        )

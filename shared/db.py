"""Async database layer: one engine per agent, and ordered migrations recorded in the database.

SQLite (aiosqlite, WAL) is the embedded default and PostgreSQL (asyncpg) the production one;
the same SQLAlchemy Core code runs on both. Migrations are plain functions applied in
version order, each in its own transaction, and recorded in ``cxm_migrations`` per owner,
so an agent's schema moves forward on start and never backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.models import utcnow

SQL_INTEGER_MAX = 2**63 - 1
"""The largest integer PostgreSQL's BIGINT and SQLite hold: a row id or offset past it is not a
row (422), never an overflow inside the driver (500)."""


class UtcDateTime(sa.types.TypeDecorator[Any]):
    """A timezone-aware timestamp on both SQLite (which drops the zone) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        from datetime import UTC

        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    upgrade: Callable[[Connection], None]


def create_tables(metadata: sa.MetaData, *names: str) -> Callable[[Connection], None]:
    """A migration step that creates the named tables of ``metadata`` as they are defined."""

    def upgrade(conn: Connection) -> None:
        metadata.create_all(conn, tables=[metadata.tables[name] for name in names])

    return upgrade


def make_engine(url: str) -> AsyncEngine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite, a pool on PostgreSQL."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


_migrations_meta = sa.MetaData()
migrations_table = sa.Table(
    "cxm_migrations",
    _migrations_meta,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)


async def migrate(engine: AsyncEngine, owner: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of ``owner`` that are not yet recorded; return the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{owner}: migration versions must be unique and ascending: {versions}")
    async with engine.begin() as conn:
        await conn.run_sync(_migrations_meta.create_all)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(migrations_table.c.version).where(migrations_table.c.owner == owner)
        )
        done = {row[0] for row in rows}
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        async with engine.begin() as conn:
            await conn.run_sync(migration.upgrade)
            await conn.execute(
                migrations_table.insert().values(
                    owner=owner,
                    version=migration.version,
                    description=migration.description,
                    applied_at=utcnow(),
                )
            )
        applied.append(migration.version)
    return applied

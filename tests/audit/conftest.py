"""Audit test fixtures: the agent on SQLite or on a fresh database of the real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.settings import Settings


async def create_database(dsn: str) -> str:
    """A fresh database on the test server; returns its DSN."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


async def drop_database(dsn: str, url: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(postgres_dsn: str) -> AsyncIterator[str]:
    url = await create_database(postgres_dsn)
    yield url
    await drop_database(postgres_dsn, url)


@pytest.fixture(params=["sqlite", "postgres"])
async def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings whose audit database is SQLite under tmp_path, or a fresh PostgreSQL database."""
    base = Settings(data_dir=tmp_path, mesh_token="test-mesh-token", port=8999)
    if request.param == "sqlite":
        yield base
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    url = await create_database(dsn)
    yield base.model_copy(update={"database_url": url})
    await drop_database(dsn, url)

"""Audit test fixtures: the agent on SQLite or on a fresh database of the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support import create_database, drop_database


@pytest.fixture
async def pg_url(postgres_dsn: str) -> AsyncIterator[str]:
    url = await create_database(postgres_dsn, prefix="audit")
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
    url = await create_database(dsn, prefix="audit")
    yield base.model_copy(update={"database_url": url})
    await drop_database(dsn, url)

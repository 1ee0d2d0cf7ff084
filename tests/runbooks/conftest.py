"""Runbook fixtures: the vault, the inventory and a connector pool on a real database, fresh
PostgreSQL databases, the log output of a test, and a look at the host's processes."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks.connectors import ConnectorPool, CredentialUse
from services.orchestrator.runbooks.inventory import Inventory
from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.runbooks.vault import Vault
from shared.db import make_engine
from shared.logs import configure_logging
from tests.runbooks.helpers import Runbooks
from tests.support import create_database, drop_database


@pytest.fixture
async def pg_database(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh database on the session's real PostgreSQL server (a ``postgresql://`` DSN)."""
    url = await create_database(postgres_dsn, prefix="runbooks")
    yield url
    await drop_database(postgres_dsn, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The orchestrator's own database: SQLite under tmp_path, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orchestrator.db'}")
        yield eng
        await eng.dispose()
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    url = await create_database(dsn, prefix="runbooks")
    eng = make_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    yield eng
    await eng.dispose()
    await drop_database(dsn, url)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orchestrator.db'}")
    yield eng
    await eng.dispose()


@pytest.fixture
def runbook_settings(tmp_path: Path) -> RunbookSettings:
    """A key file under tmp_path, short timeouts, a small output cap."""
    return RunbookSettings(
        credential_key_file=tmp_path / "keys" / "credentials.key",
        ssh_connect_timeout_s=5,
        ssh_login_timeout_s=5,
        kill_grace_s=1,
        output_cap_bytes=8192,
        db_connect_timeout_s=5,
        http_connect_timeout_s=5,
    )


@pytest.fixture
async def runbooks(
    sqlite_engine: AsyncEngine, runbook_settings: RunbookSettings
) -> AsyncIterator[Runbooks]:
    vault = await Vault.open(sqlite_engine, runbook_settings)
    inventory = await Inventory.open(sqlite_engine)
    uses: list[CredentialUse] = []

    async def record(use: CredentialUse) -> None:
        uses.append(use)

    async with ConnectorPool(
        vault, inventory.get, runbook_settings, on_credential_use=record
    ) as pool:
        yield Runbooks(vault, inventory, pool, runbook_settings, uses)


@pytest.fixture
def log_text(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[], str]]:
    """Everything logged during the test, rendered as production renders it (JSON), at DEBUG.

    The project's own configuration is used (structlog through the stdlib root logger),
    writing to the stdout pytest captures; the root logger is restored afterwards.
    """
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG", "json")
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def text() -> str:
        seen.append(capsys.readouterr().out)
        return "".join(seen) + caplog.text

    yield text
    root.handlers[:], level = saved
    root.setLevel(level)
    sys.stdout.flush()

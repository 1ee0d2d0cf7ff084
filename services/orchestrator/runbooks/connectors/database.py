"""Query steps: SQLAlchemy async engines, asyncpg for PostgreSQL and aiosqlite for SQLite.

A query runs with its bind parameters (ticket values never enter the SQL text) in a
read-only transaction unless the step says it writes: ``SET TRANSACTION READ ONLY`` on
PostgreSQL, ``PRAGMA query_only`` on SQLite, so the database itself refuses a write. On
PostgreSQL the step's timeout is also the statement timeout, so the server stops the query
rather than leaving it running after the step gave up.

A password credential is put into the engine's URL object, never into a string: SQLAlchemy
shows it as ``***`` wherever the URL is printed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from shared.logs import get_logger

from ..actions import Action, DbQuery, StepOutput
from .base import (
    AuthError,
    ConnectorError,
    ConnectorTimeout,
    CredentialUnusable,
    InvalidAction,
    ProtocolError,
    Unlock,
    find_cause,
    find_os_error,
    os_error,
)

if TYPE_CHECKING:
    from ..inventory import ConnectionRead
    from ..settings import RunbookSettings

log = get_logger(__name__)

DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
#: SQLSTATE of a statement cancelled by statement_timeout.
QUERY_CANCELED = "57014"


def _jsonable(value: Any) -> Any:
    """Row values as JSON can carry them (the session is checkpointed as JSON)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _render(rows: list[dict[str, Any]], more: int) -> str:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines.append(f"({len(rows) + more} row{'s' if len(rows) + more != 1 else ''})")
    if more:
        lines.append(f"[{more} more rows not kept]")
    return "\n".join(lines)


def _setup_error(exc: BaseException, connection: ConnectionRead) -> ConnectorError | None:
    """The connector error for a failure to connect, or None for any other failure."""
    target, name = connection.target, connection.name
    auth = find_cause(
        exc, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    )
    if auth is not None:
        return AuthError(f"{target}: {auth}", connection=name)
    missing_db = find_cause(exc, asyncpg.InvalidCatalogNameError)
    if missing_db is not None:
        return InvalidAction(f"{target}: {missing_db}", connection=name)
    oserr = find_os_error(exc)
    if oserr is not None:
        return os_error(oserr, target, name)
    return None


class DatabaseConnector:
    name: ClassVar[str] = "database"

    def __init__(self, settings: RunbookSettings, unlock: Unlock) -> None:
        self._settings = settings
        self._unlock = unlock
        self._engines: dict[str, tuple[tuple[Any, ...], str | None, AsyncEngine]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _url(self, connection: ConnectionRead) -> URL:
        assert connection.url is not None  # the inventory requires one
        try:
            url = make_url(connection.url)
        except ArgumentError:
            raise InvalidAction(
                f"connection {connection.name!r}: url is not a database URL",
                connection=connection.name,
            ) from None
        driver = DRIVERS.get(url.drivername)
        if driver is None:
            raise InvalidAction(
                f"connection {connection.name!r}: {url.drivername} is not supported "
                "(postgresql or sqlite)",
                connection=connection.name,
            )
        url = url.set(drivername=driver)
        if connection.database:
            url = url.set(database=connection.database)
        credential = await self._unlock(connection)
        if credential is not None:
            if credential.kind != "password":
                raise CredentialUnusable(
                    f"credential {credential.name!r} is a {credential.kind}: a database "
                    "connection needs a password credential",
                    connection=connection.name,
                )
            url = url.set(
                username=credential.username or url.username, password=credential.secret.reveal()
            )
        return url

    def _create_engine(self, url: URL, *, pooled: bool) -> AsyncEngine:
        timeout = self._settings.db_connect_timeout_s
        # SQLite has no server to keep connections to; a test wants a connection of its own.
        if url.drivername.startswith("sqlite") or not pooled:
            return create_async_engine(url, connect_args={"timeout": timeout}, poolclass=NullPool)
        return create_async_engine(
            url,
            connect_args={"timeout": timeout},
            pool_size=2,
            max_overflow=4,
            pool_pre_ping=True,
        )

    async def _engine(self, connection: ConnectionRead) -> AsyncEngine:
        fingerprint = (connection.url, connection.database, connection.credential)
        lock = self._locks.setdefault(connection.name, asyncio.Lock())
        async with lock:
            cached = self._engines.get(connection.name)
            if cached is not None and cached[0] == fingerprint:
                return cached[2]
            if cached is not None:
                await self._drop(connection.name)
            engine = self._create_engine(await self._url(connection), pooled=True)
            self._engines[connection.name] = (fingerprint, connection.credential, engine)
            return engine

    @asynccontextmanager
    async def _connect(
        self, engine: AsyncEngine, connection: ConnectionRead
    ) -> AsyncIterator[AsyncConnection]:
        try:
            conn = await engine.connect()
        except (DBAPIError, OSError) as exc:
            error = _setup_error(exc, connection)
            if error is None:
                raise
            raise error from None
        try:
            yield conn
        finally:
            await conn.close()

    async def run(
        self, connection: ConnectionRead | None, action: Action, *, timeout_s: float
    ) -> StepOutput:
        if connection is None or not isinstance(action, DbQuery):
            raise InvalidAction("a query step needs a database connection and a query")
        started = time.monotonic()
        engine = await self._engine(connection)
        postgres = engine.dialect.name == "postgresql"
        loop = asyncio.get_running_loop()
        # The server's statement timeout stops the query on time; this one, a little later,
        # bounds everything else (connecting, a server that does not answer).
        deadline = loop.time() + timeout_s + self._settings.kill_grace_s
        try:
            async with asyncio.timeout_at(deadline), self._connect(engine, connection) as conn:
                result = await self._execute(conn, action, postgres=postgres, timeout_s=timeout_s)
        except TimeoutError:
            return StepOutput(
                timed_out=True,
                error=f"timeout: the query did not finish within {timeout_s:g}s",
                duration_s=time.monotonic() - started,
            )
        except DBAPIError as exc:
            orig = exc.orig
            if getattr(orig, "sqlstate", None) == QUERY_CANCELED:
                return StepOutput(
                    timed_out=True,
                    error=f"timeout: the query did not finish within {timeout_s:g}s",
                    duration_s=time.monotonic() - started,
                )
            if exc.connection_invalidated:
                raise ProtocolError(
                    f"{connection.target}: the connection broke during the query",
                    connection=connection.name,
                ) from None
            message = str(orig).strip() if orig is not None else str(exc)
            return StepOutput(
                error=f"{type(orig).__name__}: {message}", duration_s=time.monotonic() - started
            )
        return StepOutput(**result, duration_s=time.monotonic() - started)

    async def _execute(
        self, conn: AsyncConnection, action: DbQuery, *, postgres: bool, timeout_s: float
    ) -> dict[str, Any]:
        read_only = not action.writes
        async with conn.begin():
            if postgres:
                if read_only:
                    await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                await conn.exec_driver_sql(
                    f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}"
                )
            elif read_only:
                await conn.exec_driver_sql("PRAGMA query_only = ON")
            try:
                result = await conn.execute(sa.text(action.sql), dict(action.params))
                if not result.returns_rows:
                    count = result.rowcount
                    return {"output": f"{count} row{'s' if count != 1 else ''} affected"}
                keep = self._settings.db_max_rows
                fetched = result.mappings().fetchmany(keep + 1)
                rows = [{k: _jsonable(v) for k, v in row.items()} for row in fetched[:keep]]
                more = 0
                if len(fetched) > keep:
                    # Counted, not kept: the step says how many rows it did not show.
                    more = 1 + sum(1 for _ in result)
                return {"rows": rows, "output": _render(rows, more)}
            finally:
                if not postgres and read_only:
                    # The pragma belongs to the SQLite connection, not the transaction.
                    await conn.exec_driver_sql("PRAGMA query_only = OFF")

    async def test(self, connection: ConnectionRead) -> str:
        engine = self._create_engine(await self._url(connection), pooled=False)
        try:
            async with (
                asyncio.timeout(self._settings.db_connect_timeout_s + 1),
                self._connect(engine, connection) as conn,
            ):
                await conn.exec_driver_sql("SELECT 1")
                version = ""
                if engine.dialect.name == "postgresql":
                    version = str((await conn.exec_driver_sql("SHOW server_version")).scalar())
        except TimeoutError:
            raise ConnectorTimeout(
                f"{connection.target}: no answer in time", connection=connection.name
            ) from None
        finally:
            await engine.dispose()
        server = f"PostgreSQL {version}" if version else engine.dialect.name
        return f"connected to {connection.target} ({server})"

    async def _drop(self, name: str) -> None:
        cached = self._engines.pop(name, None)
        if cached is not None:
            await cached[2].dispose()

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        names = [
            name
            for name, (_, used, _) in self._engines.items()
            if name == connection or (credential is not None and used == credential)
        ]
        for name in names:
            await self._drop(name)

    async def aclose(self) -> None:
        for name in list(self._engines):
            await self._drop(name)

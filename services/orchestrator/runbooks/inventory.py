"""The connection inventory: the named targets runbook steps run on.

A connection is ``{name, environment, connector, host?, port?, url?, database?, credential?,
host_key?, options?}``, unique by name. Which fields a connection needs depends on its
connector, and a validation error names the field it is about (``host_key``,
``options.max_sessions``). A connection may name a credential the vault does not hold yet,
and an SSH connection may lack its ``host_key``: both load, and running or testing them says
what is missing (an SSH connection without a host key is refused, never trusted blindly).

:func:`test_connection` reaches the target with the connection's credential and says what
failed: ``dns``, ``refused``, ``host_key``, ``auth``, ``timeout`` (the ``kind`` of
:class:`.connectors.base.ConnectorError`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import asyncssh
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables, migrate
from shared.errors import CxmError
from shared.logs import get_logger
from shared.models import utcnow

from .vault import ResourceName

log = get_logger(__name__)

OWNER = "orchestrator.connections"

Environment = Literal["prod", "staging", "dev"]
ConnectorName = Literal["ssh", "database", "http", "local"]

#: Options each connector understands, with their types; anything else is a typo.
OPTIONS: dict[str, dict[str, type]] = {
    "ssh": {"max_sessions": int, "pty": bool},
    "database": {},
    "http": {"verify": bool},
    "local": {},
}
#: Fields that mean nothing to a connector: giving one is a mistake worth reporting.
UNUSED: dict[str, tuple[str, ...]] = {
    "ssh": ("url", "database"),
    "database": ("host", "port", "host_key"),
    "http": ("host", "port", "database", "host_key"),
    "local": ("host", "port", "url", "database", "credential", "host_key"),
}
DB_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite")


class InventoryError(CxmError):
    pass


class ConnectionExists(InventoryError):
    def __init__(self, name: str) -> None:
        super().__init__(f"connection {name!r} already exists")
        self.name = name


def known_hosts_line(line: str, host: str, port: int) -> str:
    """``line`` as a known_hosts entry for ``host:port``.

    A bare ``<type> <base64>`` key (what a server's ``.pub`` file holds) is given the host
    pattern OpenSSH would write for this host and port.
    """
    line = line.strip()
    first = line.split(maxsplit=1)[0] if line else ""
    if first.startswith(("ssh-", "ecdsa-", "sk-", "rsa-")):
        pattern = host if port == 22 else f"[{host}]:{port}"
        return f"{pattern} {line}"
    return line


class ConnectionCreate(BaseModel):
    """What ``POST /api/v1/connections`` takes."""

    model_config = ConfigDict(extra="forbid")

    name: ResourceName
    environment: Environment
    connector: ConnectorName
    host: str | None = Field(default=None, min_length=1, max_length=255, validate_default=True)
    port: int | None = Field(default=None, ge=1, le=65535, validate_default=True)
    url: str | None = Field(default=None, max_length=2048, validate_default=True)
    database: str | None = Field(default=None, min_length=1, max_length=255)
    credential: ResourceName | None = None
    host_key: str | None = Field(default=None, max_length=16384)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("host", "port", "url", "database", "credential", "host_key")
    @classmethod
    def _used_by_connector(cls, value: Any, info: ValidationInfo) -> Any:
        connector = info.data.get("connector")
        if value is not None and connector and info.field_name in UNUSED[connector]:
            raise ValueError(f"not used by a {connector} connection")
        if value is None and connector == "ssh" and info.field_name == "host":
            raise ValueError("required for an ssh connection")
        if value is None and connector in ("database", "http") and info.field_name == "url":
            raise ValueError(f"required for a {connector} connection")
        return value

    @field_validator("port")
    @classmethod
    def _ssh_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        return 22 if value is None and info.data.get("connector") == "ssh" else value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        connector = info.data.get("connector")
        if connector == "http":
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("an http:// or https:// URL with a host")
        elif connector == "database" and parts.scheme not in DB_SCHEMES:
            raise ValueError("a postgresql:// or sqlite:/// URL")
        if parts.password:
            # A password in a URL ends up in logs and API answers: it belongs in the vault.
            raise ValueError("has a password: put it in a credential and name that instead")
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        host, port = info.data.get("host"), info.data.get("port") or 22
        if value is None or host is None:
            return value
        line = known_hosts_line(value, host, port)
        try:
            known = asyncssh.import_known_hosts(line)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise ValueError(f"not a known_hosts line: {exc}") from None
        trusted, ca_keys = known.match(host, "", port)[:2]
        if not trusted and not ca_keys:
            raise ValueError(
                f"names no key for {host} port {port} (a known_hosts line for "
                f"{host if port == 22 else f'[{host}]:{port}'}, as ssh-keyscan prints it)"
            )
        return line

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        connector = info.data.get("connector")
        if connector is None:
            return value
        known = OPTIONS[connector]
        for key, item in value.items():
            expected = known.get(key)
            if expected is None:
                allowed = ", ".join(sorted(known)) or "none"
                raise ValueError(f"{key}: unknown {connector} option (known: {allowed})")
            # bool is an int in Python: an int option must not take True.
            if not isinstance(item, expected) or (expected is int and isinstance(item, bool)):
                raise ValueError(f"{key}: must be {expected.__name__}")
            if key == "max_sessions" and isinstance(item, int) and item < 1:
                raise ValueError(f"{key}: must be at least 1")
        return value


class ConnectionRead(ConnectionCreate):
    created_at: datetime
    updated_at: datetime

    @property
    def target(self) -> str:
        """Where it points, for messages (never with credentials: URLs cannot hold any)."""
        if self.connector == "ssh":
            return f"{self.host}:{self.port}"
        return self.url or "the orchestrator's host"


class ConnectionTest(BaseModel):
    """The answer of ``POST /api/v1/connections/{name}/test``.

    ``detail`` says what was reached, or what failed, starting with ``kind`` (``dns``,
    ``refused``, ``host_key``, ``auth``, ``timeout``, ...).
    """

    ok: bool
    detail: str
    latency_ms: float
    kind: str | None = None


class ConnectionTester(Protocol):
    async def test(self, connection: ConnectionRead) -> ConnectionTest: ...


_meta = sa.MetaData()
connections = sa.Table(
    "orchestrator_connections",
    _meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("environment", sa.String(16), nullable=False),
    sa.Column("connector", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("port", sa.Integer, nullable=True),
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("database", sa.String(255), nullable=True),
    sa.Column("credential", sa.String(128), nullable=True),
    sa.Column("host_key", sa.Text, nullable=True),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_orchestrator_connections_environment", "environment"),
)
MIGRATIONS = (Migration(1, "connections", create_tables(_meta, "orchestrator_connections")),)


class Inventory:
    """Connections in the orchestrator's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, engine: AsyncEngine) -> Inventory:
        await migrate(engine, OWNER, MIGRATIONS)
        return cls(engine)

    async def create(self, connection: ConnectionCreate) -> ConnectionRead:
        now = utcnow()
        values = connection.model_dump()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    connections.insert().values(**values, created_at=now, updated_at=now)
                )
        except sa.exc.IntegrityError:
            raise ConnectionExists(connection.name) from None
        log.info(
            "connection created",
            connection=connection.name,
            connector=connection.connector,
            environment=connection.environment,
        )
        return ConnectionRead(**values, created_at=now, updated_at=now)

    async def get(self, name: str) -> ConnectionRead | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(connections).where(connections.c.name == name))
            ).first()
        return ConnectionRead.model_validate(dict(row._mapping)) if row is not None else None

    async def list_all(self, *, environment: Environment | None = None) -> list[ConnectionRead]:
        query = sa.select(connections).order_by(connections.c.name)
        if environment is not None:
            query = query.where(connections.c.environment == environment)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ConnectionRead.model_validate(dict(row._mapping)) for row in rows]

    async def delete(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(connections.delete().where(connections.c.name == name))
        deleted = bool(result.rowcount)
        if deleted:
            log.info("connection deleted", connection=name)
        return deleted


async def test_connection(
    inventory: Inventory, tester: ConnectionTester, name: str
) -> ConnectionTest:
    """Reach the named connection's target with its credential; say what failed if it fails.

    ``tester`` is the orchestrator's :class:`.connectors.ConnectorPool`.
    """
    connection = await inventory.get(name)
    if connection is None:
        return ConnectionTest(
            ok=False,
            kind="missing_connection",
            detail=f"missing_connection: no connection named {name!r} in the inventory",
            latency_ms=0.0,
        )
    return await tester.test(connection)


# Its name starts with "test": tell pytest, which would collect it wherever it is imported.
test_connection.__test__ = False  # type: ignore[attr-defined]

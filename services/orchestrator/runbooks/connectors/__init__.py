"""Connectors run runbook actions on their targets; :class:`ConnectorPool` owns them all.

The orchestrator's lifespan makes one pool and closes it with itself; closing it closes
every SSH connection, database engine and HTTP client::

    async with ConnectorPool(vault, inventory.get, settings, on_credential_use=audit) as pool:
        output = await pool.run("db-prod-1", DbQuery("SELECT 1"), timeout_s=30)
        check = await pool.test(connection)

``run`` never raises for a target's failure: what could not run comes back as a
:class:`~..actions.StepOutput` whose ``error`` starts with the failure's kind
(``missing_connection: ...``, ``host_key: ...``) and whose ``transient`` says whether an
idempotent step may try again. Every use of a credential, by a step or a test, is first
reported to ``on_credential_use`` (and logged), before the secret is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Literal

from shared.logs import get_logger
from shared.models import utcnow

from ..actions import Action, DbQuery, HttpRequest, LocalCommand, SshCommand, StepOutput
from ..inventory import ConnectionRead, ConnectionTest
from ..settings import RunbookSettings
from ..vault import CredentialNotFound, UnlockedCredential, Vault, VaultKeyError
from .base import (
    Connector,
    ConnectorError,
    ConnectorFactory,
    ConnectorTimeout,
    CredentialUnusable,
    InvalidAction,
    MissingConnection,
    MissingCredential,
)
from .database import DatabaseConnector
from .http import HttpConnector
from .local import LocalConnector
from .ssh import SshConnector

__all__ = [
    "CONNECTORS",
    "ConnectionLookup",
    "Connector",
    "ConnectorError",
    "ConnectorPool",
    "CredentialUse",
]

log = get_logger(__name__)

#: The connector for each kind of connection (read-only: a pool may be given its own).
CONNECTORS: Mapping[str, ConnectorFactory] = MappingProxyType(
    {
        "ssh": SshConnector,
        "database": DatabaseConnector,
        "http": HttpConnector,
        "local": LocalConnector,
    }
)
#: Which connector runs which action.
ACTION_CONNECTOR: Mapping[type, str] = MappingProxyType(
    {SshCommand: "ssh", DbQuery: "database", HttpRequest: "http", LocalCommand: "local"}
)

ConnectionLookup = Callable[[str], Awaitable[ConnectionRead | None]]


@dataclass(frozen=True)
class CredentialUse:
    """One use of a credential: the audit record ``on_credential_use`` receives.

    ``context`` is what the caller passed to :meth:`ConnectorPool.run` (the session, the
    step, the operator who approved it); ``action`` is the action as a person approving it
    saw it, without secrets.
    """

    credential: str
    connection: str
    environment: str
    connector: str
    purpose: Literal["run", "test"]
    action: str | None
    context: Mapping[str, str] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)


CredentialUseHook = Callable[[CredentialUse], Awaitable[None]]


class ConnectorPool:
    """The connectors of one orchestrator process, and the connections they keep open."""

    def __init__(
        self,
        vault: Vault,
        lookup: ConnectionLookup,
        settings: RunbookSettings,
        *,
        on_credential_use: CredentialUseHook | None = None,
        connectors: Mapping[str, ConnectorFactory] = CONNECTORS,
    ) -> None:
        self._vault = vault
        self._lookup = lookup
        self._settings = settings
        self._on_use = on_credential_use
        self._factories = connectors
        self._connectors: dict[str, Connector] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> ConnectorPool:
        for kind, factory in self._factories.items():
            connector = factory(self._settings, self._unlock)
            self._stack.push_async_callback(connector.aclose)
            self._connectors[kind] = connector
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._connectors.clear()
        await self._stack.aclose()

    def _connector(self, kind: str) -> Connector:
        connector = self._connectors.get(kind)
        if connector is None:
            raise InvalidAction(f"no {kind} connector (is the pool open?)")
        return connector

    async def _unlock(self, connection: ConnectionRead) -> UnlockedCredential | None:
        """The connection's credential, decrypted by the vault for a connector."""
        if connection.credential is None:
            return None
        try:
            credential = await self._vault.unlock(connection.credential)
        except CredentialNotFound:
            raise MissingCredential(
                f"connection {connection.name!r} names credential {connection.credential!r}, "
                "which the vault does not hold",
                connection=connection.name,
            ) from None
        except VaultKeyError as exc:
            raise CredentialUnusable(str(exc), connection=connection.name) from None
        log.info(
            "credential unlocked",
            credential=credential.name,
            connection=connection.name,
            username=credential.username,
        )
        return credential

    async def _audit(
        self,
        connection: ConnectionRead,
        purpose: Literal["run", "test"],
        action: Action | None,
        context: Mapping[str, str] | None,
    ) -> None:
        if connection.credential is None:
            return
        use = CredentialUse(
            credential=connection.credential,
            connection=connection.name,
            environment=connection.environment,
            connector=connection.connector,
            purpose=purpose,
            action=action.display if action is not None else None,
            context=dict(context or {}),
        )
        log.info(
            "credential use",
            credential=use.credential,
            connection=use.connection,
            purpose=purpose,
            **use.context,
        )
        # An audit hook that fails stops the step: a credential is not used unrecorded.
        if self._on_use is not None:
            await self._on_use(use)

    async def run(
        self,
        connection: str | None,
        action: Action,
        *,
        timeout_s: float | None = None,
        context: Mapping[str, str] | None = None,
    ) -> StepOutput:
        """Run ``action`` on the named connection (``None``: a local step).

        ``timeout_s`` bounds waiting for a session and the action itself (connecting has
        its own timeouts); ``context`` goes into the credential-use record.
        """
        timeout = timeout_s if timeout_s is not None else self._settings.command_timeout_s
        started = time.monotonic()
        target: ConnectionRead | None = None
        try:
            kind = ACTION_CONNECTOR[type(action)]
            target = await self._resolve(connection, kind)
            if target is not None:
                await self._audit(target, "run", action, context)
            output = await self._connector(kind).run(target, action, timeout_s=timeout)
        except ConnectorError as exc:
            log.warning(
                "runbook action could not run",
                connection=connection,
                kind=exc.kind,
                error=exc.message,
                transient=exc.transient,
            )
            output = StepOutput(
                error=str(exc),
                transient=exc.transient,
                timed_out=isinstance(exc, ConnectorTimeout),
            )
        output = _masked(output, await self._secret_values(target))
        return dataclasses.replace(output, duration_s=time.monotonic() - started)

    async def _secret_values(self, target: ConnectionRead | None) -> tuple[str, ...]:
        """The text of the credential a step used, to mask wherever the target echoes it.

        What a target prints becomes the step's output, kept in the session, shown by IO and
        audited: a service that echoes its ``Authorization`` header, or a command that prints
        the password it was given, must not hand the vault's secret back out through it.
        """
        if target is None or target.credential is None:
            return ()
        try:
            credential = await self._vault.unlock(target.credential)
        except (CredentialNotFound, VaultKeyError):
            return ()  # then the connector could not use it either, and said so
        return secret_fragments(credential.secret.reveal())

    async def _resolve(self, name: str | None, kind: str) -> ConnectionRead | None:
        if name is None:
            if kind != "local":
                raise MissingConnection(f"a {kind} step needs a connection")
            return None
        target = await self._lookup(name)
        if target is None:
            raise MissingConnection(
                f"no connection named {name!r} in the inventory", connection=name
            )
        if target.connector != kind:
            raise InvalidAction(
                f"connection {name!r} is a {target.connector} connection; this step needs "
                f"a {kind} one",
                connection=name,
            )
        return target

    async def test(
        self, connection: ConnectionRead, *, context: Mapping[str, str] | None = None
    ) -> ConnectionTest:
        """Reach ``connection``'s target afresh (never through a cached connection)."""
        started = time.monotonic()
        try:
            await self._audit(connection, "test", None, context)
            detail = await self._connector(connection.connector).test(connection)
        except ConnectorError as exc:
            return ConnectionTest(
                ok=False,
                kind=exc.kind,
                detail=str(exc),
                latency_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return ConnectionTest(
            ok=True, detail=detail, latency_ms=round((time.monotonic() - started) * 1000, 1)
        )

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        """Close what is open for a connection (changed or deleted in the inventory), or for
        every connection using a credential (deleted from the vault)."""
        for connector in self._connectors.values():
            await connector.forget(connection=connection, credential=credential)


SECRET_MASK = "[credential redacted]"
MIN_MASKED_CHARS = 4
"""Shorter fragments are not masked: replacing every "ab" would garble the output."""


def secret_fragments(secret: str) -> tuple[str, ...]:
    """The secret and, for a multi-line one (a private key), each of its lines; longest first."""
    parts = {secret.strip(), *(line.strip() for line in secret.splitlines())}
    return tuple(sorted((p for p in parts if len(p) >= MIN_MASKED_CHARS), key=len, reverse=True))


def _masked(output: StepOutput, fragments: tuple[str, ...]) -> StepOutput:
    """``output`` with every fragment of the step's own credential replaced by a mark."""
    if not fragments:
        return output

    def clean(text: str) -> str:
        for fragment in fragments:
            text = text.replace(fragment, SECRET_MASK)
        return text

    rows = (
        None
        if output.rows is None
        else [
            {k: clean(v) if isinstance(v, str) else v for k, v in row.items()}
            for row in output.rows
        ]
    )
    return dataclasses.replace(
        output,
        output=clean(output.output),
        error=clean(output.error) if output.error else output.error,
        rows=rows,
    )

"""What every connector shares: the protocol, the error hierarchy and capped output.

Errors are one hierarchy, and callers branch on the class or on ``kind``, never on text::

    ConnectorError            .kind .connection .transient
    ├── DnsError              dns               the name does not resolve
    ├── Refused               refused           nothing listens (transient)
    ├── Unreachable           unreachable       no route, reset (transient)
    ├── ConnectorTimeout      timeout           connect, login or a free session (transient)
    ├── HostKeyError          host_key          no host_key, or the server's key differs
    ├── AuthError             auth              the target refused the credential
    ├── MissingConnection     missing_connection
    ├── MissingCredential     missing_credential
    ├── CredentialUnusable    credential        wrong kind for the connector, or undecryptable
    ├── InvalidAction         invalid           the action does not fit the connection
    ├── ChannelError          channel           the SSH server refused a session (transient)
    ├── Unavailable           unavailable       the target answered 5xx to a test (transient)
    └── ProtocolError         protocol          the peer broke off or spoke nonsense

A connector raises these for failures that kept the action from running; what the action
itself gave (an exit code, an HTTP status, a failed query, a timeout mid-command) is the
:class:`~services.orchestrator.runbooks.actions.StepOutput` it returns.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from shared.errors import CxmError

from ..actions import Action, StepOutput

if TYPE_CHECKING:
    from ..inventory import ConnectionRead
    from ..settings import RunbookSettings
    from ..vault import UnlockedCredential


class ConnectorError(CxmError):
    """A connector could not run the action; ``str()`` starts with the kind."""

    kind: ClassVar[str] = "error"
    transient_default: ClassVar[bool] = False

    def __init__(
        self, message: str, *, connection: str | None = None, transient: bool | None = None
    ) -> None:
        super().__init__(f"{self.kind}: {message}")
        self.message = message
        self.connection = connection
        self.transient = self.transient_default if transient is None else transient


class DnsError(ConnectorError):
    kind = "dns"


class Refused(ConnectorError):
    kind = "refused"
    transient_default = True


class Unreachable(ConnectorError):
    kind = "unreachable"
    transient_default = True


class ConnectorTimeout(ConnectorError):
    kind = "timeout"
    transient_default = True


class HostKeyError(ConnectorError):
    kind = "host_key"


class AuthError(ConnectorError):
    kind = "auth"


class MissingConnection(ConnectorError):
    kind = "missing_connection"


class MissingCredential(ConnectorError):
    kind = "missing_credential"


class CredentialUnusable(ConnectorError):
    kind = "credential"


class InvalidAction(ConnectorError):
    kind = "invalid"


class ChannelError(ConnectorError):
    kind = "channel"
    transient_default = True


class Unavailable(ConnectorError):
    kind = "unavailable"
    transient_default = True


class ProtocolError(ConnectorError):
    kind = "protocol"


def os_error(exc: OSError, target: str, connection: str | None) -> ConnectorError:
    """The connector error for a socket-level failure reaching ``target``."""
    if isinstance(exc, socket.gaierror):
        # EAI_AGAIN is a resolver hiccup worth retrying; a name that does not exist is not.
        return DnsError(
            f"{target}: the name does not resolve ({exc.strerror})",
            connection=connection,
            transient=exc.errno == socket.EAI_AGAIN,
        )
    if isinstance(exc, ConnectionRefusedError):
        return Refused(f"{target}: connection refused", connection=connection)
    if isinstance(exc, TimeoutError):
        return ConnectorTimeout(f"{target}: no answer in time", connection=connection)
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return Unreachable(f"{target}: {exc.strerror}", connection=connection)
    return Unreachable(f"{target}: {exc}", connection=connection)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts and the members of exception groups."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


def find_cause(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of ``kind`` that ``exc`` is or wraps (libraries wrap)."""
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def find_os_error(exc: BaseException) -> OSError | None:
    """The socket error behind ``exc``, the most specific one when several wrap each other.

    anyio, under httpx, reports ``OSError("All connection attempts failed")`` over a group
    of the real errors (one per address tried): the refusal or timeout is in there.
    """
    errors = [e for e in _chain(exc) if isinstance(e, OSError)]
    specific = [e for e in errors if type(e) is not OSError or e.errno is not None]
    return next(iter(specific or errors), None)


class CappedOutput:
    """Bytes up to ``cap`` kept, the rest counted; decoded once at the end."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.dropped = 0

    @property
    def full(self) -> bool:
        return self._kept >= self._cap

    def feed(self, chunk: bytes) -> None:
        room = self._cap - self._kept
        if room > 0:
            self._chunks.append(chunk[:room])
            self._kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self, *, cut: bool = False) -> str:
        """The output, saying so when bytes were dropped (or, ``cut``, left unread)."""
        out = b"".join(self._chunks).decode("utf-8", errors="replace")
        if cut:
            out += f"\n[output truncated at {self._cap} bytes]"
        elif self.dropped:
            out += f"\n[output truncated: {self.dropped} more bytes]"
        return out


#: How a connector gets the connection's credential: None when the connection names none.
#: Raises MissingCredential or CredentialUnusable; every call is audited by the pool.
Unlock = Callable[["ConnectionRead"], Awaitable["UnlockedCredential | None"]]


class Connector(Protocol):
    """One kind of target. The pool makes one of each and closes it with itself."""

    name: ClassVar[str]

    async def run(
        self, connection: ConnectionRead | None, action: Action, *, timeout_s: float
    ) -> StepOutput:
        """Run ``action``; raise :class:`ConnectorError` when it could not run at all."""
        ...

    async def test(self, connection: ConnectionRead) -> str:
        """Reach the target with a fresh connection; what was reached, or raise."""
        ...

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        """Close what is cached for a connection, or for every connection using a credential."""
        ...

    async def aclose(self) -> None: ...


ConnectorFactory = Callable[["RunbookSettings", Unlock], Connector]

"""SSH steps with asyncssh: one verified connection per host, a bounded number of channels.

- The server's key is always checked against the connection's ``host_key`` (a known_hosts
  line). A connection without one is refused: there is no "accept the first key" mode.
- One SSH connection per inventory connection, reused by every step; at most
  ``max_sessions`` channels at once on it (OpenSSH's ``MaxSessions`` refuses more).
- Commands run on a pseudo-terminal (``TERM=dumb``, no echo, no CR/LF translation). That is
  what lets a timeout kill them: closing the channel closes the terminal, and the kernel
  hangs up the command's whole process group. Without one (``options.pty: false``) a
  timeout sends SIGTERM then SIGKILL, which OpenSSH honours for non-root logins only.
- Nothing local is consulted: no ``~/.ssh/config``, no agent, no default key files.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import asyncssh

from shared.logs import get_logger

from ..actions import Action, SshCommand, StepOutput
from .base import (
    AuthError,
    CappedOutput,
    ChannelError,
    ConnectorTimeout,
    CredentialUnusable,
    HostKeyError,
    InvalidAction,
    MissingCredential,
    ProtocolError,
    Unlock,
    os_error,
)

if TYPE_CHECKING:
    from ..inventory import ConnectionRead
    from ..settings import RunbookSettings

log = get_logger(__name__)

#: Wide enough that tools which fit their output to the terminal (ps, ls) do not cut lines.
PTY_SIZE = (1024, 0)
#: No echo (a ^D we send would otherwise show) and no LF -> CRLF on output.
PTY_MODES = {asyncssh.PTY_ECHO: 0, asyncssh.PTY_ONLCR: 0}
#: End of input for a command on a terminal (a terminal has no half-close).
EOT = b"\x04"
#: Pauses before asking again for a session the server refused (about 0.75 s in all).
CHANNEL_RETRY_S = (0.05, 0.1, 0.2, 0.4)


@dataclass
class _Host:
    """One open SSH connection and the slots for its channels."""

    fingerprint: tuple[Any, ...]
    credential: str | None
    conn: asyncssh.SSHClientConnection
    slots: asyncio.Semaphore
    pty: bool


def _fingerprint(connection: ConnectionRead) -> tuple[Any, ...]:
    """What, if changed in the inventory, means the open connection must be replaced."""
    return (
        connection.host,
        connection.port,
        connection.credential,
        connection.host_key,
        connection.options.get("max_sessions"),
        connection.options.get("pty"),
    )


def _exit_code(process: asyncssh.SSHClientProcess[bytes]) -> int | None:
    """The exit status, or 128 + the signal number as a shell reports a killed command."""
    if process.exit_signal is not None:
        name = process.exit_signal[0]
        with contextlib.suppress(KeyError):
            return 128 + signal.Signals[f"SIG{name}"].value
        return None
    return process.exit_status


class SshConnector:
    name: ClassVar[str] = "ssh"

    def __init__(self, settings: RunbookSettings, unlock: Unlock) -> None:
        self._settings = settings
        self._unlock = unlock
        self._hosts: dict[str, _Host] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _connect(self, connection: ConnectionRead) -> asyncssh.SSHClientConnection:
        """A new, authenticated connection whose server key matched ``host_key``."""
        name, target = connection.name, connection.target
        if not connection.host_key:
            raise HostKeyError(
                f"connection {name!r} has no host_key: SSH never connects to a host it "
                f"cannot verify; add the server's known_hosts line (ssh-keyscan -p "
                f"{connection.port} {connection.host})",
                connection=name,
            )
        credential = await self._unlock(connection)
        if credential is None:
            raise MissingCredential(
                f"connection {name!r} names no credential: SSH needs an ssh_key or password one",
                connection=name,
            )
        auth: dict[str, Any]
        if credential.kind == "ssh_key":
            key = asyncssh.import_private_key(credential.secret.reveal())
            auth = {"client_keys": [key], "password": None, "preferred_auth": ("publickey",)}
        elif credential.kind == "password":
            auth = {
                "client_keys": None,
                "password": credential.secret.reveal(),
                "preferred_auth": ("password", "keyboard-interactive"),
            }
        else:
            raise CredentialUnusable(
                f"credential {credential.name!r} is a {credential.kind}: SSH needs an ssh_key "
                "or password credential",
                connection=name,
            )
        settings = self._settings
        try:
            conn = await asyncssh.connect(
                connection.host,
                connection.port,
                username=credential.username,
                known_hosts=asyncssh.import_known_hosts(connection.host_key),
                config=None,
                agent_path=None,
                gss_host=None,
                connect_timeout=settings.ssh_connect_timeout_s,
                login_timeout=settings.ssh_login_timeout_s,
                keepalive_interval=settings.ssh_keepalive_interval_s,
                keepalive_count_max=3,
                **auth,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(
                f"{target}: the server's host key does not match the connection's host_key "
                f"({exc.reason})",
                connection=name,
            ) from None
        except asyncssh.PermissionDenied:
            raise AuthError(
                f"{target}: the server refused {credential.username!r} with credential "
                f"{credential.name!r} ({credential.kind})",
                connection=name,
            ) from None
        except asyncssh.DisconnectError as exc:
            raise ProtocolError(f"{target}: {exc.reason}", connection=name) from None
        except OSError as exc:
            raise os_error(exc, target, name) from None
        log.info(
            "ssh connected",
            connection=name,
            target=target,
            username=credential.username,
            credential=credential.name,
        )
        return conn

    async def _host(self, connection: ConnectionRead) -> _Host:
        """The connection's open SSH connection, (re)connecting when needed."""
        name = connection.name
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            host = self._hosts.get(name)
            stale = host is not None and (
                host.fingerprint != _fingerprint(connection) or host.conn.is_closed()
            )
            if host is not None and stale:
                await self._drop(name)
                host = None
            if host is None:
                conn = await self._connect(connection)
                max_sessions = connection.options.get(
                    "max_sessions", self._settings.ssh_max_sessions
                )
                host = _Host(
                    fingerprint=_fingerprint(connection),
                    credential=connection.credential,
                    conn=conn,
                    slots=asyncio.Semaphore(max_sessions),
                    pty=connection.options.get("pty", True),
                )
                self._hosts[name] = host
            return host

    async def _drop(self, name: str) -> None:
        host = self._hosts.pop(name, None)
        if host is not None:
            host.conn.close()
            await host.conn.wait_closed()

    async def run(
        self, connection: ConnectionRead | None, action: Action, *, timeout_s: float
    ) -> StepOutput:
        if connection is None or not isinstance(action, SshCommand):
            raise InvalidAction("an SSH step needs an ssh connection and a command")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        started = time.monotonic()
        name = connection.name
        # Opening a channel runs nothing on the host, so two failures there are retried: a
        # reused connection the server dropped (reconnect once), and a session refused while
        # the server is still releasing one that just closed (OpenSSH frees it a moment after
        # the client sees the close; a persistent refusal means max_sessions is too high).
        reconnected = False
        refusals = 0
        refused_message = ""
        while True:
            if refusals:
                pause = CHANNEL_RETRY_S[refusals - 1]
                if loop.time() + pause >= deadline:
                    raise ChannelError(refused_message, connection=name)
                await asyncio.sleep(pause)
            try:
                async with asyncio.timeout_at(deadline):
                    host = await self._host(connection)
                    await host.slots.acquire()
            except TimeoutError:
                raise ConnectorTimeout(
                    f"{connection.target}: no SSH session free within {timeout_s:g}s",
                    connection=name,
                ) from None
            try:
                try:
                    process = await self._open(host, action.command)
                except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError) as exc:
                    if host.conn.is_closed():
                        if reconnected:
                            raise ProtocolError(
                                f"{connection.target}: the connection was lost", connection=name
                            ) from None
                        reconnected = True
                        log.info("ssh connection lost; reconnecting", connection=name)
                        continue
                    refused_message = (
                        f"{connection.target}: the server refused a session "
                        f"({getattr(exc, 'reason', exc)}); is options.max_sessions above the "
                        "server's MaxSessions?"
                    )
                    refusals += 1
                    if refusals > len(CHANNEL_RETRY_S):
                        raise ChannelError(refused_message, connection=name) from None
                    continue
                output = await self._collect(host, process, deadline)
                return StepOutput(**output, duration_s=time.monotonic() - started)
            finally:
                host.slots.release()

    async def _open(self, host: _Host, command: str) -> asyncssh.SSHClientProcess[bytes]:
        if host.pty:
            process = await host.conn.create_process(
                command,
                stdin=asyncssh.PIPE,
                stderr=asyncssh.STDOUT,
                encoding=None,
                term_type="dumb",
                term_size=PTY_SIZE,
                term_modes=PTY_MODES,
            )
            process.stdin.write(EOT)
        else:
            process = await host.conn.create_process(
                command, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT, encoding=None
            )
        return process

    async def _collect(
        self, host: _Host, process: asyncssh.SSHClientProcess[bytes], deadline: float
    ) -> dict[str, Any]:
        """Read the output until the command exits or the deadline; stop it on the deadline."""
        out = CappedOutput(self._settings.output_cap_bytes)
        try:
            async with asyncio.timeout_at(deadline):
                while chunk := await process.stdout.read(65536):
                    out.feed(chunk)
                await process.wait_closed()
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError) as exc:
            # The command may have run, or part of it: not transient. The next step reconnects.
            return {
                "output": out.text(),
                "error": f"protocol: the connection was lost while the command ran ({exc.reason})",
            }
        except TimeoutError:
            await self._stop(host, process)
            return {
                "output": out.text(),
                "timed_out": True,
                "error": "timeout: the command did not finish in time and was stopped",
            }
        finally:
            # Cancelled from outside (the session was stopped): the command must not outlive it.
            if not process.is_closing():
                await self._stop(host, process)
        return {"output": out.text(), "exit_code": _exit_code(process)}

    async def _stop(self, host: _Host, process: asyncssh.SSHClientProcess[bytes]) -> None:
        grace = self._settings.kill_grace_s
        if host.pty:
            process.close()  # the terminal closes; the kernel sends SIGHUP to the group
        else:
            process.send_signal("TERM")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait_closed(), grace)
            if not process.is_closing():
                process.send_signal("KILL")
                process.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait_closed(), grace)

    async def test(self, connection: ConnectionRead) -> str:
        conn = await self._connect(connection)
        try:
            version = conn.get_extra_info("server_version")
            username = conn.get_extra_info("username")
        finally:
            conn.close()
            await conn.wait_closed()
        return f"logged in to {connection.target} as {username} ({version})"

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        names = [
            name
            for name, host in self._hosts.items()
            if name == connection or (credential is not None and host.credential == credential)
        ]
        for name in names:
            await self._drop(name)

    async def aclose(self) -> None:
        for name in list(self._hosts):
            await self._drop(name)

"""HTTP steps: one ``httpx.AsyncClient`` per connection, requests relative to its base URL.

A token credential is sent as ``Authorization: Bearer``, a password one as basic auth
(httpx masks the header wherever it prints it). A step's path must stay on the connection's
host: an absolute URL is refused, so a ticket value can never redirect a credentialed request.
Redirects are not followed for the same reason. The status and the body (capped) are the
step's output; 502, 503 and 504 are transient.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx

from shared.logs import get_logger

from ..actions import Action, HttpRequest, StepOutput
from .base import (
    AuthError,
    CappedOutput,
    ConnectorError,
    ConnectorTimeout,
    CredentialUnusable,
    InvalidAction,
    ProtocolError,
    Unavailable,
    Unlock,
    find_os_error,
    os_error,
)

if TYPE_CHECKING:
    from ..inventory import ConnectionRead
    from ..settings import RunbookSettings

log = get_logger(__name__)

TRANSIENT_STATUS = frozenset({502, 503, 504})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _connect_error(exc: httpx.TransportError, connection: ConnectionRead) -> ConnectorError:
    """A failure before the request was sent: nothing happened on the target."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectorTimeout(
            f"{connection.target}: no connection in time", connection=connection.name
        )
    oserr = find_os_error(exc)
    if oserr is not None:
        return os_error(oserr, connection.target, connection.name)
    return ProtocolError(f"{connection.target}: {exc}", connection=connection.name)


class HttpConnector:
    name: ClassVar[str] = "http"

    def __init__(self, settings: RunbookSettings, unlock: Unlock) -> None:
        self._settings = settings
        self._unlock = unlock
        self._clients: dict[str, tuple[tuple[Any, ...], str | None, httpx.AsyncClient]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _new_client(self, connection: ConnectionRead) -> httpx.AsyncClient:
        assert connection.url is not None  # the inventory requires one
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        credential = await self._unlock(connection)
        if credential is not None:
            if credential.kind == "token":
                headers["Authorization"] = f"Bearer {credential.secret.reveal()}"
            elif credential.kind == "password" and credential.username:
                auth = httpx.BasicAuth(credential.username, credential.secret.reveal())
            else:
                raise CredentialUnusable(
                    f"credential {credential.name!r} is a {credential.kind}: an http "
                    "connection needs a token or a password credential",
                    connection=connection.name,
                )
        return httpx.AsyncClient(
            base_url=connection.url,
            headers=headers,
            auth=auth,
            follow_redirects=False,
            verify=connection.options.get("verify", True),
            timeout=httpx.Timeout(None, connect=self._settings.http_connect_timeout_s),
        )

    async def _client(self, connection: ConnectionRead) -> httpx.AsyncClient:
        fingerprint = (connection.url, connection.credential, connection.options.get("verify"))
        lock = self._locks.setdefault(connection.name, asyncio.Lock())
        async with lock:
            cached = self._clients.get(connection.name)
            if cached is not None and cached[0] == fingerprint:
                return cached[2]
            if cached is not None:
                await self._drop(connection.name)
            client = await self._new_client(connection)
            self._clients[connection.name] = (fingerprint, connection.credential, client)
            return client

    async def run(
        self, connection: ConnectionRead | None, action: Action, *, timeout_s: float
    ) -> StepOutput:
        if connection is None or not isinstance(action, HttpRequest):
            raise InvalidAction("an HTTP step needs an http connection and a request")
        method = action.method.upper()
        if method not in METHODS:
            raise InvalidAction(
                f"unknown HTTP method {action.method!r}", connection=connection.name
            )
        parts = urlsplit(action.path)
        if parts.scheme or parts.netloc:
            raise InvalidAction(
                f"the path {action.path!r} leaves the connection's base URL; give a path",
                connection=connection.name,
            )
        started = time.monotonic()
        client = await self._client(connection)
        out = CappedOutput(self._settings.output_cap_bytes)
        cut = False
        request = client.build_request(
            method,
            action.path,
            json=action.body if action.body is not None else None,
            timeout=httpx.Timeout(timeout_s, connect=self._settings.http_connect_timeout_s),
        )
        try:
            async with asyncio.timeout(timeout_s):
                response = await client.send(request, stream=True)
                try:
                    async for chunk in response.aiter_bytes():
                        out.feed(chunk)
                        if out.full:
                            # Stop reading: an endless body must not hold the step.
                            cut = True
                            break
                finally:
                    await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _connect_error(exc, connection) from None
        except (TimeoutError, httpx.TimeoutException):
            return StepOutput(
                output=out.text(cut=cut),
                timed_out=True,
                error=f"timeout: no complete answer within {timeout_s:g}s",
                duration_s=time.monotonic() - started,
            )
        except httpx.TransportError as exc:
            # The request may have reached the server: not safe to call transient.
            return StepOutput(
                output=out.text(cut=cut),
                error=f"protocol: {connection.target}: {exc!r}",
                duration_s=time.monotonic() - started,
            )
        return StepOutput(
            output=out.text(cut=cut),
            status=response.status_code,
            transient=response.status_code in TRANSIENT_STATUS,
            duration_s=time.monotonic() - started,
        )

    async def test(self, connection: ConnectionRead) -> str:
        async with await self._new_client(connection) as client:
            try:
                response = await client.get("", timeout=self._settings.http_connect_timeout_s)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise _connect_error(exc, connection) from None
            except httpx.TimeoutException:
                raise ConnectorTimeout(
                    f"{connection.target}: no answer in time", connection=connection.name
                ) from None
        status = response.status_code
        if status in (401, 403):
            raise AuthError(
                f"{connection.target}: HTTP {status} with credential {connection.credential!r}",
                connection=connection.name,
            )
        if status >= 500:
            raise Unavailable(f"{connection.target}: HTTP {status}", connection=connection.name)
        return f"{connection.target} answered HTTP {status}"

    async def _drop(self, name: str) -> None:
        cached = self._clients.pop(name, None)
        if cached is not None:
            await cached[2].aclose()

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        names = [
            name
            for name, (_, used, _) in self._clients.items()
            if name == connection or (credential is not None and used == credential)
        ]
        for name in names:
            await self._drop(name)

    async def aclose(self) -> None:
        for name in list(self._clients):
            await self._drop(name)

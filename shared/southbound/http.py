"""The HTTP side both clients share: one ``httpx`` client, a login-protected call retried once
on an expired token, and the failure answers turned into the errors docs/southbound.md's
"Failure answers" table names.

Also the readers of answer values (numbers sent as strings, RESTCONF lists or their
containers), so that no fold trusts a controller to send a well-formed document.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NoReturn

import httpx
import orjson
from pydantic import SecretStr

from shared.errors import SouthboundError, SouthboundNotFound

YANG_JSON = "application/yang-data+json"


class HttpClient:
    """A login-protected southbound API: the bearer token is the subclass's (``_bearer``), and
    an ``expired_status`` answer gets a new one (``_renew``) and the call retried once."""

    expired_status: ClassVar[int]
    """What the API answers a call whose token it no longer accepts."""

    def __init__(
        self,
        name: str,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None,
        timeout_s: float,
        *,
        username: str,
        password: str | SecretStr,
    ):
        self.name = name
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": f"{YANG_JSON}, application/json"},
            timeout=timeout_s,
            transport=transport,
        )
        self._username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _credentials(self) -> dict[str, str]:
        """The login form both controllers take."""
        return {"username": self._username, "password": self._password.get_secret_value()}

    async def _bearer(self) -> str:
        """The token to send (logging in when there is none, or it is due for renewal)."""
        raise NotImplementedError

    async def _renew(self, stale: str) -> str:
        """A new token after the API refused ``stale``, unless another caller already got one."""
        raise NotImplementedError

    async def _authorized(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """One call with the bearer; the answer's JSON, or the error the answer means.

        ``what`` names the call in errors (never a path that holds a credential).
        """
        token = await self._bearer()
        response = await self._send(method, path, what, **_with_bearer(kwargs, token))
        if response.status_code == self.expired_status:
            # Any such answer is taken as an expired token: the retry is bounded to one, so a
            # real refusal still surfaces.
            token = await self._renew(token)
            response = await self._send(method, path, what, **_with_bearer(kwargs, token))
        raise_for(self.name, method, what, response)
        return self._json(response, what)

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The exception text is httpx's own (no URL, so no ticket in it).
            raise SouthboundError(
                f"{self.name} {method} {what} unreachable: {type(exc).__name__}: {exc}",
                transient=True,
            ) from exc

    def _json(self, response: httpx.Response, what: str) -> Any:
        if not response.content:
            return None
        try:
            # orjson: the answers are large (a 500-node topology, thousands of services) and
            # decoding them was a fifth of an agent's CPU with the standard library's
            return orjson.loads(response.content)
        except ValueError as exc:
            raise SouthboundError(f"{self.name} {what}: the answer is not JSON") from exc


def _with_bearer(kwargs: dict[str, Any], token: str) -> dict[str, Any]:
    headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    return {**kwargs, "headers": headers}


# --- failure answers ------------------------------------------------------------------------


def restconf_message(response: httpx.Response) -> str:
    """The ``error-message`` (or PCA ``detail``) of an error answer, else its text, shortened."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    errors: Any = None
    if isinstance(data, dict):
        errors = data.get("ietf-restconf:errors") or data.get("errors") or {}
        if isinstance(errors, dict):
            errors = errors.get("error")
    if isinstance(errors, list):
        messages = [
            str(e.get("error-message") or e.get("detail") or e.get("error-tag"))
            for e in errors
            if isinstance(e, dict)
        ]
        if messages:
            return "; ".join(messages)[:300]
    return response.text[:300]


def raise_for(name: str, method: str, what: str, response: httpx.Response) -> None:
    """Turn a failure answer into the error docs/southbound.md's table says it is.

    ``what`` names the call without credentials (never the SSO path, which holds the TGT).
    """
    status = response.status_code
    if status < 400:
        return
    where = f"{name} {method} {what}"
    if status == 404 or (status == 409 and "data-missing" in response.text):
        raise SouthboundNotFound(f"{where}: not found ({restconf_message(response)})")
    if status == 500 and not response.content:
        # CNC's answer to bad input: retrying the same body cannot help.
        raise SouthboundError(f"{where}: HTTP 500 with an empty body (input refused)")
    if status in (429, 500, 502, 503, 504):
        raise SouthboundError(f"{where}: HTTP {status}", transient=True)
    raise SouthboundError(f"{where}: HTTP {status}: {restconf_message(response)}")


def raise_login(name: str, response: httpx.Response, detail: str = "") -> NoReturn:
    """A login answer that grants nothing: overload is transient, anything else a refusal.
    ``detail`` is appended to the refusal (never a ticket)."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise SouthboundError(f"{name} login: HTTP {status}", transient=True)
    raise SouthboundError(f"{name} login refused: HTTP {status}{detail}")


# --- answer values --------------------------------------------------------------------------


def as_float(value: Any) -> float | None:
    """A number CNC/PCA may send as a string; None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def restconf_list(data: Any, *keys: str) -> list[dict[str, Any]]:
    """The list under the first of ``keys`` present (a RESTCONF list or its container)."""
    if not isinstance(data, dict):
        return []
    for key in keys:
        value = data.get(key)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
        if isinstance(value, dict):
            inner = value.get("vpn-service") or value.get("policy") or value.get("tunnel")
            if isinstance(inner, list):
                return [v for v in inner if isinstance(v, dict)]
    return []

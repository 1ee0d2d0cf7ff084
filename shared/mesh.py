"""The one A2A client of a process: pooled, authenticated, traced, retried where it is safe.

Every call carries an idempotency key that stays the same across retries, so a peer that
did the work before the connection broke answers the retry from its record instead of
doing it twice.

``call(CONTRACT, request)`` is the typed way in: the contract (``shared.contracts``) names the
peer and task type, and the answer comes back validated into the contract's response model.
A failure is a ``MeshError`` whose attributes say what happened (``PeerError.code`` is the
peer's own error code), so nobody parses exception text. ``send`` is the untyped transport
underneath, for the outbox (which stores rows, not contracts).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import uuid
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from shared.contracts import Contract, Req, Resp
from shared.errors import MeshUnavailable, PeerAnswerInvalid, PeerError
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 503, 504})
"""Worth a retry. Not 502: an agent answers 502 when its southbound refused for good."""


def current_trace_id() -> str:
    """The trace id of the request being handled, or a new one for work that starts here."""
    trace = trace_id_var.get()
    if trace is None:
        trace = uuid.uuid4().hex
        trace_id_var.set(trace)
    return trace


def backoff_delay(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class MeshClient:
    """Sends tasks to peer agents over ``POST /a2a/tasks``."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_agent: str,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base: float = 0.2,
    ) -> None:
        self.settings = settings
        self.source_agent = source_agent
        self.backoff_base = backoff_base
        headers = {"User-Agent": f"cxm-{source_agent}"}
        if settings.mesh_token:
            headers["Authorization"] = f"Bearer {settings.mesh_token}"
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.mesh_timeout_s, connect=3.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers=headers,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        contract: Contract[Req, Resp],
        request: Req,
        *,
        incident_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Resp:
        """Run ``contract`` on its agent and return the answer as ``contract.response``.

        Raises ``PeerError`` (the peer's ``code``, ``message``, ``status``) when the peer
        answers a final error, ``MeshUnavailable`` when it cannot be reached or keeps failing
        transiently after ``retries``, ``PeerAnswerInvalid`` when its answer breaks the
        contract. ``retries`` defaults to ``CXM_MESH_RETRIES``; ``timeout`` to the client's.
        """
        if not isinstance(request, contract.request):
            raise TypeError(
                f"{contract!r} takes a {contract.request.__name__}, not a {type(request).__name__}"
            )
        result = await self.send(
            contract.agent,
            contract.task_type,
            request,
            incident_id=incident_id,
            idempotency_key=idempotency_key,
            retries=retries,
            timeout=timeout,
        )
        try:
            return contract.response.model_validate(result)
        except ValidationError as exc:
            raise PeerAnswerInvalid(
                contract.agent,
                contract.task_type,
                contract.response.__name__,
                _summary(exc),
                result,
            ) from None

    async def send(
        self,
        agent: str,
        task_type: str,
        payload: BaseModel | dict[str, Any] | orjson.Fragment,
        *,
        incident_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run ``task_type`` on ``agent`` and return its raw result; the untyped layer under
        :meth:`call` (the outbox delivers stored rows with it, as JSON text in an
        ``orjson.Fragment``). Raises as :meth:`call` does."""
        body_payload = (
            payload.model_dump(mode="json", exclude_none=True)
            if isinstance(payload, BaseModel)
            else payload
        )
        envelope = {
            "task_type": task_type,
            "payload": body_payload,
            "source_agent": self.source_agent,
        }
        if incident_id:
            envelope["incident_id"] = incident_id
        key = idempotency_key or uuid.uuid4().hex
        headers = {
            "Idempotency-Key": key,
            "X-Trace-Id": current_trace_id(),
            "Content-Type": "application/json",
        }
        body = _json_body(envelope)
        url = f"{self.settings.url_of(agent)}/a2a/tasks"
        attempts = 1 + (self.settings.mesh_retries if retries is None else retries)
        last = "no attempt made"
        last_status: int | None = None
        last_code: str | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt - 1, self.backoff_base))
            try:
                response = await self.http.post(
                    url, content=body, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT
                )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "mesh call failed",
                    agent=agent,
                    task_type=task_type,
                    error=last,
                    attempt=attempt + 1,
                )
                continue
            if response.status_code in TRANSIENT_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                last_status, last_code = response.status_code, _code(_detail(response))
                log.warning(
                    "mesh call transient",
                    agent=agent,
                    task_type=task_type,
                    status=response.status_code,
                    attempt=attempt + 1,
                )
                continue
            if response.status_code >= 400:
                raise PeerError(agent, task_type, response.status_code, _detail(response))
            data = response.json()
            result: dict[str, Any] = data.get("result", {})
            return result
        raise MeshUnavailable(
            agent,
            task_type,
            f"gave up after {attempts} attempts: {last}",
            last_status,
            code=last_code,
        )


def _json_body(envelope: dict[str, Any]) -> bytes:
    """The request body: orjson (the outbox sends grouped audit events of hundreds of alerts;
    httpx's ``json=`` is the stdlib, several times slower), else what httpx would send (the
    stdlib, compact, NaN refused) for what orjson refuses (non-string keys, huge integers).
    orjson writes NaN as null where the stdlib refused it; the peer parses the same values."""
    try:
        return orjson.dumps(envelope)
    except TypeError:
        return json.dumps(
            envelope, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()


def _detail(response: httpx.Response) -> Any:
    """The error body's ``detail`` (``{code, message}`` from a CXM agent), else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return body.get("detail", body) if isinstance(body, dict) else body


def _code(detail: Any) -> str | None:
    code = detail.get("code") if isinstance(detail, dict) else None
    return code if isinstance(code, str) else None


def _summary(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: message; ...``, short enough for a log line."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'result'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")

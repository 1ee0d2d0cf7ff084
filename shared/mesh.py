"""The one A2A client of a process: pooled, authenticated, traced, retried where it is safe.

Every call carries an idempotency key that stays the same across retries, so a peer that
did the work before the connection broke answers the retry from its record instead of
doing it twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import uuid
from typing import Any

import httpx
from pydantic import BaseModel

from shared.errors import MeshRejected, MeshUnavailable
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

    async def send(
        self,
        agent: str,
        task_type: str,
        payload: BaseModel | dict[str, Any],
        *,
        incident_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run ``task_type`` on ``agent`` and return its result; raise a typed MeshError if not."""
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
        headers = {"Idempotency-Key": key, "X-Trace-Id": current_trace_id()}
        url = f"{self.settings.url_of(agent)}/a2a/tasks"
        attempts = 1 + (self.settings.mesh_retries if retries is None else retries)
        last = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt - 1, self.backoff_base))
            try:
                response = await self.http.post(
                    url, json=envelope, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT
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
                log.warning(
                    "mesh call transient",
                    agent=agent,
                    task_type=task_type,
                    status=response.status_code,
                    attempt=attempt + 1,
                )
                continue
            if response.status_code >= 400:
                raise MeshRejected(agent, task_type, _detail(response), response.status_code)
            data = response.json()
            result: dict[str, Any] = data.get("result", {})
            return result
        raise MeshUnavailable(agent, task_type, f"gave up after {attempts} attempts: {last}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return f"HTTP {response.status_code}: {detail}"

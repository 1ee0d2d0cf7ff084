"""The optional Elasticsearch sink: a durable backlog replayed through the bulk API.

Appends queue a search document in the same transaction as the event. This task sends the
backlog in order with ``POST /_bulk`` (``index`` actions whose ``_id`` is the event id, so a
replay overwrites rather than duplicates), deletes what Elasticsearch accepted, and backs off
while it is down. PostgreSQL stays the record; Elasticsearch only ever lags behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit.settings import AuditSettings
from services.audit.store import es_pending
from shared.logs import get_logger
from shared.mesh import backoff_delay

log = get_logger(__name__)


class SinkDown(Exception):
    """Elasticsearch could not take the batch; everything stays queued."""


class ElasticsearchSink:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: AuditSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        assert settings.elasticsearch_url is not None
        self.engine = engine
        self.settings = settings
        headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        auth: httpx.Auth | None = None
        if settings.elasticsearch_api_key is not None:
            headers["Authorization"] = f"ApiKey {settings.elasticsearch_api_key.get_secret_value()}"
        elif settings.elasticsearch_username and settings.elasticsearch_password is not None:
            auth = httpx.BasicAuth(
                settings.elasticsearch_username, settings.elasticsearch_password.get_secret_value()
            )
        self.http = httpx.AsyncClient(
            base_url=settings.elasticsearch_url.rstrip("/"),
            headers=headers,
            auth=auth,
            timeout=settings.elasticsearch_timeout_s,
            transport=transport,
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.indexed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-es-sink")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.http.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def pending(self) -> int:
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(es_pending)
                .where(es_pending.c.dead.is_(False))
            )
        return int(count or 0)

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.flush_once()
                self.failures = 0
                wait = 0.0 if sent >= self.settings.elasticsearch_batch else 5.0
            except SinkDown as exc:
                self.failures += 1
                self.last_error = str(exc)
                wait = max(
                    0.05,
                    backoff_delay(
                        self.failures, base=0.2, cap=self.settings.elasticsearch_retry_max_s
                    ),
                )
                log.warning("elasticsearch down; audit events stay queued", error=str(exc))
            except Exception:  # the sink must outlive a database hiccup; it is logged
                log.exception("elasticsearch sink pass failed")
                wait = 1.0
            if wait:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: see shared/outbox.py
                    async with asyncio.timeout(wait):
                        await self._wake.wait()

    async def flush_once(self) -> int:
        """Send one batch of the backlog; return how many documents Elasticsearch took."""
        t = es_pending
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.c.id, t.c.event_id, t.c.doc, t.c.attempts)
                    .where(t.c.dead.is_(False))
                    .order_by(t.c.id)
                    .limit(self.settings.elasticsearch_batch)
                )
            ).all()
        if not rows:
            return 0
        lines: list[str] = []
        for row in rows:
            action = {
                "index": {"_index": self.settings.elasticsearch_index, "_id": str(row.event_id)}
            }
            lines += [json.dumps(action), json.dumps(row.doc, ensure_ascii=False)]
        try:
            response = await self.http.post("/_bulk", content="\n".join(lines) + "\n")
        except httpx.HTTPError as exc:
            raise SinkDown(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 300:
            raise SinkDown(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            items: list[dict[str, Any]] = response.json().get("items", [])
        except ValueError:
            raise SinkDown("bulk answer is not JSON") from None
        if len(items) != len(rows):
            raise SinkDown(f"bulk answered {len(items)} items for {len(rows)} documents")
        done: list[int] = []
        dead: list[tuple[int, str]] = []
        for row, item in zip(rows, items, strict=True):
            result: dict[str, Any] = next(iter(item.values()), {})
            status = int(result.get("status", 500))
            if 200 <= status < 300:
                done.append(row.id)
            elif status == 429 or status >= 500:
                continue  # retried with the next pass
            else:
                dead.append((row.id, json.dumps(result.get("error"))[:2000]))
        async with self.engine.begin() as conn:
            if done:
                await conn.execute(t.delete().where(t.c.id.in_(done)))
            for row_id, error in dead:
                await conn.execute(
                    t.update().where(t.c.id == row_id).values(dead=True, last_error=error)
                )
        for row_id, error in dead:
            log.error("elasticsearch refused an audit document", pending_id=row_id, error=error)
        self.indexed += len(done)
        if len(done) + len(dead) < len(rows):
            raise SinkDown("some documents were throttled or failed transiently")
        return len(done)

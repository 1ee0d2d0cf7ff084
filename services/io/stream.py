"""The live stream: an in-process broadcaster every task handler publishes to, served as SSE.

The console keeps one ``GET /api/v1/stream`` open all day. Each message carries a sequence
number as its SSE id; a console that reconnects sends ``Last-Event-ID`` and gets what it
missed from a bounded history instead of reloading everything. A subscriber too slow to keep
up is dropped (its queue is bounded) and reconnects; one slow tab never holds memory hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse

from services.io.auth import ViewerDep


@dataclass(frozen=True)
class Message:
    seq: int
    kind: str
    data: dict[str, Any]


_CLOSED = Message(-1, "closed", {})


class Broadcaster:
    """Fan-out of console events to every open stream, with a short replay history."""

    def __init__(self, *, history: int = 500, queue_size: int = 1000) -> None:
        self._seq = 0
        self._history: deque[Message] = deque(maxlen=max(history, 1))
        self._subscribers: set[asyncio.Queue[Message]] = set()
        self._queue_size = queue_size
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Queue ``data`` for every subscriber; never blocks the handler that publishes."""
        self._seq += 1
        message = Message(self._seq, kind, data)
        self._history.append(message)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)  # its stream notices and ends
        return self._seq

    def subscribe(self, last_id: int | None = None) -> asyncio.Queue[Message]:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._queue_size)
        if last_id is not None:
            for message in self._history:
                if message.seq > last_id and not queue.full():
                    queue.put_nowait(message)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Message]) -> None:
        self._subscribers.discard(queue)

    def is_subscribed(self, queue: asyncio.Queue[Message]) -> bool:
        return queue in self._subscribers

    def close(self) -> None:
        """Tell every open stream to end, so shutdown does not wait on them."""
        self.closed = True
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_CLOSED)
        self._subscribers.clear()


router = APIRouter(prefix="/api/v1", tags=["stream"])


@router.get("/stream")
async def stream(
    request: Request,
    _user: ViewerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events: ``ticket`` (the ticket's new view and the task that changed it),
    ``approval`` (an approval's new state) and ``hello`` on connect."""
    broadcaster: Broadcaster = request.app.state.broadcaster
    try:
        last = int(last_event_id) if last_event_id else None
    except ValueError:
        last = None
    queue = broadcaster.subscribe(last)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "hello", "data": json.dumps({"resumed": last is not None})}
            while not broadcaster.closed:
                try:
                    async with asyncio.timeout(1.0):  # not wait_for: see shared/outbox.py
                        message = await queue.get()
                except TimeoutError:
                    if not broadcaster.is_subscribed(queue) and queue.empty():
                        return  # dropped as too slow: end, the console reconnects
                    continue
                if message is _CLOSED:
                    return
                yield {
                    "event": message.kind,
                    "id": str(message.seq),
                    "data": json.dumps(message.data, default=str),
                }
        finally:
            broadcaster.unsubscribe(queue)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})

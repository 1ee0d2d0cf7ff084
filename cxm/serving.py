"""The HTTP protocol the agents are served with: uvicorn's httptools protocol, each
connection's writes of one event-loop turn sent together.

Why: uvicorn writes a response's status line and headers, then its body, each with its own
``transport.write``, so a small response is two ``send`` calls and, on loopback and on a
busy host alike, two TCP segments the peer wakes up for. Under single-alert POSTs those two
writes were about 15 % of the correlator's samples. Deferred to the end of the current turn
of the loop (``call_soon``), the head and the body leave in one; a response is never held
longer than that turn, and a close sends what is pending first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _TurnTransport:
    """A transport whose writes made in one turn of the event loop leave in one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, lines: list[bytes]) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class TurnHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`_TurnTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_TurnTransport(transport, self.loop))  # type: ignore[arg-type]

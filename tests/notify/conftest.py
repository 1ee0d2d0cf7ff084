"""Fakes for the notify tests: a Webex API server in a thread (webexteamssdk uses requests),
a real SMTP server (aiosmtpd), a recording mesh transport standing in for audit/io/orchestrator.

ServiceNow is faked at the HTTP layer with respx in the tests themselves.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.support import free_port, unbatched

WEBEX_TOKEN = "webex-secret-token"
WEBEX_ROOM = "Y2lzY29zcGFyazovL3VzL1JPT00vYmJjZWIxYWQtNDNmMS0zYjU4LTkxNDctZjE0YmIwYzRkMTU0"


@dataclass
class FakeWebex:
    """``POST /v1/messages`` as documented (developer.webex.com, Messages → Create a Message)."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def webex() -> Iterator[FakeWebex]:
    port = free_port()
    fake = FakeWebex(url=f"http://127.0.0.1:{port}/v1/")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.auth_headers.append(self.headers.get("Authorization", ""))
                if self.path != "/v1/messages":
                    return self._send(404, {"message": "not found"})
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    return self._send(
                        fake.fail_status,
                        {"message": "Service Unavailable", "trackingId": "ROUTER_5F8A"},
                    )
                n = len(fake.messages) + 1
                msg = {
                    "id": f"Y2lzY29zcGFyazovL3VzL01FU1NBR0UvOTJkYjNiZTAtNDNi{n:04d}",
                    "roomId": body["roomId"],
                    "roomType": "group",
                    "markdown": body.get("markdown"),
                    "text": body.get("markdown"),
                    "personId": "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRk",
                    "personEmail": "cxm-bot@webex.bot",
                    "created": "2026-03-01T14:26:16.000Z",
                }
                fake.messages.append(msg)
            self._send(200, msg)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("TrackingID", "ROUTER_5F8A")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    """A real SMTP server (aiosmtpd); ``stop`` and ``start`` take it down and back on its port."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self.controller = Controller(self, hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on a free loopback port."""
    box = Mailbox(host="127.0.0.1", port=free_port())
    box.start()
    try:
        yield box
    finally:
        box.stop()


@dataclass
class Peers:
    """What the notify agent sent to its mesh peers (audit, io, orchestrator)."""

    tasks: list[dict[str, Any]] = field(default_factory=list)

    def of(self, agent: str, task_type: str | None = None) -> list[dict[str, Any]]:
        return [
            t
            for t in self.tasks
            if t["agent"] == agent and (task_type is None or t["task_type"] == task_type)
        ]

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            port = request.url.port
            agent = {8000: "orchestrator", 8008: "audit", 8009: "io"}.get(port or 0, str(port))
            for task, key in unbatched(body, request.headers.get("idempotency-key")):
                self.tasks.append(
                    {
                        "agent": agent,
                        "task_type": task["task_type"],
                        "payload": task["payload"],
                        "key": key,
                    }
                )
            return httpx.Response(200, json={"task_id": "t", "task_type": body["task_type"]})

        return httpx.MockTransport(handler)


@pytest.fixture
def peers() -> Peers:
    return Peers()

"""The mesh client retries only what is transient; the outbox loses nothing while a peer is down."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from shared.contracts import AUDIT_EVENT, TICKET_CLOSED
from shared.db import make_engine
from shared.errors import MeshUnavailable, PeerError
from shared.mesh import MeshClient
from shared.models import AuditEvent, TicketClosed
from shared.outbox import Outbox
from shared.settings import Settings, load_settings
from tests.support import wait_for


def client_with(handler: httpx.MockTransport, settings: Settings) -> MeshClient:
    return MeshClient(settings, source_agent="test", transport=handler, backoff_base=0.001)


async def test_transient_failures_are_retried_with_the_same_key(settings: Settings) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {"ok": 1}})

    mesh = client_with(httpx.MockTransport(handler), settings)
    assert await mesh.send("io", "new_ticket", {"a": 1}) == {"ok": 1}
    await mesh.aclose()
    assert len(seen) == 3
    keys = {r.headers["idempotency-key"] for r in seen}
    traces = {r.headers["x-trace-id"] for r in seen}
    assert len(keys) == 1 and len(traces) == 1
    assert seen[0].headers["authorization"] == "Bearer test-mesh-token"
    assert json.loads(seen[0].content)["source_agent"] == "test"
    assert str(seen[0].url) == "http://127.0.0.1:8009/a2a/tasks"


async def test_a_4xx_is_final_and_not_retried(settings: Settings) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json={"detail": [{"field": "payload.x"}]})

    mesh = client_with(httpx.MockTransport(handler), settings)
    with pytest.raises(PeerError, match=r"payload\.x") as info:
        await mesh.send("io", "new_ticket", {})
    await mesh.aclose()
    assert calls == 1
    assert info.value.status == 422
    assert info.value.code is None  # no {code, message}: the field errors are the detail
    assert info.value.detail == [{"field": "payload.x"}]


async def test_an_unreachable_peer_gives_up_with_a_typed_error(settings: Settings) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    mesh = client_with(httpx.MockTransport(handler), settings)
    with pytest.raises(MeshUnavailable, match="gave up after 4 attempts"):
        await mesh.send("audit", "audit_event", {})
    await mesh.aclose()
    assert calls == 1 + settings.mesh_retries


async def test_outbox_delivers_in_order_after_the_peer_comes_back(
    tmp_path: Path, settings: Settings
) -> None:
    up = False
    received: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        n = json.loads(request.content)["payload"]["details"]["n"]
        if n == 3:
            return httpx.Response(422, json={"detail": "never acceptable"})
        received.append(n)
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sender.db'}")
    mesh = client_with(httpx.MockTransport(handler), settings)
    outbox = Outbox(engine, mesh, max_backoff_s=0.05)
    await outbox.start()
    events = [AuditEvent(event_type="x", source_agent="test", details={"n": n}) for n in range(6)]
    for n, event in enumerate(events):
        assert await outbox.put(AUDIT_EVENT, event, key=f"k{n}")
    assert not await outbox.put(AUDIT_EVENT, events[0], key="k0")  # same key: no-op
    await wait_for(lambda: outbox.pending(), timeout=2)  # still pending while down
    up = True
    await outbox.flush(timeout=10)
    assert received == [0, 1, 2, 4, 5]  # in order; the refused one is dropped, not blocking
    await outbox.stop()
    await mesh.aclose()
    await engine.dispose()


async def test_a_peer_down_with_a_backlog_does_not_hold_up_the_others(
    tmp_path: Path, settings: Settings
) -> None:
    """Issue 15: with audit stopped and more than a batch of its events queued, IO heard
    nothing until audit came back (one batch over all peers held only audit's rows)."""
    reached: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8008:  # audit: stopped
            raise httpx.ConnectError("down", request=request)
        reached.append(json.loads(request.content)["payload"]["incident_id"])
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sender.db'}")
    mesh = client_with(httpx.MockTransport(handler), settings)
    outbox = Outbox(engine, mesh, batch=5, max_backoff_s=0.05)
    await outbox.start()
    for n in range(12):
        event = AuditEvent(event_type="x", source_agent="test", details={"n": n})
        await outbox.put(AUDIT_EVENT, event, key=f"audit-{n}")
    for n in range(3):
        ticket = TicketClosed(
            incident_id=f"INC-2026-000{n + 1}",
            resolution="resolved",
            duration_seconds=1.0,
            summary="closed",
        )
        await outbox.put(TICKET_CLOSED, ticket, key=f"io-{n}")
    await wait_for(lambda: len(reached) == 3, timeout=10)
    assert reached == ["INC-2026-0001", "INC-2026-0002", "INC-2026-0003"]  # in order
    assert await outbox.pending() == 12  # audit's wait for it, none lost
    await outbox.stop()
    await mesh.aclose()
    await engine.dispose()


def test_per_agent_overrides_and_seed_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_TIME_SCALE", "0.5")
    monkeypatch.setenv("CXM_AUDIT__DATABASE_URL", "postgresql://u@db/audit")
    monkeypatch.setenv("CXM_AUDIT__TIME_SCALE", "0.1")
    monkeypatch.setenv("IO_AGENT_URL", "http://io-agent:8009")
    audit = load_settings("audit")
    other = load_settings("path")
    assert audit.db_url("audit") == "postgresql+asyncpg://u@db/audit"
    assert audit.time_scale == 0.1 and other.time_scale == 0.5
    assert other.db_url("path").startswith("sqlite+aiosqlite:///")
    assert audit.port == 8008 and other.port == 8003
    assert other.url_of("io") == "http://io-agent:8009"
    assert other.scaled(30) == 15

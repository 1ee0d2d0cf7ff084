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
    tasks: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        body = json.loads(request.content)
        tasks.append(body["task_type"])
        if body["task_type"] == "audit_events":  # the backlog, in one request
            ns = [item["payload"]["details"]["n"] for item in body["payload"]["items"]]
        else:
            ns = [body["payload"]["details"]["n"]]
        if 3 in ns:  # a batch holding the bad one is refused whole
            return httpx.Response(422, json={"detail": "never acceptable"})
        received.extend(ns)
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
    # the backlog went as one batch, refused for the bad one, then row by row. A send of k0
    # begun before the others were queued may still be retrying inside the mesh client when
    # the peer comes back: it lands alone, ahead of the batch.
    first = tasks.index("audit_events")
    assert tasks[:first] in ([], ["audit_event"])
    assert tasks[first + 1 :] == ["audit_event"] * (6 - first)
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


async def test_a_backlog_goes_to_a_batch_task_in_order_once(
    tmp_path: Path, settings: Settings
) -> None:
    """Issue 16: a peer's due rows of a task type with a batch contract go in one request,
    each with its own key, oldest first; a lone due row still goes as its own task."""
    up = False
    seen: list[tuple[str, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        body = json.loads(request.content)
        if body["task_type"] == "audit_events":
            keys = [item["key"] for item in body["payload"]["items"]]
        else:
            keys = [request.headers["idempotency-key"]]
        seen.append((body["task_type"], keys))
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sender.db'}")
    mesh = client_with(httpx.MockTransport(handler), settings)
    outbox = Outbox(engine, mesh, batch=4, max_backoff_s=0.05)
    await outbox.start()
    for n in range(6):
        event = AuditEvent(event_type="x", source_agent="test", details={"n": n})
        await outbox.put(AUDIT_EVENT, event, key=f"a{n}")
    ticket = TicketClosed(
        incident_id="INC-2026-0001", resolution="resolved", duration_seconds=1.0, summary="x"
    )
    await outbox.put(TICKET_CLOSED, ticket, key="t0")
    await outbox.put(AUDIT_EVENT, AuditEvent(event_type="x", source_agent="test"), key="a6")
    await wait_for(lambda: outbox.pending(), timeout=2)
    up = True
    await outbox.flush(timeout=10)
    await outbox.stop()
    await mesh.aclose()
    await engine.dispose()
    audit = [(task, keys) for task, keys in seen if task.startswith("audit")]
    assert audit == [  # at most ``batch`` per request, in order (per peer: IO's row between
        # a5 and a6 does not split audit's run)
        ("audit_events", ["a0", "a1", "a2", "a3"]),
        ("audit_events", ["a4", "a5", "a6"]),
    ]
    assert ("ticket_closed", ["t0"]) in seen
    seen.clear()
    outbox = Outbox(engine, mesh_two := client_with(httpx.MockTransport(handler), settings))
    await outbox.start()
    await outbox.put(AUDIT_EVENT, AuditEvent(event_type="x", source_agent="test"), key="a7")
    await outbox.flush(timeout=10)
    await outbox.stop()
    await mesh_two.aclose()
    await engine.dispose()
    assert seen == [("audit_event", ["a7"])]


async def test_a_peer_without_the_batch_task_gets_the_rows_one_by_one(
    tmp_path: Path, settings: Settings
) -> None:
    """An older audit answers 400 (unknown task type): nothing is lost or reordered, and the
    outbox stops trying batches on it."""
    up = False
    seen: list[str] = []
    received: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        body = json.loads(request.content)
        seen.append(body["task_type"])
        if body["task_type"] != "audit_event":
            return httpx.Response(400, json={"detail": "unknown task_type"})
        received.append(body["payload"]["details"]["n"])
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sender.db'}")
    mesh = client_with(httpx.MockTransport(handler), settings)
    outbox = Outbox(engine, mesh, max_backoff_s=0.05)
    await outbox.start()
    for n in range(3):
        event = AuditEvent(event_type="x", source_agent="test", details={"n": n})
        await outbox.put(AUDIT_EVENT, event, key=f"k{n}")
    await wait_for(lambda: outbox.pending(), timeout=2)
    up = True
    await outbox.flush(timeout=10)
    up = False
    for n in range(3, 5):
        event = AuditEvent(event_type="x", source_agent="test", details={"n": n})
        await outbox.put(AUDIT_EVENT, event, key=f"k{n}")
    await wait_for(lambda: outbox.pending(), timeout=2)
    up = True
    await outbox.flush(timeout=10)
    await outbox.stop()
    await mesh.aclose()
    await engine.dispose()
    assert received == [0, 1, 2, 3, 4]
    # one batch tried (unless a pass begun while the peer was down sent a row on its own
    # just as it came back), then only single tasks
    assert seen.count("audit_events") == 1 and seen[-4:] == ["audit_event"] * 4


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


async def test_the_body_is_the_json_httpx_would_send_orjson_or_not(settings: Settings) -> None:
    """Mesh bodies are written with orjson (the outbox's grouped audit events are long): the
    peer reads the same values as from httpx's ``json=``, and what orjson refuses (an integer
    key, an integer past 64 bits) still goes, through the stdlib, as httpx sent it."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        assert request.headers["content-type"] == "application/json"
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    mesh = client_with(httpx.MockTransport(handler), settings)
    plain = {"alerts": [{"id": "a1", "value": 92.5, "summary": "délai ✓", "labels": {}}]}
    odd = {"by_code": {404: "x"}, "big": 2**70}
    await mesh.send("audit", "audit_event", plain)
    await mesh.send("audit", "audit_event", odd)
    await mesh.aclose()
    sent = [json.loads(b) for b in bodies]
    assert sent[0]["payload"] == plain
    assert sent[1]["payload"] == {"by_code": {"404": "x"}, "big": 2**70}
    envelope = {"task_type": "audit_event", "payload": plain, "source_agent": "test"}
    assert bodies[0] == httpx.Request("POST", "http://x", json=envelope).content


async def test_the_outbox_sends_each_payload_as_it_was_stored(
    tmp_path: Path, settings: Settings
) -> None:
    """The deliverer puts a row's stored JSON text into the request as it is (not decoded and
    encoded again): alone or in a batch, the peer reads exactly the values that were queued,
    an integer past 64 bits and non-ASCII text included."""
    payloads: list[dict[str, object]] = []
    tasks: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        tasks.append(body["task_type"])
        if body["task_type"] == "audit_events":
            payloads.extend(item["payload"] for item in body["payload"]["items"])
        else:
            payloads.append(body["payload"])
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": {}})

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sender.db'}")
    mesh = client_with(httpx.MockTransport(handler), settings)
    outbox = Outbox(engine, mesh, max_backoff_s=0.05)
    details = {"bytes": 2**70, "ratio": 0.1 + 0.2, "why": "délai ✓", "none": None}
    events = [
        AuditEvent(event_type="x", source_agent="test", details={**details, "n": n})
        for n in range(3)
    ]
    await outbox.start()  # its table
    await outbox.stop()
    for n, event in enumerate(events):  # queued while no deliverer runs: then one batch
        assert await outbox.put(AUDIT_EVENT, event, key=f"k{n}")
    await outbox.start()
    await outbox.flush(timeout=10)
    assert await outbox.put(AUDIT_EVENT, events[0], key="alone")
    await outbox.flush(timeout=10)
    await outbox.stop()
    await mesh.aclose()
    await engine.dispose()
    expected = [e.model_dump(mode="json", exclude_none=True) for e in [*events, events[0]]]
    assert tasks == ["audit_events", "audit_event"]
    assert payloads == expected
    assert payloads[0]["details"]["bytes"] == 2**70  # type: ignore[index]

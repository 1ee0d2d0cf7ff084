"""The /a2a/tasks contract: 4xx that name the problem and change nothing, auth, idempotency."""

from __future__ import annotations

import httpx
import pytest

from services.io.app import create_app
from shared.settings import Settings
from tests.support import running

AUTH = {"Authorization": "Bearer test-mesh-token"}
TICKET = {
    "incident_id": "INC-2026-0001",
    "severity": "high",
    "summary": "SLA degradation detected on pe1-pe2, pe2-pe3",
    "degraded_links": ["pe1-pe2", "pe2-pe3"],
    "affected_services": [],
    "source_agent": "event_correlator",
    "created_at": "2026-01-19T10:30:00Z",
    "status": "new",
}


def _operator(client: httpx.AsyncClient) -> dict[str, str]:
    """IO's own API wants an IO user token (the bootstrap admin's), not the mesh token."""
    app = client._transport.app  # type: ignore[attr-defined]
    token = (app.state.settings.data_dir / "io-admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def tickets(client: httpx.AsyncClient) -> list[dict[str, object]]:
    response = await client.get("/api/v1/tickets", headers=_operator(client))
    assert response.status_code == 200
    body: list[dict[str, object]] = response.json()
    return body


async def test_unknown_task_type_is_400_naming_it_and_the_accepted_ones(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        r = await client.post(
            "/a2a/tasks", json={"task_type": "reboot", "payload": {}}, headers=AUTH
        )
        assert r.status_code == 400
        assert "'reboot'" in r.json()["detail"]
        assert "new_ticket" in r.json()["detail"]
        assert await tickets(client) == []


async def test_invalid_payload_is_422_naming_each_field(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        bad = {**TICKET, "severity": "apocalyptic"}
        del bad["summary"]
        r = await client.post(
            "/a2a/tasks", json={"task_type": "new_ticket", "payload": bad}, headers=AUTH
        )
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["detail"]}
        assert fields == {"payload.severity", "payload.summary"}
        assert await tickets(client) == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"{not json", "malformed JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe", "malformed")],
)
async def test_malformed_bodies_are_400(settings: Settings, body: bytes, needle: str) -> None:
    async with running(create_app(settings)) as client:
        r = await client.post("/a2a/tasks", content=body, headers=AUTH)
        assert r.status_code == 400
        assert needle in r.json()["detail"]
        assert await tickets(client) == []


async def test_envelope_fields_are_checked(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        r = await client.post("/a2a/tasks", json={"payload": {}, "extra": 1}, headers=AUTH)
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["detail"]} == {"task_type", "extra"}


async def test_mesh_token_is_required_where_configured(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        envelope = {"task_type": "new_ticket", "payload": TICKET}
        # httpx.Auth(), a no-op: without the token the client adds (tests.support.MeshAuth)
        assert (
            await client.post("/a2a/tasks", json=envelope, auth=httpx.Auth())
        ).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.post("/a2a/tasks", json=envelope, headers=wrong)).status_code == 401
        assert (await client.post("/a2a/jsonrpc", json={}, headers=wrong)).status_code == 401
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/.well-known/agent-card.json")).status_code == 200
        assert await tickets(client) == []
        assert (await client.post("/a2a/tasks", json=envelope, headers=AUTH)).status_code == 200


async def test_idempotency_key_replays_instead_of_redoing(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        envelope = {"task_type": "new_ticket", "payload": TICKET}
        headers = {**AUTH, "Idempotency-Key": "k-1"}
        first = await client.post("/a2a/tasks", json=envelope, headers=headers)
        second = await client.post("/a2a/tasks", json=envelope, headers=headers)
        assert first.json()["replayed"] is False
        assert second.json()["replayed"] is True
        assert second.json()["task_id"] == first.json()["task_id"]
        detail = (
            await client.get("/api/v1/tickets/INC-2026-0001", headers=_operator(client))
        ).json()
        assert [e["task_type"] for e in detail["events"]] == ["new_ticket"]


async def test_idempotency_record_survives_a_restart(settings: Settings) -> None:
    envelope = {"task_type": "new_ticket", "payload": TICKET}
    headers = {**AUTH, "Idempotency-Key": "k-2"}
    async with running(create_app(settings)) as client:
        assert (await client.post("/a2a/tasks", json=envelope, headers=headers)).status_code == 200
    async with running(create_app(settings)) as client:
        again = await client.post("/a2a/tasks", json=envelope, headers=headers)
        assert again.json()["replayed"] is True
        detail = (
            await client.get("/api/v1/tickets/INC-2026-0001", headers=_operator(client))
        ).json()
        assert len(detail["events"]) == 1


async def test_io_keeps_every_event_in_order_with_the_current_view(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        await client.post(
            "/a2a/tasks", json={"task_type": "new_ticket", "payload": TICKET}, headers=AUTH
        )
        update = {
            "incident_id": "INC-2026-0001",
            "status": "assessing",
            "phase": "2",
            "message": "15 services affected, computing alternate path",
            "details": {
                "total_affected": 15,
                "services_by_tier": {"platinum": 2, "gold": 5, "silver": 8},
            },
        }
        r = await client.post(
            "/a2a/tasks", json={"task_type": "status_update", "payload": update}, headers=AUTH
        )
        assert r.status_code == 200
        detail = (
            await client.get("/api/v1/tickets/INC-2026-0001", headers=_operator(client))
        ).json()
        assert detail["status"] == "assessing"
        assert detail["phase"] == "2"
        assert detail["affected_services_count"] == 15
        assert [e["task_type"] for e in detail["events"]] == ["new_ticket", "status_update"]
        assert detail["events"][1]["payload"]["details"]["services_by_tier"]["gold"] == 5
        assert (
            await client.get("/api/v1/tickets/INC-2099-9999", headers=_operator(client))
        ).status_code == 404


async def test_metrics_count_tasks_by_outcome(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        await client.post(
            "/a2a/tasks", json={"task_type": "new_ticket", "payload": TICKET}, headers=AUTH
        )
        await client.post(
            "/a2a/tasks", json={"task_type": "new_ticket", "payload": {}}, headers=AUTH
        )
        text = (await client.get("/metrics")).text
        assert 'cxm_tasks_total{outcome="completed",task_type="new_ticket"} 1.0' in text
        assert 'cxm_tasks_total{outcome="invalid",task_type="new_ticket"} 1.0' in text

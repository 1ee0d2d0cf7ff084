"""Inbound ServiceNow webhook: auth (bearer and HMAC), 404, 422, and what reaches IO and the
orchestrator through the outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import respx

from shared.settings import Settings
from tests.notify.conftest import Peers
from tests.notify.test_notify import SNOW_SYS_ID, agent, mock_snow, notify_settings, task

URL = "/api/v1/servicenow/webhook"
BEARER = {"Authorization": "Bearer hook-secret"}


def change(**fields: Any) -> dict[str, Any]:
    """What the Business Rule's REST message sends for an incident update."""
    return {
        "sys_id": SNOW_SYS_ID,
        "number": "INC0010001",
        "state": "2",
        "comments": "Customer confirms latency is back to normal",
        "sys_updated_by": "jane.operator",
        "sys_updated_on": "2026-03-01 15:02:11",
    } | fields


async def open_incident(client: httpx.AsyncClient) -> None:
    body, headers = task("k-open", severity="high", tier=None)
    result = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
    assert result["result"]["channels"]["servicenow"]["status"] == "sent"


async def test_webhook_forwards_comments_and_operator_resolution(
    settings: Settings, peers: Peers
) -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_snow(router)
        async with agent(settings, notify_settings(snow=True), peers) as (client, app):
            await open_incident(client)
            response = await client.post(URL, json=change(), headers=BEARER)
            assert response.status_code == 202
            assert response.json()["forwarded"] == ["io:status_update"]

            # ServiceNow retries what it believes failed: the same change is forwarded once.
            assert (await client.post(URL, json=change(), headers=BEARER)).status_code == 202

            resolved = change(
                state="Resolved",
                comments=None,
                close_code="Solved (Permanently)",
                close_notes="Fibre repaired by field team",
                sys_updated_on="2026-03-01 15:30:00",
            )
            response = await client.post(URL, json=resolved, headers=BEARER)
            assert response.json()["forwarded"] == [
                "io:status_update",
                "orchestrator:incident_signal",
            ]
            # Closing after resolving is the same resolution: no second signal.
            closed = change(state=7, comments=None, sys_updated_on="2026-03-01 16:00:00")
            assert (await client.post(URL, json=closed, headers=BEARER)).status_code == 202

            await app.state.outbox.flush()
            updates = peers.of("io", "status_update")
            assert len(updates) == 3
            first = updates[0]["payload"]
            assert first["source_agent"] == "servicenow"
            assert first["incident_id"] == "INC-2026-0001"
            assert "latency is back to normal" in first["message"]
            assert first["details"]["number"] == "INC0010001"
            signals = peers.of("orchestrator", "incident_signal")
            assert len(signals) == 1
            signal = signals[0]["payload"]
            assert signal["signal"] == "operator_resolved"
            assert signal["details"]["close_notes"] == "Fibre repaired by field team"
            assert signal["details"]["resolved_by"] == "jane.operator"

            # Our own integration user's echo is acknowledged and ignored.
            own = change(sys_updated_by="cxm.integration", sys_updated_on="2026-03-01 17:00")
            response = await client.post(URL, json=own, headers=BEARER)
            assert response.status_code == 200 and "ignored" in response.json()


async def test_webhook_auth_404_and_422(settings: Settings, peers: Peers) -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_snow(router)
        async with agent(settings, notify_settings(snow=True), peers) as (client, _):
            await open_incident(client)
            assert (await client.post(URL, json=change())).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.post(URL, json=change(), headers=wrong)).status_code == 401
            # The mesh token is not the webhook's secret.
            mesh = {"Authorization": "Bearer test-mesh-token"}
            assert (await client.post(URL, json=change(), headers=mesh)).status_code == 401

            unknown = change(sys_id="0" * 32, number="INC0099999")
            response = await client.post(URL, json=unknown, headers=BEARER)
            assert response.status_code == 404
            by_number = change(sys_id=None, number="INC0010001")
            assert (await client.post(URL, json=by_number, headers=BEARER)).status_code == 202

            for bad in (
                change(sys_id=None, number=None),
                change(state="Exploded"),
                change(state=["6"]),
                [1, 2],
            ):
                response = await client.post(URL, json=bad, headers=BEARER)
                assert response.status_code == 422, bad
            response = await client.post(URL, content=b"{not json", headers=BEARER)
            assert response.status_code == 422
            assert "hook-secret" not in response.text


async def test_webhook_hmac_signature(settings: Settings, peers: Peers) -> None:
    ns = notify_settings(snow=True, servicenow_webhook_auth="hmac")
    with respx.mock(assert_all_called=False) as router:
        mock_snow(router)
        async with agent(settings, ns, peers) as (client, _):
            await open_incident(client)
            raw = json.dumps(change()).encode()
            good = hmac.new(b"hook-secret", raw, hashlib.sha256).hexdigest()
            signed = {"X-ServiceNow-Signature": f"sha256={good}"}
            response = await client.post(URL, content=raw, headers=signed)
            assert response.status_code == 202
            tampered = raw.replace(b"normal", b"broken")
            response = await client.post(URL, content=tampered, headers=signed)
            assert response.status_code == 401
            assert (await client.post(URL, content=raw, headers=BEARER)).status_code == 401


async def test_webhook_refused_without_a_secret(settings: Settings, peers: Peers) -> None:
    ns = notify_settings(snow=True, servicenow_webhook_secret=None)
    async with agent(settings, ns, peers) as (client, _):
        response = await client.post(URL, json=change(), headers=BEARER)
        assert response.status_code == 401
        assert "not set" in response.json()["detail"]

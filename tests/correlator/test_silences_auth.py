"""Silences and maintenance windows (Alertmanager matchers), and webhook authentication."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

from services.correlator.settings import WebhookAuth
from shared.settings import Settings
from tests.correlator.conftest import AUTH
from tests.correlator.payloads import alertmanager_v4, am_alert, datadog_servicenow, skylight


def _iso(t: Any) -> str:
    return str(t.isoformat())


async def test_silence_create_list_match_expire(harness: Any) -> None:
    async with harness() as h:
        body = {
            "matchers": [
                {"name": "link", "value": "pe1-pe2", "op": "="},
                {"name": "source", "value": "pc.*", "op": "=~"},
                {"name": "severity", "value": "info", "op": "!="},
                {"name": "region", "value": "east", "op": "!~"},
            ],
            "ends_at": _iso(h.clock.now + timedelta(hours=1)),
            "created_by": "noc-alice",
            "comment": "fibre work on pe1-pe2",
            "kind": "maintenance",
        }
        r = await h.post("/api/v1/silences", body)
        assert r.status_code == 201, r.text
        silence = r.json()
        assert silence["state"] == "active" and silence["created_by"] == "noc-alice"
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "suppressed" and silence["id"] in entry["reason"]
        other = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe2-pe3"))
        assert other.json()["alerts"][0]["disposition"] == "new_incident"
        listed = (await h.client.get("/api/v1/silences", params={"state": "active"})).json()
        assert [s["id"] for s in listed] == [silence["id"]]
        r = await h.client.delete(f"/api/v1/silences/{silence['id']}", headers=AUTH)
        assert r.status_code == 200 and r.json()["state"] == "expired"
        h.clock.advance(1)
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        assert r.json()["alerts"][0]["disposition"] == "correlated"
        stored = (await h.client.get("/api/v1/alerts", params={"disposition": "suppressed"})).json()
        assert len(stored) == 1


async def test_silence_validation(harness: Any) -> None:
    async with harness() as h:
        bad = {
            "matchers": [{"name": "link", "value": "([", "op": "=~"}],
            "ends_at": _iso(h.clock.now + timedelta(hours=1)),
            "created_by": "bob",
        }
        r = await h.post("/api/v1/silences", bad)
        assert r.status_code == 422 and "regular expression" in r.json()["detail"]
        backwards = {
            "matchers": [{"name": "link", "value": "pe1-pe2"}],
            "starts_at": _iso(h.clock.now),
            "ends_at": _iso(h.clock.now - timedelta(minutes=1)),
            "created_by": "bob",
        }
        r = await h.post("/api/v1/silences", backwards)
        assert r.status_code == 422 and "ends_at" in r.json()["detail"]
        assert (await h.client.get("/api/v1/silences")).json() == []


async def test_default_auth_is_the_mesh_bearer(harness: Any) -> None:
    async with harness() as h:
        body = skylight(h.clock.now)
        r = await h.client.post("/api/v1/tickets/webhook/pca", json=body)
        assert r.status_code == 401
        r = await h.client.post(
            "/api/v1/tickets/webhook/pca", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        r = await h.client.post("/api/v1/tickets/webhook/pca", json=body, headers=AUTH)
        assert r.status_code == 202
        assert len((await h.client.get("/api/v1/alerts")).json()) == 1


async def test_open_when_no_token_configured(harness: Any, base_settings: Settings) -> None:
    open_settings = base_settings.model_copy(update={"mesh_token": None})
    async with harness(settings=open_settings) as h:
        r = await h.client.post("/api/v1/tickets/webhook/pca", json=skylight(h.clock.now))
        assert r.status_code == 202


async def test_hmac_signature_per_source(harness: Any) -> None:
    auth = {"datadog": WebhookAuth(hmac_secret="dd-secret", hmac_header="X-Hub-Signature-256")}
    async with harness(webhook_auth=auth) as h:
        raw = json.dumps(datadog_servicenow(h.clock.now)).encode()
        url = "/api/v1/tickets/webhook/datadog"
        ctype = {"content-type": "application/json"}
        r = await h.client.post(url, content=raw, headers=ctype)
        assert r.status_code == 401 and "HMAC" in r.json()["detail"]
        wrong = hmac.new(b"other", raw, hashlib.sha256).hexdigest()
        r = await h.client.post(
            url, content=raw, headers={**ctype, "X-Hub-Signature-256": f"sha256={wrong}"}
        )
        assert r.status_code == 401
        good = hmac.new(b"dd-secret", raw, hashlib.sha256).hexdigest()
        r = await h.client.post(
            url, content=raw, headers={**ctype, "X-Hub-Signature-256": f"sha256={good}"}
        )
        assert r.status_code == 202, r.text
        assert len((await h.client.get("/api/v1/alerts")).json()) == 1


async def test_bearer_per_source_replaces_mesh_token(harness: Any) -> None:
    async with harness(webhook_auth={"alertmanager": WebhookAuth(bearer_token="am-token")}) as h:
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, {"link": "pe1-pe2"})])
        url = "/api/v1/tickets/webhook/alertmanager"
        r = await h.client.post(url, json=body, headers=AUTH)
        assert r.status_code == 401
        r = await h.client.post(url, json=body, headers={"Authorization": "Bearer am-token"})
        assert r.status_code == 202

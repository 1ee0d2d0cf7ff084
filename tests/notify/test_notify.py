"""The notify agent end to end in-process: real SMTP, a Webex API server, ServiceNow via respx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa

from services.notify.app import create_app
from services.notify.routing import route
from services.notify.settings import DEFAULT_ROUTING, NotifySettings
from shared.agent import idempotency_table
from shared.settings import Settings
from tests.notify.conftest import WEBEX_ROOM, WEBEX_TOKEN, FakeWebex, Mailbox, Peers
from tests.support import running

SNOW = "https://dev12345.service-now.com"
SNOW_SYS_ID = "9d385017c611228701d22104cc95c371"
SNOW_PASSWORD = "snow-secret-password"
HEADERS = {"Authorization": "Bearer test-mesh-token"}

FACTS = {
    "status": "closed",
    "phase": "close",
    "degraded_links": ["pe1-pe2", "pe2-pe3"],
    "total_affected": 15,
    "tunnel": {"tunnel_id": "cxm-INC-2026-0001", "binding_sid": 24001, "path": ["pe1", "pe4"]},
    "resolution": "restored",
    "duration_seconds": 754,
}


def notify_settings(
    webex: FakeWebex | None = None, smtp: Mailbox | None = None, snow: bool = False, **extra: Any
) -> NotifySettings:
    values: dict[str, Any] = {"notify_retries": 2, "notify_backoff_s": 0.01, "notify_timeout_s": 5}
    if webex is not None:
        values |= {"webex_access_token": WEBEX_TOKEN, "webex_room_id": WEBEX_ROOM}
        values["webex_base_url"] = webex.url
    if smtp is not None:
        values |= {"smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_to": ["noc@example.net"]}
        values["smtp_from"] = "cxm@example.net"
    if snow:
        values |= {
            "servicenow_url": SNOW,
            "servicenow_username": "cxm.integration",
            "servicenow_password": SNOW_PASSWORD,
            "servicenow_webhook_secret": "hook-secret",
        }
    return NotifySettings(**(values | extra))


@asynccontextmanager
async def agent(
    settings: Settings, ns: NotifySettings, peers: Peers
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings, ns, mesh_transport=peers.transport())
    async with running(app) as client:
        client.headers.update(HEADERS)
        yield client, app


def task(key: str | None = None, **payload: Any) -> tuple[dict[str, Any], dict[str, str]]:
    base: dict[str, Any] = {
        "incident_id": "INC-2026-0001",
        "event": "new_incident",
        "severity": "critical",
        "tier": "platinum",
        "subject": "SLA degradation on pe1-pe2",
        "details": {"degraded_links": ["pe1-pe2", "pe2-pe3"], "total_affected": 15},
    }
    body = {"task_type": "notify", "payload": base | payload}
    return body, ({"Idempotency-Key": key} if key else {})


def snow_record(number: str = "INC0010001", state: str = "1") -> dict[str, Any]:
    """The Table API's create answer (docs: REST API Reference → Table API → POST)."""
    return {
        "result": {
            "sys_id": SNOW_SYS_ID,
            "number": number,
            "state": state,
            "short_description": "SLA degradation",
            "sys_class_name": "incident",
            "sys_created_on": "2026-03-01 14:26:16",
            "sys_updated_on": "2026-03-01 14:26:16",
            "impact": "1",
            "urgency": "1",
            "priority": "1",
            "active": "true",
        }
    }


def mock_snow(router: respx.MockRouter) -> dict[str, respx.Route]:
    return {
        "find": router.get(f"{SNOW}/api/now/table/incident").respond(200, json={"result": []}),
        "create": router.post(f"{SNOW}/api/now/table/incident").respond(201, json=snow_record()),
        "update": router.patch(f"{SNOW}/api/now/table/incident/{SNOW_SYS_ID}").respond(
            200, json=snow_record(state="2")
        ),
    }


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "tier", "channels"),
    [
        ("critical", None, ["webex", "servicenow", "email"]),
        ("low", "platinum", ["webex", "servicenow", "email"]),
        ("high", "bronze", ["webex", "servicenow", "email"]),
        ("medium", None, ["webex", "email"]),
        ("low", "silver", ["webex", "email"]),
        ("low", "bronze", ["email"]),
        ("info", None, ["email"]),
        ("medium", "gold", ["webex", "servicenow", "email"]),
    ],
)
def test_routing_matrix_higher_of_severity_and_tier(
    severity: str, tier: str | None, channels: list[str]
) -> None:
    assert route(severity, tier, DEFAULT_ROUTING)[1] == channels


def test_routing_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_NOTIFY_ROUTING", json.dumps({"low": ["webex"], "medium": ["email"]}))
    ns = NotifySettings()
    assert route("low", None, ns.notify_routing) == ("low", ["webex"])
    assert route("medium", "bronze", ns.notify_routing) == ("medium", ["email"])
    assert route("critical", None, ns.notify_routing) == ("critical", [])


# --- delivery -------------------------------------------------------------------------------


async def test_lifecycle_on_all_three_channels(
    settings: Settings, webex: FakeWebex, smtp: Mailbox, peers: Peers
) -> None:
    ns = notify_settings(webex, smtp, snow=True)
    with respx.mock(assert_all_mocked=True) as router:
        snow = mock_snow(router)
        async with agent(settings, ns, peers) as (client, app):
            body, headers = task("k-new")
            answer = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            channels = answer["result"]["channels"]
            assert {c: r["status"] for c, r in channels.items()} == {
                "webex": "sent",
                "servicenow": "sent",
                "email": "sent",
            }
            assert channels["servicenow"]["external_id"] == SNOW_SYS_ID
            assert channels["servicenow"]["number"] == "INC0010001"
            created = json.loads(snow["create"].calls[0].request.content)
            assert created["correlation_id"] == "INC-2026-0001"
            assert (created["impact"], created["urgency"]) == ("1", "1")
            assert snow["create"].calls[0].request.headers["authorization"].startswith("Basic ")

            body, headers = task(
                "k-phase",
                event="status_update",
                subject="Tunnel provisioned",
                details={"status": "steering", "phase": "steer", "tunnel_id": "cxm-1"},
            )
            await client.post("/a2a/tasks", json=body, headers=headers)
            body, headers = task(
                "k-close", event="ticket_closed", subject="Restored", details=FACTS
            )
            closed = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert closed["result"]["channels"]["servicenow"]["action"] == "resolved"

            # One ServiceNow incident for the whole life: create once, then PATCH its sys_id.
            assert snow["create"].call_count == 1
            patches = [json.loads(c.request.content) for c in snow["update"].calls]
            assert "Tunnel provisioned" in patches[0]["work_notes"]
            assert patches[1]["state"] == "6"
            assert patches[1]["close_code"] == "Solved (Permanently)"
            assert "Duration" in patches[1]["close_notes"]

            assert len(webex.messages) == 3
            assert webex.auth_headers[0] == f"Bearer {WEBEX_TOKEN}"
            assert "INC-2026-0001" in webex.messages[0]["markdown"]
            assert webex.messages[0]["roomId"] == WEBEX_ROOM

            # The closing mail carries the incident's facts.
            assert len(smtp.messages) == 3
            mail = smtp.messages[2]
            assert smtp.envelopes[2] == ("cxm@example.net", ["noc@example.net"])
            assert "INC-2026-0001" in mail["Subject"] and mail["X-CXM-Incident"] == "INC-2026-0001"
            parts = [p for p in mail.walk() if p.get_content_type() == "text/plain"]
            raw = parts[0].get_payload(decode=True)
            assert isinstance(raw, bytes)
            text = raw.decode()
            for fact in (
                "INC-2026-0001",
                "critical",
                "platinum",
                "pe1-pe2, pe2-pe3",
                "Affected services: 15",
                "cxm-INC-2026-0001",
                "BSID 24001",
                "restored",
                "12m 34s",
                "/api/v1/tickets/INC-2026-0001",
            ):
                assert fact in text, fact

            log = (await client.get("/api/v1/deliveries?incident_id=INC-2026-0001")).json()
            assert len(log) == 9 and {r["status"] for r in log} == {"sent"}
            assert {r["event"] for r in log} == {"new_incident", "status_update", "ticket_closed"}

            await app.state.outbox.flush()
            audited = peers.of("audit", "audit_event")
            assert len(audited) == 9
            assert {a["payload"]["event_type"] for a in audited} == {"notification_sent"}
            assert {a["payload"]["details"]["status"] for a in audited} == {"sent"}

            # Nothing secret leaks into the answers, the log or the audit trail.
            dumped = json.dumps([answer, closed, log, audited])
            assert SNOW_PASSWORD not in dumped and WEBEX_TOKEN not in dumped
            assert SNOW_PASSWORD not in repr(ns) and WEBEX_TOKEN not in repr(ns)


async def test_retries_with_backoff(settings: Settings, webex: FakeWebex, peers: Peers) -> None:
    webex.fail_next = 2
    ns = notify_settings(webex, notify_retries=3, notify_backoff_s=0.2, notify_backoff_max_s=0.3)
    async with agent(settings, ns, peers) as (client, app):
        delays: list[float] = []

        async def no_sleep(seconds: float) -> None:
            delays.append(seconds)

        app.state.notifier.sleep = no_sleep
        body, headers = task("k1", severity="medium", tier=None)
        result = (await client.post("/a2a/tasks", json=body, headers=headers)).json()["result"]
        assert result["channels"]["webex"]["status"] == "sent"
        assert result["channels"]["webex"]["attempts"] == 3
        assert delays == [0.2, 0.3]  # 0.2, then 0.4 capped at the maximum
        assert len(webex.messages) == 1


async def test_a_failed_channel_never_blocks(
    settings: Settings, webex: FakeWebex, smtp: Mailbox, peers: Peers
) -> None:
    ns = notify_settings(webex, smtp, snow=True)
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{SNOW}/api/now/table/incident").respond(200, json={"result": []})
        create = router.post(f"{SNOW}/api/now/table/incident").respond(
            503, json={"error": {"message": "Instance hibernating"}, "status": "failure"}
        )
        async with agent(settings, ns, peers) as (client, app):
            await app.state.notifier.stop()  # only the in-call retries here: no redelivery
            response = await client.post("/a2a/tasks", json=task("k1")[0], headers=task("k1")[1])
            assert response.status_code == 200
            channels = response.json()["result"]["channels"]
            assert channels["webex"]["status"] == "sent" and channels["email"]["status"] == "sent"
            snow = channels["servicenow"]
            # Transient: not given up, queued for redelivery (tests/notify/test_redelivery.py).
            assert snow["status"] == "retrying" and snow["attempts"] == 3
            assert "Instance hibernating" in snow["error"] and snow["next_attempt_at"]
            assert create.call_count == 3

            # A refusal (401) is final: no retries.
            create.respond(401, json={"error": {"message": "User Not Authenticated"}})
            body, headers = task("k2", incident_id="INC-2026-0002")
            snow2 = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert snow2["result"]["channels"]["servicenow"]["status"] == "failed"
            assert snow2["result"]["channels"]["servicenow"]["attempts"] == 1

            log = (await client.get("/api/v1/deliveries?channel=servicenow")).json()
            assert [(r["status"], r["attempts"]) for r in log] == [("retrying", 3), ("failed", 1)]
            assert "503" in log[0]["error"] and log[0]["next_attempt_at"]
            metrics = (await client.get("/metrics")).text
            for status in ("retrying", "failed"):
                sample = (
                    f'cxm_notify_deliveries_total{{channel="servicenow",status="{status}"}} 1.0'
                )
                assert sample in metrics
            assert 'cxm_tasks_total{outcome="completed",task_type="notify"}' in metrics
            await app.state.outbox.flush()
            statuses = {
                (a["payload"]["details"]["channel"], a["payload"]["details"]["status"])
                for a in peers.of("audit")
            }
            assert {("servicenow", "retrying"), ("servicenow", "failed"), ("webex", "sent")} <= (
                statuses
            )


async def test_unconfigured_channels_are_skipped(settings: Settings, peers: Peers) -> None:
    async with agent(settings, notify_settings(), peers) as (client, _):
        response = await client.post("/a2a/tasks", json=task("k1")[0], headers=task("k1")[1])
        assert response.status_code == 200
        channels = response.json()["result"]["channels"]
        assert {r["status"] for r in channels.values()} == {"skipped"}
        log = (await client.get("/api/v1/deliveries")).json()
        assert sorted((r["channel"], r["status"], r["error"]) for r in log) == [
            ("email", "skipped", "not configured"),
            ("servicenow", "skipped", "not configured"),
            ("webex", "skipped", "not configured"),
        ]


async def test_dedup_per_key_and_channel(
    settings: Settings, webex: FakeWebex, smtp: Mailbox, peers: Peers
) -> None:
    ns = notify_settings(webex, smtp, snow=True)
    with respx.mock(assert_all_called=False) as router:
        routes = mock_snow(router)
        routes["create"].respond(400, json={"error": {"message": "Invalid field"}})
        async with agent(settings, ns, peers) as (client, app):
            body, headers = task("same-key")
            first = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert first["result"]["channels"]["servicenow"]["status"] == "failed"

            # The same task again: the framework answers from its record, nothing is sent.
            again = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert again["replayed"] is True
            assert len(webex.messages) == 1 and len(smtp.messages) == 1

            # The crash case: the channels ran but the task's outcome was never recorded, so
            # the sender's retry reaches the handler again. Only the failed channel is redone.
            async with app.state.engine.begin() as conn:
                await conn.execute(sa.delete(idempotency_table))
            routes["create"].respond(201, json=snow_record())
            retry = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            channels = retry["result"]["channels"]
            assert channels["servicenow"]["status"] == "sent"
            assert channels["webex"]["duplicate"] is True and channels["email"]["duplicate"]
            assert len(webex.messages) == 1 and len(smtp.messages) == 1
            log = (await client.get("/api/v1/deliveries")).json()
            assert len(log) == 3 and {r["status"] for r in log} == {"sent"}


async def test_servicenow_create_is_not_duplicated_after_a_lost_answer(
    settings: Settings, peers: Peers
) -> None:
    """A create whose answer was lost: the retry finds the incident by correlation_id."""
    ns = notify_settings(snow=True)
    with respx.mock(assert_all_called=False) as router:
        routes = mock_snow(router)
        routes["find"].respond(200, json={"result": [snow_record()["result"]]})
        async with agent(settings, ns, peers) as (client, _):
            body, headers = task("k1", severity="high", tier=None)
            result = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert result["result"]["channels"]["servicenow"]["status"] == "sent"
            assert routes["create"].call_count == 0
            query = routes["find"].calls[0].request.url.params["sysparm_query"]
            assert query == "correlation_id=INC-2026-0001"

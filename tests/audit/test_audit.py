"""The audit agent in-process on SQLite and on the real PostgreSQL server: the chain, its
verification (API and ``cxm audit verify``), tamper detection, search, reports, the ES sink."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa
from fastapi import FastAPI

from services.audit.app import create_app
from services.audit.settings import AuditSettings
from shared.agent import idempotency_table
from shared.db import make_engine
from shared.models import AUDIT_EVENT_TYPES
from shared.settings import Settings
from tests.support import ROOT, running, wait_for

HEADERS = {"Authorization": "Bearer test-mesh-token"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def audit_agent(
    settings: Settings, audit_settings: AuditSettings | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(settings, audit_settings or AuditSettings())
    async with running(app) as client:
        client.headers.update(HEADERS)
        yield client, app


async def send(
    client: httpx.AsyncClient, event_type: str, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    payload = {"event_type": event_type, "source_agent": "orchestrator"} | fields
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.post(
        "/a2a/tasks", json={"task_type": "audit_event", "payload": payload}, headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def cli_verify(settings: Settings) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    env["CXM_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["CXM_AUDIT__DATABASE_URL"] = settings.database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cxm.cli",
        "audit",
        "verify",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_chain_verify_and_tamper_detection(db_settings: Settings) -> None:
    async with audit_agent(db_settings) as (client, app):
        types = [*AUDIT_EVENT_TYPES, "operator_note"]
        answers = [
            await send(client, t, key=f"k{i}", incident_id="INC-2026-0001", details={"i": i})
            for i, t in enumerate(types)
        ]
        assert [a["seq"] for a in answers] == list(range(1, len(types) + 1))
        again = await send(client, "error", key="k3", incident_id="INC-2026-0001")
        assert again["seq"] == 4  # answered from the framework's idempotency record
        # The crash case: committed, but the answer was never recorded; the retry is still
        # recognised by its key in the log itself.
        async with app.state.engine.begin() as conn:
            await conn.execute(sa.delete(idempotency_table))
        again = await send(client, "error", key="k3", incident_id="INC-2026-0001")
        assert again["duplicate"] is True and again["seq"] == 4

        verdict = (await client.get("/api/v1/audit/verify")).json()
        assert verdict["ok"] is True and verdict["count"] == len(types)

        # Append-only: the API refuses changes, and so does the database underneath.
        target = answers[2]["id"]
        for method in ("DELETE", "PUT", "PATCH"):
            response = await client.request(method, f"/api/v1/audit/events/{target}")
            assert response.status_code == 405
        engine = app.state.engine
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(sa.text("UPDATE audit_events SET details = '{}' WHERE id = 1"))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(sa.text("DELETE FROM audit_events WHERE id = 1"))

    code, out = await cli_verify(db_settings)
    assert code == 0 and out.startswith(f"OK {len(types)} events"), out

    # A superuser gets around the trigger and edits one row: the verifier finds that row.
    engine = make_engine(db_settings.db_url("audit"))
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            else:
                await conn.execute(sa.text("DROP TRIGGER audit_events_no_update"))
            await conn.execute(
                sa.text("UPDATE audit_events SET details = :d WHERE id = :id"),
                {"d": json.dumps({"i": 999}), "id": target},
            )
    finally:
        await engine.dispose()
    code, out = await cli_verify(db_settings)
    assert code == 1 and f"row id {target}" in out, out
    async with audit_agent(db_settings) as (client, _):
        response = await client.get("/api/v1/audit/verify")
        assert response.status_code == 409
        assert response.json()["broken_id"] == target
        assert "edited" in response.json()["reason"]


async def test_concurrent_appends_keep_one_chain(db_settings: Settings) -> None:
    """Two apps (two engines, two writer locks) appending at once still make one chain."""
    async with audit_agent(db_settings) as (a, _), audit_agent(db_settings) as (b, _):
        if not (db_settings.database_url or "").startswith("postgres"):
            b = a  # SQLite has one writer process by design
        await asyncio.gather(
            *(
                send(c, "state_change", key=f"c{i}", details={"i": i})
                for i, c in enumerate([a, b] * 30)
            )
        )
        verdict = (await a.get("/api/v1/audit/verify")).json()
        assert verdict == verdict | {"ok": True, "count": 60}


async def test_a_batch_appends_in_order_once_per_key(db_settings: Settings) -> None:
    """``audit_events`` (a sender's outbox backlog): one transaction, in order; a key already
    stored, by ``audit_event`` or earlier in the batch, is answered from its row."""
    async with audit_agent(db_settings) as (client, _):
        first = await send(client, "state_change", key="b1", details={"i": 1})
        event = {"event_type": "state_change", "source_agent": "orchestrator"}
        items = [
            {"key": key, "payload": event | {"details": {"i": i}}}
            for key, i in [("b0", 0), ("b1", 1), ("b2", 2), ("b0", 0), ("b3", 3)]
        ]
        response = await client.post(
            "/a2a/tasks", json={"task_type": "audit_events", "payload": {"items": items}}
        )
        assert response.status_code == 200, response.text
        results = response.json()["result"]["results"]
        assert [r["duplicate"] for r in results] == [False, True, False, True, False]
        assert results[1]["seq"] == first["seq"] == 1
        assert [r["seq"] for r in results] == [2, 1, 3, 2, 4]
        again = await send(client, "state_change", key="b3", details={"i": 3})
        assert again["duplicate"] and again["seq"] == 4
        listed = (await client.get("/api/v1/audit/events", params={"limit": 10})).json()
        assert sorted(r["details"]["i"] for r in listed["events"]) == [0, 1, 2, 3]
        verdict = (await client.get("/api/v1/audit/verify")).json()
        assert verdict == verdict | {"ok": True, "count": 4}


async def test_search_api(db_settings: Settings) -> None:
    async with audit_agent(db_settings) as (client, _):
        for i in range(6):
            await send(
                client,
                "path_computed" if i % 2 else "tunnel_provisioned",
                incident_id=f"INC-2026-000{i % 3}",
                occurred_at=(T0 + timedelta(minutes=i)).isoformat(),
                details={"note": f"Path via PE{i}", "pct": "100%_x"},
            )

        async def count(**params: Any) -> int:
            body = (await client.get("/api/v1/audit/events", params=params)).json()
            return int(body["count"])

        assert await count() == 6
        assert await count(incident_id="INC-2026-0001") == 2
        assert await count(event_type="path_computed") == 3
        assert await count(since=(T0 + timedelta(minutes=2)).isoformat()) == 4
        assert await count(until=(T0 + timedelta(minutes=2)).isoformat()) == 2
        assert await count(q="via pe3") == 1
        assert await count(q="100%_x") == 6
        assert await count(q="nothing like this") == 0
        assert await count(limit=2) == 2
        one = (await client.get("/api/v1/audit/events", params={"q": "pe4"})).json()["events"][0]
        assert one["occurred_at"] == "2026-03-01T12:04:00.000000Z"
        assert (await client.get(f"/api/v1/audit/events/{one['id']}")).json() == one
        # Numbers past a database integer are bad input (422 naming the field), not a 500.
        huge = 2**63
        for path, params in (
            ("/api/v1/audit/events", {"offset": huge}),
            (f"/api/v1/audit/events/{huge}", {}),
            ("/api/v1/audit/events/0", {}),
        ):
            answer = await client.get(path, params=params)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["detail"][0]["loc"][-1] in ("offset", "event_id")
        assert (await client.get(f"/api/v1/audit/events/{2**63 - 1}")).status_code == 404


async def test_dates_outside_utc_are_bad_input(settings: Settings) -> None:
    """Found by the fuzzer: a bound that UTC cannot hold (a far offset on year 1 or 9999, or
    ``until`` less than the default 30 days after year 1) was an OverflowError and a 500."""
    async with audit_agent(settings) as (client, _):
        await send(client, "incident_created", incident_id="INC-2026-0001")
        for path, params in (
            ("/api/v1/audit/events", {"since": "0001-01-01T00:00:00+05:00"}),
            ("/api/v1/audit/events", {"until": "9999-12-31T23:59:59-05:00"}),
            ("/api/v1/audit/events", {"until": "0001-01-02T00:00:00Z"}),
            ("/api/v1/audit/reports/sla", {"period_end": "0001-01-02T00:00:00Z"}),
            ("/api/v1/audit/reports/sla", {"period_start": "0001-01-01T00:00:00+01:00"}),
        ):
            answer = await client.get(path, params=params)
            assert answer.status_code == 422, (path, params, answer.text)
            assert "out of range" in answer.json()["detail"], answer.text
            assert next(iter(params)) in answer.json()["detail"]
        # Nothing changed, and bounds UTC can hold still filter.
        events = (await client.get("/api/v1/audit/events")).json()
        assert events["count"] == 1
        since = {"since": "0001-01-01T00:00:00-05:00"}
        assert (await client.get("/api/v1/audit/events", params=since)).json()["count"] == 1
        verdict = (await client.get("/api/v1/audit/verify")).json()
        assert verdict["ok"] is True and verdict["count"] == 1


async def test_reports(db_settings: Settings) -> None:
    async with audit_agent(db_settings) as (client, _):
        # platinum: restored in 10 min (within 15) and 20 min (miss); gold: escalated; silver open
        plan = [
            ("INC-2026-0001", "platinum", 600, False),
            ("INC-2026-0002", "platinum", 1200, False),
            ("INC-2026-0003", "gold", None, True),
            ("INC-2026-0004", "silver", None, False),
        ]
        for n, (iid, tier, restore_s, escalate) in enumerate(plan):
            start = T0 + timedelta(hours=n)
            await send(client, "incident_created", incident_id=iid, occurred_at=start.isoformat())
            await send(
                client,
                "service_impact_assessed",
                incident_id=iid,
                occurred_at=(start + timedelta(seconds=30)).isoformat(),
                details={"highest_tier": tier, "total_affected": 15},
            )
            if restore_s:
                await send(
                    client,
                    "restoration_complete",
                    incident_id=iid,
                    occurred_at=(start + timedelta(seconds=restore_s)).isoformat(),
                    details={"tunnel_id": f"t{n}"},
                )
            if escalate:
                await send(
                    client,
                    "escalation",
                    incident_id=iid,
                    occurred_at=(start + timedelta(seconds=90)).isoformat(),
                    details={"reason": "no_path"},
                )
        # Outside the period: ignored.
        await send(
            client,
            "incident_created",
            incident_id="INC-2025-0009",
            occurred_at="2025-01-01T00:00:00Z",
        )

        report = (await client.get("/api/v1/audit/reports/incident/INC-2026-0001")).json()
        assert [e["event_type"] for e in report["events"]] == [
            "incident_created",
            "service_impact_assessed",
            "restoration_complete",
        ]
        assert report["tier"] == "platinum" and report["duration_s"] == 600
        csv_text = (
            await client.get("/api/v1/audit/reports/incident/INC-2026-0001?format=csv")
        ).text
        assert (
            list(csv.DictReader(io.StringIO(csv_text)))[2]["event_type"] == "restoration_complete"
        )
        page = await client.get("/api/v1/audit/reports/incident/INC-2026-0001?format=html")
        assert page.headers["content-type"].startswith("text/html")
        assert "restoration_complete" in page.text and "INC-2026-0001" in page.text
        assert (await client.get("/api/v1/audit/reports/incident/INC-2099-0001")).status_code == 404

        params = {"period_start": "2026-03-01T00:00:00Z", "period_end": "2026-03-02T00:00:00Z"}
        sla = (await client.get("/api/v1/audit/reports/sla", params=params)).json()
        rows = {r["tier"]: r for r in sla["rows"]}
        # Every tier row carries the same figures, and the period's "all" row adds them up.
        assert set(rows) == {"platinum", "gold", "silver", "all"}
        assert rows["platinum"]["restored"] == 2 and rows["platinum"]["escalated"] == 0
        assert rows["platinum"]["median_ttr_s"] == 900 and rows["platinum"]["max_ttr_s"] == 1200
        assert rows["platinum"]["target_s"] == sla["targets_s"]["platinum"]
        assert rows["all"]["incidents"] == 4 and rows["all"]["restored"] == 2
        assert rows["all"]["escalated"] == 1 and rows["all"]["open"] == 1
        assert rows["platinum"]["incidents"] == 2 and rows["platinum"]["mttr_s"] == 900
        assert rows["platinum"]["within_target"] == 1
        assert rows["platinum"]["sla_compliance_pct"] == 50.0
        assert rows["gold"]["escalated"] == 1 and rows["gold"]["sla_compliance_pct"] == 0.0
        assert rows["silver"]["open"] == 1 and rows["silver"]["mttr_s"] is None
        assert rows["all"]["incidents"] == 4
        daily = await client.get(
            "/api/v1/audit/reports/sla", params=params | {"bucket": "day", "format": "csv"}
        )
        table = list(csv.DictReader(io.StringIO(daily.text)))
        assert {r["period"] for r in table} == {"2026-03-01"}
        html_page = await client.get(
            "/api/v1/audit/reports/sla", params=params | {"format": "html"}
        )
        assert "platinum" in html_page.text and "<table>" in html_page.text
        bad = await client.get("/api/v1/audit/reports/sla", params={**params, "format": "pdf"})
        assert bad.status_code == 422


async def test_elasticsearch_sink_buffers_while_down(db_settings: Settings) -> None:
    es_url = "http://es.test:9200"
    indexed: dict[str, dict[str, Any]] = {}

    def bulk(request: httpx.Request) -> httpx.Response:
        lines = request.content.decode().strip().split("\n")
        items = []
        for action, doc in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action)["index"]
            indexed[meta["_id"]] = json.loads(doc)
            items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
        return httpx.Response(200, json={"took": 3, "errors": False, "items": items})

    settings = AuditSettings(elasticsearch_url=es_url, elasticsearch_retry_max_s=0.2)
    with respx.mock(assert_all_called=False) as router:
        route = router.post(f"{es_url}/_bulk")
        route.side_effect = httpx.ConnectError("connection refused")
        async with audit_agent(db_settings, settings) as (client, _):
            for i in range(5):
                await send(client, "tunnel_provisioned", key=f"e{i}", details={"i": i})
            await wait_for(lambda: route.call_count >= 2)
            state = (await client.get("/api/v1/audit/sink")).json()
            assert state["pending"] == 5 and "ConnectError" in state["last_error"]
            assert indexed == {}

            route.side_effect = bulk  # Elasticsearch is back
            await send(client, "sla_recovered", key="e5")

            async def drained() -> bool:
                return (await client.get("/api/v1/audit/sink")).json()["pending"] == 0

            await wait_for(drained, timeout=20)
            assert sorted(int(k) for k in indexed) == list(range(1, 7))
            assert (
                indexed["1"]["details"] == {"i": 0}
                and indexed["6"]["event_type"] == "sla_recovered"
            )
            assert all(len(doc["hash"]) == 64 for doc in indexed.values())

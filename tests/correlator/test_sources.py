"""Each source in its native format, CSV good and bad, REST, and 4xx that stores nothing."""

from __future__ import annotations

from typing import Any

from tests.correlator.conftest import AUTH
from tests.correlator.payloads import (
    alertmanager_v4,
    am_alert,
    datadog_default,
    datadog_servicenow,
    skylight,
)


async def _stored(h: Any, **params: Any) -> list[dict[str, Any]]:
    r = await h.client.get("/api/v1/alerts", params=params)
    assert r.status_code == 200
    rows: list[dict[str, Any]] = r.json()
    return rows


async def test_pca_single_and_list(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now))
        assert r.status_code == 202
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident" and entry["link"] == "pe1-pe2"
        r = await h.post(
            "/api/v1/tickets/webhook/pca",
            [skylight(h.clock.now, "pe2-pe3"), skylight(h.clock.now, "pe1-pe2", state="cleared")],
        )
        assert [e["disposition"] for e in r.json()["alerts"]] == ["correlated", "correlated"]
        (row,) = await _stored(h, source="pca", link="pe2-pe3")
        assert row["value"] == 85.0 and row["threshold"] == 50.0
        assert row["labels"]["policyName"] == "SLA delay gold"
        assert row["duration_s"] == 300.0


async def test_pca_reversed_link_name_is_canonical(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe2-pe1"))
        assert r.json()["alerts"][0]["link"] == "pe1-pe2"


async def test_alertmanager_v4_link_label_and_fingerprint(harness: Any) -> None:
    async with harness() as h:
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, {"link": "pe1-pe2"})])
        r = await h.post("/api/v1/tickets/webhook/alertmanager", body)
        assert r.status_code == 202, r.text
        (entry,) = r.json()["alerts"]
        assert entry["fingerprint"] == "c1e2a1b9f0d2c3e4"
        assert entry["disposition"] == "new_incident"
        (row,) = await _stored(h, source="alertmanager")
        assert row["severity"] == "critical" and row["metric"] == "LinkLatencyHigh"
        assert row["value"] == 92.0


async def test_alertmanager_link_from_node_and_interface(harness: Any) -> None:
    async with harness() as h:
        labels = {"instance": "pe2:9100", "interface": "GigabitEthernet0/0/0/1"}
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, labels, fingerprint="aa01")])
        r = await h.post("/api/v1/tickets/webhook/alertmanager", body)
        assert r.json()["alerts"][0]["link"] == "pe1-pe2"
        labels = {"instance": "pe3:9100", "peer": "pe2"}
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, labels, fingerprint="aa02")])
        r = await h.post("/api/v1/tickets/webhook/alertmanager", body)
        assert r.json()["alerts"][0]["link"] == "pe2-pe3"


async def test_alertmanager_wrong_version_refused(harness: Any) -> None:
    async with harness() as h:
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, {"link": "pe1-pe2"})])
        body["version"] = "3"
        r = await h.post("/api/v1/tickets/webhook/alertmanager", body)
        assert r.status_code == 422 and "version" in r.json()["detail"]
        assert await _stored(h) == []


async def test_datadog_default_body(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/datadog", datadog_default(h.clock.now))
        assert r.status_code == 202, r.text
        (entry,) = r.json()["alerts"]
        assert entry["link"] == "pe2-pe3" and entry["disposition"] == "new_incident"


async def test_datadog_servicenow_sample_triggered_then_recovered(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/datadog", datadog_servicenow(h.clock.now))
        (entry,) = r.json()["alerts"]
        assert entry["link"] == "pe1-pe2" and entry["disposition"] == "new_incident"
        (row,) = await _stored(h, source="datadog")
        assert row["severity"] == "high" and row["labels"]["team"] == "noc"
        r = await h.post(
            "/api/v1/tickets/webhook/datadog", datadog_servicenow(h.clock.now, "Recovered")
        )
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "correlated"
        rows = await _stored(h, source="datadog")
        assert rows[0]["status"] == "resolved"


async def test_cnc_alarm_and_service_health(harness: Any) -> None:
    async with harness() as h:
        alarm = {
            "alarm": {
                "alarm-id": "A-1001",
                "node": "pe3",
                "link-id": "pe3-pe4",
                "severity": "major",
                "state": "raised",
                "type": "link-delay-threshold",
                "description": "Link delay threshold crossed",
                "timestamp": h.clock.now.isoformat(),
            }
        }
        r = await h.post("/api/v1/tickets/webhook/cnc", alarm)
        assert r.status_code == 202, r.text
        assert r.json()["alerts"][0]["link"] == "pe3-pe4"
        health = {
            "ietf-restconf:notification": {
                "eventTime": h.clock.now.isoformat(),
                "cisco-crosswork-service-health:service-health-notification": {
                    "service-name": "L3VPN-GOLD-7",
                    "health": "Degraded",
                    "severity": "major",
                    "symptoms": ["SLA delay violated on link pe2-pe3", "jitter on pe3-pe4"],
                },
            }
        }
        r = await h.post("/api/v1/tickets/webhook/cnc", health)
        assert r.status_code == 202, r.text
        links = [e["link"] for e in r.json()["alerts"]]
        assert links == ["pe2-pe3", "pe3-pe4"]


async def test_generic_with_mapping(harness: Any) -> None:
    mapping = {"link": "object.name", "status": "state", "severity": "level", "summary": "text"}
    async with harness(generic_mapping=mapping, generic_items_path="events") as h:
        body = {
            "events": [{"object": {"name": "pe1-pe4"}, "state": "open", "level": "P1", "text": "x"}]
        }
        r = await h.post("/api/v1/tickets/webhook/generic", body)
        assert r.status_code == 202, r.text
        (row,) = await _stored(h, source="generic")
        assert row["link"] == "pe1-pe4" and row["severity"] == "critical"
        r = await h.post("/api/v1/tickets/webhook/generic", {"nothing": []})
        assert r.status_code == 422 and "events" in r.json()["detail"]


async def test_rest_alerts_and_validation(harness: Any) -> None:
    async with harness() as h:
        ok = {"link": "pe1-pe2", "severity": "high", "metric": "loss", "value": 3, "threshold": 1}
        r = await h.post("/api/v1/alerts", [ok, {**ok, "link": "pe2-pe3"}])
        assert r.status_code == 202 and len(r.json()["alerts"]) == 2
        bad = [ok, {**ok, "severity": "apocalyptic"}]
        r = await h.post("/api/v1/alerts", bad)
        assert r.status_code == 422 and "alerts[1].severity" in r.json()["detail"]
        r = await h.post("/api/v1/alerts", {**ok, "colour": "red"})
        assert r.status_code == 422 and "colour" in r.json()["detail"]
        assert len(await _stored(h)) == 2


async def test_unknown_source_and_malformed_json(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/zabbix", {})
        assert r.status_code == 404 and "pca" in r.json()["detail"]
        r = await h.client.post("/api/v1/tickets/webhook/pca", content=b"{not json", headers=AUTH)
        assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
        r = await h.post(
            "/api/v1/tickets/webhook/pca", [skylight(h.clock.now), {"alertState": "raised"}]
        )
        assert r.status_code == 422 and "objectName" in r.json()["detail"]
        assert await _stored(h) == []


CSV_GOOD = (
    "timestamp,source,severity,link,metric,value,summary,region,status\n"
    "{now},pca,high,pe1-pe2,delay-avg,85,delay high,west,firing\n"
    "{now},pca,medium,pe2-pe3,delay-avg,70,delay high,west,\n"
)


async def test_csv_upload_good_file(harness: Any) -> None:
    async with harness() as h:
        text = CSV_GOOD.format(now=h.clock.now.isoformat())
        r = await h.client.post(
            "/api/v1/tickets/upload-csv",
            files={"file": ("alerts.csv", text.encode(), "text/csv")},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        assert [e["disposition"] for e in r.json()["alerts"]] == ["new_incident", "correlated"]
        rows = await _stored(h, link="pe1-pe2")
        assert rows[0]["labels"] == {"region": "west"}


async def test_csv_missing_columns_refused_whole(harness: Any) -> None:
    async with harness() as h:
        text = "timestamp,source,link,value\n2026-01-19T10:30:00Z,pca,pe1-pe2,85\n"
        r = await h.client.post(
            "/api/v1/tickets/upload-csv", files={"file": ("a.csv", text, "text/csv")}, headers=AUTH
        )
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "severity" in detail and "metric" in detail and "summary" in detail
        assert await _stored(h) == []


async def test_csv_bad_row_refuses_file_naming_the_row(harness: Any) -> None:
    async with harness() as h:
        now = h.clock.now.isoformat()
        text = (
            "timestamp,source,severity,link,metric,value,summary\n"
            f"{now},pca,high,pe1-pe2,delay-avg,85,ok\n"
            f"{now},pca,high,pe2-pe3,delay-avg,eighty,bad value\n"
        )
        r = await h.client.post(
            "/api/v1/tickets/upload-csv",
            content=text.encode(),
            headers={**AUTH, "content-type": "text/csv"},
        )
        assert r.status_code == 422
        assert "row 3" in r.json()["detail"] and "value" in r.json()["detail"]
        assert await _stored(h) == []

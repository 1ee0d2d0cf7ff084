"""Dedup, correlation by shared node and SRLG, inhibition by node alarms, discard rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.correlator.conftest import AUTH
from tests.correlator.payloads import alertmanager_v4, am_alert, skylight


async def _pca(h: Any, link: str, **kw: Any) -> dict[str, Any]:
    r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, link, **kw))
    assert r.status_code == 202, r.text
    entry: dict[str, Any] = r.json()["alerts"][0]
    return entry


async def test_duplicate_within_window_then_new_after(harness: Any) -> None:
    async with harness(dedup_window_s=60) as h:
        first = await _pca(h, "pe1-pe2")
        again = await _pca(h, "pe1-pe2")
        assert again["disposition"] == "duplicate"
        assert again["incident_id"] == first["incident_id"]
        body = alertmanager_v4(h.clock.now, [am_alert(h.clock.now, {"link": "pe1-pe2"})])
        await h.post("/api/v1/tickets/webhook/alertmanager", body)
        r = await h.post("/api/v1/tickets/webhook/alertmanager", body)
        assert r.json()["alerts"][0]["disposition"] == "duplicate"
        h.clock.advance(61)
        later = await _pca(h, "pe1-pe2")
        assert later["disposition"] == "correlated"


async def test_shared_srlg_correlates_without_shared_node(harness: Any) -> None:
    async with harness() as h:
        first = await _pca(h, "pe1-pe2")
        srlg = await _pca(h, "pe3-pe4")
        assert srlg["disposition"] == "correlated"
        assert srlg["incident_id"] == first["incident_id"]
        assert "SRLG 100" in srlg["reason"]
        other = await _pca(h, "p9-p10")
        assert other["disposition"] == "new_incident"
        assert other["incident_id"] != first["incident_id"]


async def test_cnc_down_degrades_to_shared_node(harness: Any, cnc: Any) -> None:
    cnc.up = False
    async with harness() as h:
        first = await _pca(h, "pe1-pe2")
        node = await _pca(h, "pe2-pe3")
        assert node["disposition"] == "correlated" and "shared node pe2" in node["reason"]
        no_srlg = await _pca(h, "pe3-pe4")
        assert no_srlg["incident_id"] == first["incident_id"]  # pe3 is shared with pe2-pe3
        alone = await _pca(h, "pe5-pe6")
        assert alone["disposition"] == "new_incident"


async def test_window_limits_correlation(harness: Any) -> None:
    async with harness(correlation_window_s=10) as h:
        first = await _pca(h, "pe1-pe2")
        h.clock.advance(11)
        late = await _pca(h, "pe2-pe3")
        assert late["disposition"] == "new_incident"
        assert late["incident_id"] != first["incident_id"]


async def test_node_alarm_inhibits_its_links(harness: Any) -> None:
    async with harness() as h:
        alarm = {
            "alarm-id": "N-7",
            "node": "pe2",
            "severity": "critical",
            "state": "raised",
            "type": "node-unreachable",
            "description": "pe2 unreachable",
        }
        r = await h.post("/api/v1/tickets/webhook/cnc", alarm)
        (node_entry,) = r.json()["alerts"]
        assert node_entry["disposition"] == "new_incident"
        link_entry = await _pca(h, "pe1-pe2")
        assert link_entry["disposition"] == "correlated"
        assert link_entry["incident_id"] == node_entry["incident_id"]
        assert "inhibited by node alarm on pe2" in link_entry["reason"]
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        assert ticket["severity"] == "critical"


async def test_discard_rules(harness: Any) -> None:
    async with harness(stale_after_s=600) as h:
        info = await h.post("/api/v1/alerts", {"link": "pe1-pe2", "severity": "info"})
        assert info.json()["alerts"][0]["disposition"] == "discarded"
        cleared = await _pca(h, "pe2-pe3", state="cleared")
        assert cleared["disposition"] == "discarded"
        assert cleared["reason"] == "cleared with nothing open"
        old = (h.clock.now - timedelta(hours=2)).isoformat()
        stale = await h.post("/api/v1/alerts", {"link": "pe1-pe2", "timestamp": old})
        entry = stale.json()["alerts"][0]
        assert entry["disposition"] == "discarded" and entry["reason"].startswith("stale")
        nowhere = await h.post("/api/v1/alerts", {"severity": "high"})
        assert nowhere.json()["alerts"][0]["disposition"] == "discarded"
        listed = (await h.client.get("/api/v1/alerts", params={"disposition": "discarded"})).json()
        assert len(listed) == 4
        await h.flush()
        kinds = [p["event_type"] for p in h.peers.of("audit")]
        assert kinds.count("alert_discarded") == 4


async def test_incident_closed_frees_links(harness: Any) -> None:
    async with harness() as h:
        first = await _pca(h, "pe1-pe2")
        await h.elapse(3.1)
        await h.delivered("orchestrator", "start_incident")
        task = {
            "task_type": "incident_closed",
            "payload": {
                "incident_id": first["incident_id"],
                "resolution": "resolved",
                "degraded_links": ["pe1-pe2"],
            },
        }
        r = await h.client.post("/a2a/tasks", json=task, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["closed"] is True
        again = await _pca(h, "pe1-pe2")
        assert again["disposition"] == "new_incident"
        assert again["incident_id"] != first["incident_id"]
        assert again["incident_id"].endswith("-0002")


async def test_ingest_alerts_task_proactive(harness: Any) -> None:
    async with harness() as h:
        task = {
            "task_type": "ingest_alerts",
            "payload": {
                "proactive": True,
                "alerts": [
                    {
                        "source": "traffic",
                        "link": "pe1-pe4",
                        "severity": "medium",
                        "metric": "utilisation_forecast",
                        "value": 82,
                        "threshold": 70,
                    }
                ],
            },
        }
        r = await h.client.post("/a2a/tasks", json=task, headers=AUTH)
        assert r.status_code == 200, r.text
        (entry,) = r.json()["result"]["alerts"]
        assert entry["disposition"] == "new_incident"
        await h.elapse(3.1)
        (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["proactive"] is True and start["degraded_links"] == ["pe1-pe4"]
        bad = {"task_type": "ingest_alerts", "payload": {"alerts": []}}
        r = await h.client.post("/a2a/tasks", json=bad, headers=AUTH)
        assert r.status_code == 422 and "alerts" in str(r.json())

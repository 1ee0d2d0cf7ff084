"""Tickets that are not about a link (#12): a host's alerts become host tickets, not discarded.

Every source that can name a host (Alertmanager's ``instance``/``host`` label, Datadog's
``host_name``, a CSV row's ``host`` column, the demo ticket API) opens a ticket whose
``new_ticket`` and ``start_incident`` say ``kind: host`` with the words runbook matching
reads; network alerts keep their closed loop (``kind: network``, links, as always).
"""

from __future__ import annotations

from typing import Any

from tests.correlator.payloads import skylight


def disk_alert(status: str = "firing", instance: str = "web-03:9100") -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "cxm",
        "groupKey": '{}:{alertname="NodeFilesystemSpaceFillingUp"}',
        "commonLabels": {},
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "NodeFilesystemSpaceFillingUp",
                    "instance": instance,
                    "mountpoint": "/",
                    "fstype": "ext4",
                    "severity": "warning",
                },
                "annotations": {
                    "summary": "Filesystem / on web-03 is filling up",
                    "description": "Filesystem / has 4% space left and will fill within 4 hours.",
                },
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"fs-{instance}",
            }
        ],
    }


async def test_alertmanager_host_alert_becomes_a_host_ticket(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/alertmanager", disk_alert())
        assert r.status_code == 202, r.text
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident", entry
        assert "host ticket for web-03" in entry["reason"]
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["incident_id"] == entry["incident_id"]
        assert ticket["kind"] == "host"
        assert ticket["host"] == "web-03"
        assert ticket["title"] == "Filesystem / on web-03 is filling up"
        assert "4% space left" in ticket["description"]
        assert ticket["labels"]["alertname"] == "NodeFilesystemSpaceFillingUp"
        assert ticket["labels"]["mountpoint"] == "/"
        assert ticket["degraded_links"] == []
        assert ticket["severity"] == "medium"
        (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["kind"] == "host" and start["host"] == "web-03"
        assert start["degraded_links"] == []
        assert start["labels"]["alertname"] == "NodeFilesystemSpaceFillingUp"
        assert start["triage"]["classification"] in ("true_positive", "uncertain")


async def test_same_host_joins_its_ticket_and_its_clear_correlates(harness: Any) -> None:
    async with harness() as h:
        first = await h.post("/api/v1/tickets/webhook/alertmanager", disk_alert())
        incident = first.json()["alerts"][0]["incident_id"]
        other = disk_alert()
        other["alerts"][0]["labels"]["alertname"] = "NodeMemoryHigh"
        other["alerts"][0]["fingerprint"] = "mem-web-03"
        joined = (await h.post("/api/v1/tickets/webhook/alertmanager", other)).json()["alerts"][0]
        assert (joined["disposition"], joined["incident_id"]) == ("correlated", incident)
        assert "host web-03 already in" in joined["reason"]
        cleared = disk_alert("resolved")
        cleared["alerts"][0]["endsAt"] = h.clock.now.isoformat()
        got = (await h.post("/api/v1/tickets/webhook/alertmanager", cleared)).json()["alerts"][0]
        assert (got["disposition"], got["incident_id"]) == ("correlated", incident)


async def test_host_alert_cleared_before_emission_is_closed_as_false_positive(
    harness: Any,
) -> None:
    """new → analyzing (triage) → closed as a false positive: it fired and cleared at once."""
    async with harness() as h:
        await h.post("/api/v1/tickets/webhook/alertmanager", disk_alert())
        cleared = disk_alert("resolved")
        cleared["alerts"][0]["endsAt"] = h.clock.now.isoformat()
        await h.post("/api/v1/tickets/webhook/alertmanager", cleared)
        await h.elapse(3.1)
        (closed,) = await h.delivered("io", "ticket_closed")
        assert closed["resolution"] == "false_positive"
        await h.flush()
        assert h.peers.of("orchestrator", "start_incident") == []


async def test_datadog_csv_and_demo_name_hosts(harness: Any) -> None:
    async with harness() as h:
        dd = {
            "alert_transition": "Triggered",
            "alert_title": "[Triggered] Postgres connections near max on db-01",
            "host_name": "db-01",
            "body": "pg connections at 96% of max_connections",
            "alert_id": "dd-1",
            "tags": "service:postgres,env:prod",
        }
        r = await h.post("/api/v1/tickets/webhook/datadog", dd)
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident", entry
        csv = (
            "timestamp,source,severity,link,metric,value,summary,host\n"
            f"{h.clock.now.isoformat()},nagios,high,,disk,97,Disk full on app-7,app-7\n"
        )
        r = await h.client.post(
            "/api/v1/tickets/upload-csv",
            content=csv,
            headers={"Authorization": "Bearer test-mesh-token", "Content-Type": "text/csv"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["alerts"][0]["disposition"] == "new_incident"
        demo = {
            "title": "Checkout service returns 502",
            "description": "nginx upstream errors since 10:02",
            "severity": "high",
            "host": "lb-2",
            "labels": {"service": "nginx"},
        }
        r = await h.post("/api/v1/tickets/demo/ticket", demo)
        assert r.status_code == 202, r.text
        assert r.json()["alerts"][0]["disposition"] == "new_incident"
        bad = await h.post("/api/v1/tickets/demo/ticket", {**demo, "severity": "urgent"})
        assert bad.status_code == 422 and "severity" in bad.text
        await h.elapse(3.1)
        tickets = {t["host"]: t for t in await h.delivered("io", "new_ticket", 3)}
        assert set(tickets) == {"db-01", "app-7", "lb-2"}
        assert all(t["kind"] == "host" for t in tickets.values())
        assert tickets["lb-2"]["title"] == "Checkout service returns 502"
        assert tickets["lb-2"]["description"] == "nginx upstream errors since 10:02"
        assert tickets["lb-2"]["labels"]["service"] == "nginx"
        assert tickets["lb-2"]["severity"] == "high"
        assert tickets["db-01"]["labels"]["service"] == "postgres"


async def test_network_alerts_stay_network_incidents(harness: Any) -> None:
    async with harness() as h:
        await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        # an exporter on a network node (the topology knows pe2): a node alarm, not a host
        node = disk_alert(instance="pe2:9116")
        node["alerts"][0]["labels"]["alertname"] = "InterfaceDown"
        r = await h.post("/api/v1/tickets/webhook/alertmanager", node)
        assert r.json()["alerts"][0]["disposition"] == "correlated"
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["kind"] == "network"
        assert "host" not in ticket and "title" not in ticket
        (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["kind"] == "network" and start["degraded_links"][0] == "pe1-pe2"


async def test_filesystem_alert_device_label_is_not_the_host(harness: Any) -> None:
    """node_exporter's filesystem alerts carry the block device as ``device`` (``/dev/sda1``,
    ``tmpfs``): the host is the ``instance``, never the device."""
    async with harness() as h:
        alert = disk_alert(instance="web-05:9100")
        alert["alerts"][0]["labels"]["device"] = "/dev/sda1"
        r = await h.post("/api/v1/tickets/webhook/alertmanager", alert)
        (entry,) = r.json()["alerts"]
        assert "host ticket for web-05" in entry["reason"], entry

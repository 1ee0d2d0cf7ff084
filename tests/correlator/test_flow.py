"""The seed's phase 0-1: alerts in, one incident out, new_ticket exactly as the seed shows it."""

from __future__ import annotations

from typing import Any

from tests.correlator.payloads import skylight


async def test_demo_ticket_new_ticket_matches_seed(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/demo/ticket", {})
        assert r.status_code == 202, r.text
        entries = r.json()["alerts"]
        assert [e["disposition"] for e in entries] == ["new_incident", "correlated"]
        incident = entries[0]["incident_id"]
        assert incident == entries[1]["incident_id"]
        assert incident.startswith(f"INC-{h.clock.now.year}-0001")
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["incident_id"] == incident
        assert ticket["severity"] == "high"
        assert ticket["summary"] == "SLA degradation detected on pe1-pe2, pe2-pe3"
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        assert ticket["affected_services"] == []
        assert ticket["source_agent"] == "event_correlator"
        assert ticket["status"] == "new"
        assert "created_at" in ticket
        (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        assert start["triage"]["classification"] in ("true_positive", "uncertain")
        audits = await h.delivered("audit", "audit_event", 3)
        kinds = [a["event_type"] for a in audits]
        assert "incident_created" in kinds and "alert_correlated" in kinds


async def test_lab_sequence_links_moments_apart_share_first_ticket(harness: Any) -> None:
    async with harness() as h:
        r1 = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        h.clock.advance(1.0)
        r2 = await h.post("/api/v1/tickets/webhook/pca", [skylight(h.clock.now, "pe2-pe3")])
        assert r1.json()["alerts"][0]["disposition"] == "new_incident"
        assert r2.json()["alerts"][0]["disposition"] == "correlated"
        await h.elapse(2.5)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        # A link joining after emission reaches the orchestrator as links_added.
        h.clock.advance(1)
        r3 = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe3-pe4"))
        assert r3.json()["alerts"][0]["disposition"] == "correlated"
        (signal,) = await h.delivered("orchestrator", "incident_signal")
        assert signal["signal"] == "links_added" and signal["links"] == ["pe3-pe4"]
        listed = (await h.client.get("/api/v1/alerts", params={"link": "pe3-pe4"})).json()
        assert listed[0]["incident_id"] == ticket["incident_id"]
        assert listed[0]["disposition"] == "correlated"

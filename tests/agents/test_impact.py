"""Service Impact: affected services by tier, and a CNC failure surfacing as an error."""

from __future__ import annotations

from services.impact.app import create_app
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running


async def test_counts_services_by_tier_as_in_the_seed(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "assess_impact",
            {"incident_id": "INC-2026-0001", "degraded_links": ["pe1-pe2", "pe2-pe3"]},
        )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["total_affected"] == 15
    assert result["services_by_tier"] == {"platinum": 2, "gold": 5, "silver": 8}
    assert list(result["services_by_tier"]) == ["platinum", "gold", "silver"]
    assert result["highest_tier"] == "platinum"
    first = result["affected_services"][0]
    assert first["tier"] == "platinum"
    assert {"service_id", "name", "service_type", "head_end", "end_point", "path"} <= set(first)
    assert {s["service_type"] for s in result["affected_services"]} == {"l2vpn", "l3vpn"}
    # A service running the other way (pe3 -> pe2) still crosses pe2-pe3.
    reversed_ = [s for s in result["affected_services"] if s["head_end"] == "pe3"]
    assert len(reversed_) == 7
    assert all(s["path"] == s["degraded_links"] == ["pe2-pe3"] for s in reversed_)
    # tiers and bandwidth come from the operators' inventory, not from CNC
    assert {s["bandwidth_mbps"] for s in result["affected_services"]} == {100}


async def test_no_service_on_the_link_means_no_impact(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "assess_impact", {"incident_id": "INC-2026-0002", "degraded_links": ["pe1-p3"]}
        )
    result = response.json()["result"]
    assert result["total_affected"] == 0
    assert result["services_by_tier"] == {}
    assert result["highest_tier"] is None


async def test_cnc_failure_is_an_error_not_an_empty_answer(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        net.services_status = 503
        transient = await run_task(
            client, "assess_impact", {"incident_id": "INC-2026-0003", "degraded_links": ["pe1-pe2"]}
        )
        net.services_status = 400
        final = await run_task(
            client, "assess_impact", {"incident_id": "INC-2026-0003", "degraded_links": ["pe1-pe2"]}
        )
    assert transient.status_code == 503
    assert transient.json()["detail"]["code"] == "southbound"
    assert final.status_code == 502


async def test_invalid_payload_names_the_field(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "assess_impact", {"incident_id": "INC-2026-0004", "degraded_links": []}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "payload.degraded_links"

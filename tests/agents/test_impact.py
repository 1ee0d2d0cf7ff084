"""Service Impact: affected services by tier, and a CNC failure surfacing as an error."""

from __future__ import annotations

from services.impact.app import assess, create_app
from shared.models import AffectedService
from shared.settings import Settings
from shared.southbound import VpnService
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


def vpn(vpn_id: str, path: list[str], base: list[str], steered: bool = False) -> VpnService:
    return VpnService(
        vpn_id=vpn_id,
        name=vpn_id,
        service_type="l3vpn",
        sla_tier="gold",
        head_end="pe1",
        end_point="pe4",
        path=path,
        base_path=base,
        steered=steered,
    )


def crossed(service: AffectedService) -> list[str]:
    named: list[str] = (service.model_extra or {})["degraded_links"]
    return named


CORRIDOR = ["pe1-pe2", "pe2-pe3", "pe3-pe4"]
PROTECTION = ["pe1-p1", "p1-p2", "p2-pe4"]
NETWORK = [
    vpn("home", CORRIDOR, CORRIDOR),
    vpn("moved", PROTECTION, CORRIDOR, steered=True),  # off pe1-pe2, onto the tunnel
]


def test_the_reactive_assessment_reads_the_current_path_only() -> None:
    on_corridor = assess(NETWORK, ["pe2-pe1"])
    assert [s.service_id for s in on_corridor.affected_services] == ["home"]
    assert crossed(on_corridor.affected_services[0]) == ["pe1-pe2"]
    on_tunnel = assess(NETWORK, ["p2-pe4", "pe3-pe4"])
    assert {s.service_id: crossed(s) for s in on_tunnel.affected_services} == {
        "home": ["pe3-pe4"],
        "moved": ["p2-pe4"],
    }
    assert on_tunnel.total_affected == 2


def test_the_native_assessment_adds_the_riders_by_base_path() -> None:
    native = assess(NETWORK, ["pe1-pe2", "p2-pe4"], native=True)
    found = {s.service_id: s for s in native.affected_services}
    assert {sid: crossed(s) for sid, s in found.items()} == {
        "home": ["pe1-pe2"],
        "moved": ["p2-pe4", "pe1-pe2"],  # rides p2-pe4 now, pe1-pe2 natively
    }
    assert found["moved"].path == PROTECTION and found["moved"].base_path == CORRIDOR
    assert (found["moved"].model_extra or {})["steered"] is True

"""Restoration Monitor: SLA checks both ways, cutover with revert, cleanup."""

from __future__ import annotations

from typing import Any

from services.restore.app import create_app
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running

LINKS = ["pe1-pe2", "pe2-pe3"]
TUNNEL = "sr-policy-pe1-pe4-protect-001"


def _policy() -> dict[str, Any]:
    return {
        "head-end": "pe1",
        "end-point": "pe4",
        "color": 1001,
        "path-name": TUNNEL,
        "binding-sid": 24001,
    }


async def test_check_sla_within(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "check_sla", {"incident_id": "INC-2026-0001", "links": LINKS, "tier": "gold"}
        )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["within_sla"] is True
    assert set(result["links"]) == set(LINKS)
    assert result["links"]["pe1-pe2"]["delay_ms"] == 5.0
    assert result["links"]["pe1-pe2"]["violations"] == []
    assert result["thresholds"] == {"delay_ms": 50.0, "jitter_ms": 10.0, "loss_pct": 1.0}


async def test_check_sla_violated_names_the_threshold(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.metrics["pe2-pe3"] = {"delay-avg": 80.0, "packets-lost-pct": 1.0}
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "check_sla", {"incident_id": "INC-2026-0001", "links": LINKS}
        )
    result = response.json()["result"]
    assert result["within_sla"] is False
    assert result["violated_links"] == ["pe2-pe3"]
    assert result["links"]["pe1-pe2"]["within_sla"] is True
    violations = {v["metric"]: v for v in result["links"]["pe2-pe3"]["violations"]}
    assert set(violations) == {"delay_ms", "loss_pct"}  # at the threshold is not below it
    assert violations["delay_ms"] == {"metric": "delay_ms", "value": 80.0, "threshold": 50.0}


async def test_cutover_step_within_sla(agent_settings: Settings, net: FakeNetwork) -> None:
    net.policies.append(_policy())
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "cutover_step",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": TUNNEL,
                "links": LINKS,
                "protection_pct": 75,
                "original_pct": 25,
            },
        )
    result = response.json()["result"]
    assert result["applied"] is True and result["within_sla"] is True
    assert (result["protection_pct"], result["original_pct"], result["reverted"]) == (75, 25, False)
    assert [s["weight"] for s in net.steers] == [75]
    assert net.steers[0]["color"] == 1001


async def test_cutover_reverts_to_protection_on_violation(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.metrics["pe1-pe2"] = {"delay-var-avg": 12.0}
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "cutover_step",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": TUNNEL,
                "links": LINKS,
                "protection_pct": 50,
                "original_pct": 50,
                "head_end": "pe1",
                "end_point": "pe4",
                "color": 1001,
                "service_ids": ["vpn-001"],
            },
        )
    result = response.json()["result"]
    assert result["reverted"] is True and result["within_sla"] is False
    assert (result["protection_pct"], result["original_pct"]) == (100, 0)
    assert [s["weight"] for s in net.steers] == [50, 100]
    assert net.steers[0]["services"] == ["vpn-001"]


async def test_cutover_of_an_unknown_tunnel_is_404(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "cutover_step",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": "nope",
                "links": LINKS,
                "protection_pct": 25,
                "original_pct": 75,
            },
        )
    assert response.status_code == 404
    assert net.steers == []


async def test_cleanup_steers_off_then_deletes_and_is_idempotent(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.policies.append(_policy())
    body = {"incident_id": "INC-2026-0001", "tunnel_id": TUNNEL}
    async with running(create_app(agent_settings)) as client:
        first = await run_task(client, "cleanup", body)
        second = await run_task(client, "cleanup", body)
    assert first.json()["result"] == {"deleted": True, "tunnel_id": TUNNEL, "already_absent": False}
    assert second.json()["result"]["deleted"] is True
    assert second.json()["result"]["already_absent"] is True
    assert [s["weight"] for s in net.steers] == [0]
    assert net.deletes == [{"head-end": "pe1", "end-point": "pe4", "color": 1001}]
    assert net.policies == []

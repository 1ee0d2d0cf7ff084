"""Restoration Monitor: SLA checks both ways, cutover by whole services with revert, cleanup."""

from __future__ import annotations

from typing import Any

from services.restore.app import create_app
from shared.settings import Settings
from tests.agents.fakes import CAT, FakeNetwork, run_task
from tests.support import running

LINKS = ["pe1-pe2", "pe2-pe3"]
TUNNEL = "sr-policy-pe1-pe4-protect-001"
GROUP = ["vpn-x1", "vpn-x2", "vpn-x3"]  # pe1 -> pe4: bronze, gold, platinum at 250 Mbps each


def _policy() -> dict[str, Any]:
    return {
        "head-end": "pe1",
        "end-point": "pe4",
        "color": 1001,
        "path-name": TUNNEL,
        "binding-sid": 24001,
        "hops": ["p1", "p2", "pe4"],
    }


def _step(protection: int, **extra: Any) -> dict[str, Any]:
    return {
        "incident_id": "INC-2026-0001",
        "tunnel_id": TUNNEL,
        "links": LINKS,
        "protection_pct": protection,
        "original_pct": 100 - protection,
        **extra,
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
    net.metrics["pe2-pe3"] = {"delayAvg": 80.0, "packetsLostPct": 1.0}
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


async def test_cutover_moves_whole_services_highest_tier_last(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """Each step keeps the smallest set of the group carrying at least its share on the
    policy, bronze going home first and platinum last; a replayed step changes nothing."""
    net.policies.append(_policy())
    net.mappings.update({sid: 1001 for sid in GROUP})
    app = create_app(agent_settings)
    async with running(app) as client:
        kept = {}
        for protection in (75, 50, 25, 0):
            response = await run_task(client, "cutover_step", _step(protection, service_ids=GROUP))
            assert response.status_code == 200, response.text
            result = response.json()["result"]
            assert result["within_sla"] is True and result["reverted"] is False
            kept[protection] = sorted(net.mappings)
        again = await run_task(client, "cutover_step", _step(0, service_ids=GROUP))
    # 75 % of 750 Mbps needs all three; 50 % two of them (gold, platinum); 25 % platinum alone
    assert kept == {
        75: GROUP,
        50: ["vpn-x2", "vpn-x3"],
        25: ["vpn-x3"],
        0: [],
    }
    assert result["on_protection"] == [] and sorted(result["on_original"]) == GROUP
    assert again.json()["result"]["within_sla"] is True
    assert net.unmaps == ["vpn-x1", "vpn-x2", "vpn-x3"]  # the replay unmapped nothing more
    # named services: their mappings (the NSO intent) are all a step reads of them, never
    # the whole folded view (CAT's operational lists, every service's path)
    assert app.state.services.reads == 0 and app.state.mappings.reads == 5
    assert not any(method == "GET" and path.startswith(CAT) for method, path in net.requests)


async def test_cutover_reverts_to_protection_on_violation(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.policies.append(_policy())
    net.mappings.update({sid: 1001 for sid in GROUP})
    net.metrics["pe1-pe2"] = {"delayVarAvg": 12.0}
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "cutover_step",
            _step(50, head_end="pe1", end_point="pe4", color=1001, service_ids=GROUP),
        )
    result = response.json()["result"]
    assert result["reverted"] is True and result["within_sla"] is False
    assert (result["protection_pct"], result["original_pct"]) == (100, 0)
    assert net.unmaps == ["vpn-x1"]  # the step was applied, then taken back
    assert net.mappings == {sid: 1001 for sid in GROUP}


async def test_a_step_leaves_services_another_live_policy_took(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """vpn-x3 was moved onto another incident's policy since: this tunnel's cutover and
    cleanup leave it there."""
    other = {**_policy(), "color": 1002, "path-name": "other", "binding-sid": 24002}
    net.policies.extend([_policy(), other])
    net.mappings.update({"vpn-x1": 1001, "vpn-x2": 1001, "vpn-x3": 1002})
    async with running(create_app(agent_settings)) as client:
        step = await run_task(client, "cutover_step", _step(0, service_ids=GROUP))
        cleanup = await run_task(
            client,
            "cleanup",
            {"incident_id": "INC-2026-0001", "tunnel_id": TUNNEL, "service_ids": GROUP},
        )
    assert step.status_code == 200 and cleanup.status_code == 200
    assert sorted(step.json()["result"]["on_original"]) == ["vpn-x1", "vpn-x2"]
    assert net.mappings == {"vpn-x3": 1002}


async def test_cutover_of_an_unknown_tunnel_is_404(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(client, "cutover_step", {**_step(25), "tunnel_id": "nope"})
    assert response.status_code == 404
    assert net.maps == [] and net.unmaps == []


async def test_cleanup_unmaps_then_deletes_and_is_idempotent(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.policies.append(_policy())
    net.mappings.update({sid: 1001 for sid in GROUP})
    body = {"incident_id": "INC-2026-0001", "tunnel_id": TUNNEL}
    async with running(create_app(agent_settings)) as client:
        first = await run_task(client, "cleanup", body)
        second = await run_task(client, "cleanup", body)
    assert first.json()["result"] == {"deleted": True, "tunnel_id": TUNNEL, "already_absent": False}
    assert second.json()["result"]["deleted"] is True
    assert second.json()["result"]["already_absent"] is True
    # no service named: every service between the policy's ends that rides it goes home
    assert sorted(net.unmaps) == GROUP and net.mappings == {}
    assert [(d["head-end"], d["end-point"], d["color"]) for d in net.deletes] == [
        ("10.0.0.1", "10.0.0.4", 1001)
    ]
    assert net.policies == []

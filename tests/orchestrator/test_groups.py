"""One policy per group of hurt services (services with the same ends), run as whole incidents.

A policy carries only the services between its two ends (the fake's steering refuses the
others, like the lab), so an incident that hurts services between several pairs of PEs builds,
steers, monitors, cuts back and removes one policy per pair, and names what it cannot protect.
"""

from __future__ import annotations

from typing import Any

from shared.models import CUTOVER_STEPS
from tests.orchestrator.conftest import OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork, services_between
from tests.support import wait_for

INC = "INC-2026-0300"
FIRST = "sr-policy-pe1-pe3-protect-001"
SECOND = "sr-policy-pe2-pe5-protect-002"
PLATINUM = ["vpn-platinum-1", "vpn-platinum-2", "vpn-gold-1", "vpn-gold-2", "vpn-gold-3"]
SILVER = [f"vpn-silver-{i}" for i in range(1, 9)]


def two_pairs(net: FakeNetwork) -> None:
    """Platinum and gold pe1 → pe3 (1,900 Mbps); more silver services pe2 → pe5 (1,600)."""
    net.services = services_between(
        [
            ("silver", 8, ("pe2", "pe5")),  # the most services, listed first: still second
            ("platinum", 2, ("pe1", "pe3")),
            ("gold", 3, ("pe1", "pe3")),
        ]
    )


def details(net: FakeNetwork, status: str) -> list[dict[str, Any]]:
    return [p["details"] for p in net.events(INC, "status_update") if p["status"] == status]


async def test_two_groups_get_two_policies_steered_cut_back_and_removed_together(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    two_pairs(net)
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert closed["resolution"] == "resolved"
    assert net.tunnels_created == 2

    # paths: one call, the top tier's group first (the path agent reserves each group's
    # traffic for the groups after it: tests/agents/test_path_reserved.py)
    [plan] = net.to("path", INC)
    assert plan.task_type == "compute_paths"
    first_ask, second_ask = plan.payload["requests"]
    assert (first_ask["head_end"], first_ask["end_point"]) == ("pe1", "pe3")
    assert first_ask["min_bandwidth_mbps"] == 1900 and sorted(first_ask["carrying"]) == sorted(
        PLATINUM
    )
    assert (second_ask["head_end"], second_ask["end_point"]) == ("pe2", "pe5")
    assert second_ask["min_bandwidth_mbps"] == 1600

    # both policies built in one task and steered in one (each task under its own key),
    # each group's services onto its own policy
    tunnel_calls = net.to("tunnel", INC)
    assert [r.task_type for r in tunnel_calls] == ["provision_tunnels", "steer_policies"]
    assert [(t["head_end"], t["end_point"]) for t in net.provisions(INC)] == [
        ("pe1", "pe3"),
        ("pe2", "pe5"),
    ]
    steers = {p["tunnel_id"]: p["service_ids"] for p in net.steers(INC)}
    assert sorted(steers[FIRST]) == sorted(PLATINUM) and steers[SECOND] == SILVER
    assert len({r.key for r in tunnel_calls}) == len(tunnel_calls) == 2

    [provisioned] = details(net, "provisioning")
    assert provisioned["tunnel_id"] == FIRST  # the seed's fields: the first policy's
    assert [t["tunnel_id"] for t in provisioned["tunnels"]] == [FIRST, SECOND]
    assert provisioned["tunnels"][1]["service_ids"] == SILVER
    [steered] = details(net, "steering")
    assert steered["tunnel_id"] == FIRST and steered["tunnel_ids"] == [FIRST, SECOND]
    assert "unprotected_services" not in steered
    assert [t["service_ids"] for t in steered["tunnels"]][1] == SILVER

    # every cutover step on both policies, then both removed
    assert net.policy_steps(INC) == [
        (tid, protection) for protection, _ in CUTOVER_STEPS for tid in (FIRST, SECOND)
    ]
    cleanups = net.cleanups(INC)
    assert [c["tunnel_id"] for c in cleanups] == [FIRST, SECOND]
    assert cleanups[1]["service_ids"] == SILVER
    cleanup_note = [d for d in details(net, "restoring") if d.get("cleanup")]
    assert cleanup_note[0]["tunnel_ids"] == [FIRST, SECOND]

    assert closed["details"]["tunnel_id"] == FIRST
    assert closed["details"]["tunnel_ids"] == [FIRST, SECOND]
    assert [t["end_point"] for t in closed["details"]["tunnels"]] == ["pe3", "pe5"]


async def test_a_group_without_a_path_leaves_the_others_protected_and_escalates(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    two_pairs(net)
    net.no_path_between = {("pe2", "pe5")}
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
        view = await orch.incident(INC)
    assert net.tunnels_created == 1
    # the incident's REST view names every policy and every service left out
    assert view["tunnel_ids"] == [FIRST]
    assert view["unprotected_services"] == SILVER
    [steered] = details(net, "steering")
    assert steered["tunnel_ids"] == [FIRST]
    assert steered["unprotected_services"] == SILVER

    assert closed["resolution"] == "escalated"
    d = closed["details"]
    assert d["close_reason"] == "partially_protected"
    assert d["unprotected_services"] == SILVER
    [why] = d["unprotected"]
    assert (why["head_end"], why["end_point"], why["reason"]) == ("pe2", "pe5", "no_path")
    # the protected services stay on their policy for the operator, as any carrying tunnel
    assert d["tunnel_ids"] == [FIRST]
    assert d["tunnels"][0]["fate"] == "left up: it carries the protected services"
    assert net.calls.get("cleanup_policies") is None and not net.policy_steps(INC)
    [error] = net.events(INC, "error")
    assert error["error_code"] == "services_unprotected"
    assert error["details"]["unprotected_services"] == SILVER


async def test_no_group_with_a_path_escalates_as_the_seed_does(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    two_pairs(net)
    net.path_found = False
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    await wait_for(lambda: net.events(INC, "status_update"))
    assert net.tunnels_created == 0
    assert closed["details"]["close_reason"] == "no_path"
    assert sorted(closed["details"]["unprotected_services"]) == sorted([*PLATINUM, *SILVER])


async def _escalated_when(
    orchestrator: OrchFactory, net: FakeNetwork, failing: tuple[str, str]
) -> dict[str, Any]:
    """Two protected pairs, restore failing ``failing`` (task type, policy) with a southbound
    error: the incident's close, once it escalated and its events were delivered."""
    two_pairs(net)
    net.policy_fail = {failing: "southbound"}
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert closed["resolution"] == "escalated"
    return closed


async def test_one_policy_failing_a_cutover_step_escalates_naming_that_policy(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """The step went to both policies in one task; restore failed it on the second alone:
    the incident escalates as a failed step did before batches, naming that policy."""
    closed = await _escalated_when(orchestrator, net, ("cutover_policies", SECOND))
    assert closed["details"]["close_reason"] == "cutover_failed"
    [step] = net.batches(INC, "cutover_policies")
    assert [p["tunnel_id"] for p in step.payload["policies"]] == [FIRST, SECOND]
    [error] = net.events(INC, "error")
    assert error["error_code"] == "cutover_failed"
    assert error["details"]["tunnel_id"] == SECOND
    assert list(error["details"]["failed_tunnels"]) == [SECOND]
    assert f"failed on {SECOND}" in error["message"] and "CNC refused" in error["message"]
    assert not net.cleanups(INC)  # traffic stays protected for the operator


async def test_one_policy_failing_its_removal_escalates_naming_that_policy(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    closed = await _escalated_when(orchestrator, net, ("cleanup_policies", FIRST))
    assert closed["details"]["close_reason"] == "cleanup_failed"
    # every step went to both policies, once each; the cleanup once for both
    assert net.policy_steps(INC) == [
        (tid, protection) for protection, _ in CUTOVER_STEPS for tid in (FIRST, SECOND)
    ]
    assert [c["tunnel_id"] for c in net.cleanups(INC)] == [FIRST, SECOND]
    [error] = net.events(INC, "error")
    assert error["error_code"] == "cleanup_failed"
    assert error["details"]["tunnel_id"] == FIRST and FIRST in error["message"]


async def test_one_policy_failing_its_provisioning_escalates_naming_its_services(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """Both policies asked for in one task; the tunnel agent failed the second alone: the
    first is steered and kept, the incident escalates naming the services left out and why."""
    two_pairs(net)
    net.provision_fail_between = {("pe2", "pe5")}
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    [provision] = [r for r in net.to("tunnel", INC) if r.task_type == "provision_tunnels"]
    assert len(provision.payload["tunnels"]) == 2
    assert [p["tunnel_id"] for p in net.steers(INC)] == [FIRST]  # only the one built
    assert closed["resolution"] == "escalated"
    d = closed["details"]
    assert d["close_reason"] == "partially_protected"
    assert d["unprotected_services"] == SILVER
    [why] = d["unprotected"]
    assert (why["head_end"], why["end_point"]) == ("pe2", "pe5")
    assert why["reason"] == "tunnel_provision_failed" and "3 times" in why["why"]
    assert d["tunnel_ids"] == [FIRST]
    [error] = net.events(INC, "error")
    assert error["error_code"] == "services_unprotected"
    assert "pe2 → pe5" in error["message"] and "tunnel_provision_failed" in error["message"]


async def test_one_policy_failing_its_steering_escalates_naming_that_policy(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """Both policies steered in one task; the tunnel agent failed the second alone: its
    services are named unprotected (steer_failed), the first policy keeps carrying its own."""
    two_pairs(net)
    net.policy_fail = {("steer_policies", SECOND): "southbound"}
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    [steer] = [r for r in net.to("tunnel", INC) if r.task_type == "steer_policies"]
    assert [p["tunnel_id"] for p in steer.payload["policies"]] == [FIRST, SECOND]
    assert closed["resolution"] == "escalated"
    d = closed["details"]
    assert d["close_reason"] == "partially_protected"
    assert d["unprotected_services"] == SILVER
    [why] = d["unprotected"]
    assert why["reason"] == "steer_failed" and f"CNC refused {SECOND}" in why["why"]
    [steered] = details(net, "steering")
    assert steered["tunnel_ids"] == [FIRST] and steered["unprotected_services"] == SILVER
    [error] = net.events(INC, "error")
    assert error["error_code"] == "services_unprotected"
    assert "steer_failed" in error["message"]

"""Approvals: policy, approve, reject, timeout, batch, and decisions that are not pending."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.orchestrator.settings import OrchestratorSettings
from shared.models import NODES
from tests.orchestrator.conftest import Orch, OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import wait_for

INC = "INC-2026-0002"


async def pending(orch: Orch, incident_id: str, action: str) -> dict[str, Any]:
    """The approval_required IO received for ``action``, once the run has parked on it.

    The row shows the approval pending before IO hears of it (so an instant decision is taken);
    its status and action follow when the run reaches the interrupt.
    """
    request = await wait_for(
        lambda: [
            p for p in orch.net.events(incident_id, "approval_required") if p["action"] == action
        ]
    )
    await wait_for(lambda: _parked_on(orch, incident_id, action))
    first: dict[str, Any] = request[-1]
    return first


async def _parked_on(orch: Orch, incident_id: str, action: str) -> bool:
    incident = await orch.incident(incident_id)
    return incident["status"] == "waiting_approval" and any(
        a["action"] == action for a in incident["pending_approvals"]
    )


async def decide(orch: Orch, approval: dict[str, Any], decision: str, **extra: Any) -> Any:
    return await orch.task(
        "approval_decision",
        {
            "approval_id": approval["approval_id"],
            "incident_id": approval["incident_id"],
            "decision": decision,
            "decided_by": extra.pop("decided_by", "alice"),
            **extra,
        },
    )


def test_policy_rules() -> None:
    orch = OrchestratorSettings(
        approval_required_for="steer",
        approval_policy=[
            {"action": "provision", "severities": ["critical"], "require": True},
            {"action": "steer", "tiers": ["bronze"], "require": False},
        ],
    )
    assert orch.requires_approval("provision", severity="critical", tier="gold")
    assert not orch.requires_approval("provision", severity="high", tier="gold")
    assert orch.requires_approval("steer", severity="low", tier="gold")
    assert not orch.requires_approval("steer", severity="low", tier="bronze")
    assert not OrchestratorSettings().requires_approval("provision", severity="critical", tier=None)


def test_policy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_APPROVAL_REQUIRED_FOR", "provision,steer")
    monkeypatch.setenv("CXM_APPROVAL_POLICY", '[{"action": "cutover", "tiers": ["platinum"]}]')
    monkeypatch.setenv("CXM_APPROVAL_TIMEOUT_S", "60")
    orch = OrchestratorSettings()
    assert orch.always_required() == {"provision", "steer"}
    assert orch.requires_approval("cutover", severity="high", tier="platinum")
    assert orch.approval_timeout_s == 60


async def test_approve_each_step(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    async with orchestrator(approval_required_for="provision,steer") as orch:
        await orch.start(INC)
        provision = await pending(orch, INC, "provision")
        assert net.tunnels_created == 0
        assert ("4", "waiting_approval") in net.statuses(INC)
        assert provision["details"]["path"] == ["pe1", "pe4", "pe3"]
        assert provision["details"]["tier"] == "platinum"
        assert provision["expires_at"]
        incident = await orch.incident(INC)
        assert incident["status"] == "waiting_approval"
        assert incident["pending_approvals"][0]["action"] == "provision"
        response = await decide(orch, provision, "approve", notes="go")
        assert response.status_code == 200, response.text
        steer = await pending(orch, INC, "steer")
        assert net.tunnels_created == 1
        assert steer["details"]["tunnel"]["tunnel_id"] == "sr-policy-pe1-pe3-protect-001"
        assert (await decide(orch, steer, "approve", decided_by="bob")).status_code == 200
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert closed["details"]["nodes_executed"] == list(NODES)
    decisions = [
        r.payload["details"]["approval"]
        for r in net.to("audit", INC)
        if "approval" in r.payload["details"]
    ]
    assert [(d["action"], d["decision"], d["decided_by"]) for d in decisions] == [
        ("provision", "approve", "alice"),
        ("steer", "approve", "bob"),
    ]


async def test_reject_escalates(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    async with orchestrator(approval_required_for="provision") as orch:
        await orch.start(INC)
        provision = await pending(orch, INC, "provision")
        await decide(orch, provision, "reject", decided_by="carol", notes="change freeze")
        closed = await orch.closed(INC)
    assert net.statuses(INC)[-1][1] == "escalated"
    assert closed["resolution"] == "escalated"  # to a human, as IO shows escalations
    assert closed["details"]["close_reason"] == "approval_rejected"
    assert closed["details"]["rejected"] is True
    assert closed["details"]["decided_by"] == "carol"
    assert closed["details"]["notes"] == "change freeze"
    assert net.tunnels_created == 0


async def test_timeout_escalates_with_error(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    async with orchestrator(approval_required_for="provision", approval_timeout_s=30) as orch:
        await orch.start(INC)
        provision = await pending(orch, INC, "provision")
        closed = await orch.closed(INC)
        late = await decide(orch, provision, "approve")
    assert net.events(INC, "error")[0]["error_code"] == "approval_timeout"
    assert closed["resolution"] == "escalated"
    assert late.status_code == 409
    assert net.tunnels_created == 0


async def test_batch_approval(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    incidents = [f"INC-2026-01{i:02d}" for i in range(3)]
    async with orchestrator(approval_required_for="provision") as orch:
        for incident_id in incidents:
            await orch.start(incident_id)
        approvals = [await pending(orch, i, "provision") for i in incidents]
        for approval in approvals:  # the console's batch: one decision per approval
            assert (await decide(orch, approval, "approve")).status_code == 200
        for incident_id in incidents:
            closed = await orch.closed(incident_id)
            assert closed["resolution"] == "resolved"
    assert net.tunnels_created == 3


async def test_decision_not_pending_is_409(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    async with orchestrator(approval_required_for="provision") as orch:
        unknown = await decide(orch, {"approval_id": "APR-nope", "incident_id": INC}, "approve")
        await orch.start(INC)
        provision = await pending(orch, INC, "provision")
        first = await decide(orch, provision, "approve")
        second = await decide(orch, provision, "reject")
        await orch.closed(INC)
    assert unknown.status_code == 409
    assert unknown.json()["detail"]["code"] == "approval_not_pending"
    assert first.status_code == 200
    assert second.status_code == 409
    assert net.tunnels_created == 1


async def test_cutover_and_cleanup_can_need_approval(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    policy = [{"action": "cutover", "tiers": ["platinum"]}, {"action": "cleanup"}]
    async with orchestrator(approval_policy=policy) as orch:
        await orch.start(INC)
        for step in range(4):
            approval = await wait_for(
                lambda n=step: (lambda found: found[n] if len(found) > n else None)(
                    [p for p in net.events(INC, "approval_required") if p["action"] == "cutover"]
                )
            )
            await wait_for(lambda a=approval: _is_pending(orch, a["approval_id"]))
            assert (await decide(orch, approval, "approve")).status_code == 200
        cleanup = await pending(orch, INC, "cleanup")
        await decide(orch, cleanup, "approve")
        closed = await orch.closed(INC)
    assert closed["details"]["nodes_executed"] == list(NODES)


async def _is_pending(orch: Orch, approval_id: str) -> bool:
    incident = await orch.incident(INC)
    return approval_id in [a["approval_id"] for a in incident["pending_approvals"]]


async def test_path_degrading_while_provision_waits_for_approval_is_recomputed(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    async with orchestrator(approval_required_for="provision") as orch:
        await orch.start(INC)
        approval = await pending(orch, INC, "provision")
        assert approval["details"]["path"] == ["pe1", "pe4", "pe3"]
        signal = {"incident_id": INC, "signal": "links_added", "links": ["pe4-pe3"]}
        assert (await orch.task("incident_signal", signal)).status_code == 200
        response = await decide(orch, approval, "approve")
        assert response.status_code == 200, response.text
        closed = await orch.closed(INC)
    [provisioned] = net.provisions(INC)
    assert provisioned["path"] == ["pe1", "pe5", "pe3"]
    assert closed["resolution"] == "resolved"


async def test_an_approval_decided_the_moment_it_is_requested_is_taken(
    orchestrator: OrchFactory, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IO hears of the approval before the run's interrupt is indexed; approving then works."""
    async with orchestrator(approval_required_for="provision") as orch:
        runner = orch.app.state.runner
        real_sync = runner._sync
        indexed = asyncio.Event()

        async def slow_sync(incident_id: str, snapshot: Any) -> None:
            await indexed.wait()  # the row sync after the run lags behind IO
            await real_sync(incident_id, snapshot)

        monkeypatch.setattr(runner, "_sync", slow_sync)
        await orch.start(INC)
        [request] = await wait_for(lambda: net.events(INC, "approval_required"))
        response = await decide(orch, request, "approve")
        indexed.set()
        assert response.status_code == 200, response.text
        closed = await orch.closed(INC)
    assert closed["resolution"] == "resolved"
    assert net.tunnels_created == 1


async def test_rejected_steer_removes_the_unused_tunnel(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    async with orchestrator(approval_required_for="steer") as orch:
        await orch.start(INC)
        steer = await pending(orch, INC, "steer")
        await decide(orch, steer, "reject", decided_by="carol", notes="wrong window")
        closed = await orch.closed(INC)
    assert closed["resolution"] == "escalated"
    assert closed["details"]["tunnel"] == "removed: never carried traffic"
    [cleanup] = net.cleanups(INC)
    assert cleanup["tunnel_id"] == closed["details"]["tunnel_id"]
    assert not net.steers(INC)


async def test_escalation_after_steering_leaves_the_tunnel_carrying_traffic(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_default = False
    async with orchestrator(monitor_timeout_s=1) as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    assert closed["details"]["close_reason"] == "sla_not_recovered"
    assert closed["details"]["tunnel"] == "left up: it carries the protected services"
    assert not net.cleanups(INC)

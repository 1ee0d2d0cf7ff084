"""Single nodes on their own: real ``Effects``, the mesh routed to ``FakeNetwork``, the
outbox recorded. Each test builds the state a node would find, runs the node once and checks
the ``Command`` it returns (where it goes, what it writes) and what it said to peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from pydantic import BaseModel

from services.orchestrator.flow import Deps, IncidentState, initial_state
from services.orchestrator.flow.control import on_signal
from services.orchestrator.flow.detect import detect
from services.orchestrator.flow.effects import Effects, per_policy
from services.orchestrator.flow.monitor import monitor, reroute
from services.orchestrator.flow.protect import compute
from services.orchestrator.flow.restore import restore
from services.orchestrator.flow.state import iso, parse
from services.orchestrator.settings import OrchestratorSettings
from shared.contracts import PROVISION_TUNNELS, Contract
from shared.errors import PeerError
from shared.mesh import MeshClient
from shared.models import CUTOVER_STEPS, PolicyFailure, TunnelResult, utcnow
from shared.settings import Settings
from tests.orchestrator.fake_peers import FakeNetwork

INC = "INC-2026-0042"
IDS = [f"vpn-platinum-{i}" for i in (1, 2)] + [f"vpn-gold-{i}" for i in range(1, 6)]
PATH = {
    "path_type": "sr-mpls",
    "hop_count": 2,
    "path": ["pe1", "pe4", "pe3"],
    "links": ["pe1-pe4", "pe4-pe3"],
    "head_end": "pe1",
    "end_point": "pe3",
    "total_delay_ms": 12.5,
    "metric": "delay",
}
TUNNEL = {
    "tunnel_id": "sr-policy-pe1-pe3-protect-001",
    "binding_sid": 24001,
    "te_type": "sr-mpls",
    "head_end": "pe1",
    "end_point": "pe3",
    "color": 101,
    "path": ["pe1", "pe4", "pe3"],
    "service_ids": IDS,
}


@dataclass
class RecordingOutbox:
    """Stands in for ``shared.outbox.Outbox``: keeps what a node queued, in order."""

    queued: list[tuple[str, str, dict[str, Any], str | None]] = field(default_factory=list)

    async def put(
        self,
        contract: Contract[Any, Any],
        request: BaseModel,
        *,
        key: str | None = None,
        incident_id: str | None = None,
    ) -> bool:
        data = request.model_dump(mode="json")
        self.queued.append((contract.agent, contract.task_type, data, key))
        return True

    def statuses(self) -> list[tuple[str, str, str]]:
        """(phase, status, message) of every ``status_update`` queued for IO."""
        return [
            (p["phase"], p["status"], p["message"])
            for agent, task, p, _ in self.queued
            if agent == "io" and task == "status_update"
        ]

    def audits(self) -> list[str]:
        return [p["event_type"] for _, task, p, _ in self.queued if task == "audit_event"]


Node = Callable[[IncidentState, RunnableConfig], Awaitable[Command[Any]]]


@dataclass
class Harness:
    net: FakeNetwork
    outbox: RecordingOutbox
    config: RunnableConfig

    async def run(self, node: Node, state: IncidentState) -> Command[Any]:
        return await node(state, self.config)

    def update(self, command: Command[Any]) -> dict[str, Any]:
        assert isinstance(command.update, dict)
        return command.update


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    net = FakeNetwork()
    mesh = MeshClient(settings, source_agent="orchestrator", transport=net.transport())
    outbox = RecordingOutbox()
    deps = Deps(
        settings=settings,
        orch=OrchestratorSettings(),
        mesh=mesh,
        outbox=cast(Any, outbox),
        engine=cast(Any, None),  # only ``approval`` touches the database
    )
    try:
        yield Harness(net, outbox, cast(RunnableConfig, {"configurable": {"deps": deps}}))
    finally:
        await mesh.aclose()


def incident(**later: Any) -> IncidentState:
    """The seed's incident as ``start_incident`` creates it, plus what later nodes wrote."""
    state = initial_state(
        {
            "incident_id": INC,
            "severity": "high",
            "summary": "SLA degradation detected on pe1-pe2, pe2-pe3",
            "created_at": iso(utcnow()),
            "degraded_links": ["pe1-pe2", "pe2-pe3"],
        }
    )
    state.update(cast(IncidentState, later))
    return state


def assessed(**later: Any) -> IncidentState:
    """An incident past ``assess``: 15 services hurt, the platinum pair pe1 → pe3 to protect."""
    impact = {
        "total_affected": 15,
        "services_by_tier": {"platinum": 2, "gold": 5, "silver": 8},
        "service_ids": [*IDS, *(f"vpn-silver-{i}" for i in range(1, 9))],
        "highest_tier": "platinum",
        "head_end": "pe1",
        "end_point": "pe3",
        "carried_ids": IDS,
        "carried_mbps": 2500.0,
    }
    past = {"impact": impact, "tier": "platinum", "step": 4, "status": "assessing", "phase": "2"}
    return incident(**{**past, **later})


def protecting(net: FakeNetwork, **later: Any) -> IncidentState:
    """Traffic on the tunnel pe1 → pe4 → pe3 (the fake's SLA script then spares its links)."""
    net.protection_links.update({"pe1-pe4", "pe3-pe4"})
    net.degraded_links.update({"pe1-pe2", "pe2-pe3"})
    now = {"path": PATH, "tunnel": TUNNEL, "steered": True, "status": "monitoring", "phase": "6"}
    return assessed(**{**now, **later})


# --- detect --------------------------------------------------------------------------------


async def test_detect_dampens_a_flapping_link(harness: Harness) -> None:
    until = iso(utcnow() + timedelta(minutes=5))
    command = await harness.run(detect, incident(dampened_until=until))
    assert command.goto == "dampen"
    assert harness.update(command) == {
        "step": 1,
        "nodes_executed": ["detect"],
        "status": "detecting",
        "phase": "1",
    }
    assert harness.outbox.statuses()[0][:2] == ("1", "detecting")

    command = await harness.run(detect, incident())
    assert command.goto == "assess"


# --- compute -------------------------------------------------------------------------------


async def test_compute_without_a_path_escalates(harness: Harness) -> None:
    harness.net.path_found = False
    command = await harness.run(compute, assessed())
    assert command.goto == "escalate"
    update = harness.update(command)
    assert update["step"] == 5
    assert (update["status"], update["phase"]) == ("computing", "3")
    assert update["nodes_executed"] == ["compute"]
    assert update["escalation"]["reason"] == "no_path"
    assert update["escalation"]["details"] == {"head_end": "pe1", "end_point": "pe3"}
    assert "path" not in update
    # escalate tells IO; compute itself says nothing when it found no path
    assert harness.outbox.queued == []
    ask = harness.net.to("path", INC)[0]
    assert ask.payload["requests"][0]["avoid_links"] == ["pe1-pe2", "pe2-pe3"]
    assert ask.key == f"{INC}:4:compute_paths"


async def test_compute_with_a_path_provisions_or_asks_first(
    harness: Harness, settings: Settings
) -> None:
    command = await harness.run(compute, assessed())
    assert command.goto == "provision"
    update = harness.update(command)
    assert update["path"]["path"] == ["pe1", "pe4", "pe3"]
    assert "gate" not in update
    assert harness.outbox.statuses() == [
        ("3", "computing", "Alternate path found (sr-mpls), provisioning tunnel")
    ]
    assert harness.outbox.audits() == ["state_change", "path_computed"]

    deps: Deps = harness.config["configurable"]["deps"]
    deps.orch = OrchestratorSettings(approval_required_for="provision")
    command = await harness.run(compute, assessed())
    assert command.goto == "approval"
    gate = harness.update(command)["gate"]
    assert (gate["action"], gate["then"], gate["phase"]) == ("provision", "provision", "4")
    assert gate["approval_id"] == f"APR-{INC}-provision"
    # already approved under that key (a replay): straight on
    command = await harness.run(compute, assessed(approvals={"provision": {"decision": "ok"}}))
    assert command.goto == "provision"


# --- monitor -------------------------------------------------------------------------------


async def test_monitor_polls_again_while_the_sla_stays_degraded(harness: Harness) -> None:
    harness.net.sla_script = [False]
    started = iso(utcnow() - timedelta(seconds=1))
    state = protecting(harness.net, monitor={"checks": 1, "started_at": started})
    command = await harness.run(monitor, state)
    assert command.goto == "wait"
    update = harness.update(command)
    assert update["wait"]["reason"] == "sla_poll"
    assert update["wait"]["then"] == "monitor"
    assert update["monitor"]["checks"] == 2
    assert update["monitor"]["last_within"] is False
    assert (update["status"], update["phase"]) == ("monitoring", "6")
    # the tunnel's own links are checked in the same call
    checked = harness.net.to("restore", INC)[0].payload["links"]
    assert checked == ["pe1-pe2", "pe2-pe3", "pe1-pe4", "pe4-pe3"]


def _unscaled(harness: Harness, **orch: Any) -> None:
    """Timers at the seed's own seconds (time scale 1), with these orchestrator settings."""
    deps: Deps = harness.config["configurable"]["deps"]
    deps.settings = deps.settings.model_copy(update={"time_scale": 1.0})
    deps.orch = OrchestratorSettings(**orch)


async def _poll_after(harness: Harness, state: IncidentState, seconds: float) -> dict[str, Any]:
    """Run ``monitor`` once and check it asked for an SLA poll ``seconds`` later: the due time
    lies between the clock read before the node plus ``seconds`` and the one after plus
    ``seconds`` (bounds, so the check holds however long the node took)."""
    before = utcnow()
    command = await harness.run(monitor, state)
    after = utcnow()
    assert command.goto == "wait"
    update = harness.update(command)
    assert update["wait"]["reason"] == "sla_poll"
    due = parse(update["wait"]["due"])
    waited = (before + timedelta(seconds=seconds), after + timedelta(seconds=seconds))
    assert waited[0] <= due <= waited[1], (due - before).total_seconds()
    return update


async def test_monitor_backs_off_while_the_sla_stays_degraded(harness: Harness) -> None:
    """Each poll that finds the SLA still degraded doubles the interval up to the cap; a
    recovery (hold timer started) and a relapse start it over at CXM_SLA_POLL_S."""
    _unscaled(harness, sla_poll_s=5.0, sla_poll_max_s=30.0)
    m: dict[str, Any] = {"checks": 0, "started_at": iso(utcnow()), "hold_until": None}
    step = 0

    async def poll(within: bool, seconds: float) -> dict[str, Any]:
        nonlocal step
        harness.net.sla_script = [within]
        update = await _poll_after(harness, protecting(harness.net, monitor=m, step=step), seconds)
        step = update["step"]  # a new step, a new idempotency key: a fresh check
        return cast(dict[str, Any], update["monitor"])

    for seconds in (5, 10, 20, 30, 30, 30):
        m = await poll(False, seconds)
    assert (m["checks"], m["degraded_polls"]) == (6, 6)

    harness.net.sla_script = [True]  # recovered: the hold timer runs, the streak is over
    command = await harness.run(monitor, protecting(harness.net, monitor=m, step=step))
    update = harness.update(command)
    m, step = update["monitor"], update["step"]
    assert (update["wait"]["reason"], m["degraded_polls"]) == ("hold_timer", 0)
    m = {**m, "hold_until": iso(utcnow() - timedelta(seconds=1))}
    for seconds in (5, 10):  # the hold expires on a relapse: short polls again, then longer
        m = await poll(False, seconds)


async def test_monitor_polls_at_a_fixed_interval_when_the_cap_is_the_interval(
    harness: Harness,
) -> None:
    _unscaled(harness, sla_poll_s=5.0, sla_poll_max_s=5.0)
    m: dict[str, Any] = {"checks": 0, "started_at": iso(utcnow()), "hold_until": None}
    step = 0
    for _ in range(3):
        harness.net.sla_script = [False]
        state = protecting(harness.net, monitor=m, step=step)
        update = await _poll_after(harness, state, 5)
        m, step = update["monitor"], update["step"]


async def test_monitor_gives_up_after_the_monitor_timeout(harness: Harness) -> None:
    harness.net.sla_script = [False]
    long_ago = iso(utcnow() - timedelta(hours=2))
    state = protecting(harness.net, monitor={"checks": 5, "started_at": long_ago})
    command = await harness.run(monitor, state)
    assert command.goto == "escalate"
    escalation = harness.update(command)["escalation"]
    assert (escalation["reason"], escalation["error_code"]) == ("sla_not_recovered",) * 2


async def test_monitor_restores_when_the_hold_timer_expires_recovered(harness: Harness) -> None:
    harness.net.sla_script = [True]
    expired = iso(utcnow() - timedelta(seconds=1))
    state = protecting(
        harness.net, monitor={"checks": 3, "started_at": expired, "hold_until": expired}
    )
    command = await harness.run(monitor, state)
    assert command.goto == "restore"
    assert harness.update(command)["monitor"]["hold_until"] is None
    assert "sla_recovered" in harness.outbox.audits()


async def test_monitor_reroutes_when_the_tunnel_path_degrades(harness: Harness) -> None:
    harness.net.bad_links.add("pe1-pe4")
    command = await harness.run(monitor, protecting(harness.net))
    assert command.goto == "reroute"
    assert harness.update(command)["tunnel_degraded"] == ["pe1-pe4"]


async def test_reroute_keeps_a_policy_that_no_path_improves_on(harness: Harness) -> None:
    """A degraded link on the tunnel is a cost, not a ban: when every way round crosses one
    too, the policy stays where it is, says so, and monitoring stops asking."""
    harness.net.out_of_sla_is_a_cost = True
    # The only other way round (via pe5) crosses a link of the incident itself: banned.
    state = protecting(
        harness.net,
        degraded_links=["pe1-pe2", "pe2-pe3", "pe1-pe5"],
        tunnel_degraded=["pe1-pe4"],
    )
    command = await harness.run(reroute, state)
    assert command.goto == "monitor", harness.update(command).get("escalation")
    assert harness.update(command)["tolerated"] == ["pe1-pe4"]
    assert harness.net.calls.get("reroute_tunnel", 0) == 0
    assert "keeps crossing degraded pe1-pe4" in harness.outbox.statuses()[-1][2]
    later = {**state, "tolerated": ["pe1-pe4"]}
    harness.net.bad_links.add("pe1-pe4")
    assert (await harness.run(monitor, cast(IncidentState, later))).goto != "reroute"


# --- restore -------------------------------------------------------------------------------


async def test_restore_steps_the_cutover_and_waits_between_steps(harness: Harness) -> None:
    state = protecting(harness.net, restore={"attempt": 0, "step": 1}, status="restoring")
    command = await harness.run(restore, state)
    assert command.goto == "wait"
    update = harness.update(command)
    assert update["restore"] == {"attempt": 0, "step": 2}
    assert (update["wait"]["reason"], update["wait"]["then"]) == ("cutover", "restore")
    step = harness.net.to("restore", INC)[0].payload
    assert (step["protection_pct"], step["original_pct"]) == CUTOVER_STEPS[1]
    [policy] = step["policies"]
    assert policy["service_ids"] == IDS
    assert harness.outbox.statuses()[0] == ("7", "restoring", "Cutover 50/50 (protection/original)")


async def test_a_replayed_cutover_step_sends_the_same_task_and_moves_nothing_again(
    harness: Harness,
) -> None:
    """The orchestrator killed after restore answered but before the checkpoint runs the node
    again from the same state: one task for the step, under the same key, answered from
    restore's record (the fake, like restore, receives it once)."""
    state = protecting(harness.net, restore={"attempt": 0, "step": 1}, status="restoring")
    first = harness.update(await harness.run(restore, state))
    again = harness.update(await harness.run(restore, state))
    assert first["restore"] == again["restore"] == {"attempt": 0, "step": 2}
    [step] = harness.net.batches(INC, "cutover_policies")
    assert harness.net.calls["cutover_policies"] == 2  # sent twice, applied once
    assert step.key.endswith(":cutover_policies")


async def test_restore_after_the_last_step_cleans_up_and_closes(harness: Harness) -> None:
    last = len(CUTOVER_STEPS) - 1
    state = protecting(harness.net, restore={"attempt": 0, "step": last})
    command = await harness.run(restore, state)
    assert command.goto == "restore"  # straight on to the cleanup, no pause after 0/100
    assert harness.update(command)["restore"]["step"] == len(CUTOVER_STEPS)

    state = protecting(harness.net, restore={"attempt": 0, "step": len(CUTOVER_STEPS)})
    command = await harness.run(restore, state)
    assert command.goto == "close"
    update = harness.update(command)
    assert (update["cleaned"], update["close_reason"]) == (True, "sla_recovered")
    assert [r.task_type for r in harness.net.to("restore", INC)][-1] == "cleanup_policies"


async def test_restore_goes_back_to_monitoring_when_a_step_hurts_the_sla(
    harness: Harness,
) -> None:
    harness.net.cutover_script = [False]
    state = protecting(harness.net, restore={"attempt": 0, "step": 2})
    command = await harness.run(restore, state)
    assert command.goto == "monitor"
    update = harness.update(command)
    assert update["restore"] == {"attempt": 1, "step": 0}
    assert update["monitor"] is None


# --- signals while waiting -----------------------------------------------------------------


async def test_links_added_on_the_tunnel_path_reroutes_only_while_traffic_is_on_it(
    harness: Harness,
) -> None:
    state = protecting(harness.net)
    fx = Effects(state, harness.config)
    signal = {"kind": "signal", "id": "sig-1", "signal": "links_added", "links": ["pe4-pe3"]}
    route, changes = await on_signal(fx, state, signal, waiting_for="hold_timer")
    assert route == "reroute"
    assert changes["degraded_links"] == ["pe4-pe3"]

    route, changes = await on_signal(fx, state, signal, waiting_for="approval")
    assert route is None  # the gated step re-checks its path when it runs
    assert changes["degraded_links"] == ["pe4-pe3"]

    seen = protecting(harness.net, signals=[{"id": "sig-1"}])
    assert await on_signal(fx, seen, signal, waiting_for="hold_timer") == (None, {})


def test_a_policy_a_batch_answer_leaves_out_counts_as_failed() -> None:
    """``per_policy``: answers are matched by key, never by position; a policy missing from
    the answer, or answered with neither a result nor an error, is a failure of its own."""
    ok = TunnelResult(
        tunnel_id="t1",
        binding_sid=24001,
        te_type="sr-mpls",
        head_end="pe1",
        end_point="pe3",
        color=1001,
        path=["pe1", "pe4", "pe3"],
        state="up",
    )
    refused = PolicyFailure(code="tunnel_provision_failed", message="refused", status=502)
    answers: dict[Hashable, tuple[Any, PolicyFailure | None]] = {
        ("pe2", "pe5"): (None, refused),
        ("pe1", "pe3"): (ok, None),
        ("pe3", "pe1"): (None, None),
    }
    wanted = [("pe1", "pe3"), ("pe2", "pe5"), ("pe4", "pe1"), ("pe3", "pe1")]
    first, second, absent, empty = per_policy(PROVISION_TUNNELS, wanted, answers)
    assert first is ok
    assert isinstance(second, PeerError) and second.code == "tunnel_provision_failed"
    assert second.status == 502 and second.agent == "tunnel"
    for missing in (absent, empty):
        assert isinstance(missing, PeerError) and missing.code == "no_answer"
        assert "tunnel did not answer" in str(missing)

"""The proactive branch (issue 14) in-process against fake peers: a congested link's traffic
moved and brought back on its *native* load, with hysteresis and the anti-flapping guards.

``LoadNetwork`` adds the traffic agent's ``link_forecast`` to the fake peers: the link's native
load is a knob (``native``), what it measures is the native load less the share the
orchestrator says it moved, and hooks change the native load when a cutover step or a move
back onto the tunnels happens, so the tests never race the flow's timers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from services.orchestrator.flow.proactive import (
    MAX_GROWTH,
    Rider,
    choose,
    detours,
    growth,
    records_of,
    shares,
)
from services.orchestrator.settings import OrchestratorSettings
from services.traffic.analytics import load_forecast
from shared import contracts as c
from shared.models import CUTOVER_STEPS, AffectedService, ImpactResult, utcnow
from tests.orchestrator import fake_peers
from tests.orchestrator.conftest import Orch, OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import wait_for

INC = "INC-2026-1400"
LINK = "pe1-pe2"
FAST = {
    # seed seconds, scaled by the tests' CXM_TIME_SCALE of 0.01
    "proactive_hold_s": 20.0,
    "proactive_min_shift_interval_s": 0.0,
    "sla_poll_s": 2.0,
    "cutover_step_s": 2.0,
}


@dataclass
class LoadNetwork(FakeNetwork):
    """The fake peers plus a traffic agent whose link carries ``native`` percent natively."""

    native: float = 95.0
    by_link: dict[str, float] = field(default_factory=dict)
    """Native load of a link other than ``native`` (a link the incident gains)."""
    threshold: float = 70.0
    on_step: float | None = None
    """Native load once a cutover step (protection under 100 %) is applied."""
    on_back: float | None = None
    """Native load once traffic is put back on the tunnels (a 100/0 step)."""
    rising: float = 0.0
    """Points the forecast adds to the native load at the horizon (a busy hour still ramping)."""
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    cutovers: list[tuple[datetime, int]] = field(default_factory=list)

    def _answer(self, task_type: str, p: Any) -> tuple[int, Any]:
        if task_type == "link_forecast":
            return 200, self._forecast(p)
        if task_type == "cutover_policies":
            self.cutovers.append((utcnow(), p.protection_pct))
            if p.protection_pct == 100 and self.on_back is not None:
                self.native = self.on_back
            elif p.protection_pct < 100 and self.on_step is not None:
                self.native = self.on_step
        return super()._answer(task_type, p)

    def _forecast(self, p: Any) -> dict[str, Any]:
        now = utcnow().timestamp()
        links = {}
        for link in p.links:
            share = p.moved_share.get(link, 0.0)
            native = self.by_link.get(link, self.native)
            measured = round(native * (1.0 - share), 3)
            links[link] = {
                "link_id": link,
                "threshold_pct": self.threshold,
                "measured_pct": measured,
                "native_pct": native,
                "predicted_pct": native + self.rising,
                "samples": [[now, measured]],
                "native": [[now, native]],
                "forecast": [[now + 3.0, native]],
                "capacity_mbps": 10000.0,
                "moved_share": share,
            }
            self.forecasts.append({"link": link, "share": share, "native": native})
        return {"links": links, "horizon_s": 3.0}


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> LoadNetwork:
    monkeypatch.setitem(fake_peers.TASKS, "link_forecast", c.LINK_FORECAST)
    return LoadNetwork()


async def start(orch: Orch) -> None:
    await orch.start(
        INC,
        severity="medium",
        summary=f"Congestion forecast on {LINK}: 95% in 300s (threshold 70%)",
        degraded_links=[LINK],
        proactive=True,
    )


def statuses(net: LoadNetwork, status: str | None = None) -> list[dict[str, Any]]:
    return [p for p in net.events(INC, "status_update") if status is None or p["status"] == status]


def moving(net: LoadNetwork) -> list[str]:
    [assessed] = [p for p in statuses(net, "assessing") if p["details"].get("moving")]
    ids: list[str] = assessed["details"]["moving"]
    return ids


def steered(net: LoadNetwork) -> list[list[str]]:
    return [p["service_ids"] for p in net.steers(INC)]


# --- the plan --------------------------------------------------------------------------------


def test_choose_moves_the_fewest_services_then_the_least_traffic() -> None:
    riders = [
        Rider("big", "gold", 500.0, (LINK,)),
        Rider("mid", "silver", 300.0, (LINK,)),
        Rider("small-a", "platinum", 100.0, (LINK,)),
        Rider("small-b", "bronze", 100.0, (LINK,)),
        Rider("tiny", "gold", 50.0, (LINK,)),
    ]
    # 1,050 Mbps natively at 90 %: to 60 % means moving a third, 350 Mbps; one service does it
    # and the smallest that does is "big" (500), not "mid"+"tiny" (two services)
    assert [r.service_id for r in choose(riders, {LINK: 90.0}, {LINK: 60.0})] == ["big"]
    # 80 % → 60 %: a quarter, 262.5 Mbps: "mid" (300) closes it with less traffic than "big"
    assert [r.service_id for r in choose(riders, {LINK: 80.0}, {LINK: 60.0})] == ["mid"]
    # 62 % → 60 %: 34 Mbps; equal candidates: the lower tier moves (bronze before platinum)
    assert [r.service_id for r in choose(riders, {LINK: 62.0}, {LINK: 60.0})] == ["tiny"]
    pair = [Rider("x", "platinum", 100.0, (LINK,)), Rider("y", "bronze", 100.0, (LINK,))]
    assert [r.service_id for r in choose(pair, {LINK: 65.0}, {LINK: 60.0})] == ["y"]
    # under target: nothing moves
    assert choose(riders, {LINK: 55.0}, {LINK: 60.0}) == []


def test_choose_covers_every_congested_link() -> None:
    other = "pe2-pe3"
    riders = [
        Rider("both", "silver", 200.0, (LINK, other)),
        Rider("first", "silver", 400.0, (LINK,)),
        Rider("second", "silver", 400.0, (other,)),
    ]
    chosen = {
        r.service_id
        for r in choose(riders, {LINK: 90.0, other: 75.0}, dict.fromkeys((LINK, other), 60.0))
    }
    # LINK needs 200 of 600 moved, the other 120 of 600: "both" (200) does both
    assert chosen == {"both"}


TUNNEL = "p2-pe4"


def impact_of(*services: tuple[str, float, list[str], list[str], bool]) -> ImpactResult:
    """The impact agent's ``native`` answer: (id, Mbps, current path, base path, steered)."""
    return ImpactResult(
        total_affected=len(services),
        services_by_tier={"gold": len(services)},
        affected_services=[
            AffectedService(
                service_id=sid,
                name=sid,
                service_type="l3vpn",
                tier="gold",
                head_end="pe1",
                end_point="pe4",
                path=path,
                base_path=base,
                bandwidth_mbps=mbps,
                steered=steered,
            )
            for sid, mbps, path, base, steered in services
        ],
    )


CORRIDOR = ["pe1-pe2", "pe2-pe3", "pe3-pe4"]
PROTECTION = ["pe1-p1", "p1-p2", TUNNEL]


def native_read(shift: dict[str, Any], moved: set[str], link: str, measured: float) -> float:
    """What the traffic agent reads as native for the share the orchestrator passes."""
    share = shares(shift, moved)[link]
    read = load_forecast(
        link,
        [(0.0, measured)],
        threshold_pct=70,
        horizon_s=3.0,
        window=10,
        moved_share=share,
    )
    assert read.native_pct is not None
    return read.native_pct


def test_a_link_carrying_tunnel_traffic_reads_native_under_measured() -> None:
    # p2-pe4: one service rides it natively (100); three others' policies cross it (300 each)
    impact = impact_of(
        ("native", 100.0, [TUNNEL], [TUNNEL], False),
        *((f"tunnelled-{n}", 300.0, PROTECTION, CORRIDOR, True) for n in range(3)),
    )
    links = [LINK, TUNNEL]
    records = records_of(impact, links)
    # the tunnelled ones are native riders of pe1-pe2, and ride p2-pe4 now
    assert records["tunnelled-0"]["links"] == [LINK] and records["tunnelled-0"]["via"] == [TUNNEL]
    shift = {"links": links, "riders": records}
    others = {f"tunnelled-{n}" for n in range(3)}
    # W_native 100, W_now 1,000: native is a tenth of the 40 % measured (the old model: the
    # tunnelled services counted as moved *off* p2-pe4, 0.9 of it, native 400 %)
    assert shares(shift, others)[TUNNEL] == pytest.approx(-9.0)
    assert native_read(shift, others, TUNNEL, 40.0) == pytest.approx(4.0)
    # pe1-pe2, which every one of its native riders left, reads them back (capped at 0.95)
    assert shares(shift, others)[LINK] == 0.95


def test_a_base_rider_moved_off_reads_native_over_measured() -> None:
    impact = impact_of(
        ("stays", 100.0, CORRIDOR, CORRIDOR, False),
        ("moves", 300.0, CORRIDOR, CORRIDOR, False),
    )
    shift = {"links": [LINK], "riders": records_of(impact, [LINK])}
    # planning: a service about to move rides a policy that avoids the link
    assert shares(shift, {"moves"}) == {LINK: 0.75}
    assert native_read(shift, {"moves"}, LINK, 20.0) == pytest.approx(80.0)
    assert native_read(shift, set(), LINK, 80.0) == pytest.approx(80.0)
    # steered, the impact agent sees its policy: one that still crosses the link moved nothing
    steered = impact_of(
        ("stays", 100.0, CORRIDOR, CORRIDOR, False),
        ("moves", 300.0, ["pe1-pe2", "pe2-p3"], CORRIDOR, True),
    )
    shift = {"links": [LINK], "riders": records_of(steered, [LINK])}
    assert shares(shift, {"moves"}) == {LINK: 0.0}


# --- the flow --------------------------------------------------------------------------------


async def test_moves_the_fewest_services_and_never_closes_while_native_stays_high(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        # the seed's 15 services (4,100 Mbps) all ride pe1-pe2; 95 % → 60 % needs 36.8 %
        # (1,510 Mbps) moved: no three services carry that, four do (2 x 500 + 2 x 300)
        moved = moving(net)
        assert sorted(moved) == ["vpn-gold-1", "vpn-gold-2", "vpn-platinum-1", "vpn-platinum-2"]
        assert steered(net) == [moved]
        # relieve asks for the paths first (a plan whose group has no path is not made),
        # then compute asks again for the plan
        checked, plan = net.to("path", INC)
        assert checked.payload == plan.payload
        assert plan.payload["requests"][0]["min_bandwidth_mbps"] == 1600
        assert plan.payload["requests"][0]["avoid_links"] == [LINK]

        # measured load is low (95 x (1 - 0.39) = 58 %), native stays at 95 %: it stays open,
        # and the alert's clearance (forwarded as "cleared") does not close it either
        seen = len(net.forecasts)
        await wait_for(lambda: len(net.forecasts) >= seen + 5, timeout=60)
        response = await orch.task(
            "incident_signal", {"incident_id": INC, "signal": "cleared"}, key="cleared-1"
        )
        assert response.status_code == 200, response.text
        seen = len(net.forecasts)
        await wait_for(lambda: len(net.forecasts) >= seen + 5, timeout=60)
        # between the release threshold and the target: hysteresis keeps it protected too
        net.native = 55.0
        seen = len(net.forecasts)
        await wait_for(lambda: len(net.forecasts) >= seen + 5, timeout=60)
        assert not net.closed(INC)
        assert not net.cutovers
        share = net.forecasts[-1]["share"]
        assert share == pytest.approx(1600 / 4100, abs=1e-4)

        watching = statuses(net, "monitoring")
        assert watching
        details = watching[-1]["details"]
        assert details["proactive"] is True
        assert (details["target_pct"], details["release_pct"]) == (60.0, 50.0)
        load = details["load"]
        assert load["link_id"] == LINK and load["threshold_pct"] == 70.0
        assert load["measured_pct"] < load["native_pct"]
        assert load["samples"] and load["forecast"]

        net.native = 30.0
        closed = await orch.closed(INC, timeout=60)
    assert closed["resolution"] == "resolved"
    assert closed["details"]["close_reason"] == "congestion_subsided"
    assert "congestion subsided" in closed["summary"]
    steps = [pct for _, pct in net.cutovers]
    assert steps == [protection for protection, _ in CUTOVER_STEPS]
    assert [r.task_type for r in net.to("restore", INC)][-1] == "cleanup_policies"
    last = statuses(net, "restoring")[-1]["details"]
    assert last["cleanup"] is True and last["returns"] == 1 and last["shifts"] == 1
    assert closed["details"]["nodes_executed"] == [
        "start",
        "detect",
        "relieve",
        "compute",
        "provision",
        "steer",
        "watch",
        "release",
        "close",
    ]


def test_a_moved_group_reserves_for_the_load_to_come() -> None:
    """Native 80 % now, forecast 100 % at the horizon: the moved traffic grows by 1.25 too."""
    loads = {
        "a-b": {"native_pct": 80.0, "predicted_pct": 100.0},
        "b-c": {"native_pct": 50.0, "predicted_pct": 50.0},
    }
    assert growth(loads, ["a-b", "b-c"]) == 1.25
    assert growth(loads, ["b-c"]) == 1.0  # flat: as committed
    assert growth({"a-b": {"native_pct": 80.0, "predicted_pct": 70.0}}, ["a-b"]) == 1.0
    assert growth({"a-b": {"native_pct": 10.0, "predicted_pct": 90.0}}, ["a-b"]) == MAX_GROWTH
    assert growth({"a-b": {"native_pct": 0.0, "predicted_pct": 90.0}}, ["a-b"]) == 1.0
    groups: list[dict[str, Any]] = [
        {"mbps": 1000.0, "service_ids": ["x"]},
        {"mbps": None, "service_ids": ["y"]},
    ]
    assert detours(groups, 1.25, 50.0) == [
        {
            "mbps": 1000.0,
            "service_ids": ["x"],
            "reserve_mbps": 1250.0,
            "load_growth": 1.25,
            "max_load_pct": 50.0,
        },
        {"mbps": None, "service_ids": ["y"], "load_growth": 1.25, "max_load_pct": 50.0},
    ]
    assert detours(groups, 1.0, 50.0)[0] == {
        "mbps": 1000.0,
        "service_ids": ["x"],
        "reserve_mbps": 1000.0,
        "load_growth": 1.0,
        "max_load_pct": 50.0,
    }


async def test_a_shift_before_the_peak_asks_for_room_for_the_peak(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    net.native, net.rising = 76.0, 19.0  # 95 % at the horizon: growth 1.25
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        checked, plan = net.to("path", INC)
        committed = {s["service_id"]: s["bandwidth_mbps"] for s in net.services}
        for request in plan.payload["requests"]:
            carried = sum(committed[sid] for sid in request["carrying"])
            assert request["min_bandwidth_mbps"] == pytest.approx(carried * 1.25)
            # the detour's own load grows as much, and it must stay under the release level
            assert request["load_growth"] == pytest.approx(1.25)
            assert request["max_load_pct"] == OrchestratorSettings().proactive_release_pct
        assert checked.payload == plan.payload


async def test_closes_only_after_native_stays_under_release_for_the_hold(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        net.native = 40.0
        closed = await orch.closed(INC, timeout=60)
    assert closed["details"]["close_reason"] == "congestion_subsided"
    watching = [p["details"] for p in statuses(net, "monitoring")]
    held = [d for d in watching if d.get("hold_seconds")]
    assert held and held[0]["hold_seconds"] == FAST["proactive_hold_s"]
    calm = [d for d in watching if d.get("calm_since")]
    assert calm, "the hold timer is shown while it runs"
    first_step = net.cutovers[0][0]
    assert first_step >= datetime.fromisoformat(calm[0]["release_after"])


async def test_load_climbing_back_during_cutover_goes_back_to_protecting(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    net.on_step = 80.0  # the first step home overloads the link again
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        net.native = 30.0
        back = await wait_for(
            lambda: [p for p in statuses(net, "restoring") if "climbed back" in p["message"]],
            timeout=60,
        )
        net.on_step = None
        net.native = 30.0
        closed = await orch.closed(INC, timeout=60)
    details = back[0]["details"]
    assert details["shifts"] == 2 and details["reverted_at_step"] == 1
    assert details["moved_share"][LINK] == pytest.approx(1600 / 4100, abs=1e-4)
    # back on the tunnel at once (100/0), then a whole second return
    steps = [pct for _, pct in net.cutovers]
    assert steps == [75, 100, 75, 50, 25, 0]
    assert closed["details"]["close_reason"] == "congestion_subsided"
    assert statuses(net, "restoring")[-1]["details"]["shifts"] == 2
    assert net.tunnels_created == 1  # the same policies carried it again


async def test_one_shift_too_many_escalates_with_an_error(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    net.on_step = 80.0  # every return overloads the link again...
    net.on_back = 30.0  # ...and it calms down as soon as the traffic is off it
    async with orchestrator(**FAST, proactive_max_shifts=2) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        net.native = 30.0
        closed = await orch.closed(INC, timeout=60)
    assert closed["resolution"] == "escalated"
    assert closed["details"]["close_reason"] == "proactive_flapping"
    [error] = net.events(INC, "error")
    assert error["error_code"] == "proactive_flapping"
    assert error["details"]["shifts"] == 3 and error["details"]["max_shifts"] == 2
    # traffic stays protected: put back on the tunnel, which is left up for the person
    assert [pct for _, pct in net.cutovers] == [75, 100, 75, 100]
    assert "cleanup_policies" not in [r.task_type for r in net.to("restore", INC)]
    assert closed["details"]["tunnels"][0]["fate"].startswith("left up")


async def test_a_return_waits_for_the_minimum_interval_after_a_shift(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    net.on_step = 80.0
    net.on_back = 30.0
    policy = {**FAST, "proactive_hold_s": 1.0, "proactive_min_shift_interval_s": 60.0}
    async with orchestrator(**policy) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        net.native = 30.0  # calm at once: only the interval holds the return back
        await wait_for(lambda: len([p for _, p in net.cutovers if p == 100]) >= 1, timeout=60)
        await wait_for(lambda: len([p for _, p in net.cutovers if p < 100]) >= 2, timeout=60)
    watching = [p["details"] for p in statuses(net, "monitoring")]
    not_before = sorted(
        datetime.fromisoformat(d["release_not_before"])
        for d in watching
        if d.get("release_not_before")
    )
    returns = [at for at, pct in net.cutovers if pct == 75]
    backs = [at for at, pct in net.cutovers if pct == 100]
    # each return starts no sooner than the interval after the shift before it
    assert returns[0] >= not_before[0]
    assert (returns[1] - backs[0]).total_seconds() >= 0.6  # 60 s x the 0.01 time scale


# --- a shift that grows (load past the forecast it was sized for, links added) ---------------

OTHER = "pe2-pe3"


def planned(net: LoadNetwork) -> list[list[str]]:
    """Each plan's services, in order (the first shift's, then each growth's)."""
    return [
        p["details"]["moving"] for p in statuses(net, "assessing") if p["details"].get("moving")
    ]


async def test_load_growing_past_the_plan_moves_more_services_in_the_same_shift(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        # 95 % x (1 - 1,600/4,100) = 58 %: the shift holds. Then the busy hour outgrows the
        # forecast: 130 % x 0.61 = 79 %, over the 60 % target by more than the 5 % margin
        net.native = 130.0
        await wait_for(lambda: len(statuses(net, "steering")) >= 2, timeout=60)
        await wait_for(
            lambda: [p for p in statuses(net, "monitoring") if "shift grew" in p["message"]],
            timeout=60,
        )
        first, more = planned(net)
        assert sorted(first) == ["vpn-gold-1", "vpn-gold-2", "vpn-platinum-1", "vpn-platinum-2"]
        # 130 → 60 needs 2,208 Mbps moved, 608 more: two gold (600) and the smallest that
        # closes the last 8 Mbps, a silver (lower tier than gold)
        assert sorted(more) == ["vpn-gold-3", "vpn-gold-4", "vpn-silver-1"]
        # the policy made first keeps its services; only the new ones are steered, on a new one
        assert steered(net) == [first, more]
        assert net.tunnels_created == 2
        requests = [r.payload["requests"] for r in net.to("path", INC)]
        assert requests[-1][0]["min_bandwidth_mbps"] == 800
        await wait_for(
            lambda: net.forecasts[-1]["share"] == pytest.approx(2400 / 4100, abs=1e-4),
            timeout=60,
        )
        seen = len(net.forecasts)
        await wait_for(lambda: len(net.forecasts) >= seen + 5, timeout=60)
        assert len(statuses(net, "steering")) == 2, "sized to the target: no third move"
        grew = [p for p in statuses(net, "monitoring") if "shift grew" in p["message"]][-1]
        assert grew["details"]["shifts"] == 1

        net.native = 30.0
        closed = await orch.closed(INC, timeout=60)
    assert closed["details"]["close_reason"] == "congestion_subsided"
    # both policies come home step by step, one task per step for both, and are removed
    assert [pct for _, pct in net.cutovers] == [p for p, _ in CUTOVER_STEPS]
    both = sorted({tid for tid, _ in net.policy_steps(INC)})
    assert len(both) == 2  # …-protect-001 (made first), …-protect-002: the policy order
    assert net.policy_steps(INC) == [(tid, p) for p, _ in CUTOVER_STEPS for tid in both]
    assert sorted(c["tunnel_id"] for c in net.cleanups(INC)) == both
    last = statuses(net, "restoring")[-1]["details"]
    assert (last["shifts"], last["returns"]) == (1, 1)
    assert len(last["tunnel_ids"]) == 2


async def test_links_added_to_the_incident_are_planned_for(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        # the correlator folds the neighbouring link's alert into this incident; that link is
        # fuller (120 %) and every service rides it too
        net.by_link[OTHER] = 120.0
        response = await orch.task(
            "incident_signal",
            {"incident_id": INC, "signal": "links_added", "links": [OTHER]},
            key="added-1",
        )
        assert response.status_code == 200, response.text
        await wait_for(lambda: len(statuses(net, "steering")) >= 2, timeout=60)
        first, more = planned(net)
        # 120 → 60 needs half of 4,100 moved: 2,050, 450 more than the 1,600 moved: a gold
        # (300), then the smallest that closes the last 150, a silver (200)
        assert sorted(more) == ["vpn-gold-3", "vpn-silver-1"]
        assert steered(net) == [first, more]
        [impact] = [r for r in net.to("impact", INC) if not r.key.endswith(":others")][-1:]
        assert impact.payload["degraded_links"] == [LINK, OTHER]
        assert net.to("path", INC)[-1].payload["requests"][0]["avoid_links"] == [LINK, OTHER]
        await wait_for(
            lambda: (
                {f["link"] for f in net.forecasts[-2:]} == {LINK, OTHER}
                and net.forecasts[-1]["share"] == pytest.approx(2100 / 4100, abs=1e-4)
            ),
            timeout=60,
        )
        net.native = 30.0
        net.by_link[OTHER] = 30.0
        closed = await orch.closed(INC, timeout=60)
    assert closed["details"]["close_reason"] == "congestion_subsided"
    last = statuses(net, "restoring")[-1]["details"]
    assert (last["shifts"], last["returns"]) == (1, 1)
    assert set(last["moved_share"]) == {LINK, OTHER}


async def test_nothing_more_to_move_keeps_the_shift_and_does_not_retry_every_poll(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    async with orchestrator(**{**FAST, "proactive_hold_s": 100_000.0}) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
        net.no_path_between = {("pe1", "pe3")}  # no path with room for any more
        net.native = 130.0
        stuck = await wait_for(
            lambda: [p for p in statuses(net, "monitoring") if "no more" in p["message"]],
            timeout=60,
        )
        assert stuck[0]["details"]["without_path"]

        def plans() -> int:  # the impact questions of a plan (not the check of others' moves)
            return len([r for r in net.to("impact", INC) if not r.key.endswith(":others")])

        calls = plans()
        seen = len(net.forecasts)
        await wait_for(lambda: len(net.forecasts) >= seen + 10, timeout=60)
        # the same load: no new try (a hold time later, or once it climbed further)
        assert plans() == calls
        assert len(statuses(net, "steering")) == 1
        assert not net.closed(INC)


async def test_a_service_another_incident_moved_is_not_moved_again(
    orchestrator: OrchFactory, net: LoadNetwork
) -> None:
    # two congested links on one busy path, two incidents: the other one steered this service
    for service in net.services:
        if service["service_id"] == "vpn-platinum-1":
            service["steered"] = True
    async with orchestrator(**FAST) as orch:
        await start(orch)
        await wait_for(lambda: statuses(net, "steering"), timeout=60)
    [first] = planned(net)
    assert "vpn-platinum-1" not in first
    assert "vpn-platinum-1" not in steered(net)[0]
    # the plan read the native load with that move added back (its own question: an answer
    # replayed from the first, share-less one would plan on the measured load)
    assert [f["share"] for f in net.forecasts[:2]] == [0.0, pytest.approx(500 / 4100, abs=1e-4)]

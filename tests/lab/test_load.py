"""Offered load over time (issue 14): ``POST /lab/links/{link}/load`` ramps, native versus
measured load under steering, overload seen by PCA and CNC, the ``busy-hour`` scenario, and
what a bad request leaves unchanged.

Time is the lab network's ``clock``, which these tests replace with a :class:`Clock` they move
by hand: no test sleeps or depends on how fast the machine is.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cxm.scenario import parse_params, run_scenario
from services.io.app import create_app as create_io
from services.lab.app import create_app as create_lab
from services.lab.network import LabNetwork
from services.lab.settings import LabSettings
from shared.settings import Settings
from tests.lab.conftest import LabHarness, harness
from tests.lab.test_cnc import PROTECT, map_services, policy
from tests.lab.test_pca_and_control import drain, measured
from tests.lab.test_topohub_and_scenario import mounted
from tests.support import running, wait_for

CORRIDOR = [f"vpn-{n:03d}" for n in range(1, 16)]
"""The 15 services pe1 → pe2 → pe3 → pe4 (4100 Mbps on the 10 G pe1-pe2: 41 %)."""


class Clock:
    """The lab's load clock, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def clocked(lab: LabHarness) -> tuple[LabNetwork, Clock]:
    network = lab.lab.network
    clock = Clock()
    network.clock = clock
    return network, clock


async def link(lab: LabHarness, name: str) -> dict[str, Any]:
    response = await lab.client.get(f"/lab/links/{name}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def load(lab: LabHarness, name: str, body: Any) -> httpx.Response:
    return await lab.client.post(f"/lab/links/{name}/load", json=body)


async def test_a_ramp_reaches_its_target_at_the_ramp_end(lab: LabHarness) -> None:
    network, clock = clocked(lab)
    response = await load(lab, "pe1-pe2", {"target_pct": 95, "ramp_s": 100})
    assert response.status_code == 202, response.text
    assert response.json() == {
        "link": "pe1-pe2",
        "from_pct": 41.0,
        "target_pct": 95.0,
        "ramp_s": 100.0,
        "services": CORRIDOR,
    }
    view = await link(lab, "pe1-pe2")
    assert view["ramp"]["target_pct"] == 95 and view["ramp"]["services"] == 15
    assert sorted(view["native_services"]) == CORRIDOR == sorted(view["riding"])

    clock.now += 50  # half way: 41 + (95 - 41) / 2
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(68.0)
    assert await lab.rate_mbps("pe1-pe2") == pytest.approx(6800, abs=1)
    clock.now += 50
    view = await link(lab, "pe1-pe2")
    assert view["load_pct"] == pytest.approx(95.0) and view["native_pct"] == pytest.approx(95.0)
    assert view["metrics"]["utilization_pct"] == pytest.approx(95.0)
    assert await lab.rate_mbps("pe1-pe2") == pytest.approx(9500, abs=1)
    # the corridor's services cross pe3-pe4 too, with the three metro services (900 Mbps)
    assert (await link(lab, "pe3-pe4"))["load_pct"] == pytest.approx(95.0 + 9.0)
    # done: the ramp is folded into the services' factors and the load stays there
    clock.now += 1000
    state = (await lab.client.get("/lab/state")).json()
    assert state["load"] == {"ramps": {}, "busy_hour": None}
    assert set(state["traffic_factor"]) == set(CORRIDOR)
    assert state["traffic_factor"]["vpn-001"] == pytest.approx(95 / 41)
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(95.0)
    assert network.time_dependent() is False


async def test_a_new_call_replaces_the_running_ramp_from_where_it_is(lab: LabHarness) -> None:
    _, clock = clocked(lab)
    await load(lab, "pe1-pe2", {"target_pct": 95, "ramp_s": 100})
    clock.now += 50
    # either orientation names the link
    again = await load(lab, "pe2-pe1", {"target_pct": 20, "ramp_s": 10})
    assert again.status_code == 202 and again.json()["link"] == "pe1-pe2"
    assert again.json()["from_pct"] == pytest.approx(68.0)
    clock.now += 5
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(44.0)
    clock.now += 5
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(20.0)
    # a ramp of 0 s is a step
    step = await load(lab, "pe1-pe2", {"target_pct": 41, "ramp_s": 0})
    assert step.json()["from_pct"] == pytest.approx(20.0)
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(41.0)


async def test_native_load_ignores_steering_measured_load_follows_it(lab: LabHarness) -> None:
    _, clock = clocked(lab)
    await load(lab, "pe1-pe2", {"target_pct": 90, "ramp_s": 0})
    await map_services(lab, CORRIDOR, 1001)
    await lab.sr("create", policy(*PROTECT))  # the 15 now ride pe1 → p1 → p2 → pe4
    moved = await link(lab, "pe1-pe2")
    assert moved["load_pct"] == 0 and moved["native_pct"] == pytest.approx(90.0)
    assert moved["riding"] == [] and moved["native_services"] == CORRIDOR
    detour = await link(lab, "pe1-p1")
    assert detour["load_pct"] == pytest.approx(90.0) and detour["native_pct"] == 0
    # the load call still scales the services whose base path crosses pe1-pe2
    response = await load(lab, "pe1-pe2", {"target_pct": 50, "ramp_s": 10})
    assert response.json()["from_pct"] == pytest.approx(90.0)
    assert response.json()["services"] == CORRIDOR
    clock.now += 10
    assert (await link(lab, "pe1-pe2"))["native_pct"] == pytest.approx(50.0)
    assert (await link(lab, "pe1-p1"))["load_pct"] == pytest.approx(50.0)
    topo = (await lab.client.get("/lab/topology")).json()
    by_id = {x["link_id"]: x for x in topo["links"]}
    assert by_id["pe1-pe2"]["load_pct"] == 0 and by_id["pe1-pe2"]["native_pct"] == 50
    assert {"load_mbps", "native_mbps", "ramp", "metrics", "services"} <= set(by_id["pe1-pe2"])
    offered = {s["vpn_id"]: s["offered_mbps"] for s in topo["services"]}
    assert offered["vpn-001"] == pytest.approx(500 * 5000 / 4100, abs=0.001)


async def test_overload_drops_and_delays_and_pca_alerts_on_it(
    settings: Settings, lab_settings: LabSettings
) -> None:
    quick = lab_settings.model_copy(update={"load_tick_s": 0.01})
    async with harness(settings, quick) as lab:
        _, clock = clocked(lab)
        await load(lab, "pe1-pe2", {"target_pct": 150, "ramp_s": 10})
        clock.now += 5  # 95.5 %: a queue builds (+15.5 ms), nothing is lost yet
        seen = (await measured(lab, "pe1-pe2"))["pe1-pe2"]
        assert seen["packetsLostPct"] == 0 and seen["delayAvg"] == pytest.approx(2 + 15.5)
        clock.now += 5  # 150 %: a third is dropped and the queue is full (+40 ms)
        seen = (await measured(lab, "pe1-pe2"))["pe1-pe2"]
        assert seen["packetsLostPct"] == pytest.approx(100 / 3, abs=0.001)
        assert seen["delayAvg"] == pytest.approx(2 + 40)
        pm = await lab.rate_mbps("pe1-pe2")
        assert pm == pytest.approx(15_000, abs=1)
        # the load task noticed by itself: PCA's alert reached the correlator
        await wait_for(lambda: ("pe1-pe2", "raised") in lab.receiver.states())
        raised = next(a for a in lab.receiver.alerts if a["objectName"] == "pe1-pe2")
        assert raised["metric"] == "packets-lost-pct" and raised["severity"] == "critical"
        assert (await link(lab, "pe1-pe2"))["alerting"] is True
        # the load comes back: the alert clears at once
        await load(lab, "pe1-pe2", {"target_pct": 40, "ramp_s": 0})
        await drain(lab)
        assert ("pe1-pe2", "cleared") in lab.receiver.states()
        assert lab.lab.tasks.get("load") is None or await wait_for(
            lambda: "load" not in lab.lab.tasks
        )


async def test_two_links_ramp_the_same_services_the_last_call_wins(lab: LabHarness) -> None:
    _, clock = clocked(lab)
    await load(lab, "pe1-pe2", {"target_pct": 80, "ramp_s": 100})
    clock.now += 50  # the corridor at 60.5 % of pe1-pe2 (6050 Mbps)
    # pe3-pe4 carries the corridor and the metro services (900): 6950 Mbps → 6000 at once
    response = await load(lab, "pe3-pe4", {"target_pct": 60, "ramp_s": 0})
    assert response.json()["from_pct"] == pytest.approx(69.5)
    assert len(response.json()["services"]) == 18
    state = (await lab.client.get("/lab/state")).json()
    assert state["load"]["ramps"] == {}  # pe1-pe2's ramp lost every service: it is over
    clock.now += 50
    assert (await link(lab, "pe3-pe4"))["native_pct"] == pytest.approx(60.0)
    assert (await link(lab, "pe1-pe2"))["native_pct"] == pytest.approx(60.5 * 6000 / 6950, abs=1e-3)
    # /lab/traffic wins over a ramp too
    await load(lab, "pe1-pe2", {"target_pct": 90, "ramp_s": 100})
    await lab.client.post("/lab/traffic", json={"factor": 1.0, "services": ["vpn-001"]})
    view = await link(lab, "pe1-pe2")
    assert view["ramp"]["services"] == 14


async def test_busy_hour_ramps_every_service_up_and_back(lab: LabHarness) -> None:
    network, clock = clocked(lab)
    body = {"peak": 2, "up_s": 10, "hold_s": 10, "down_s": 10, "gap_s": 5, "repeat": 2}
    response = await lab.client.post("/lab/scenarios/busy-hour", json=body)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["scenario"] == "busy-hour" and started["steps"][0]["action"] == "busy-hour"
    # at the peak p2-p4 (56 %) and pe3-pe4 (50 %) double: both overloaded
    assert started["links"] == ["p2-p4", "pe3-pe4"]
    hour = started["busy_hour"]
    assert hour["peak_native_pct"] == {
        "p2-p4": 112.0,
        "pe3-pe4": 100.0,
        "pe1-pe2": 82.0,
        "pe2-pe3": 82.0,
    }
    assert (hour["period_s"], hour["repeat"], hour["phase"], hour["cycle"]) == (35, 2, "gap", 1)

    expected = {0: 41, 5: 41, 10: 61.5, 15: 82, 25: 82, 30: 61.5, 35: 41, 45: 61.5, 55: 82, 70: 41}
    start = clock.now
    for at, pct in expected.items():
        clock.now = start + at
        view = await link(lab, "pe1-pe2")
        assert view["load_pct"] == pytest.approx(pct), at
        assert view["native_pct"] == pytest.approx(pct), at
        if at == 55:
            now = (await lab.client.get("/lab/state")).json()["load"]["busy_hour"]
            assert (now["cycle"], now["phase"], now["level"]) == (2, "hold", 2.0)
    clock.now = start + 71
    assert (await lab.client.get("/lab/state")).json()["load"]["busy_hour"] is None
    assert network.time_dependent() is False and network.traffic_factor == {}
    # the other scenarios are as they were
    names = {p["name"] for p in (await lab.client.get("/lab/scenarios")).json()}
    assert {"sla-degradation", "no-path", "no-impact", "flapping", "busy-hour"} <= names


async def test_busy_hour_on_an_sndlib_network_to_a_peak_pct(
    settings: Settings, lab_settings: LabSettings
) -> None:
    abilene = lab_settings.model_copy(update={"topology": "sndlib/abilene"})
    async with harness(settings, abilene) as lab:
        network, clock = clocked(lab)
        links = network.topology.links
        before = max(network.native_pct(x) for x in links)
        body = {"peak_pct": 95, "base": 0.5, "up_s": 60, "hold_s": 60, "down_s": 60, "gap_s": 0}
        response = await lab.client.post("/lab/scenarios/busy-hour", json=body)
        assert response.status_code == 202, response.text
        hour = response.json()["busy_hour"]
        busiest = max(links, key=network.native_pct)
        assert response.json()["links"][0] == busiest
        assert hour["peak"] == pytest.approx(95 / before, abs=1e-4)
        assert network.native_pct(busiest) == pytest.approx(before * 0.5)  # base: half
        clock.now += 90  # held at the peak
        assert network.native_pct(busiest) == pytest.approx(95.0)
        topo = (await lab.client.get("/lab/topology")).json()
        top = max(topo["links"], key=lambda x: x["native_pct"])
        assert top["link_id"] == busiest and top["native_pct"] == pytest.approx(95.0, abs=0.01)
        assert top["load_pct"] == top["native_pct"]  # nothing steered
        clock.now += 90  # over: the network stays at base
        assert network.native_pct(busiest) == pytest.approx(before * 0.5)
        assert network.profile is None


async def test_bad_requests_say_why_and_change_nothing(lab: LabHarness) -> None:
    before = (await lab.client.get("/lab/topology")).json()["links"]
    response = await load(lab, "pe1-pe9", {"target_pct": 95, "ramp_s": 10})
    assert response.status_code == 404 and "pe1-pe9" in response.json()["detail"]
    for body in (
        {},
        {"target_pct": 95},
        {"ramp_s": 10},
        {"target_pct": -1, "ramp_s": 10},
        {"target_pct": 201, "ramp_s": 10},
        {"target_pct": 95, "ramp_s": -1},
        {"target_pct": "lots", "ramp_s": 10},
        {"target_pct": 95, "ramp_s": 10, "bogus": 1},
        None,
    ):
        response = await load(lab, "pe1-pe2", body)
        assert response.status_code == 422, (body, response.text)
    idle = await load(lab, "p1-p3", {"target_pct": 50, "ramp_s": 10})
    assert idle.status_code == 422 and "p1-p3" in idle.json()["detail"]
    scenarios = (
        ("busy-hour", {"duration_s": 5}, "duration_s"),
        ("busy-hour", {"peak": 2, "peak_pct": 90}, "not both"),
        ("busy-hour", {"repeat": 0}, "repeat"),
        ("busy-hour", {"peak": 0}, "peak"),
        ("sla-degradation", {"peak": 2}, "busy-hour"),
    )
    for name, body, words in scenarios:
        response = await lab.client.post(f"/lab/scenarios/{name}", json=body)
        assert response.status_code == 422 and words in response.text, (name, body)
    state = (await lab.client.get("/lab/state")).json()
    assert state["load"] == {"ramps": {}, "busy_hour": None} and state["traffic_factor"] == {}
    assert state["degraded_links"] == {}
    assert (await lab.client.get("/lab/topology")).json()["links"] == before


async def test_reset_stops_every_ramp_and_the_busy_hour(lab: LabHarness) -> None:
    network, _ = clocked(lab)
    await load(lab, "pe1-pe2", {"target_pct": 95, "ramp_s": 100})
    await lab.client.post("/lab/scenarios/busy-hour", json={"repeat": 3})
    assert network.time_dependent() and "load" in lab.lab.tasks
    assert (await lab.client.post("/lab/reset")).status_code == 200
    assert not network.time_dependent() and "load" not in lab.lab.tasks
    assert (await link(lab, "pe1-pe2"))["load_pct"] == pytest.approx(41.0)


async def test_cxm_scenario_sends_parameters(settings: Settings) -> None:
    assert parse_params(["peak_pct=95", "repeat=3", "name=x"]) == {
        "peak_pct": 95,
        "repeat": 3,
        "name": "x",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["peak"])
    settings = settings.model_copy(update={"lab_url": "http://lab", "io_url": "http://io"})
    lab_app = create_lab(settings, LabSettings(push_alerts=False))
    io_app = create_io(settings)
    out = io.StringIO()
    async with running(lab_app), running(io_app), mounted(lab_app, io_app) as client:
        code = await run_scenario(
            settings,
            "busy-hour",
            wait=False,
            client=client,
            out=out,
            params={"peak_pct": 95, "repeat": 3},
        )
        assert code == 0 and "(links: p2-p4)" in out.getvalue(), out.getvalue()
        assert lab_app.state.lab.network.profile.spec.repeat == 3
        # nothing to follow: a busy hour that overloads nothing names no link
        out = io.StringIO()
        code = await run_scenario(settings, "busy-hour", wait=True, client=client, out=out)
        assert code == 1 and "names no link" in out.getvalue()


@pytest.fixture
async def io_on_lab(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """IO in-process, relaying to the real lab app in-process."""
    settings = settings.model_copy(update={"lab_url": "http://lab"})
    lab_app = create_lab(settings, LabSettings(push_alerts=False))
    async with running(lab_app):
        io_app = create_io(settings, peer_transport=httpx.ASGITransport(app=lab_app))
        async with running(io_app) as http:
            http.base_url = httpx.URL("http://127.0.0.1:8999")
            yield http, lab_app


async def test_io_relays_the_load_call(io_on_lab: tuple[httpx.AsyncClient, Any]) -> None:
    http, lab_app = io_on_lab
    response = await http.post(
        "/api/v1/lab/links/pe1-pe2/load", json={"target_pct": 80, "ramp_s": 0}
    )
    assert response.status_code == 202, response.text
    assert response.json()["services"] == CORRIDOR
    assert lab_app.state.lab.network.native_pct("pe1-pe2") == pytest.approx(80.0)
    bad = await http.post("/api/v1/lab/links/pe1-pe2/load", json={"target_pct": 500})
    assert bad.status_code == 422

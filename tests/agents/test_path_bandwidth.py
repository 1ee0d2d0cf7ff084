"""Path Computation: TE bandwidth accounting (headroom, not raw capacity).

On a synthetic graph first, then against the in-process lab, where the corridor's 15
services (4,100 Mbps) need a way round pe1-pe2 and pe2-pe3.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.path.app import create_app as path_app
from services.path.graph import KnowledgeGraph, committed_by_link
from services.path.settings import PathSettings
from shared.models import ComputePath
from shared.settings import Settings
from shared.southbound import (
    CncClient,
    Link,
    Node,
    Topology,
    VpnService,
    cnc_client,
    service_inventory,
    steering_share,
)
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running

# --- the knowledge graph -------------------------------------------------------------------
#
#   a --1ms-- b --1ms-- d      every link 10,000 Mbps, so 8,000 reservable
#    \                 /
#     ---5ms-- c --5ms-


def _graph() -> KnowledgeGraph:
    nodes = [Node(node_id=n, te_capabilities=["sr-mpls"]) for n in "abcd"]
    ends = [("a", "b", 1.0), ("b", "d", 1.0), ("a", "c", 5.0), ("c", "d", 5.0)]
    links = [Link(link_id=f"{u}-{v}", source=u, destination=v, delay_ms=ms) for u, v, ms in ends]
    return KnowledgeGraph.build(Topology(nodes=nodes, links=links))


def _service(vpn_id: str, mbps: float, path: list[str], color: int | None = None) -> VpnService:
    """A service a -> d riding ``path``; ``color`` set when it is steered onto a policy."""
    return VpnService(
        vpn_id=vpn_id,
        name=vpn_id,
        service_type="l3vpn",
        sla_tier="gold",
        head_end="a",
        end_point="d",
        path=path,
        bandwidth_mbps=mbps,
        color=color if color is not None else 200,
        steered=color is not None,
    )


BUSY = _service("busy", 7000, ["a-b"])  # a-b: 10,000 Mbps of capacity, 1,000 of headroom


def _ask(mbps: float, **overrides: Any) -> ComputePath:
    return ComputePath(
        incident_id="INC-1", head_end="a", end_point="d", min_bandwidth_mbps=mbps, **overrides
    )


def test_a_link_with_capacity_but_no_headroom_is_avoided() -> None:
    graph = _graph().reserve([BUSY], reservable_share=0.8)
    fits = graph.shortest(_ask(1000))
    detour = graph.shortest(_ask(1500))
    assert fits.path == ["a", "b", "d"]
    assert fits.model_dump()["min_headroom_mbps"] == 1000
    assert detour.path == ["a", "c", "d"]
    assert detour.model_dump()["min_headroom_mbps"] == 8000
    assert detour.model_dump()["min_capacity_mbps"] == 10000


def test_services_the_path_carries_do_not_count_against_it() -> None:
    graph = _graph().reserve([BUSY], carrying=["busy"], reservable_share=0.8)
    result = graph.shortest(_ask(7500))
    assert result.path == ["a", "b", "d"]
    assert result.model_dump()["min_headroom_mbps"] == 8000


def test_a_service_loads_the_path_it_rides_now() -> None:
    """A steered service's path is its protection policy's: all of its load is there, none
    on the links it would take home (a policy carries whole services)."""
    services = [
        _service("steered", 1000, ["a-c", "c-d"], color=1007),
        _service("home", 400, ["a-b", "b-d"]),
    ]
    graph = _graph().reserve(services, reservable_share=0.8)
    assert graph.load_mbps == {"a-c": 1000, "c-d": 1000, "a-b": 400, "b-d": 400}
    around = ["a-b"]
    assert graph.shortest(_ask(7000, avoid_links=around)).path == ["a", "c", "d"]
    assert graph.shortest(_ask(7100, avoid_links=around)).found is False  # a-c: 7,000 left


def test_a_link_without_a_measured_delay_is_priced_by_its_te_metric() -> None:
    """CNC's performance metrics may have no delay for a link: the delay objective then
    estimates it from the TE metric at the rate the measured links run at."""
    nodes = [Node(node_id=n, te_capabilities=["sr-mpls"]) for n in "abcd"]
    links = [
        Link(link_id="a-b", source="a", destination="b", te_metric=10, delay_ms=1.0),
        Link(link_id="b-d", source="b", destination="d", te_metric=10, delay_ms=None),
        Link(link_id="a-c", source="a", destination="c", te_metric=10, delay_ms=1.0),
        Link(link_id="c-d", source="c", destination="d", te_metric=10, delay_ms=3.0),
    ]
    graph = KnowledgeGraph.build(Topology(nodes=nodes, links=links))
    assert graph.ms_per_te == 5 / 30  # 5 ms over 30 TE units measured
    result = graph.shortest(ComputePath(incident_id="INC-1", head_end="a", end_point="d"))
    assert result.path == ["a", "b", "d"]  # 1 + 10 x 1/6 ms beats 1 + 3 ms
    assert result.total_delay_ms == round(1 + 10 / 6, 3)
    assert result.model_dump()["delay_estimated_links"] == ["b-d"]


def test_no_path_says_bandwidth_is_the_constraint() -> None:
    graph = _graph().reserve([BUSY], reservable_share=0.8)
    short = graph.shortest(_ask(8500))
    cut = graph.shortest(_ask(8500, avoid_links=["a-b", "a-c"]))
    assert short.found is False and short.reason is not None
    assert "at least 8500 Mbps of headroom (reservable 80 % of capacity)" in short.reason
    assert "bandwidth is the constraint: a → b → d would do" in short.reason
    assert "1000 Mbps of headroom on a-b" in short.reason
    assert cut.reason is not None and "bandwidth is the constraint" not in cut.reason


def test_without_bandwidth_nothing_is_reserved() -> None:
    graph = _graph()
    assert graph.load_mbps == {}
    result = graph.shortest(ComputePath(incident_id="INC-1", head_end="a", end_point="d"))
    assert result.path == ["a", "b", "d"]
    assert "min_headroom_mbps" not in result.model_dump()


# --- what links carry now (CNC's rates), not only what their services committed ---------


def test_a_link_carrying_more_than_its_services_committed_has_less_headroom() -> None:
    """A busy hour: BUSY committed 7,000 Mbps on a-b, a-b carries 7,600 (its services send
    more than they committed). A 1,000 Mbps group fits a-b by commitments, not by traffic."""
    committed = _graph().reserve([BUSY], reservable_share=0.8)
    measured = _graph().reserve([BUSY], reservable_share=0.8, rates={"a-b": 7600.0})
    assert committed.shortest(_ask(1000)).path == ["a", "b", "d"]
    assert measured.load_mbps["a-b"] == pytest.approx(7600)
    assert measured.shortest(_ask(1000)).path == ["a", "c", "d"]
    # carrying less than committed (a quiet hour) frees nothing: commitments stand
    quiet = _graph().reserve([BUSY], reservable_share=0.8, rates={"a-b": 3000.0})
    assert quiet.load_mbps["a-b"] == 7000


def test_traffic_no_service_accounts_for_is_load_all_the_same() -> None:
    graph = _graph().reserve([], reservable_share=0.8, rates={"a-b": 7500.0, "b-d": 10.0})
    assert graph.load_mbps == {"a-b": 7500, "b-d": 10}
    assert graph.shortest(_ask(1000)).path == ["a", "c", "d"]


def test_a_service_steered_since_the_rates_were_read_counts_where_it_rides_now() -> None:
    """Rates are as old as the graph (its TTL): a service steered since is counted on its new
    path at its link's carried/committed ratio, not where the rates last saw it."""
    then = [_service("s", 1000, ["a-b", "b-d"])]
    now = [_service("s", 1000, ["a-c", "c-d"], color=1007)]
    rates = {"a-b": 2000.0, "b-d": 2000.0, "a-c": 0.0, "c-d": 0.0}
    graph = _graph().reserve(
        now, reservable_share=0.8, rates=rates, rated_with=committed_by_link(then)
    )
    assert graph.load_mbps["a-b"] == 0 and graph.load_mbps["a-c"] == 1000
    stale = _graph().reserve(now, reservable_share=0.8, rates=rates)  # read with these
    assert stale.load_mbps["a-b"] == 2000  # traffic no service accounts for: kept


def test_a_moving_group_is_sized_by_what_it_sends() -> None:
    """The group on a-b committed 1,000 Mbps and sends 1,800 (a-b carries 1.8x what its
    services committed): the detour must have room for 1,800, and its own traffic leaving
    a-b does not count against a path that shares a-b."""
    mover = _service("mover", 1000, ["a-b", "b-d"])
    rates = {"a-b": 1800.0, "b-d": 2700.0, "a-c": 6600.0}  # b-d: 1.5x (another service)
    other = _service("other", 800, ["b-d"])
    graph = _graph().reserve([mover, other], carrying=["mover"], reservable_share=0.8, rates=rates)
    assert graph.sending == {"mover": (1000, 1500.0)}  # the smallest ratio on its path: 1.5x
    asked = graph.sized(_ask(1000, carrying=["mover"]))
    assert asked.min_bandwidth_mbps == 1500
    assert graph.load_mbps["a-b"] == 0 and graph.load_mbps["b-d"] == 1200  # 800 x 1.5
    assert graph.shortest(asked).path == ["a", "b", "d"]
    # a-c carries 6,600: room for the 1,000 committed, not for the 1,500 sent
    around = asked.model_copy(update={"avoid_links": ["a-b"]})
    assert graph.shortest(around.model_copy(update={"min_bandwidth_mbps": 1000})).found
    assert graph.shortest(around).found is False
    # without rates nothing is resized
    plain = _graph().reserve([mover, other], carrying=["mover"], reservable_share=0.8)
    assert plain.sized(_ask(1000, carrying=["mover"])).min_bandwidth_mbps == 1000


def test_a_plan_sizes_each_group_and_keeps_an_unplaced_groups_traffic_as_sent() -> None:
    movers = [_service("m1", 1000, ["a-b", "b-d"]), _service("m2", 1000, ["a-b", "b-d"])]
    rates = {"a-b": 4000.0, "b-d": 4000.0}  # both send twice what they committed
    requests = [
        _ask(1000, carrying=["m1"], avoid_links=["a-b"]),
        _ask(1000, carrying=["m2"], avoid_links=["a-b", "a-c"]),  # nowhere to go: stays
    ]
    first, second = _graph().plan(requests, movers, reservable_share=0.8, rates=rates)
    assert first.path == ["a", "c", "d"]
    assert first.model_dump()["min_headroom_mbps"] == 8000
    assert second.found is False and second.reason is not None
    assert "at least 2000 Mbps" in second.reason


def test_a_proactive_detour_stays_under_the_cap_with_its_load_grown() -> None:
    """A shift early in a busy hour: a-c carries 2,000 Mbps now and the busy hour will lift
    it 1.6x. 2,000 Mbps more fits the reservable share (8,000) as things are, not once the
    link's own traffic has grown (3,200 + 2,000 > 50 % of 10,000): no detour then, and the
    reason names the cap and the growth."""
    graph = _graph().reserve([], reservable_share=0.8, rates={"a-c": 2000.0, "c-d": 2000.0})
    around = _ask(2000, avoid_links=["a-b"])
    assert graph.shortest(around).path == ["a", "c", "d"]
    capped = around.model_copy(update={"max_load_pct": 50.0})
    assert graph.shortest(capped).path == ["a", "c", "d"]  # 2,000 + 2,000 <= 5,000
    assert graph.shortest(capped).model_dump()["min_headroom_mbps"] == 3000
    grown = capped.model_copy(update={"load_growth": 1.6})
    refused = graph.shortest(grown)
    assert refused.found is False and refused.reason is not None
    assert "reservable 50 % of capacity, loads counted at 1.6x" in refused.reason
    assert "1800 Mbps of headroom on a-c" in refused.reason
    # growth alone, under the reservable share: 3,200 + 2,000 <= 8,000
    assert graph.shortest(around.model_copy(update={"load_growth": 1.6})).found


def test_a_plan_does_not_grow_what_it_promised_to_its_own_groups() -> None:
    """The second group's room counts the first group's reservation as asked (already
    sized for the horizon), not grown again."""
    requests = [
        _ask(2000, avoid_links=["a-b"], load_growth=2.0, max_load_pct=50.0),
        _ask(2000, avoid_links=["a-b"], load_growth=2.0, max_load_pct=50.0),
    ]
    first, second = (
        _graph().reserve([], reservable_share=0.8).plan(requests, [], reservable_share=0.8)
    )
    assert first.found and second.found  # 2,000 + 2,000 <= 5,000, not 2 x 2,000 + 2,000
    third = _graph().plan([*requests, requests[0]], [], reservable_share=0.8)[2]
    assert third.found is False


# --- the agent over the fake CNC -----------------------------------------------------------


async def test_services_are_read_only_when_bandwidth_is_asked_and_a_failure_is_an_error(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    request = {"incident_id": "INC-1", "head_end": "pe1", "end_point": "pe4"}
    net.services_status = 503
    async with running(path_app(agent_settings)) as client:
        plain = await run_task(client, "compute_path", request)
        loaded = await run_task(client, "compute_path", {**request, "min_bandwidth_mbps": 100})
        k = await run_task(
            client, "k_shortest_paths", {**request, "min_bandwidth_mbps": 100, "k": 2}
        )
    assert plain.status_code == 200 and plain.json()["result"]["found"] is True
    assert loaded.status_code == 503 and loaded.json()["detail"]["code"] == "southbound"
    assert k.status_code == 503


# --- against the lab -----------------------------------------------------------------------

CORRIDOR = [f"vpn-{n:03d}" for n in range(1, 16)]  # 2 platinum, 5 gold, 8 silver: 4,100 Mbps
DEGRADED = ["pe1-pe2", "pe2-pe3"]
AROUND = ["pe1", "p1", "p2", "pe4"]


@pytest.fixture
def lab_settings(settings: Settings) -> Settings:
    """Every southbound URL on the in-process lab (its CNC, PCA and OSS inventory)."""
    return settings.model_copy(
        update={"cnc_url": "http://lab", "pca_url": "http://lab", "lab_url": "http://lab"}
    )


@asynccontextmanager
async def lab_path(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, CncClient]]:
    """The path agent on the lab's default topology, and a CNC client to change the lab."""
    lab = lab_app(settings, LabSettings(push_alerts=False))
    transport = httpx.ASGITransport(app=lab)
    inventory = service_inventory(settings, transport=transport)
    cnc = cnc_client(settings, transport=transport, inventory=inventory)
    async with running(lab), running(path_app(settings, southbound_transport=transport)) as path:
        try:
            yield path, cnc
        finally:
            await cnc.aclose()
            await inventory.aclose()


async def _path(client: httpx.AsyncClient, **payload: Any) -> dict[str, Any]:
    body = {"incident_id": "INC-1", "head_end": "pe1", "end_point": "pe4", **payload}
    response = await run_task(client, "compute_path", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_the_corridor_does_not_fit_the_thin_way_round(lab_settings: Settings) -> None:
    """Without p1-p2 the only way round crosses the 2,500 Mbps p1-p3 and p2-p4 links."""
    avoid = [*DEGRADED, "p1-p2"]
    async with lab_path(lab_settings) as (path, _):
        corridor = await _path(path, avoid_links=avoid, min_bandwidth_mbps=4100, carrying=CORRIDOR)
        medium = await _path(path, avoid_links=avoid, min_bandwidth_mbps=1500, carrying=CORRIDOR)
        small = await _path(path, avoid_links=avoid, min_bandwidth_mbps=500, carrying=CORRIDOR)
    assert corridor["found"] is False
    assert "at least 4100 Mbps of headroom (reservable 80 % of capacity)" in corridor["reason"]
    # p1-p3 has 2,000 reservable; p2-p4 has 2,000 less the datacenter and campus services' 1,400
    assert "pe1 → p1 → p3 → p4 → p2 → pe4 would do" in corridor["reason"]
    assert "600 Mbps of headroom on p2-p4" in corridor["reason"]
    assert medium["found"] is False  # the capacity would do, the headroom does not
    assert small["path"] == ["pe1", "p1", "p3", "p4", "p2", "pe4"]
    assert small["min_headroom_mbps"] == 600


async def test_the_corridor_fits_the_protection_corridor(lab_settings: Settings) -> None:
    async with lab_path(lab_settings) as (path, _):
        result = await _path(path, avoid_links=DEGRADED, min_bandwidth_mbps=4100, carrying=CORRIDOR)
    assert result["path"] == AROUND
    assert result["min_headroom_mbps"] == 6600  # p2-pe4 carries datacenter and campus: 1,400


async def test_steered_load_counts_unless_the_path_carries_it(lab_settings: Settings) -> None:
    """A re-route of a live tunnel: its services are on the policy and move with it."""
    async with lab_path(lab_settings) as (path, cnc):
        await cnc.create_sr_policy(
            head_end="pe1",
            end_point="pe4",
            color=1100,
            path_name="protect",
            binding_sid=24001,
            hops=AROUND[1:],
            description="INC-1",
            te_type="sr-mpls",
        )
        corridor = [s for s in await cnc.services() if s.vpn_id in CORRIDOR]
        await cnc.map_services(corridor, 1100)
        moving = await _path(path, avoid_links=DEGRADED, min_bandwidth_mbps=4100, carrying=CORRIDOR)
        staying = await _path(path, avoid_links=DEGRADED, min_bandwidth_mbps=4100)
        off_p2_pe4 = [*DEGRADED, "p2-pe4"]
        rerouted = await _path(
            path, avoid_links=off_p2_pe4, min_bandwidth_mbps=4100, carrying=CORRIDOR
        )
        # half of the corridor's bandwidth goes home, lowest tiers first
        kept = set(steering_share(corridor, 50))
        await cnc.unmap_services([s for s in corridor if s.vpn_id not in kept])
        services = {s.vpn_id: s for s in await cnc.services()}
        half = await _path(path, avoid_links=DEGRADED, min_bandwidth_mbps=1000)
    assert moving["path"] == AROUND and moving["min_headroom_mbps"] == 6600
    assert staying["found"] is False  # pe1-p1 and p1-p2 have 8,000 - 4,100 = 3,900 left
    assert "2500 Mbps of headroom on p2-pe4" in staying["reason"]  # and its own 1,400 on it
    assert rerouted["path"] == ["pe1", "p1", "p2", "pe3", "pe4"]
    assert rerouted["min_headroom_mbps"] == 7100  # pe3-pe4 keeps the metro services' 900
    on_policy = sum(services[sid].bandwidth_mbps for sid in kept)
    assert 2050 <= on_policy < 4100
    assert all(services[sid].steered and services[sid].color == 1100 for sid in kept)
    assert all(not s.steered and s.color != 1100 for s in corridor if s.vpn_id not in kept)
    assert all(services[sid].path == ["pe1-p1", "p1-p2", "p2-pe4"] for sid in kept)
    assert half["path"] == AROUND
    assert half["min_headroom_mbps"] == 8000 - 1400 - on_policy  # p2-pe4: its own + the kept


async def test_a_burst_of_requests_shares_one_read_of_the_load(lab_settings: Settings) -> None:
    lab = lab_app(lab_settings, LabSettings(push_alerts=False))
    app = path_app(lab_settings, southbound_transport=httpx.ASGITransport(app=lab))
    ask = {"avoid_links": DEGRADED, "min_bandwidth_mbps": 4100, "carrying": CORRIDOR}
    async with running(lab), running(app) as path:
        results = await asyncio.gather(*(_path(path, **ask) for _ in range(5)))
        cache = app.state.graph
        assert 1 <= cache.load_reads < 5
        assert all(r["path"] == AROUND for r in results)
        # the next request reads again: the load is never kept beyond a read in flight
        before = cache.load_reads
        await _path(path, **ask)
        assert cache.load_reads == before + 1


async def test_a_link_the_busy_hour_fills_is_not_a_way_round(lab_settings: Settings) -> None:
    """End to end over the lab's CNC: p2-pe4's own services (1,400 Mbps committed) ramp to
    80 % of its capacity. By commitments the corridor still fits the protection corridor
    through p2-pe4; by what CNC's performance metrics say p2-pe4 carries, it does not, and the
    path goes round it."""
    lab = lab_app(lab_settings, LabSettings(push_alerts=False))
    transport = httpx.ASGITransport(app=lab)
    found = {}
    async with running(lab) as control:
        ramp = await control.post("/lab/links/p2-pe4/load", json={"target_pct": 80, "ramp_s": 0})
        assert ramp.status_code == 202, ramp.text
        for measured in (False, True):
            agent = path_app(
                lab_settings,
                path_settings=PathSettings(measured_load=measured),
                southbound_transport=transport,
            )
            async with running(agent) as path:
                found[measured] = await _path(
                    path, avoid_links=DEGRADED, min_bandwidth_mbps=4100, carrying=CORRIDOR
                )
    assert found[False]["path"] == AROUND  # committed: p2-pe4 has 6,600 Mbps of headroom
    assert found[True]["found"] is True
    assert "p2-pe4" not in found[True]["links"] and found[True]["path"] != AROUND

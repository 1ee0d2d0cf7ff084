"""Topology fold (``ietf-network-state`` → CXM's Topology), link delay and utilisation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.southbound import NETWORKS, CncClient, Link, fold_topology, link_key
from tests.southbound.conftest import Clock, make_cnc, pm_id, serve_topology
from tests.southbound.payloads import (
    LINKS,
    NODES,
    both,
    data_missing,
    link,
    link_id,
    networks,
    node,
    pm,
)


def by_id(links: list[Link]) -> dict[str, Link]:
    return {link.link_id: link for link in links}


def test_nodes_fold_sids_loopbacks_and_te_capabilities() -> None:
    nodes = {n.node_id: n for n in fold_topology(NODES, []).nodes}
    pe1, p1, p2, pe4 = nodes["pe1"], nodes["p1"], nodes["p2"], nodes["pe4"]
    assert pe1.loopback == "10.0.0.1"
    assert pe4.prefix_sid == 16004
    assert pe1.prefix_sid == 16001  # SRGB 16000 + index 1
    assert p1.prefix_sid == 16011  # absolute
    assert p2.prefix_sid == 17012  # its own SRGB 17000 + index 12
    assert pe1.srv6_sid == "fc00:0:1::"
    assert pe1.ipv6_router_id == "fc00::1"
    assert pe1.te_capabilities == ["sr-mpls", "srv6", "rsvp-te"]
    assert p1.te_capabilities == ["sr-mpls", "srv6"]
    assert p2.te_capabilities == ["sr-mpls", "rsvp-te"]
    assert all(n.role is None for n in nodes.values())


def test_a_node_without_an_sid_or_srgb() -> None:
    bare = node("x", "10.9.9.9", sid=None, srgb=None)
    default_srgb = node("y", "10.9.9.8", sid=5, srgb=None)
    nodes = {n.node_id: n for n in fold_topology([bare, default_srgb], []).nodes}
    assert nodes["x"].prefix_sid is None
    assert nodes["x"].te_capabilities == []
    assert nodes["y"].prefix_sid == 16005  # Cisco's default SRGB


def test_the_node_sid_is_the_router_ids_prefix() -> None:
    raw = node("z", "10.0.0.7", sid=7)
    attrs = raw["ietf-l3-unicast-topology-state:l3-node-attributes"]
    attrs["prefix"].insert(
        0,
        {
            "prefix": "10.77.0.0/24",
            "ietf-sr-mpls-topology-state:prefix-sid": {"value-type": "index", "start-sid": 99},
        },
    )
    (z,) = fold_topology([raw], []).nodes
    assert z.prefix_sid == 16007
    attrs["router-id"] = ["10.1.1.1"]  # no prefix is the router-id: the first with a SID
    (z,) = fold_topology([raw], []).nodes
    assert z.prefix_sid == 16099


def test_directional_links_fold_into_named_cxm_links() -> None:
    links = by_id(fold_topology(NODES, LINKS).links)
    assert sorted(links) == ["p1-pe4", "pe1-p1", "pe1-p1#2", "pe1-p2", "pe4-p2"]
    pe1_p1 = links["pe1-p1"]
    assert (pe1_p1.source, pe1_p1.destination) == ("pe1", "p1")
    assert pe1_p1.igp_metric == 10 and pe1_p1.te_metric == 10
    assert pe1_p1.capacity_mbps == 10_000
    assert pe1_p1.srlgs == [100]
    assert pe1_p1.delay_ms is None  # the fold has no delay: the PM read fills it
    assert [(i.source, i.source_tp, i.destination) for i in pe1_p1.interfaces] == [
        ("pe1", "GigabitEthernet0/0/0/0", "p1"),
        ("p1", "GigabitEthernet0/0/0/0", "pe1"),
    ]
    assert pe1_p1.interfaces[0].cnc_link_id == link_id(
        "pe1", "GigabitEthernet0/0/0/0", "p1", "GigabitEthernet0/0/0/0"
    )
    parallel = links["pe1-p1#2"]
    assert parallel.igp_metric == 30
    assert {i.source_tp for i in parallel.interfaces} == {"GigabitEthernet0/0/0/1"}
    assert links["pe4-p2"].source == "pe4"  # named after the direction listed first


def test_parallel_link_listed_the_other_way_keeps_the_first_name() -> None:
    raw = [
        *both("a", "b"),
        link("b", "a", tp="Gi1"),
        link("a", "b", tp="Gi1"),
        link("a", "b", tp="Gi2"),  # a third, one direction only
    ]
    names = [link.link_id for link in fold_topology([], raw).links]
    assert names == ["a-b", "a-b#2", "a-b#3"]
    assert link_key("b-a#2") == link_key("a-b#2") == "a-b#2"
    assert link_key("pe2-pe1") == "pe1-pe2"


def test_the_fold_takes_the_worse_of_both_directions() -> None:
    raw = [
        link("a", "b", metric1=10, metric2=15, kbps=10_000_000, srlg=[1], status="up"),
        link("b", "a", metric1=20, metric2=12, kbps=1_000_000, srlg=[2], status="down"),
    ]
    (ab,) = fold_topology([], raw).links
    assert ab.igp_metric == 20
    assert ab.te_metric == 15
    assert ab.capacity_mbps == 1000
    assert ab.srlgs == [1, 2]
    assert ab.oper_status == "down"


async def test_topology_follows_pages_until_a_short_one(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    serve_topology(cnc_router)
    cnc = make_cnc(cnc_router, clock, page_size=3)
    topology = await cnc.topology()
    assert {n.node_id for n in topology.nodes} == {"pe1", "p1", "p2", "pe4"}
    assert len(topology.links) == 5
    offsets = [
        (c.request.url.params["limit"], c.request.url.params["offset"])
        for c in cnc_router.routes["networks"].calls
    ]
    assert offsets == [("3", "0"), ("3", "3"), ("3", "6"), ("3", "9")]
    await cnc.aclose()


async def test_a_server_ignoring_offset_is_read_once_more_not_forever(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    serve_topology(cnc_router)
    cnc_router.routes["networks"].mock(
        side_effect=lambda request: httpx.Response(200, json=networks(NODES, LINKS))
    )
    cnc = make_cnc(cnc_router, clock, page_size=2)
    topology = await cnc.topology()
    assert len(topology.links) == 5
    assert cnc_router.routes["networks"].call_count == 2
    await cnc.aclose()


async def test_link_delay_comes_from_the_worse_directions_pm(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    pms: dict[str, dict[str, Any]] = {}
    for raw in LINKS:
        lid = raw["link-id"]
        src, dst = raw["source"]["source-node"], raw["destination"]["dest-node"]
        pms[lid] = pm(lid, src, dst, delay_us=3000 if src == "p1" else 2000)
    # pe4-p2 has no performance metrics at all (409 data-missing both ways).
    for raw in LINKS:
        if {raw["source"]["source-node"], raw["destination"]["dest-node"]} == {"pe4", "p2"}:
            del pms[raw["link-id"]]
    serve_topology(cnc_router, pms=pms)
    links = by_id((await cnc.topology()).links)
    assert links["pe1-p1"].delay_ms == 3.0
    assert links["pe1-p2"].delay_ms == 2.0
    assert links["pe4-p2"].delay_ms is None
    read = {pm_id(c.request) for c in cnc_router.routes["pm"].calls}
    assert read == {raw["link-id"] for raw in LINKS}  # both directions of every link


async def test_a_failing_pm_read_leaves_the_delay_unknown(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    serve_topology(cnc_router)
    cnc_router.routes["pm"].mock(return_value=httpx.Response(503, text="busy"))
    topology = await cnc.topology()
    assert all(link.delay_ms is None for link in topology.links)


async def test_pm_reads_run_with_bounded_concurrency(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    serve_topology(cnc_router)
    inflight = peak = 0
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        if peak >= 3:
            release.set()
        await release.wait()  # hold every read until the bound is reached
        inflight -= 1
        lid = pm_id(request)
        return httpx.Response(200, json=pm(lid, "a", "b"))

    cnc_router.routes["pm"].mock(side_effect=slow)
    cnc = make_cnc(cnc_router, clock, concurrency=3)
    await cnc.topology()
    assert peak == 3
    assert cnc_router.routes["pm"].call_count == 10
    await cnc.aclose()


async def test_an_absent_topology_is_empty(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    cnc_router.get(NETWORKS).respond(409, json=data_missing())
    topology = await cnc.topology()
    assert topology.nodes == [] and topology.links == []


async def test_link_utilisation_reads_both_directions(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    pms: dict[str, dict[str, Any]] = {}
    for raw in LINKS:
        lid = raw["link-id"]
        src, dst = raw["source"]["source-node"], raw["destination"]["dest-node"]
        util = 4_100_000 if (src, dst) == ("pe1", "p1") else 1_000_000
        pms[lid] = pm(lid, src, dst, util_kbps=util, delay_us=2500)
    serve_topology(cnc_router, pms=pms)
    loads = await cnc.link_utilisation()
    load = loads["pe1-p1"]
    assert load.rate_mbps == 4100
    assert load.capacity_mbps == 10_000
    assert load.utilisation_pct == pytest.approx(41.0)
    assert load.delay_ms == 2.5
    assert load.directions == {"pe1-p1": 4100, "p1-pe1": 1000}
    assert loads["pe1-p2"].utilisation_pct == pytest.approx(10.0)
    assert set(loads) == {"pe1-p1", "pe1-p1#2", "p1-pe4", "pe1-p2", "pe4-p2"}


async def test_link_utilisation_says_why_when_nothing_answers(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    serve_topology(cnc_router)
    cnc_router.routes["pm"].mock(return_value=httpx.Response(503, text="busy"))
    with pytest.raises(SouthboundError) as caught:
        await cnc.link_utilisation()
    assert caught.value.transient


async def test_link_utilisation_of_an_unmeasured_link_is_unknown(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    serve_topology(cnc_router, pms={})
    loads = await cnc.link_utilisation()
    assert loads["pe1-p1"].rate_mbps is None
    assert loads["pe1-p1"].utilisation_pct is None


async def test_reused_measurements_read_only_directions_never_read(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    """``measured_topology(reuse=True)`` keeps each direction's last answer: a refresh of the
    structure reads the performance metrics of a new link only, and a direction whose last
    read failed is read again rather than answered with an older value."""

    def measure(links: list[dict[str, Any]], **values: int) -> dict[str, dict[str, Any]]:
        return {
            raw["link-id"]: pm(
                raw["link-id"],
                raw["source"]["source-node"],
                raw["destination"]["dest-node"],
                **values,
            )
            for raw in links
        }

    measured = measure(LINKS, util_kbps=1_000_000, delay_us=2000)
    serve_topology(cnc_router, pms=measured)
    reads = cnc_router.routes["pm"]
    await cnc.measured_topology(reuse=True)
    assert reads.call_count == cnc.pm_reads == len(LINKS) == 10

    # every measurement changes on CNC: a reuse still answers the ones it read
    measured.update(measure(LINKS, util_kbps=7_000_000, delay_us=9000))
    kept, rates = await cnc.measured_topology(reuse=True)
    assert reads.call_count == 10
    assert by_id(kept.links)["pe1-p1"].delay_ms == 2.0 and rates["pe1-p1"] == 1000

    # a new link: only its two directions are read; a full read then sees the change
    extra = [*LINKS, *both("p1", "p2", metric1=10)]
    measured.update(measure(extra[-2:]))
    serve_topology(cnc_router, links=extra, pms=measured)
    grown, _ = await cnc.measured_topology(reuse=True)
    assert cnc.pm_reads == 10 + 2
    assert "p1-p2" in by_id(grown.links) and by_id(grown.links)["pe1-p1"].delay_ms == 2.0
    fresh, rates = await cnc.measured_topology()
    assert cnc.pm_reads == 12 + 12
    assert by_id(fresh.links)["pe1-p1"].delay_ms == 9.0 and rates["pe1-p1"] == 7000

    # a failed read is not answered from the kept value next time
    cnc_router.routes["pm"].mock(return_value=httpx.Response(503, text="busy"))
    failed, _ = await cnc.measured_topology()
    assert by_id(failed.links)["pe1-p1"].delay_ms is None
    serve_topology(cnc_router, links=extra, pms=measured)
    again, _ = await cnc.measured_topology(reuse=True)
    assert cnc.pm_reads == 24 + 12 + 12
    assert by_id(again.links)["pe1-p1"].delay_ms == 9.0

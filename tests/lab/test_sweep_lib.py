"""The sweep's fault picker and its independent path check (bench/sweep_lib.py).

The check is only worth something if it agrees with the path agent where both apply, so it is
compared with ``KnowledgeGraph`` on the faults and hurt groups of every SNDlib network.
"""

from __future__ import annotations

import functools
import itertools

import networkx as nx
import pytest

from bench.sweep_lib import hurt_groups, link_load, path_exists, pick_faults
from services.lab.topology import LabTopology, build_topology
from services.path.graph import KnowledgeGraph
from shared.models import ComputePath
from shared.southbound import Link, Node, Topology, VpnService
from tests.lab.test_real_networks import SNDLIB

CORRIDOR = [f"vpn-{n:03d}" for n in range(1, 16)]


@functools.cache
def topo(key: str) -> LabTopology:
    return build_topology(key)


def test_faults_carry_services_keep_their_ends_connected_and_are_disjoint() -> None:
    default = topo("default")
    faults = pick_faults(default, 3)
    # pe3-pe4 carries 18 services, pe1-pe2 15 (pe2-pe3 touches both), p3-p4 6, p2-p4 4
    assert faults == ["pe3-pe4", "pe1-pe2", "p3-p4"]
    assert "p1-p3" not in faults  # carries nothing
    assert "pe5-p3" not in faults and "p4-pe6" not in faults  # bridges
    for key in ("sndlib/abilene", "sndlib/germany50", "topozoo/Aarnet"):
        t = topo(key)
        faults = pick_faults(t, 3)
        assert len(faults) == 3
        links = [t.links[name] for name in faults]
        for a, b in itertools.combinations(links, 2):
            assert not {a.source, a.destination} & {b.source, b.destination}
            assert not set(a.srlgs) & set(b.srlgs)
        for link in links:
            assert t.services_on(link.link_id)
            graph = nx.Graph((x.source, x.destination) for x in t.links.values() if x != link)
            assert nx.has_path(graph, link.source, link.destination)


def test_hurt_groups_are_the_services_on_the_link_by_their_ends() -> None:
    [corridor] = hurt_groups(topo("default"), "pe1-pe2")
    assert (corridor.head_end, corridor.end_point) == ("pe1", "pe4")
    assert list(corridor.services) == CORRIDOR and corridor.bandwidth_mbps == 4100
    groups = hurt_groups(topo("default"), "pe3-pe4")
    assert [(g.head_end, g.end_point, len(g.services)) for g in groups] == [
        ("pe1", "pe4", 15),
        ("pe3", "pe4", 3),
    ]


def test_path_exists_on_the_seeds_network() -> None:
    """The figures of tests/agents/test_path_bandwidth.py, found by a plain BFS."""
    t = topo("default")
    degraded = ["pe1-pe2", "pe2-pe3"]
    load = link_load(t, carrying=CORRIDOR)
    assert path_exists(t, "pe1", "pe4", excluded_links=degraded)
    assert path_exists(t, "pe1", "pe4", excluded_links=degraded, min_bandwidth_mbps=4100, load=load)
    thin = [*degraded, "p1-p2"]  # the way round now crosses the 2,500 Mbps p1-p3 and p2-p4
    assert not path_exists(t, "pe1", "pe4", excluded_links=thin, min_bandwidth_mbps=4100, load=load)
    assert path_exists(t, "pe1", "pe4", excluded_links=thin, min_bandwidth_mbps=500, load=load)
    assert not path_exists(t, "pe1", "pe4", excluded_links=[*degraded, "p1-pe1"])
    assert not path_exists(t, "pe1", "pe4", excluded_links=degraded, down=["pe1-p1"])
    # one technology end to end: pe5 is SRv6-only and p3 is not SRv6
    assert not path_exists(t, "pe5", "pe4", te_type="srv6")
    assert path_exists(t, "pe1", "pe4", te_type="srv6", excluded_links=degraded)
    # SRLG-disjoint: pe3-pe4 shares SRLG 101 with pe3-p2, pe3's last way out
    cut = ["pe4-pe3", "pe2-pe3"]
    assert path_exists(t, "pe3", "pe4", excluded_links=cut)
    assert not path_exists(t, "pe3", "pe4", excluded_links=cut, srlg_disjoint=True)


def test_a_te_region_is_reachable_only_within_itself() -> None:
    t = topo("sndlib/germany50")
    region = sorted(n for n, node in t.nodes.items() if "srv6" in node.te_capabilities)
    outside = sorted(n for n, node in t.nodes.items() if "srv6" not in node.te_capabilities)
    assert len(region) >= 2
    assert path_exists(t, region[0], region[-1], te_type="srv6")
    assert not path_exists(t, region[0], outside[0], te_type="srv6")
    assert path_exists(t, region[0], outside[0])  # over the SR-MPLS core


def _graph(t: LabTopology) -> KnowledgeGraph:
    nodes = [
        Node(node_id=n.node_id, te_capabilities=list(n.te_capabilities), role=n.role)
        for n in t.nodes.values()
    ]
    links = [
        Link(
            link_id=x.link_id,
            source=x.source,
            destination=x.destination,
            delay_ms=x.delay_ms,
            capacity_mbps=x.capacity_mbps,
            srlgs=list(x.srlgs),
        )
        for x in t.links.values()
    ]
    return KnowledgeGraph.build(Topology(nodes=nodes, links=links))


def _services(t: LabTopology) -> list[VpnService]:
    return [
        VpnService.model_validate(
            {
                "vpn-id": s.vpn_id,
                "name": s.name,
                "service-type": s.service_type,
                "sla-tier": s.sla_tier,
                "head-end": s.head_end,
                "end-point": s.end_point,
                "path": list(s.path),
                "bandwidth-mbps": s.bandwidth_mbps,
            }
        )
        for s in t.services.values()
    ]


@pytest.mark.parametrize("key", SNDLIB)
def test_the_check_agrees_with_the_path_agent(key: str) -> None:
    """On each fault's hurt groups, with and without bandwidth, the verdicts are the same."""
    t = topo(key)
    graph = _graph(t)
    services = _services(t)
    verdicts = []
    for fault in pick_faults(t, 3):
        for group in hurt_groups(t, fault)[:4]:
            load = link_load(t, carrying=group.services)
            view = graph.reserve(services, carrying=group.services, reservable_share=0.8)
            for mbps, srlg in ((None, False), (group.bandwidth_mbps, False), (None, True)):
                ask = ComputePath(
                    incident_id="INC-1",
                    head_end=group.head_end,
                    end_point=group.end_point,
                    avoid_links=[fault],
                    min_bandwidth_mbps=mbps,
                    carrying=list(group.services),
                    srlg_disjoint=srlg,
                )
                agent = view.shortest(ask).found
                check = path_exists(
                    t,
                    group.head_end,
                    group.end_point,
                    excluded_links=[fault],
                    min_bandwidth_mbps=mbps,
                    load=load,
                    srlg_disjoint=srlg,
                )
                assert agent == check, (key, fault, group, mbps, srlg)
                verdicts.append(check)
    assert verdicts and any(verdicts)

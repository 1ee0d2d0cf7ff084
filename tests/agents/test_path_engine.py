"""Path Computation's engine against a plain reference, on random graphs and constraints.

The reference is what the agent did before the engine: networkx's Dijkstra and Yen over a
graph that holds only the links the request may use, each pair at its cheapest such link.
Which links those are is restated here from the contract (up, not avoided by name or by its
ends, no SRLG shared with an avoided link, the headroom, every node running the TE type, no
avoided node), so a slip in either implementation shows as a difference. Costs must agree
exactly; paths must agree where the cheapest one is unique. Then a graph updated in place
through a series of topology changes must answer as one built from the final topology.
"""

from __future__ import annotations

import math
import random
from itertools import islice, pairwise

import networkx as nx
import pytest

from services.path.graph import KnowledgeGraph
from shared.models import ComputePath
from shared.southbound import Link, Node, Topology, VpnService, link_key

TE = ("sr-mpls", "srv6", "rsvp-te")


def _topology(rng: random.Random, nodes: int = 14, extra: int = 14) -> Topology:
    """A connected random graph with parallel links, TE regions, SRLGs and small integer
    metrics (so equal-cost paths happen)."""
    names = [f"n{i}" for i in range(nodes)]
    ends = [(names[i], names[rng.randrange(i)]) for i in range(1, nodes)]
    ends += [tuple(rng.sample(names, 2)) for _ in range(extra)]  # type: ignore[misc]
    links: list[Link] = []
    seen: dict[str, int] = {}
    for u, v in ends:
        base = f"{u}-{v}"
        seen[link_key(base)] = seen.get(link_key(base), 0) + 1
        nth = seen[link_key(base)]
        links.append(
            Link(
                link_id=base if nth == 1 else f"{base}#{nth}",
                source=u,
                destination=v,
                te_metric=rng.randint(1, 4),
                igp_metric=rng.randint(1, 4),
                delay_ms=None if rng.random() < 0.1 else rng.choice([0.5, 1.0, 1.5, 2.0]),
                capacity_mbps=rng.choice([1000, 2500, 10000]),
                srlgs=rng.sample(range(1, 8), rng.randint(0, 2)),
                oper_status="down" if rng.random() < 0.05 else "up",
            )
        )
    node_list = [
        Node(node_id=n, te_capabilities=[t for t in TE if t == "sr-mpls" or rng.random() < 0.5])
        for n in names
        if rng.random() < 0.95 or n == "n0"
    ]
    return Topology(nodes=node_list, links=links)


def _request(rng: random.Random, topology: Topology) -> ComputePath:
    names = sorted({x for link in topology.links for x in (link.source, link.destination)})
    head, end = rng.sample(names, 2)
    avoid = [link.link_id for link in rng.sample(topology.links, rng.randint(0, 3))]
    avoid = [
        "-".join(reversed(a.split("-"))) if rng.random() < 0.3 and "#" not in a else a
        for a in avoid
    ]
    others = [n for n in names if n not in (head, end)]
    return ComputePath(
        incident_id="INC-1",
        head_end=head,
        end_point=end,
        avoid_links=avoid,
        avoid_nodes=rng.sample(others, rng.randint(0, 1)),
        srlg_disjoint=rng.random() < 0.5,
        min_bandwidth_mbps=rng.choice([None, 500, 1500]),
        metric=rng.choice(["delay", "te", "igp", "hops"]),
        te_type=rng.choice([None, None, "sr-mpls", "srv6"]),
    )


def _load(rng: random.Random, topology: Topology) -> list[VpnService]:
    return [
        VpnService(
            vpn_id=f"s{i}",
            name=f"s{i}",
            service_type="l3vpn",
            sla_tier="gold",
            head_end="n0",
            end_point="n1",
            path=[link.link_id for link in rng.sample(topology.links, 3)],
            bandwidth_mbps=rng.choice([100, 500, 900]),
        )
        for i in range(6)
    ]


def _reference(
    topology: Topology, graph: KnowledgeGraph, request: ComputePath, te_type: str | None
) -> nx.Graph:
    """The request's usable graph, built link by link from the contract."""
    caps = {n.node_id: set(n.te_capabilities) for n in topology.nodes}
    avoided = {link_key(a) for a in request.avoid_links}

    def named(link: Link) -> bool:
        pair = "-".join(sorted((link.source, link.destination)))
        return link_key(link.link_id) in avoided or pair in avoided

    srlgs = (
        {g for link in topology.links if named(link) for g in link.srlgs}
        if request.srlg_disjoint
        else set()
    )
    measured = [x for x in topology.links if x.delay_ms is not None and x.te_metric > 0]
    rate = sum(x.delay_ms or 0.0 for x in measured) / sum(x.te_metric for x in measured)

    def metric(link: Link) -> float:
        if request.metric == "delay":
            return link.delay_ms if link.delay_ms is not None else link.te_metric * rate
        return {"te": link.te_metric, "igp": link.igp_metric, "hops": 1.0}[request.metric]

    reference = nx.Graph()
    for link in topology.links:
        u, v = link.source, link.destination
        if link.oper_status != "up" or named(link) or srlgs & set(link.srlgs):
            continue
        if {u, v} & set(request.avoid_nodes):
            continue
        if te_type is not None and not (te_type in caps.get(u, ()) and te_type in caps.get(v, ())):
            continue
        if request.min_bandwidth_mbps is not None and graph.headroom(link) < (
            request.min_bandwidth_mbps
        ):
            continue
        cost = metric(link)
        if not reference.has_edge(u, v) or cost < reference.edges[u, v]["w"]:
            reference.add_edge(u, v, w=cost)
    return reference


def _unique(reference: nx.Graph, source: str, target: str) -> bool:
    """Whether the cheapest path is the only one at its cost."""
    paths = islice(nx.shortest_simple_paths(reference, source, target, weight="w"), 2)
    costs = [nx.path_weight(reference, p, "w") for p in paths]
    return len(costs) < 2 or costs[1] > costs[0]


def _cost(reference: nx.Graph, path: list[str]) -> float:
    return sum(reference.edges[u, v]["w"] for u, v in pairwise(path))


@pytest.mark.parametrize("seed", range(12))
def test_the_engine_agrees_with_networkx(seed: int) -> None:
    rng = random.Random(seed)
    topology = _topology(rng)
    graph = KnowledgeGraph.build(topology).reserve(_load(rng, topology), reservable_share=0.8)
    for _ in range(25):
        request = _request(rng, topology)
        result = graph.shortest(request)
        ends = (request.head_end, request.end_point)
        candidates = [request.te_type] if request.te_type else graph.te_types(list(ends))
        best: tuple[float, int, str] | None = None
        for rank, te in enumerate(candidates):
            reference = _reference(topology, graph, request, te)
            if ends[0] in reference and ends[1] in reference and nx.has_path(reference, *ends):
                cost = nx.shortest_path_length(reference, *ends, weight="w")
                if best is None or (cost, rank) < best[:2]:
                    best = (cost, rank, te)
        assert result.found == (best is not None), (seed, request, result.reason)
        if best is None:
            continue
        reference = _reference(topology, graph, request, best[2])
        assert _cost(reference, result.path) == pytest.approx(best[0], abs=1e-9)
        assert result.model_dump()["path_type"] == best[2]
        if _unique(reference, *ends):
            assert result.path == nx.shortest_path(reference, *ends, weight="w")


@pytest.mark.parametrize("seed", range(8))
def test_k_shortest_agrees_with_networkx(seed: int) -> None:
    rng = random.Random(100 + seed)
    topology = _topology(rng)
    graph = KnowledgeGraph.build(topology)
    for _ in range(10):
        request = _request(rng, topology).model_copy(update={"te_type": None})
        k = rng.randint(1, 6)
        paths = graph.k_shortest(request, k)
        reference = _reference(topology, graph, request, None)
        ends = (request.head_end, request.end_point)
        if ends[0] not in reference or ends[1] not in reference:
            expected: list[list[str]] = []
        else:
            try:
                found = nx.shortest_simple_paths(reference, *ends, weight="w")
                expected = list(islice(found, k))
            except nx.NetworkXNoPath:
                expected = []
        assert [round(_cost(reference, p.path), 9) for p in paths] == [
            round(_cost(reference, p), 9) for p in expected
        ]
        assert len({tuple(p.path) for p in paths}) == len(paths)  # loopless and distinct
        assert all(len(set(p.path)) == len(p.path) for p in paths)


def _changed(rng: random.Random, topology: Topology, step: int) -> Topology:
    """One round of what CNC reports: delays and status move, a link comes and goes, a node
    changes its TE capabilities."""
    links = [link.model_copy() for link in topology.links]
    for link in rng.sample(links, 4):
        link.delay_ms = rng.choice([None, 0.5, 3.0])
        link.oper_status = rng.choice(["up", "up", "down"])
        link.capacity_mbps = rng.choice([1000, 10000])
        link.srlgs = rng.sample(range(1, 8), 1)
    links.pop(rng.randrange(len(links)))
    u, v = rng.sample(sorted({x for link in links for x in (link.source, link.destination)}), 2)
    links.append(Link(link_id=f"{u}-{v}#new{step}", source=u, destination=v, te_metric=2))
    nodes = [node.model_copy() for node in topology.nodes]
    changed = rng.choice(nodes)
    changed.te_capabilities = rng.sample(TE, rng.randint(1, 3))
    if step % 3 == 2:  # a new node, joined by one link
        nodes.append(Node(node_id=f"x{step}", te_capabilities=["sr-mpls", "srv6"]))
        links.append(Link(link_id=f"x{step}-{u}", source=f"x{step}", destination=u))
    return Topology(nodes=nodes, links=links)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_updates_equal_a_rebuild(seed: int) -> None:
    rng = random.Random(200 + seed)
    topology = _topology(rng)
    graph = KnowledgeGraph.build(topology)
    for step in range(6):
        # a query between changes: the guided search's bounds are computed on this topology
        # and must be dropped with it (a bound above a new, lower cost misleads the search)
        graph.shortest(_request(rng, topology))
        topology = _changed(rng, topology, step)
        assert graph.update(topology)
        assert not graph.update(topology)  # nothing more to apply
    rebuilt = KnowledgeGraph.build(topology)
    assert graph.links == rebuilt.links and graph.nodes == rebuilt.nodes
    assert graph.ms_per_te == rebuilt.ms_per_te
    services = _load(rng, topology)
    for _ in range(30):
        request = _request(rng, topology)
        a = graph.reserve(services, reservable_share=0.8).shortest(request)
        b = rebuilt.reserve(services, reservable_share=0.8).shortest(request)
        assert (a.found, a.reason, a.total_metric) == (b.found, b.reason, b.total_metric)
        assert a.model_dump().get("path_type") == b.model_dump().get("path_type")
        ends = (request.head_end, request.end_point)
        if a.found and b.found:
            reference = _reference(topology, rebuilt, request, a.model_dump()["path_type"])
            if _unique(reference, *ends):
                assert a.path == b.path and a.links == b.links
        ka = graph.k_shortest(request, 4)
        kb = rebuilt.k_shortest(request, 4)
        assert [p.total_metric for p in ka] == [p.total_metric for p in kb]


def _geometric(rng: random.Random, nodes: int) -> Topology:
    """A larger network shaped like a real one (each node joined to its nearest neighbours,
    delay from distance), plus a small island no path from the mainland reaches."""
    where = {f"g{i}": (rng.random(), rng.random()) for i in range(nodes)}
    links: list[Link] = []
    names = list(where)
    for u in names:
        for v in sorted(names, key=lambda v: math.dist(where[u], where[v]))[1:4]:
            a, b = sorted((u, v))
            links.append(
                Link(
                    link_id=f"{a}-{b}",
                    source=a,
                    destination=b,
                    delay_ms=round(1 + 100 * math.dist(where[a], where[b]), 1),
                    srlgs=[rng.randrange(40)],
                )
            )
    links += [Link(link_id="i1-i2", source="i1", destination="i2", delay_ms=1.0)]
    unique = {link.link_id: link for link in links}
    nodes_list = [Node(node_id=n, te_capabilities=["sr-mpls"]) for n in [*names, "i1", "i2"]]
    return Topology(nodes=nodes_list, links=list(unique.values()))


@pytest.mark.parametrize("seed", range(3))
def test_the_guided_search_agrees_with_networkx_on_a_larger_network(seed: int) -> None:
    """Detours around failed links cost well over the landmarks' bound, so the guided search
    widens its limit several times; a target on an island is out of reach."""
    rng = random.Random(300 + seed)
    topology = _geometric(rng, 300)
    graph = KnowledgeGraph.build(topology)
    names = sorted(n.node_id for n in topology.nodes if n.node_id.startswith("g"))
    for i in range(20):
        head, end = rng.sample(names, 2)
        if i % 7 == 6:
            end = "i1"
        plain = graph.shortest(ComputePath(incident_id="INC-1", head_end=head, end_point=end))
        avoid = rng.sample(plain.links, min(len(plain.links), 3)) if plain.found else []
        request = ComputePath(
            incident_id="INC-1",
            head_end=head,
            end_point=end,
            avoid_links=avoid,
            srlg_disjoint=rng.random() < 0.5,
            metric="delay",
        )
        result = graph.shortest(request)
        reference = _reference(topology, graph, request, None)
        reachable = head in reference and end in reference and nx.has_path(reference, head, end)
        assert result.found == reachable, (seed, request, result.reason)
        if reachable:
            expected = nx.shortest_path_length(reference, head, end, weight="w")
            assert _cost(reference, result.path) == pytest.approx(expected, abs=1e-9)

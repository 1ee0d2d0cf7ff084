"""Path computation at scale: today's engine against the networkx one it replaced, same run.

```
.venv/bin/python -m bench.path                  # --queries 41 --k-queries 5 --zoo 20
```

Graphs:

- ``synthetic``: a seeded Waxman-like network of 10,000 nodes and 60,000 links (each node joined
  to its nearest neighbours, plus longer links with a probability that falls with distance),
  with TE attributes: delay from length, TE/IGP metrics, capacity steps, SRLGs shared by
  neighbouring links (a conduit), 1 % parallel links, an SR-MPLS core with SRv6 and RSVP-TE
  regions (5 % of nodes run no SR-MPLS), and 3,000 services loading the links;
- every SNDlib network and a deterministic sample of Topology Zoo networks, as the lab builds
  them from the ``topohub`` package (``services.lab.topology.build_topology``).

Per query: the constrained path of a real incident (two links of the unconstrained best path
failed and avoided, SRLG-disjoint from them, 500 Mbps of headroom, SR-MPLS end to end, delay),
and the 5 shortest paths under the same constraints. "before" is ``services/path/graph.py`` as
of :data:`BEFORE` (networkx, a Python weight function), loaded from git; with ``--previous
[COMMIT]`` also ``previous``, the scipy engine as of that commit (default :data:`PREVIOUS`);
"after" is the working tree. All run on the same inputs, one query after the other, the order
rotating every query, so the machine's noise falls on all alike. Every view is priced
(``reserve``) outside the timing: that code is the same in all (``reserve_ms``).
Build: from a ``Topology`` to a graph. Update: ten links change delay, two go down, one is
added (what CNC reports between two reads): before rebuilds, after applies the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from functools import partial
from typing import Any

from services.lab.topology import LabTopology, build_topology
from services.path.graph import KnowledgeGraph
from shared.models import ComputePath
from shared.southbound import Link, Node, Topology, VpnService

BEFORE = "d1d6095"
"""The last commit with the networkx implementation of ``services/path/graph.py``."""

PREVIOUS = "4ddfd5c"
"""The scipy engine before the guided (A*) search: two bounded Dijkstras, one from each end
(``--previous``, shown as ``previous``)."""


def _module_at(commit: str, name: str) -> types.ModuleType:
    """``services/path/graph.py`` as of ``commit`` (and its ``engine.py`` when it had one),
    imported under other names beside today's."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load(path: str, module_name: str, rewrite: dict[str, str]) -> types.ModuleType:
        source = subprocess.run(
            ["git", "-C", root, "show", f"{commit}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for old, new in rewrite.items():
            source = source.replace(old, new)
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
        return module

    listed = subprocess.run(
        ["git", "-C", root, "ls-tree", "--name-only", commit, "services/path/engine.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    rewrite = {}
    if listed:
        load("services/path/engine.py", f"{name}_engine", {})
        rewrite = {"from services.path.engine import": f"from {name}_engine import"}
    return load("services/path/graph.py", name, rewrite)


# --- graphs --------------------------------------------------------------------------------


def synthetic(nodes: int = 10_000, links: int = 60_000, seed: int = 7) -> tuple[Topology, list]:
    """A Waxman-like TE network (see the module docstring) and services that load it."""
    rng = random.Random(seed)
    pos = [(rng.random(), rng.random()) for _ in range(nodes)]
    cell = 1 / math.sqrt(nodes / 4)
    grid: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(pos):
        grid.setdefault((int(x / cell), int(y / cell)), []).append(i)

    def near(i: int, reach: int) -> list[tuple[float, int]]:
        x, y = pos[i]
        cx, cy = int(x / cell), int(y / cell)
        found = [
            (math.dist(pos[i], pos[j]), j)
            for dx in range(-reach, reach + 1)
            for dy in range(-reach, reach + 1)
            for j in grid.get((cx + dx, cy + dy), ())
            if j != i
        ]
        return sorted(found)

    pairs: set[tuple[int, int]] = set()
    for i in range(nodes):
        for _, j in near(i, 1)[:4]:
            pairs.add((min(i, j), max(i, j)))
    while len(pairs) < links * 0.99:  # Waxman: longer links, rarer with distance
        i = rng.randrange(nodes)
        x, y = pos[i]
        cx, cy = int(x / cell) + rng.randint(-3, 3), int(y / cell) + rng.randint(-3, 3)
        there = grid.get((cx, cy))
        if not there:
            continue
        j = there[rng.randrange(len(there))]
        if j != i and rng.random() < math.exp(-math.dist(pos[i], pos[j]) / (2.5 * cell)):
            pairs.add((min(i, j), max(i, j)))
    ordered = sorted(pairs)
    parallels = rng.sample(ordered, links - len(ordered))
    region = {i for i, (x, y) in enumerate(pos) if x < 0.3 and y < 0.3}
    rsvp = {i for i, (x, y) in enumerate(pos) if x > 0.75 and y > 0.7}
    node_list = []
    for i in range(nodes):
        caps = ["srv6"] if i in region else ["rsvp-te"] if i in rsvp else []
        if rng.random() > 0.05 or not caps:
            caps = ["sr-mpls", *caps]
        node_list.append(Node(node_id=f"r{i}", te_capabilities=caps))
    link_list = []
    for n, (i, j) in enumerate([*ordered, *parallels]):
        km = math.dist(pos[i], pos[j]) * 4000
        name = f"r{i}-r{j}" if n < len(ordered) else f"r{i}-r{j}#2"
        conduit = int(pos[i][0] * 60) * 100 + int(pos[i][1] * 60)
        link_list.append(
            Link(
                link_id=name,
                source=f"r{i}",
                destination=f"r{j}",
                delay_ms=round(km / 200 + 0.05, 3),
                te_metric=max(1, round(km / 20)),
                igp_metric=10,
                capacity_mbps=rng.choice([10_000, 10_000, 40_000, 100_000]),
                srlgs=[conduit] if rng.random() < 0.3 else [],
            )
        )
    topology = Topology(nodes=node_list, links=link_list)
    services = []
    by_node: dict[str, list[Link]] = {}
    for link in link_list:
        by_node.setdefault(link.source, []).append(link)
        by_node.setdefault(link.destination, []).append(link)
    for s in range(3000):  # a random walk of a few links each, 100-2,000 Mbps
        at = f"r{rng.randrange(nodes)}"
        path = []
        for _ in range(rng.randint(3, 12)):
            link = rng.choice(by_node[at])
            path.append(link.link_id)
            at = link.destination if link.source == at else link.source
        services.append(_service(f"s{s}", path, rng.choice([100, 500, 1000, 2000])))
    return topology, services


def _service(vpn_id: str, path: list[str], mbps: float) -> VpnService:
    return VpnService(
        vpn_id=vpn_id,
        name=vpn_id,
        service_type="l3vpn",
        sla_tier="gold",
        head_end="x",
        end_point="y",
        path=path,
        bandwidth_mbps=mbps,
    )


def from_lab(lab: LabTopology) -> tuple[Topology, list]:
    """The lab's network as CNC would report it, and its services."""
    nodes = [
        Node(node_id=n.node_id, te_capabilities=list(n.te_capabilities)) for n in lab.nodes.values()
    ]
    links = [
        Link(
            link_id=x.link_id,
            source=x.source,
            destination=x.destination,
            delay_ms=x.delay_ms,
            te_metric=x.te_metric,
            igp_metric=x.igp_metric,
            capacity_mbps=x.capacity_mbps,
            srlgs=list(x.srlgs),
        )
        for x in lab.links.values()
    ]
    services = [_service(s.vpn_id, list(s.path), s.bandwidth_mbps) for s in lab.services.values()]
    return Topology(nodes=nodes, links=links), services


# --- measuring -----------------------------------------------------------------------------


class Took(float):
    """Milliseconds of wall time, with the thread's CPU milliseconds as ``cpu``: the machine
    is shared, so wall time includes waiting for a core and CPU time says what the code cost."""

    cpu: float


def _ms(fn: Callable[..., Any], *args: Any) -> tuple[Took, Any]:
    start, cpu = time.perf_counter(), time.thread_time()
    result = fn(*args)
    took = Took((time.perf_counter() - start) * 1000)
    took.cpu = (time.thread_time() - cpu) * 1000
    return took, result


def _stats(samples: list[Took]) -> dict[str, float | int]:
    """Median, p99 and max of the wall times, and the median CPU time."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(ordered[-1], 3),
        "cpu_median_ms": round(statistics.median(t.cpu for t in ordered), 3),
    }


def _priced(graph: KnowledgeGraph, services: list) -> KnowledgeGraph:
    """The view a request gets: every link's load, and (after) its headroom array, computed
    once."""
    view = graph.reserve(services, carrying=(), reservable_share=0.8)
    if hasattr(view, "_room"):  # the networkx graph has no headroom array
        view._room()
    return view


def _queries(graph: KnowledgeGraph, count: int, seed: int) -> list[ComputePath]:
    """Incident-like requests: two links of the best path failed, avoided with their SRLGs."""
    rng = random.Random(seed)
    names = [n for n, a in graph.nodes.items() if "sr-mpls" in a["te_capabilities"]]
    queries: list[ComputePath] = []
    tries = 0
    while len(queries) < count and tries < count * 20:
        tries += 1
        head, end = rng.sample(names, 2)
        plain = graph.shortest(
            ComputePath(incident_id="INC-1", head_end=head, end_point=end, te_type="sr-mpls")
        )
        if not plain.found or len(plain.links) < 3:
            continue
        failed = rng.sample(plain.links, 2)
        queries.append(
            ComputePath(
                incident_id="INC-1",
                head_end=head,
                end_point=end,
                avoid_links=failed,
                srlg_disjoint=True,
                min_bandwidth_mbps=500,
                te_type="sr-mpls",
                metric="delay",
            )
        )
    return queries


def compare(
    name: str,
    topology: Topology,
    services: list,
    others: dict[str, types.ModuleType],
    *,
    queries: int,
    k_queries: int,
    seed: int = 1,
) -> dict[str, Any]:
    """Today's engine (``after``) and each of ``others`` (``before``: networkx; optionally
    ``previous``) on one network, interleaved: the order rotates every query."""
    modules = {**others, "after": sys.modules[KnowledgeGraph.__module__]}
    sides = list(modules)

    def rotated(turn: int) -> list[str]:
        return sides[turn % len(sides) :] + sides[: turn % len(sides)]

    builds: dict[str, list[Took]] = {side: [] for side in sides}
    graphs: dict[str, Any] = {}
    for turn in range(2):
        for side in rotated(turn):
            took, graphs[side] = _ms(modules[side].KnowledgeGraph.build, topology)
            builds[side].append(took)
    new = graphs["after"]
    asks = _queries(new, queries, seed)
    path: dict[str, list[Took]] = {side: [] for side in sides}
    kpaths: dict[str, list[Took]] = {side: [] for side in sides}
    reserve: list[Took] = []
    agree = differ = 0
    for i, ask in enumerate(asks):
        views = {}
        for side in sides:
            if side == "after":
                took, views[side] = _ms(_priced, new, services)
                reserve.append(took)
            else:
                views[side] = _priced(graphs[side], services)
        results = {}
        for side in rotated(i):
            took, results[side] = _ms(views[side].shortest, ask)
            path[side].append(took)
        b = results["after"]
        same = all(
            a.found == b.found and (not a.found or a.total_metric == b.total_metric)
            for a in results.values()
        )
        agree += same
        differ += not same
        if i < k_queries:
            for side in rotated(i):
                took, _ = _ms(views[side].k_shortest, ask, 5)
                kpaths[side].append(took)
    # an update between two reads of CNC: ten delays move, two links go down, one is added
    rng = random.Random(seed)
    links = [link.model_copy() for link in topology.links]
    for link in rng.sample(links, 10):
        link.delay_ms = (link.delay_ms or 1.0) * 1.5
    for link in rng.sample(links, 2):
        link.oper_status = "down"
    a, b = rng.sample([n.node_id for n in topology.nodes], 2)
    links.append(Link(link_id=f"{a}-{b}#bench", source=a, destination=b, delay_ms=1.0))
    changed = Topology(nodes=topology.nodes, links=links)
    networkx = modules["before"]
    rebuild, _ = _ms(networkx.KnowledgeGraph.build, changed)
    digest, fp = _ms(networkx.fingerprint, changed)
    update, _ = _ms(new.update, changed, fp)
    after_update = new.reserve(services, reservable_share=0.8).shortest(asks[0]) if asks else None
    return {
        "network": name,
        "nodes": len(new.nodes),
        "links": len(topology.links),
        "queries": len(asks),
        "same_cost": agree,
        "different_cost": differ,
        "constrained_path": {side: _stats(path[side]) for side in sides},
        "k5_paths": {side: _stats(kpaths[side]) for side in sides},
        "build_ms": {side: round(min(v), 1) for side, v in builds.items()},
        "update_ms": {
            "before (rebuild)": round(rebuild, 1),
            "after (in place)": round(update, 2),
            "after_cpu": round(update.cpu, 2),
        },
        "fingerprint_ms": round(digest, 1),
        "reserve_ms": _stats(reserve),
        "found_after_update": bool(after_update and after_update.found),
    }


def _alternatives(topology: Topology, queries: list[ComputePath]) -> dict[str, Any]:
    """The raw searches of the libraries considered, on the same graph and weights (only
    those importable: rustworkx and igraph are not dependencies)."""
    import numpy as np
    from scipy.sparse.csgraph import dijkstra

    graph = KnowledgeGraph.build(topology)
    eng = graph.engine
    out: dict[str, Any] = {}
    weights = eng.pair_costs(graph.link_costs(queries[0], "sr-mpls").link_costs)
    ends = [(eng.node_index[q.head_end], eng.node_index[q.end_point]) for q in queries]
    u, v = eng.pair_nodes()
    matrix = eng.matrix(weights)
    out["scipy_one_to_all_ms"] = _stats([_ms(dijkstra, matrix, True, False, s)[0] for s, _ in ends])
    out["scipy_bidirectional_limit_ms"] = _stats(
        [_ms(eng.search, matrix, s, t)[0] for s, t in ends]
    )
    as_list = weights.tolist()
    try:
        import igraph

        g = igraph.Graph(n=len(eng.node_ids), edges=list(zip(u.tolist(), v.tolist(), strict=True)))
        finite = [w if math.isfinite(w) else float("inf") for w in as_list]
        out["igraph_st_ms"] = _stats(
            [_ms(partial(g.get_shortest_path, s, t, weights=finite))[0] for s, t in ends]
        )
        out["igraph_k5_ms"] = _stats(
            [
                _ms(partial(g.get_k_shortest_paths, s, t, k=5, weights=finite))[0]
                for s, t in ends[:5]
            ]
        )
    except ImportError:
        out["igraph"] = "not installed"
    try:
        import rustworkx as rx

        r = rx.PyGraph()
        r.add_nodes_from(range(len(eng.node_ids)))
        r.add_edges_from([(int(a), int(b), i) for i, (a, b) in enumerate(zip(u, v, strict=True))])
        big = np.where(np.isfinite(weights), weights, 1e18).tolist()
        out["rustworkx_st_ms"] = _stats(
            [
                _ms(partial(rx.dijkstra_shortest_paths, r, s, t, weight_fn=big.__getitem__))[0]
                for s, t in ends
            ]
        )
    except ImportError:
        out["rustworkx"] = "not installed"
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=41)
    parser.add_argument("--k-queries", type=int, default=5, help="k=5 runs (networkx is slow)")
    parser.add_argument("--zoo", type=int, default=20, help="Topology Zoo networks sampled")
    parser.add_argument("--real-queries", type=int, default=15)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--alternatives", action="store_true", help="raw igraph/rustworkx/scipy")
    parser.add_argument(
        "--previous",
        nargs="?",
        const=PREVIOUS,
        help=f"also time the engine as of this commit (default {PREVIOUS})",
    )
    args = parser.parse_args(argv)
    others = {"before": _module_at(BEFORE, "cxm_path_networkx")}
    report: dict[str, Any] = {"before": f"networkx ({BEFORE})", "after": "scipy csgraph engine"}
    if args.previous:
        others["previous"] = _module_at(args.previous, "cxm_path_previous")
        report["previous"] = f"scipy csgraph engine as of {args.previous}"
    took, (topology, services) = _ms(synthetic)
    report["synthetic"] = compare(
        "synthetic 10k/60k",
        topology,
        services,
        others,
        queries=args.queries,
        k_queries=args.k_queries,
    )
    report["synthetic"]["generate_ms"] = round(took, 1)
    if args.alternatives:
        report["alternatives"] = _alternatives(
            topology, _queries(KnowledgeGraph.build(topology), 15, 3)
        )
    if not args.no_real:
        import topohub

        data = os.path.join(os.path.dirname(topohub.__file__), "data")
        sndlib = sorted(f"sndlib/{n[:-5]}" for n in os.listdir(f"{data}/sndlib"))
        zoo_all = sorted(f"topozoo/{n[:-5]}" for n in os.listdir(f"{data}/topozoo"))
        zoo = zoo_all[:: max(1, len(zoo_all) // max(1, args.zoo))][: args.zoo]
        for family, keys in (("sndlib", sndlib), ("topozoo", zoo)):
            rows = []
            for key in keys:
                try:
                    topo, svcs = from_lab(build_topology(key))
                except Exception:  # a graph the lab cannot load is left out, by name
                    rows.append({"network": key, "skipped": True})
                    continue
                rows.append(
                    compare(
                        key,
                        topo,
                        svcs,
                        others,
                        queries=args.real_queries,
                        k_queries=args.real_queries,
                    )
                )
            report[family] = _family(rows)
    print(json.dumps(report, indent=2))


def _family(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-network rows and the medians across networks."""
    done = [r for r in rows if not r.get("skipped") and r["queries"]]
    sides = list(done[0]["build_ms"]) if done else ["before", "after"]

    def across(metric: str, side: str, stat: str) -> float | None:
        values = [r[metric][side].get(stat) for r in done if r[metric][side].get("n")]
        return round(statistics.median(values), 3) if values else None

    return {
        "networks": len(done),
        "skipped": [r["network"] for r in rows if r.get("skipped")],
        "different_cost": sum(r["different_cost"] for r in done),
        "median_of_medians": {
            m: {s: across(m, s, "median_ms") for s in sides}
            for m in ("constrained_path", "k5_paths")
        },
        "worst_p99": {
            m: {s: max((r[m][s].get("p99_ms", 0) for r in done), default=None) for s in sides}
            for m in ("constrained_path", "k5_paths")
        },
        "build_ms_median": {
            s: round(statistics.median(r["build_ms"][s] for r in done), 2) if done else None
            for s in sides
        },
        "rows": rows,
    }


if __name__ == "__main__":
    main()

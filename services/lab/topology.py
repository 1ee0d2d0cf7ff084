"""The lab's static network: nodes, links, VPN services and the scenarios that fit it.

Two sources:

- ``default``: a ten-node network that reproduces seed 003. Fifteen VPN services (2 platinum,
  5 gold, 8 silver) run pe1 → pe4 over ``pe1-pe2``, ``pe2-pe3``, ``pe3-pe4``; the best path that
  avoids the first two is pe1 → p1 → p2 → pe4 (four nodes). Eleven more services never cross
  ``pe1-pe2``/``pe2-pe3``, and ``p1-p3`` carries no service at all.
- any topohub key (``sndlib/abilene``, ``sndlib/germany50``, ``topozoo/Abilene`` …): the
  published graph made to behave like an operator's network (see :func:`topohub_topology`):
  delay from fibre length (km / 200 ≈ ms), an SR-MPLS core with contiguous SRv6 and RSVP-TE
  regions, services from the SNDlib demand matrix routed on shortest-delay paths and scaled to
  a busy hour (busiest link at 65 %), tiers in fixed realistic proportions. Deterministic per
  (key, seed).

Everything here is immutable once built; what changes at run time lives in
:mod:`services.lab.network`. :func:`build_topology` is a plain function so benchmarks can build a
large lab without starting a server.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

TIERS: tuple[str, ...] = ("platinum", "gold", "silver", "bronze")
TIER_RANK: dict[str, int] = {tier: i for i, tier in enumerate(TIERS)}
TIER_BANDWIDTH_MBPS: dict[str, float] = {
    "platinum": 500.0,
    "gold": 300.0,
    "silver": 200.0,
    "bronze": 100.0,
}
CAPACITY_STEPS_MBPS: tuple[float, ...] = (1_000, 2_500, 10_000, 40_000, 100_000, 400_000)
IGP_NETWORK = "ISIS_IPV4_L2"
"""The one network CNC's topology lists (its ``network-id``, the last part of link ids)."""
SPEED_OF_LIGHT_IN_FIBRE_KM_PER_MS = 200.0
"""Light covers about 200 km of fibre per millisecond, so delay ≈ km / 200."""


@dataclass(frozen=True)
class LabNode:
    node_id: str
    loopback: str
    prefix_sid: int
    te_capabilities: tuple[str, ...]
    role: str = "pe"
    name: str | None = None


@dataclass(frozen=True)
class LabLink:
    """An undirected link named ``a-b`` after its two ends."""

    link_id: str
    source: str
    destination: str
    delay_ms: float
    capacity_mbps: float
    igp_metric: float
    te_metric: float
    srlgs: tuple[int, ...] = ()
    jitter_ms: float = 0.2

    def other(self, node: str) -> str:
        return self.destination if node == self.source else self.source


@dataclass(frozen=True)
class LabService:
    """A VPN service pinned to a path: the node list and the links crossed, in order."""

    vpn_id: str
    name: str
    service_type: Literal["l2vpn", "l3vpn"]
    sla_tier: str
    head_end: str
    end_point: str
    nodes: tuple[str, ...]
    path: tuple[str, ...]
    bandwidth_mbps: float


ScenarioAction = Literal["degrade", "down", "recover", "flap", "recover-all", "busy-hour"]


@dataclass(frozen=True)
class ScenarioStep:
    """One action of a scenario, ``after`` steps-gaps into it."""

    action: ScenarioAction
    link: str | None = None
    after: int = 0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioPlan:
    name: str
    description: str
    steps: tuple[ScenarioStep, ...]

    @property
    def links(self) -> list[str]:
        """Links the scenario hurts, in the order it hurts them (what a ticket will name)."""
        out: list[str] = []
        for step in self.steps:
            if step.link and step.action in ("degrade", "down", "flap") and step.link not in out:
                out.append(step.link)
        return out


@dataclass
class LabTopology:
    """The network the lab emulates; built once, read by every request."""

    name: str
    nodes: dict[str, LabNode]
    links: dict[str, LabLink]
    services: dict[str, LabService]
    scenarios: dict[str, ScenarioPlan] = field(default_factory=dict)
    adjacency: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    """node → neighbour → link id, for path checks in O(1)."""
    ports: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """link id → (source interface, destination interface), numbered per node in link order."""
    adjacency_sids: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    """link id → (adjacency SID at the source, at the destination): local labels from 24000."""
    directed: dict[str, tuple[str, bool]] = field(default_factory=dict, repr=False)
    """CNC's directional link id → (lab link id, True for the source → destination direction)."""

    def __post_init__(self) -> None:
        self.adjacency = {node: {} for node in self.nodes}
        used: Counter[str] = Counter()
        for link in self.links.values():
            self.adjacency[link.source][link.destination] = link.link_id
            self.adjacency[link.destination][link.source] = link.link_id
            a, b = used[link.source], used[link.destination]
            used.update((link.source, link.destination))
            self.ports[link.link_id] = (f"GigabitEthernet0/0/0/{a}", f"GigabitEthernet0/0/0/{b}")
            self.adjacency_sids[link.link_id] = (24000 + a, 24000 + b)
            forward, backward = self.cnc_link_ids(link.link_id)
            self.directed[forward] = (link.link_id, True)
            self.directed[backward] = (link.link_id, False)

    def cnc_link_ids(self, link_id: str) -> tuple[str, str]:
        """CNC's ids of the link's two directions, source → destination first."""
        link = self.links[link_id]
        a, b = self.ports[link_id]
        return (
            f"{link.source} : {a} : {link.destination} : {b} : {IGP_NETWORK}",
            f"{link.destination} : {b} : {link.source} : {a} : {IGP_NETWORK}",
        )

    def ipv6_router_id(self, node_id: str) -> str:
        """The node's IPv6 TE router-id (SRv6 nodes): fc00::<n>, n from its IPv4 loopback."""
        return f"fc00::{self._host(node_id):x}"

    def srv6_node_sid(self, node_id: str) -> str:
        """The node's SRv6 uN SID on locator fc00:0:<n>::/48."""
        return f"fc00:0:{self._host(node_id):x}::"

    def _host(self, node_id: str) -> int:
        return int(ipaddress.IPv4Address(self.nodes[node_id].loopback)) - int(
            ipaddress.IPv4Address("10.0.0.0")
        )

    def link_between(self, a: str, b: str) -> str | None:
        return self.adjacency.get(a, {}).get(b)

    def links_of(self, nodes: list[str] | tuple[str, ...]) -> list[str] | None:
        """The links a node path crosses, or None when two consecutive nodes are not adjacent."""
        out: list[str] = []
        for a, b in itertools.pairwise(nodes):
            link = self.link_between(a, b)
            if link is None:
                return None
            out.append(link)
        return out

    def services_on(self, link_id: str) -> list[LabService]:
        return [s for s in self.services.values() if link_id in s.path]


def build_topology(name: str = "default", seed: int = 0) -> LabTopology:
    """The seed's network for ``default``, else the topohub graph of that key.

    Raises ``ValueError`` naming the key when topohub does not have it.
    """
    if name == "default":
        return default_topology()
    return topohub_topology(name, seed=seed)


# --- the seed's network --------------------------------------------------------------------


def _node(index: int, node_id: str, caps: tuple[str, ...], role: str) -> LabNode:
    return LabNode(
        node_id=node_id,
        loopback=f"10.0.0.{index}",
        prefix_sid=16000 + index,
        te_capabilities=caps,
        role=role,
    )


def _link(
    a: str, b: str, delay: float, capacity: float = 10_000, srlgs: tuple[int, ...] = ()
) -> LabLink:
    metric = round(delay * 10)
    return LabLink(f"{a}-{b}", a, b, delay, capacity, metric, metric, srlgs)


def default_topology() -> LabTopology:
    """Seed 003's network: degrading pe1-pe2 and pe2-pe3 hurts 15 services (2/5/8)."""
    mpls = ("sr-mpls",)
    dual = ("sr-mpls", "srv6")
    nodes = [
        _node(1, "pe1", dual, "pe"),
        _node(2, "pe2", mpls, "pe"),
        _node(3, "pe3", mpls, "pe"),
        _node(4, "pe4", dual, "pe"),
        _node(5, "pe5", ("srv6",), "pe"),
        _node(6, "pe6", ("rsvp-te",), "pe"),  # the RSVP-TE-only corner
        _node(11, "p1", dual, "p"),
        _node(12, "p2", dual, "p"),
        _node(13, "p3", mpls, "p"),
        _node(14, "p4", ("sr-mpls", "rsvp-te"), "p"),
    ]
    links = [
        # the primary pe1 → pe4 corridor; pe1-pe2 and pe2-pe3 share a conduit (SRLG 100)
        _link("pe1", "pe2", 2.0, srlgs=(100,)),
        _link("pe2", "pe3", 2.0, srlgs=(100,)),
        _link("pe3", "pe4", 2.0, srlgs=(101,)),
        # the protection corridor: pe1 → p1 → p2 → pe4, 9 ms
        _link("pe1", "p1", 3.0, srlgs=(200,)),
        _link("p1", "p2", 3.0, srlgs=(201,)),
        _link("p2", "pe4", 3.0, srlgs=(202,)),
        # the rest of the core
        _link("pe3", "p2", 4.0, srlgs=(101,)),
        _link("p1", "p3", 5.0, capacity=2_500, srlgs=(300,)),  # carries no service
        _link("p3", "p4", 3.0, srlgs=(301,)),
        _link("p2", "p4", 5.0, capacity=2_500, srlgs=(302,)),
        _link("pe5", "p3", 2.0),
        _link("p4", "pe6", 2.0),
    ]
    services: list[LabService] = []

    def add(count: int, tier: str, nodes_path: tuple[str, ...], kind: str, label: str) -> None:
        for _ in range(count):
            n = len(services) + 1
            service_type: Literal["l2vpn", "l3vpn"] = (
                "l3vpn" if kind == "l3vpn" or (kind == "mixed" and n % 2) else "l2vpn"
            )
            services.append(
                LabService(
                    vpn_id=f"vpn-{n:03d}",
                    name=f"{label}-{tier}-{n:03d}",
                    service_type=service_type,
                    sla_tier=tier,
                    head_end=nodes_path[0],
                    end_point=nodes_path[-1],
                    nodes=nodes_path,
                    path=(),  # filled below from the node path
                    bandwidth_mbps=TIER_BANDWIDTH_MBPS[tier],
                )
            )

    corridor = ("pe1", "pe2", "pe3", "pe4")
    add(2, "platinum", corridor, "mixed", "bank-east")
    add(5, "gold", corridor, "mixed", "retail-east")
    add(8, "silver", corridor, "mixed", "office-east")
    add(3, "gold", ("pe3", "pe4"), "l3vpn", "metro")
    add(4, "bronze", ("pe5", "p3", "p4", "pe6"), "l2vpn", "broadband")
    add(2, "platinum", ("pe4", "p2", "p4", "pe6"), "l3vpn", "datacenter")
    add(2, "silver", ("pe5", "p3", "p4", "p2", "pe4"), "l3vpn", "campus")

    topo = LabTopology(
        name="default",
        nodes={n.node_id: n for n in nodes},
        links={link.link_id: link for link in links},
        services={},
    )
    for svc in services:
        path = topo.links_of(svc.nodes)
        if path is None:  # a typo in the table above, not a runtime condition
            raise ValueError(f"service {svc.vpn_id}: {svc.nodes} is not a path")
        topo.services[svc.vpn_id] = _with_path(svc, path)

    step = {"duration_s": None}  # filled with the lab's scenario duration at play time
    topo.scenarios = {
        "sla-degradation": ScenarioPlan(
            "sla-degradation",
            "Seed 003: pe1-pe2 degrades, then pe2-pe3; 15 services (2 platinum, 5 gold, "
            "8 silver) are hurt and pe1 → p1 → p2 → pe4 is the way around.",
            (
                ScenarioStep("degrade", "pe1-pe2", 0, step),
                ScenarioStep("degrade", "pe2-pe3", 1, step),
            ),
        ),
        "no-path": ScenarioPlan(
            "no-path",
            "pe1-pe2 and pe2-pe3 degrade while pe1-p1 goes down: pe1 has no way out left.",
            (
                ScenarioStep("down", "pe1-p1", 0, step),
                ScenarioStep("degrade", "pe1-pe2", 0, step),
                ScenarioStep("degrade", "pe2-pe3", 1, step),
            ),
        ),
        "no-impact": ScenarioPlan(
            "no-impact",
            "p1-p3 degrades; no service crosses it.",
            (ScenarioStep("degrade", "p1-p3", 0, step),),
        ),
        "flapping": ScenarioPlan(
            "flapping",
            "pe3-pe4 flaps five times.",
            (ScenarioStep("flap", "pe3-pe4", 0, {"count": 5, "interval_s": 2.0}),),
        ),
        "recover-all": _recover_all(),
        "busy-hour": _busy_hour(),
    }
    return topo


def _with_path(svc: LabService, path: list[str]) -> LabService:
    return LabService(
        vpn_id=svc.vpn_id,
        name=svc.name,
        service_type=svc.service_type,
        sla_tier=svc.sla_tier,
        head_end=svc.head_end,
        end_point=svc.end_point,
        nodes=svc.nodes,
        path=tuple(path),
        bandwidth_mbps=svc.bandwidth_mbps,
    )


def _recover_all() -> ScenarioPlan:
    return ScenarioPlan(
        "recover-all", "Every degraded or down link recovers.", (ScenarioStep("recover-all"),)
    )


def _busy_hour() -> ScenarioPlan:
    """The demand matrix through a busy hour and back (parameters: the request's body)."""
    return ScenarioPlan(
        "busy-hour",
        "Every service's traffic (the demand matrix) ramps up to a busy-hour peak, holds, and "
        "comes back down, repeat times; body: peak or peak_pct, base, up_s, hold_s, down_s, "
        "gap_s, repeat (real seconds).",
        (ScenarioStep("busy-hour"),),
    )


# --- topohub -------------------------------------------------------------------------------


def _clean(name: str) -> str:
    """A node id that keeps ``a-b`` link names unambiguous: no dashes, lower case."""
    return re.sub(r"[^a-z0-9_.:]", "_", name.strip().lower()) or "n"


def _load_topohub(key: str) -> dict[str, Any]:
    import topohub

    try:
        data: dict[str, Any] = topohub.get(key)
    except KeyError:
        raise ValueError(
            f"topology {key!r} is neither 'default' nor a topohub key "
            "(for example 'sndlib/abilene', 'sndlib/germany50', 'topozoo/Abilene')"
        ) from None
    return data


def _capacity_for(load_mbps: float) -> float:
    """The smallest standard port that carries ``load_mbps`` at most :data:`PLANNED_PEAK` full."""
    needed = load_mbps / PLANNED_PEAK
    for step in CAPACITY_STEPS_MBPS:
        if step >= needed:
            return step
    top = CAPACITY_STEPS_MBPS[-1]
    return top * -(-needed // top)


PLANNED_PEAK = 0.8
"""The fullest a link may run under its worst single link failure: the share where queues
build (the path agent's default reservable share). Operators buy capacity so that any one
link can fail and its traffic still fits everywhere else below this."""


def worst_failure_load(
    graph: nx.Graph, demands: Sequence[tuple[str, str, float, list[str]]]
) -> dict[tuple[str, str], float]:
    """Each link's load at the busy hour under the worst single link failure for it.

    ``demands`` are (source, destination, Mbps, node path). Every link that is not a bridge
    fails in turn; the demands crossing it move to their shortest-delay path without it (what
    the IGP does), and each link keeps the highest load it saw, the normal one included.
    """
    load: defaultdict[tuple[str, str], float] = defaultdict(float)
    crossing: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for index, (_, _, mbps, node_path) in enumerate(demands):
        for a, b in itertools.pairwise(node_path):
            load[(min(a, b), max(a, b))] += mbps
            crossing[(min(a, b), max(a, b))].append(index)
    worst = dict(load)
    bridges = {(min(a, b), max(a, b)) for a, b in nx.bridges(graph)}
    for failed, members in crossing.items():
        if failed in bridges:
            continue  # nothing reroutes round a bridge: those demands are simply cut
        delta: defaultdict[tuple[str, str], float] = defaultdict(float)
        routes: dict[str, dict[str, list[str]]] = {}

        def without(u: str, v: str, data: dict[str, Any], cut: tuple[str, str] = failed) -> Any:
            return None if (min(u, v), max(u, v)) == cut else data["delay"]

        for index in members:
            src, dst, mbps, node_path = demands[index]
            if src not in routes:
                routes[src] = nx.single_source_dijkstra_path(graph, src, weight=without)
            for a, b in itertools.pairwise(node_path):
                delta[(min(a, b), max(a, b))] -= mbps
            for a, b in itertools.pairwise(routes[src][dst]):
                delta[(min(a, b), max(a, b))] += mbps
        for pair, change in delta.items():
            worst[pair] = max(worst.get(pair, 0.0), load[pair] + change)
    return worst


BUSY_HOUR_PEAK = 0.65
"""Share of its capacity the busiest link carries at the busy hour, before any fault, unless
the capacity plan binds first (see :func:`topohub_topology`).

Operators run core links at 60-70 % at the busy hour at most, so the lab scales every demand
matrix towards that level: with the matrix's raw values some networks idled at 1 % and none
had the load a real one has."""

TIER_SHARES: dict[str, float] = {
    "platinum": 0.05,
    "gold": 0.20,
    "silver": 0.35,
    "bronze": 0.40,
}
"""Share of an SP's VPN services in each SLA tier: few premium services, mostly best effort."""

SRV6_REGION_SHARE = 0.20
RSVP_TE_REGION_SHARE = 0.10
"""Share of the nodes in the SRv6 and in the RSVP-TE region (each one contiguous ball)."""

NATIONAL_SPAN_KM = 1_000.0
"""Extent given to a network drawn on a canvas instead of a map (the diagonal of its bounding
box): SNDlib's synthetic and national networks are of that order, so links are a few ms."""


def _km_per_unit(positions: dict[str, tuple[float, float]]) -> float | None:
    """The km one canvas unit stands for, or None when the positions are (longitude, latitude).

    Some SNDlib networks (atlanta, giul39, norway, ta1 …) carry drawing coordinates, and
    topohub's ``dist`` for them is a great-circle distance over those numbers taken as degrees
    (up to 19,500 km): every such link measured 50-100 ms, out of SLA before any fault.
    """
    if not positions:
        return None
    if all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in positions.values()):
        return None
    xs = [x for x, _ in positions.values()]
    ys = [y for _, y in positions.values()]
    diagonal = ((max(xs) - min(xs)) ** 2 + (max(ys) - min(ys)) ** 2) ** 0.5
    return NATIONAL_SPAN_KM / diagonal if diagonal > 0 else None


def te_regions(
    graph: nx.Graph, rng: random.Random
) -> tuple[dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """TE capabilities by domain, the way operators deploy them: an SR-MPLS core everywhere,
    one SRv6 region and one RSVP-TE region, each a BFS ball around a seeded node.

    Every node supports sr-mpls, so no TE constraint cuts the network apart (capabilities drawn
    node by node did: an SRv6-only node split "every node supports sr-mpls" paths). A region's
    nodes are dual-stack (sr-mpls + srv6, or sr-mpls + rsvp-te); a region grows breadth-first
    through nodes no other region holds, so it is connected, and together they stay a minority.
    Returns each node's capabilities and each region's nodes.
    """
    nodes = sorted(graph)
    n = len(nodes)
    caps: dict[str, tuple[str, ...]] = dict.fromkeys(nodes, ("sr-mpls",))
    regions: dict[str, set[str]] = {"srv6": set(), "rsvp-te": set()}
    if n < 4:
        return caps, regions
    taken: set[str] = set()
    for te, share in (("srv6", SRV6_REGION_SHARE), ("rsvp-te", RSVP_TE_REGION_SHARE)):
        size = min(max(1, round(share * n)), (n - 1) // 2 - len(taken))  # a strict minority
        free = [node for node in nodes if node not in taken and graph.degree(node) > 0]
        if not free or size < 1:
            break
        seed = rng.choice(free)
        ball: list[str] = []
        for node in nx.bfs_tree(graph.subgraph(set(nodes) - taken), seed):
            ball.append(node)
            if len(ball) >= size:
                break
        regions[te] = set(ball)
        taken.update(ball)
        for node in ball:
            caps[node] = ("sr-mpls", te)
    return caps, regions


def assign_tiers(count: int, rng: random.Random) -> list[str]:
    """``count`` tiers in :data:`TIER_SHARES` proportions (largest remainder), in seeded order.

    Drawing each tier at random left small networks with no platinum or a third of them; a
    quota keeps every tier within one service of its share.
    """
    exact = {tier: TIER_SHARES[tier] * count for tier in TIERS}
    counts = {tier: int(exact[tier]) for tier in TIERS}
    by_remainder = sorted(TIERS, key=lambda t: (-(exact[t] - counts[t]), TIER_RANK[t]))
    for tier in by_remainder[: count - sum(counts.values())]:
        counts[tier] += 1
    tiers = [tier for tier in TIERS for _ in range(counts[tier])]
    rng.shuffle(tiers)
    return tiers


def topohub_topology(key: str, *, seed: int = 0) -> LabTopology:
    """A published topology that behaves like an operator's network, deterministic per seed.

    - delay: fibre length / 200 km per ms, from the map when the positions are geographic,
      else from the drawing scaled to :data:`NATIONAL_SPAN_KM`;
    - TE: :func:`te_regions` (SR-MPLS everywhere, contiguous SRv6 and RSVP-TE regions);
    - services: one per demand of the SNDlib matrix (a seeded sample of node pairs where
      there is none), between PEs, pinned to the shortest-delay path;
    - capacity: planned for single failures, as operators buy it: the smallest standard port
      that keeps each link at most :data:`PLANNED_PEAK` full under its worst single link
      failure (:func:`worst_failure_load`); then every demand scaled so the busiest link runs
      at :data:`BUSY_HOUR_PEAK`, or less where that would break the failure plan (no queue,
      nothing out of SLA until a fault, and room for any one link's traffic elsewhere);
    - tiers: :func:`assign_tiers`.
    """
    data = _load_topohub(key)
    rng = random.Random(f"{key}:{seed}")

    # node ids: cleaned names when they are unique, else n<id>
    raw_ids = [n["id"] for n in data["nodes"]]
    names = [_clean(str(n.get("name", ""))) if n.get("name") else "" for n in data["nodes"]]
    if all(names) and len(set(names)) == len(names):
        ids = dict(zip(raw_ids, names, strict=True))
    else:
        ids = {raw: f"n{raw}" for raw in raw_ids}
    positions = {
        ids[n["id"]]: (float(n["pos"][0]), float(n["pos"][1]))
        for n in data["nodes"]
        if isinstance(n.get("pos"), (list, tuple)) and len(n["pos"]) == 2
    }
    km_per_unit = _km_per_unit(positions)

    graph = nx.Graph()
    graph.add_nodes_from(ids[raw] for raw in raw_ids)
    edges: list[tuple[str, str, float]] = []
    for edge in data["edges"]:
        a, b = ids[edge["source"]], ids[edge["target"]]
        if a == b or graph.has_edge(a, b):
            continue  # self-loops and parallel edges add nothing the lab can name
        if km_per_unit is not None and a in positions and b in positions:
            (xa, ya), (xb, yb) = positions[a], positions[b]
            km = ((xa - xb) ** 2 + (ya - yb) ** 2) ** 0.5 * km_per_unit
        else:
            km = float(edge.get("dist") or 0.0)
        delay = max(0.1, round(km / SPEED_OF_LIGHT_IN_FIBRE_KM_PER_MS, 2))
        graph.add_edge(a, b, delay=delay, km=km)
        edges.append((a, b, delay))

    caps, _ = te_regions(graph, rng)

    # services: the demand matrix when there is one, else a seeded sample of node pairs
    demands: list[tuple[str, str, float]] = []
    for src, row in sorted(data["graph"].get("demands", {}).items()):
        for dst, value in sorted(row.items()):
            if src != dst and float(value) > 0:
                demands.append((ids[src], ids[dst], float(value)))
    if not demands and len(graph) > 1:
        node_list = sorted(graph)
        for _ in range(min(4 * len(graph), 2000)):
            a, b = rng.sample(node_list, 2)
            demands.append((a, b, float(rng.choice((100, 200, 500, 1000)))))

    routes: dict[str, dict[str, list[str]]] = {}
    routed: list[tuple[str, str, float, list[str]]] = []
    load: dict[tuple[str, str], float] = defaultdict(float)
    for src, dst, mbps in demands:
        if src not in routes:
            routes[src] = nx.single_source_dijkstra_path(graph, src, weight="delay")
        node_path = routes[src].get(dst)
        if node_path is None:
            continue  # disconnected pair (some Topology Zoo graphs)
        routed.append((src, dst, mbps, node_path))
        for a, b in itertools.pairwise(node_path):
            load[(min(a, b), max(a, b))] += mbps

    # capacity planned for any single link failure, then demand scaled to the busy hour as
    # far as that plan allows (a network that survives a failure at 80 % may run cooler)
    worst = worst_failure_load(graph, routed)
    pairs = [(min(a, b), max(a, b)) for a, b, _ in edges]
    capacity = {pair: _capacity_for(worst.get(pair, 0.0)) for pair in pairs}
    peak = max((load[pair] / capacity[pair] for pair in pairs), default=0.0)
    survivable = min(
        (PLANNED_PEAK * capacity[pair] / worst[pair] for pair in pairs if worst.get(pair)),
        default=1.0,
    )
    busy_hour = min(BUSY_HOUR_PEAK / peak, survivable) if peak > 0 else 1.0

    tiers = assign_tiers(len(routed), rng)
    ends = {node for src, dst, _, _ in routed for node in (src, dst)}
    services: list[LabService] = []
    for (src, dst, mbps, node_path), tier in zip(routed, tiers, strict=True):
        n = len(services) + 1
        services.append(
            LabService(
                vpn_id=f"vpn-{n:05d}",
                name=f"{src}-{dst}-{tier}",
                service_type="l3vpn" if rng.random() < 0.6 else "l2vpn",
                sla_tier=tier,
                head_end=src,
                end_point=dst,
                nodes=tuple(node_path),
                path=(),
                bandwidth_mbps=max(0.001, round(mbps * busy_hour, 3)),
            )
        )

    nodes: dict[str, LabNode] = {}
    base = ipaddress.IPv4Address("10.0.0.0")
    for index, raw in enumerate(raw_ids):
        node_id = ids[raw]
        original = data["nodes"][index].get("name")
        nodes[node_id] = LabNode(
            node_id=node_id,
            loopback=str(base + index + 1),
            prefix_sid=16001 + index,
            te_capabilities=caps[node_id],
            role="pe" if node_id in ends else "p",
            name=str(original) if original is not None else None,
        )

    links: dict[str, LabLink] = {}
    srlg_groups = max(1, len(edges) // 3)
    for a, b, delay in edges:
        srlgs = (1000 + rng.randrange(srlg_groups),) if rng.random() < 0.3 else ()
        metric = max(1, round(delay * 10))
        links[f"{a}-{b}"] = LabLink(
            link_id=f"{a}-{b}",
            source=a,
            destination=b,
            delay_ms=delay,
            capacity_mbps=capacity[(min(a, b), max(a, b))],
            igp_metric=metric,
            te_metric=metric,
            srlgs=srlgs,
        )

    topo = LabTopology(name=key, nodes=nodes, links=links, services={})
    for svc in services:
        path = topo.links_of(svc.nodes)
        assert path is not None  # routed on this very graph
        topo.services[svc.vpn_id] = _with_path(svc, path)
    topo.scenarios = generic_scenarios(topo)
    return topo


def delay_threshold_ms(topology: LabTopology, configured: float) -> float:
    """The delay threshold the lab's PCA policy uses on ``topology``: ``configured``, raised
    for a network whose longest healthy link already measures close to it.

    An operator sets SLA thresholds a healthy network meets; a few Topology Zoo networks have
    intercontinental links whose propagation alone is 50-80 ms, which the 50 ms default would
    report out of SLA forever. Above 80 % of ``configured`` the threshold becomes the longest
    base delay plus a quarter, rounded up to 10 ms. The seed's network keeps ``configured``.
    """
    longest = max((link.delay_ms for link in topology.links.values()), default=0.0)
    if longest < 0.8 * configured:
        return configured
    return max(configured, 10.0 * -(-(longest * 1.25) // 10.0))


def generic_scenarios(topo: LabTopology) -> dict[str, ScenarioPlan]:
    """The standard scenarios picked from the busiest links of any topology."""
    plans = {"recover-all": _recover_all()}
    if not topo.services:
        return plans
    usage: Counter[str] = Counter()
    for svc in topo.services.values():
        usage.update(svc.path)
    busiest = min(usage, key=lambda link: (-usage[link], link))
    # the most important service over the busiest link names the second link to degrade
    victim = min(
        topo.services_on(busiest),
        key=lambda s: (TIER_RANK[s.sla_tier], -len(s.path), s.vpn_id),
    )
    index = victim.path.index(busiest)
    second = (
        victim.path[index + 1]
        if index + 1 < len(victim.path)
        else (victim.path[index - 1] if index > 0 else None)
    )
    step = {"duration_s": None}
    degrade = [ScenarioStep("degrade", busiest, 0, step)]
    if second:
        degrade.append(ScenarioStep("degrade", second, 1, step))
    plans["sla-degradation"] = ScenarioPlan(
        "sla-degradation",
        f"{busiest} degrades" + (f", then {second}" if second else "") + ".",
        tuple(degrade),
    )
    first = victim.path[0]
    cut = sorted(
        link
        for link in topo.adjacency[victim.head_end].values()
        if link != first and link not in (busiest, second)
    )
    plans["no-path"] = ScenarioPlan(
        "no-path",
        f"{victim.head_end} loses every way out: {first} degrades, its other links go down.",
        tuple(
            [ScenarioStep("down", link, 0, step) for link in cut]
            + [s for s in degrade]
            + ([ScenarioStep("degrade", first, 0, step)] if first not in (busiest, second) else [])
        ),
    )
    idle = sorted(link for link in topo.links if usage[link] == 0)
    if idle:
        plans["no-impact"] = ScenarioPlan(
            "no-impact",
            f"{idle[0]} degrades; no service crosses it.",
            (ScenarioStep("degrade", idle[0], 0, step),),
        )
    plans["flapping"] = ScenarioPlan(
        "flapping",
        f"{busiest} flaps five times.",
        (ScenarioStep("flap", busiest, 0, {"count": 5, "interval_s": 2.0}),),
    )
    plans["busy-hour"] = _busy_hour()
    return plans

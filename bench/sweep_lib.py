"""The lab side of the protection sweep: which links to fail, and whether a path really existed.

The sweep degrades several single links of each topology, one incident each, and counts how the
incidents end. Two things here do not depend on the mesh:

- :func:`pick_faults` chooses the links: each carries services (else no incident opens) and is
  not a bridge (its ends stay connected without it, so a way round exists in the graph at least),
  and no two share a node or an SRLG (so the correlator sees separate incidents).
- :func:`path_exists` is an independent check of a "no path" escalation: a plain breadth-first
  search over the lab's own topology under the constraints the path agent applies (one TE
  technology end to end, the failed links and, if asked, their SRLGs excluded, links down
  excluded, headroom for the traffic below the reservable share). It shares no code with
  ``services/path/graph.py``, so an escalation it contradicts is a bug, not a coincidence.

Plain functions over :class:`services.lab.topology.LabTopology`; no server, no event loop.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from services.lab.topology import LabService, LabTopology

TE_TYPES: tuple[str, ...] = ("sr-mpls", "srv6", "rsvp-te")
RESERVABLE_SHARE = 0.8
"""The path agent's default ``CXM_PATH_RESERVABLE_SHARE``: headroom is capacity x this - load."""


@dataclass(frozen=True)
class Group:
    """Services hurt by a fault that share their ends: one protection policy carries them."""

    head_end: str
    end_point: str
    services: tuple[str, ...]
    bandwidth_mbps: float


def pick_faults(topology: LabTopology, count: int = 3) -> list[str]:
    """Up to ``count`` links to fail one at a time, busiest first (by services carried).

    Deterministic: ties go to the link id. A link qualifies when it carries a service and is
    not a bridge; it is taken when it shares no node and no SRLG with a link already taken.
    """
    graph = nx.Graph()
    graph.add_nodes_from(topology.nodes)
    graph.add_edges_from((link.source, link.destination) for link in topology.links.values())
    bridges = {frozenset(edge) for edge in nx.bridges(graph)}
    carried: Counter[str] = Counter()
    for service in topology.services.values():
        carried.update(service.path)
    candidates = sorted(
        (
            link
            for link in topology.links.values()
            if carried[link.link_id] and frozenset((link.source, link.destination)) not in bridges
        ),
        key=lambda link: (-carried[link.link_id], link.link_id),
    )
    chosen: list[str] = []
    nodes: set[str] = set()
    srlgs: set[int] = set()
    for link in candidates:
        if len(chosen) >= count:
            break
        if {link.source, link.destination} & nodes or srlgs.intersection(link.srlgs):
            continue
        chosen.append(link.link_id)
        nodes.update((link.source, link.destination))
        srlgs.update(link.srlgs)
    return chosen


def hurt_groups(topology: LabTopology, link_id: str) -> list[Group]:
    """The services crossing ``link_id``, grouped by (head-end, end-point), largest first."""
    by_ends: dict[tuple[str, str], list[LabService]] = defaultdict(list)
    for service in topology.services.values():
        if link_id in service.path:
            by_ends[(service.head_end, service.end_point)].append(service)
    groups = [
        Group(
            head_end=head,
            end_point=end,
            services=tuple(s.vpn_id for s in members),
            bandwidth_mbps=round(sum(s.bandwidth_mbps for s in members), 6),
        )
        for (head, end), members in by_ends.items()
    ]
    return sorted(groups, key=lambda g: (-g.bandwidth_mbps, g.head_end, g.end_point))


def link_load(topology: LabTopology, *, carrying: Iterable[str] = ()) -> dict[str, float]:
    """Mbps each link carries with every service on its own path, except ``carrying`` (which
    move onto the new path, as the path agent's ``carrying`` says)."""
    moving = set(carrying)
    load = dict.fromkeys(topology.links, 0.0)
    for service in topology.services.values():
        if service.vpn_id not in moving:
            for link in service.path:
                load[link] += service.bandwidth_mbps
    return load


def path_exists(
    topology: LabTopology,
    head_end: str,
    end_point: str,
    *,
    excluded_links: Iterable[str] = (),
    te_type: str | None = None,
    min_bandwidth_mbps: float | None = None,
    load: Mapping[str, float] | None = None,
    reservable_share: float = RESERVABLE_SHARE,
    srlg_disjoint: bool = False,
    down: Iterable[str] = (),
) -> bool:
    """Whether any path joins the ends under the path agent's hard constraints (plain BFS).

    ``te_type`` None means any one technology both ends support (a tunnel is one technology
    end to end, so each is tried alone). ``load`` is each link's Mbps now (default: none);
    with ``min_bandwidth_mbps`` a link needs capacity x ``reservable_share`` - load of room.
    Links out of SLA are not excluded: for the path agent they are a cost, not a ban.
    """
    if head_end not in topology.nodes or end_point not in topology.nodes or head_end == end_point:
        return False
    excluded = {_key(name) for name in excluded_links}
    banned = excluded | {_key(name) for name in down}
    banned_srlgs: set[int] = set()
    if srlg_disjoint:
        for link in topology.links.values():
            if _key(link.link_id) in excluded:
                banned_srlgs.update(link.srlgs)
    usable: set[str] = set()
    for link in topology.links.values():
        if _key(link.link_id) in banned or banned_srlgs.intersection(link.srlgs):
            continue
        if min_bandwidth_mbps is not None:
            room = link.capacity_mbps * reservable_share - (load or {}).get(link.link_id, 0.0)
            if room < min_bandwidth_mbps:
                continue
        usable.add(link.link_id)
    techs = [te_type] if te_type else _common(topology, head_end, end_point)
    return any(_reachable(topology, head_end, end_point, usable, te) for te in techs)


def _reachable(topology: LabTopology, start: str, goal: str, usable: set[str], te: str) -> bool:
    """Breadth-first search through nodes that support ``te`` over ``usable`` links."""
    if te not in topology.nodes[start].te_capabilities:
        return False
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for neighbour, link in topology.adjacency[node].items():
            if neighbour in seen or link not in usable:
                continue
            if te not in topology.nodes[neighbour].te_capabilities:
                continue
            if neighbour == goal:
                return True
            seen.add(neighbour)
            queue.append(neighbour)
    return False


def _common(topology: LabTopology, a: str, b: str) -> list[str]:
    both = set(topology.nodes[a].te_capabilities) & set(topology.nodes[b].te_capabilities)
    return [te for te in TE_TYPES if te in both]


def _key(name: str) -> str:
    """A link name independent of direction (``b-a`` is ``a-b``)."""
    ends = name.split("-")
    return "-".join(sorted(ends)) if len(ends) == 2 else name

"""The topology knowledge graph and constrained shortest paths over it.

Nodes carry their TE capabilities, SIDs and loopbacks; each node pair holds every parallel
link between them (``links``), so a constraint that rules out one member of a bundle still
leaves the others usable. Queries never copy the graph: a weight function hides what the
constraints exclude and picks the cheapest eligible parallel link.

Bandwidth is TE accounting, not raw capacity: ``reserve`` gives a view of the graph with the
load the services put on each link now, and a path for N Mbps only uses links with N Mbps of
headroom below their reservable share. A service's load sits whole on the links of the policy
it rides now (``VpnService.path``: its own policy, or the protection policy its color maps it
to); a policy carries whole services, never a share of one.

A link's delay comes from CNC's performance metrics and may be unknown (``delay_ms`` None, a
read that failed). The delay objective then prices it from its TE metric at the graph's own
rate: the measured links' total delay over their total TE metric (0.1 ms per unit when no
link is measured, the convention TE metric = delay x 10). Such a link's delay in a result's
``total_delay_ms`` is that estimate, and ``delay_estimated_links`` names it.

A link PCA measures out of SLA (``degraded``) is a cost, not a ban: banning them left whole
regions unreachable when several links were degraded at once, and the customers on a worse
link. Each costs more than any path that avoids them all, scaled by how far it is over its
thresholds, so a path crosses one only when there is no other way, and then the mildest; the
result names the links it crosses and says why. The request's own ``avoid_links`` (the
incident's failed links) stay a ban.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, pairwise
from typing import Any

import networkx as nx

from shared.models import ComputePath, PathResult
from shared.southbound import (
    Link,
    LinkMetrics,
    Thresholds,
    Topology,
    VpnService,
    link_key,
)

TE_PREFERENCE: tuple[str, ...] = ("sr-mpls", "srv6", "rsvp-te")
"""Which tunnel technology to prefer when every node on a path supports several."""

DEFAULT_MS_PER_TE = 0.1
"""Delay per TE-metric unit when no link's delay is known (TE metric = delay x 10)."""


def ms_per_te(links: Iterable[Link]) -> float:
    """The network's delay per TE-metric unit, from the links whose delay CNC measures."""
    measured = [link for link in links if link.delay_ms is not None and link.te_metric > 0]
    total_te = sum(link.te_metric for link in measured)
    if not total_te:
        return DEFAULT_MS_PER_TE
    return sum(link.delay_ms or 0.0 for link in measured) / total_te


def _service_load(service: VpnService) -> Iterator[tuple[str, float]]:
    """(link key, Mbps) the service puts on each link of the path it rides now."""
    for name in service.path:
        yield link_key(name), service.bandwidth_mbps


def fingerprint(topology: Topology) -> str:
    """A digest of the topology, so an unchanged CNC answer does not rebuild the graph."""
    raw = json.dumps(topology.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class SlaBreach:
    """How far a link PCA measures out of SLA is over its thresholds."""

    link_id: str
    severity: float = 1.0
    """The worst measured / threshold ratio (1 at a threshold, 2 at twice it)."""
    detail: str = "out of SLA"
    """The worst metric against its threshold, for the path's reason."""

    @classmethod
    def of(cls, link_id: str, metrics: LinkMetrics, limits: Thresholds) -> SlaBreach | None:
        """The breach, or None while the link is within every threshold."""
        if metrics.within(limits):
            return None
        ratios = [
            (
                metrics.loss_pct / limits.loss_pct,
                f"loss {metrics.loss_pct:g} % over {limits.loss_pct:g} %",
            ),
            (
                metrics.delay_ms / limits.delay_ms,
                f"delay {metrics.delay_ms:g} ms over {limits.delay_ms:g} ms",
            ),
            (
                metrics.jitter_ms / limits.jitter_ms,
                f"jitter {metrics.jitter_ms:g} ms over {limits.jitter_ms:g} ms",
            ),
        ]
        ratio, detail = max(ratios, key=lambda item: item[0])
        return cls(link_id=link_id, severity=round(max(1.0, ratio), 3), detail=detail)


@dataclass
class KnowledgeGraph:
    graph: nx.Graph
    digest: str
    links: dict[str, Link] = field(default_factory=dict)
    load_mbps: dict[str, float] = field(default_factory=dict)
    """What the services use of each link (by ``link_key``); empty until ``reserve``."""
    reservable_share: float = 1.0
    """The share of a link's capacity paths may reserve; without ``reserve``, all of it."""
    out_of_sla: Mapping[str, SlaBreach] = field(default_factory=dict)
    """Links (by ``link_key``) that PCA measures beyond a threshold now: a path crosses one
    only when no path avoids them all (see the module docstring)."""
    ms_per_te: float = DEFAULT_MS_PER_TE
    """The delay of a link CNC has no delay for, per unit of its TE metric."""

    @classmethod
    def build(cls, topology: Topology) -> KnowledgeGraph:
        graph: nx.Graph = nx.Graph()
        for node in topology.nodes:
            graph.add_node(
                node.node_id,
                loopback=node.loopback,
                prefix_sid=node.prefix_sid,
                te_capabilities=list(node.te_capabilities),
                role=node.role,
            )
        links: dict[str, Link] = {}
        for link in topology.links:
            links[link.link_id] = link
            for end in (link.source, link.destination):
                if end not in graph:
                    graph.add_node(end, loopback=None, prefix_sid=None, te_capabilities=[])
            if graph.has_edge(link.source, link.destination):
                graph.edges[link.source, link.destination]["links"].append(link)
            else:
                graph.add_edge(link.source, link.destination, links=[link])
        return cls(
            graph=graph,
            digest=fingerprint(topology),
            links=links,
            ms_per_te=ms_per_te(topology.links),
        )

    def delay_of(self, link: Link) -> float:
        """The link's delay, or its estimate from the TE metric when CNC has none."""
        return link.delay_ms if link.delay_ms is not None else link.te_metric * self.ms_per_te

    def reserve(
        self,
        services: Iterable[VpnService],
        *,
        carrying: Iterable[str] = (),
        reserved: Mapping[str, float] | None = None,
        reservable_share: float,
    ) -> KnowledgeGraph:
        """This graph (not copied) with each link's load, for TE bandwidth accounting.

        A service puts its bandwidth on each link of the path it rides now; ``carrying``
        services move with the new path, so they count nowhere. ``reserved`` (link → Mbps)
        is bandwidth promised to policies not built yet (the same incident's other groups):
        it counts as load like a service's.
        """
        moving = set(carrying)
        load: defaultdict[str, float] = defaultdict(float)
        for service in services:
            if service.vpn_id not in moving:
                for key, mbps in _service_load(service):
                    load[key] += mbps
        for name, mbps in (reserved or {}).items():
            load[link_key(name)] += mbps
        return dataclasses.replace(self, load_mbps=dict(load), reservable_share=reservable_share)

    def plan(
        self,
        requests: Sequence[ComputePath],
        services: Sequence[VpnService],
        *,
        reservable_share: float,
    ) -> list[PathResult]:
        """One path per request, in order, as if each group moved once its path was found.

        Every request's ``carrying`` services leave their links (they move with their group);
        a path found reserves its group's bandwidth on its links for the requests after it;
        a group left without a path keeps its traffic where it is, so that load comes back.
        Each request's own ``reserved_mbps`` counts too. The graph is priced once (one read of
        CNC's services serves the whole incident), then only the deltas are added.
        """
        moving = {sid for request in requests for sid in request.carrying}
        base = self.reserve(services, carrying=moving, reservable_share=reservable_share)
        by_id = {service.vpn_id: service for service in services}
        extra: defaultdict[str, float] = defaultdict(float)
        results: list[PathResult] = []
        for request in requests:
            load = dict(base.load_mbps)
            for key, mbps in [*extra.items(), *request.reserved_mbps.items()]:
                load[link_key(key)] = load.get(link_key(key), 0.0) + mbps
            result = dataclasses.replace(base, load_mbps=load).shortest(request)
            results.append(result)
            if result.found and request.min_bandwidth_mbps:
                for name in result.links:
                    extra[link_key(name)] += request.min_bandwidth_mbps
            elif not result.found:
                for sid in request.carrying:
                    if sid in by_id:
                        for key, mbps in _service_load(by_id[sid]):
                            extra[key] += mbps
        return results

    def degraded(self, links: Iterable[str] | Mapping[str, SlaBreach]) -> KnowledgeGraph:
        """This graph (not copied) with ``links`` up but out of SLA: costly, not banned.

        A plain name counts as just at its threshold (severity 1); a :class:`SlaBreach` says
        how far over it the link is, so the milder of two degraded links is the one crossed.
        """
        breaches = (
            {link_key(name): breach for name, breach in links.items()}
            if isinstance(links, Mapping)
            else {link_key(name): SlaBreach(name) for name in links}
        )
        return dataclasses.replace(self, out_of_sla=breaches)

    def headroom(self, link: Link) -> float:
        """Mbps a new path may still reserve on ``link``."""
        reservable = link.capacity_mbps * self.reservable_share
        return round(reservable - self.load_mbps.get(link_key(link.link_id), 0.0), 6)

    # --- queries -------------------------------------------------------------------------

    def shortest(self, request: ComputePath) -> PathResult:
        """Dijkstra under the request's constraints; ``found=False`` with a reason if none."""
        problem = self._endpoints_problem(request)
        if problem:
            return PathResult(found=False, metric=request.metric, reason=problem)
        # one constrained Dijkstra per TE type; the cheapest wins, preference breaks ties
        best: tuple[float, int, list[str], str] | None = None
        for rank, te_type in enumerate(self._te_candidates(request)):
            weight = self._weight(request, te_type)
            try:
                cost, nodes = nx.single_source_dijkstra(
                    self.graph, request.head_end, request.end_point, weight=weight
                )
            except nx.NetworkXNoPath:
                continue
            if best is None or (cost, rank) < best[:2]:
                best = (cost, rank, nodes, te_type)
        if best is None:
            return PathResult(
                found=False, metric=request.metric, reason=self._no_path_reason(request)
            )
        return self._result(best[2], request, te_type=best[3], only_way=True)

    def _te_candidates(self, request: ComputePath) -> list[str]:
        """TE types to try, preferred first: the requested one, else those both ends support."""
        if request.te_type:
            return [request.te_type]
        return self.te_types([request.head_end, request.end_point])

    def k_shortest(self, request: ComputePath, k: int) -> list[PathResult]:
        """Up to ``k`` loopless paths, best first (Yen's algorithm)."""
        if self._endpoints_problem(request):
            return []
        weight = self._weight(request)
        paths: Iterator[list[str]] = nx.shortest_simple_paths(
            self.graph, request.head_end, request.end_point, weight=weight
        )
        try:
            return [self._result(nodes, request) for nodes in islice(paths, k)]
        except nx.NetworkXNoPath:
            return []

    def te_types(self, nodes: list[str]) -> list[str]:
        """The TE technologies every node of ``nodes`` supports, in order of preference."""
        common = set(TE_PREFERENCE)
        for node in nodes:
            common &= set(self.graph.nodes[node].get("te_capabilities", []))
        return [te for te in TE_PREFERENCE if te in common]

    def summary(self) -> dict[str, Any]:
        """The graph as JSON: nodes with their attributes, links with theirs."""
        return {
            "digest": self.digest,
            "nodes": [{"node_id": n, **attrs} for n, attrs in self.graph.nodes(data=True)],
            "links": [link.model_dump(mode="json") for link in self.links.values()],
        }

    # --- internals -----------------------------------------------------------------------

    def _endpoints_problem(self, request: ComputePath) -> str | None:
        for end in (request.head_end, request.end_point):
            if end not in self.graph:
                return f"node {end} is not in the topology"
            if end in request.avoid_nodes:
                return f"node {end} is both an endpoint and to be avoided"
        if request.head_end == request.end_point:
            return "head_end and end_point are the same node"
        return None

    def _excluded(self, request: ComputePath) -> tuple[set[str], set[int]]:
        """Link keys to avoid, and the SRLGs they belong to when the request is SRLG-disjoint."""
        avoided = {link_key(name) for name in request.avoid_links}
        srlgs: set[int] = set()
        if request.srlg_disjoint:
            for link in self.links.values():
                if link_key(link.link_id) in avoided or _pair_key(link) in avoided:
                    srlgs.update(link.srlgs)
        return avoided, srlgs

    def _eligible(self, request: ComputePath) -> Callable[[Link], bool]:
        """Hard constraints: up, not avoided nor sharing their SRLGs, with the headroom."""
        avoided, srlgs = self._excluded(request)
        min_bw = request.min_bandwidth_mbps

        def eligible(link: Link) -> bool:
            if link.oper_status.lower() != "up":
                return False
            if link_key(link.link_id) in avoided or _pair_key(link) in avoided:
                return False
            if srlgs and srlgs.intersection(link.srlgs):
                return False
            return min_bw is None or self.headroom(link) >= min_bw

        return eligible

    def _weight(
        self, request: ComputePath, te_type: str | None = None
    ) -> Callable[[str, str, dict[str, Any]], float | None]:
        eligible = self._eligible(request)
        avoid_nodes = set(request.avoid_nodes)
        if te_type is not None:  # a tunnel is one technology end to end
            avoid_nodes |= {
                n for n, caps in self.graph.nodes(data="te_capabilities") if te_type not in caps
            }
        cost = self._cost(request)

        def weight(u: str, v: str, data: dict[str, Any]) -> float | None:
            if u in avoid_nodes or v in avoid_nodes:
                return None
            costs = [cost(link) for link in data["links"] if eligible(link)]
            return min(costs) if costs else None

        return weight

    def _metric(self, name: str) -> Callable[[Link], float]:
        """A link's cost under the objective ``name``."""
        return self.delay_of if name == "delay" else _COST[name]

    def _cost(self, request: ComputePath) -> Callable[[Link], float]:
        """The request's metric, plus a penalty on links out of SLA.

        The penalty unit exceeds the cost of every link together, so any simple path that
        avoids all links out of SLA is cheaper than any that crosses one; times the link's
        severity, so fewer and milder breaches win among paths that must cross.
        """
        metric = self._metric(request.metric)
        if not self.out_of_sla:
            return metric
        unit = 1.0 + sum(metric(link) for link in self.links.values())
        breaches = self.out_of_sla

        def cost(link: Link) -> float:
            breach = breaches.get(link_key(link.link_id))
            return metric(link) + (unit * breach.severity if breach is not None else 0.0)

        return cost

    def _result(
        self,
        nodes: list[str],
        request: ComputePath,
        te_type: str | None = None,
        *,
        only_way: bool = False,
    ) -> PathResult:
        eligible = self._eligible(request)
        penalised = self._cost(request)
        cost = self._metric(request.metric)
        chosen = [
            min((link for link in bundle if eligible(link)), key=penalised)
            for bundle in self._bundles(nodes)
        ]
        te_types = self.te_types(nodes)
        bandwidth: dict[str, Any] = {}
        if request.min_bandwidth_mbps is not None:
            bandwidth["min_headroom_mbps"] = min(self.headroom(link) for link in chosen)
        unmeasured = [link.link_id for link in chosen if link.delay_ms is None]
        estimated = {"delay_estimated_links": unmeasured} if unmeasured else {}
        crossed = [
            (link.link_id, self.out_of_sla[link_key(link.link_id)])
            for link in chosen
            if link_key(link.link_id) in self.out_of_sla
        ]
        reason = None
        if crossed:
            what = ", ".join(f"{name} ({breach.detail})" for name, breach in crossed)
            reason = f"crosses {len(crossed)} link(s) PCA measures out of SLA: {what}" + (
                f" — no path from {request.head_end} to {request.end_point} under the "
                "request's constraints avoids every link out of SLA; this one crosses the "
                "fewest and mildest"
                if only_way
                else ""
            )
        return PathResult(
            found=True,
            path=nodes,
            links=[link.link_id for link in chosen],
            hop_count=len(nodes),
            total_delay_ms=round(sum(self.delay_of(link) for link in chosen), 3),
            total_metric=round(sum(cost(link) for link in chosen), 3),
            metric=request.metric,
            te_types=te_types,
            path_type=te_type or (te_types[0] if te_types else None),
            min_capacity_mbps=min(link.capacity_mbps for link in chosen),
            srlgs=sorted({s for link in chosen for s in link.srlgs}),
            reason=reason,
            out_of_sla_links=[name for name, _ in crossed],
            **bandwidth,
            **estimated,
        )

    def _bundles(self, nodes: list[str]) -> Iterator[list[Link]]:
        """The parallel links joining each pair of consecutive nodes (none if not adjacent)."""
        for u, v in pairwise(nodes):
            yield self.graph.get_edge_data(u, v, default={}).get("links", [])

    def _no_path_reason(self, request: ComputePath) -> str:
        parts = [f"no path from {request.head_end} to {request.end_point}"]
        if request.avoid_links:
            parts.append(f"avoiding links {', '.join(request.avoid_links)}")
        if request.avoid_nodes:
            parts.append(f"avoiding nodes {', '.join(request.avoid_nodes)}")
        if request.srlg_disjoint:
            parts.append("SRLG-disjoint from them")
        if self.out_of_sla:
            parts.append(f"even across the {len(self.out_of_sla)} link(s) PCA measures out of SLA")
        if request.min_bandwidth_mbps is not None:
            parts.append(
                f"with at least {request.min_bandwidth_mbps:g} Mbps of headroom "
                f"(reservable {self.reservable_share * 100:g} % of capacity)"
            )
        tried = self._te_candidates(request)
        parts.append(
            f"with every node supporting {' or '.join(tried)}"
            if tried
            else "as no TE type is common to both ends"
        )
        reason = " ".join(parts[:1]) + (" " + "; ".join(parts[1:]) if parts[1:] else "")
        return reason + self._bandwidth_hint(request)

    def _bandwidth_hint(self, request: ComputePath) -> str:
        """When only the bandwidth rules every path out, say so and how much the best one has."""
        if request.min_bandwidth_mbps is None:
            return ""
        unbounded = self.shortest(request.model_copy(update={"min_bandwidth_mbps": None}))
        if not unbounded.found:
            return ""
        room, tightest = min((self.headroom(self.links[name]), name) for name in unbounded.links)
        return (
            f" — bandwidth is the constraint: {' → '.join(unbounded.path)} would do"
            f" but has {room:g} Mbps of headroom on {tightest}"
        )


def _pair_key(link: Link) -> str:
    return "-".join(sorted((link.source, link.destination)))


_COST: dict[str, Callable[[Link], float]] = {
    "te": lambda link: link.te_metric,
    "igp": lambda link: link.igp_metric,
    "hops": lambda link: 1.0,
}
"""Objectives other than delay, which needs the graph (a link's delay may be estimated)."""

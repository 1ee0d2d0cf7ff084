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

What a request may use is decided in one place, :meth:`KnowledgeGraph.link_costs`: one cost
per link, ``inf`` where a constraint rules it out. The search itself runs in C on arrays that
are updated in place when the topology changes (:mod:`services.path.engine`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from services.path.engine import (
    DEFAULT_MS_PER_TE,
    TE_PREFERENCE,
    Floats,
    TeGraph,
)
from shared.models import ComputePath, PathResult
from shared.southbound import (
    Link,
    LinkMetrics,
    Thresholds,
    Topology,
    VpnService,
    link_key,
)

__all__ = ["DEFAULT_MS_PER_TE", "TE_PREFERENCE", "KnowledgeGraph", "SlaBreach", "fingerprint"]


def _service_load(service: VpnService) -> Iterator[tuple[str, float]]:
    """(link key, Mbps) the service puts on each link of the path it rides now."""
    for name in service.path:
        yield link_key(name), service.bandwidth_mbps


def committed_by_link(services: Iterable[VpnService]) -> dict[str, float]:
    """Committed Mbps per link (by ``link_key``) of the services where they ride now."""
    out: defaultdict[str, float] = defaultdict(float)
    key = link_key
    for service in services:  # the loop of _service_load, inlined: it runs per hop per read
        mbps = service.bandwidth_mbps
        for name in service.path:
            out[key(name)] += mbps
    return dict(out)


def _measured_load(
    movers: list[VpnService],
    staying: Mapping[str, float],
    rates: Mapping[str, float],
    committed_then: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Each link's load counting what it carries, and what each moving service sends (see
    :meth:`KnowledgeGraph.reserve`).

    ``committed_then`` is what the services committed on each link when ``rates`` were read:
    the ratio of the two is how much more than committed that link's services send, which
    steering does not change. Applying it to the services riding the link *now* keeps a rate
    read before a steering (the graph's TTL) from counting a moved service where it left."""
    carried: defaultdict[str, float] = defaultdict(float)
    for name, mbps in rates.items():
        carried[link_key(name)] += mbps
    ratio = {k: mbps / committed_then[k] for k, mbps in carried.items() if committed_then.get(k)}
    load = dict(staying)
    for key, mbps in carried.items():
        if key in ratio:
            load[key] = staying.get(key, 0.0) * max(1.0, ratio[key])
        else:  # traffic no service accounted for when it was read: it is still there
            load[key] = staying.get(key, 0.0) + mbps
    sending: dict[str, tuple[float, float]] = {}
    for service in movers:
        ratios = [ratio[k] for k, _ in _service_load(service) if k in ratio]
        sends = service.bandwidth_mbps * max(1.0, min(ratios, default=1.0))
        sending[service.vpn_id] = (service.bandwidth_mbps, sends)
    return load, sending


_TOPOLOGY_JSON = TypeAdapter(Topology)


def fingerprint(topology: Topology) -> str:
    """A digest of the topology, so an unchanged CNC answer does not touch the graph.

    Taken on pydantic's own JSON (fields in model order, lists in CNC's order), serialised in
    Rust: eight times less CPU than ``json.dumps`` of a dump with sorted keys (1.2 s on a
    60,000-link network, once per refresh). An answer listing the same links in another order
    digests differently; it costs one diff (:meth:`KnowledgeGraph.update`) that finds nothing.
    """
    return hashlib.sha256(_TOPOLOGY_JSON.dump_json(topology)).hexdigest()


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


@dataclass(frozen=True)
class Eligible:
    """What a request may use: one cost per link slot (``inf`` where it may not), the TE
    type every node of the path must run (None: any), and the nodes it may not cross."""

    link_costs: Floats
    te_type: str | None
    avoid_nodes: tuple[int, ...]

    def pair_costs(self, engine: TeGraph) -> Floats:
        """The search's cost per node pair under these constraints."""
        return engine.pair_costs(self.link_costs, self.te_type, self.avoid_nodes)


@dataclass
class KnowledgeGraph:
    """The topology (shared, updated in place) seen with one request's load and SLA view.

    ``reserve`` and ``degraded`` return views that share the topology's arrays: nothing is
    copied per request but a cost vector.
    """

    engine: TeGraph
    digest: str
    load_mbps: dict[str, float] = field(default_factory=dict)
    """What the services use of each link (by ``link_key``); empty until ``reserve``."""
    promised_mbps: Mapping[str, float] = field(default_factory=dict)
    """Bandwidth promised to policies not built yet (by ``link_key``: the request's
    ``reserved_mbps``, the groups planned before it): load like ``load_mbps``, but already
    sized, so a request's ``load_growth`` does not scale it again."""
    reservable_share: float = 1.0
    """The share of a link's capacity paths may reserve; without ``reserve``, all of it."""
    sending: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Per moving (``carrying``) service, (Mbps committed, Mbps it sends now), when
    ``reserve`` had the links' rates: see :meth:`reserve` and :meth:`sized`."""
    out_of_sla: Mapping[str, SlaBreach] = field(default_factory=dict)
    """Links (by ``link_key``) that PCA measures beyond a threshold now: a path crosses one
    only when no path avoids them all (see the module docstring)."""
    _headroom: Floats | None = field(default=None, init=False, repr=False, compare=False)
    _slot_loads: tuple[Floats, Floats] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """``load_mbps`` and ``promised_mbps`` per link slot, computed once per view."""

    @classmethod
    def build(cls, topology: Topology) -> KnowledgeGraph:
        return cls(engine=TeGraph.build(topology), digest=fingerprint(topology))

    def update(self, topology: Topology, digest: str | None = None) -> bool:
        """Bring the graph to ``topology`` in place (only what changed); True if anything did.

        Every view of this graph sees the change: they share the engine.
        """
        changed = self.engine.update(topology)
        self.digest = digest or fingerprint(topology)
        return changed

    @property
    def links(self) -> dict[str, Link]:
        """Every link by id, as the topology has it now."""
        return self.engine.links

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node by id with its attributes (TE capabilities, SIDs, loopback)."""
        return self.engine.nodes

    @property
    def ms_per_te(self) -> float:
        """The delay of a link CNC has no delay for, per unit of its TE metric."""
        return self.engine.ms_per_te()

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
        rates: Mapping[str, float] | None = None,
        rated_with: Mapping[str, float] | None = None,
    ) -> KnowledgeGraph:
        """This graph (not copied) with each link's load, for TE bandwidth accounting.

        A service puts its bandwidth on each link of the path it rides now; ``carrying``
        services move with the new path, so they count nowhere. ``reserved`` (link → Mbps)
        is bandwidth promised to policies not built yet (the same incident's other groups):
        it counts as load like a service's.

        With ``rates`` (link id → Mbps it carried when read) and ``rated_with`` (committed
        Mbps per link then, by ``link_key``; default: these services'), each link's services
        count at what they send: their committed bandwidth times the link's carried/committed
        ratio (never under 1), and a link that carried traffic no service accounted for
        keeps it. In a busy hour services send more than they committed, and a detour sized
        by commitments alone was overloaded (bench/proactive.py: links carrying protection
        policies at 129-143 % with the proactive flow off). A moving service sends its
        committed bandwidth times the smallest ratio along its path: the smallest, because
        traffic no service accounts for only ever raises a link's ratio.
        """
        services = list(services)
        moving = set(carrying)
        movers = [s for s in services if s.vpn_id in moving]
        staying = committed_by_link(s for s in services if s.vpn_id not in moving)
        load: dict[str, float] = dict(staying)
        sending: dict[str, tuple[float, float]] = {}
        if rates:
            then = rated_with if rated_with is not None else committed_by_link(services)
            load, sending = _measured_load(movers, staying, rates, then)
        promised: dict[str, float] = defaultdict(float)
        for name, mbps in (reserved or {}).items():
            promised[link_key(name)] += mbps
        return dataclasses.replace(
            self,
            load_mbps=load,
            promised_mbps=dict(promised),
            reservable_share=reservable_share,
            sending=sending,
        )

    def sized(self, request: ComputePath) -> ComputePath:
        """``request`` with its ``min_bandwidth_mbps`` scaled by how much more than committed
        its ``carrying`` services send now (``reserve`` had the links' rates; never scaled
        down)."""
        if request.min_bandwidth_mbps is None or not self.sending:
            return request
        known = [self.sending[sid] for sid in request.carrying if sid in self.sending]
        committed = sum(c for c, _ in known)
        sent = sum(s for _, s in known)
        if committed <= 0 or sent <= committed:
            return request
        scaled = round(request.min_bandwidth_mbps * sent / committed, 3)
        return request.model_copy(update={"min_bandwidth_mbps": scaled})

    def plan(
        self,
        requests: Sequence[ComputePath],
        services: Sequence[VpnService],
        *,
        reservable_share: float,
        rates: Mapping[str, float] | None = None,
        rated_with: Mapping[str, float] | None = None,
    ) -> list[PathResult]:
        """One path per request, in order, as if each group moved once its path was found.

        Every request's ``carrying`` services leave their links (they move with their group);
        a path found reserves its group's bandwidth on its links for the requests after it;
        a group left without a path keeps its traffic where it is, so that load comes back.
        Each request's own ``reserved_mbps`` counts too. The graph is priced once (one read of
        CNC's services serves the whole incident), then only the deltas are added.
        """
        moving = {sid for request in requests for sid in request.carrying}
        base = self.reserve(
            services,
            carrying=moving,
            reservable_share=reservable_share,
            rates=rates,
            rated_with=rated_with,
        )
        by_id = {service.vpn_id: service for service in services}
        load = dict(base.load_mbps)  # grows by the traffic of groups left where they are
        promised: defaultdict[str, float] = defaultdict(float, base.promised_mbps)
        results: list[PathResult] = []
        for request in map(base.sized, requests):
            own = defaultdict(float, promised)
            for key, mbps in request.reserved_mbps.items():
                own[link_key(key)] += mbps
            view = dataclasses.replace(base, load_mbps=dict(load), promised_mbps=dict(own))
            result = view.shortest(request)
            results.append(result)
            if result.found and request.min_bandwidth_mbps:
                for name in result.links:
                    promised[link_key(name)] += request.min_bandwidth_mbps
            elif not result.found:
                for sid in request.carrying:
                    if sid in by_id:
                        for key, mbps in _service_load(by_id[sid]):
                            load[key] = load.get(key, 0.0) + base.sending.get(sid, (mbps, mbps))[1]
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

    def headroom(self, link: Link, request: ComputePath | None = None) -> float:
        """Mbps a new path may still reserve on ``link`` (for ``request``: under its
        ``max_load_pct``, the link's load counted at its ``load_growth``)."""
        key = link_key(link.link_id)
        share, growth = self._limits(request)
        reservable = link.capacity_mbps * share
        used = self.load_mbps.get(key, 0.0) * growth + self.promised_mbps.get(key, 0.0)
        return round(reservable - used, 6)

    def _limits(self, request: ComputePath | None) -> tuple[float, float]:
        """(share of capacity a path may fill, factor on the links' load) for ``request``."""
        if request is None:
            return self.reservable_share, 1.0
        share = self.reservable_share
        if request.max_load_pct is not None:
            share = min(share, request.max_load_pct / 100.0)
        return share, request.load_growth

    # --- the constraints: one implementation, as costs --------------------------------------

    def link_costs(self, request: ComputePath, te_type: str | None = None) -> Eligible:
        """Each link's cost for ``request`` (``inf`` if it may not be used), and the nodes
        the path may not cross.

        Hard constraints: a link must be up, not avoided (by name, or by its two ends, which
        avoids every parallel link), share no SRLG with an avoided link when the request is
        SRLG-disjoint, and keep ``min_bandwidth_mbps`` of headroom; no node in
        ``avoid_nodes``, and with ``te_type`` every node runs it (a tunnel is one technology
        end to end). The cost is the request's metric plus the penalty on links out of SLA
        (see :meth:`_penalty_unit`).
        """
        eng = self.engine
        n = eng.slots
        cost = self._metric_costs(request.metric)
        if self.out_of_sla:
            unit = self._penalty_unit(cost)
            cost = cost.copy()
            for key, breach in self.out_of_sla.items():
                for slot in eng.by_key.get(key, ()):
                    cost[slot] += unit * breach.severity
        ok = eng.usable[:n].copy()
        avoided = eng.slots_named(request.avoid_links)
        if avoided:
            banned = set(avoided)
            if request.srlg_disjoint:
                for slot in avoided:
                    for srlg in eng.link(slot).srlgs:
                        banned |= eng.by_srlg.get(srlg, set())
            ok[list(banned)] = False
        if request.min_bandwidth_mbps is not None or request.max_load_pct is not None:
            ok &= self._room(request) >= (request.min_bandwidth_mbps or 0.0)
        avoid = tuple(eng.node_index[n] for n in request.avoid_nodes if n in eng.node_index)
        return Eligible(np.where(ok, cost, np.inf), te_type, avoid)

    def _metric_costs(self, name: str) -> Floats:
        """Every link's cost under the objective ``name`` (dead slots included; read-only,
        shared by the requests until the topology changes)."""
        cached: Floats | None = self.engine.cache.get(f"metric:{name}")
        if cached is None:
            cached = self.engine.cache[f"metric:{name}"] = self._metric_costs_now(name)
        return cached

    def _metric_costs_now(self, name: str) -> Floats:
        eng = self.engine
        n = eng.slots
        if name == "delay":
            delay = eng.delay[:n]
            return np.where(np.isnan(delay), eng.te[:n] * self.ms_per_te, delay)
        if name == "te":
            return eng.te[:n].copy()
        if name == "igp":
            return eng.igp[:n].copy()
        return np.ones(n)

    def _penalty_unit(self, cost: Floats) -> float:
        """The penalty per unit of SLA severity: more than every link's cost together, so any
        simple path that avoids all links out of SLA is cheaper than any that crosses one;
        times the link's severity, so fewer and milder breaches win among paths that must."""
        return 1.0 + float(cost[self.engine.present[: self.engine.slots]].sum())

    def _room(self, request: ComputePath | None = None) -> Floats:
        """Every link's headroom (as :meth:`headroom`); the plain one computed once per view."""
        share, growth = self._limits(request)
        plain = share == self.reservable_share and growth == 1.0
        if plain and self._headroom is not None and len(self._headroom) == self.engine.slots:
            return self._headroom
        capacity = self.engine.capacity[: self.engine.slots]
        load, promised = self._per_slot()
        room = np.round(capacity * share - (load * growth + promised), 6)
        if plain:
            self._headroom = room
        return room

    def _per_slot(self) -> tuple[Floats, Floats]:
        """``load_mbps`` and ``promised_mbps`` as arrays by link slot, once per view (a
        proactive request's headroom is then only arithmetic on them)."""
        if self._slot_loads is None or len(self._slot_loads[0]) != self.engine.slots:
            arrays = []
            n = self.engine.slots
            for mbps_by_key in (self.load_mbps, self.promised_mbps):
                slots, weights = self.engine.slots_of_keys(mbps_by_key)
                arrays.append(np.bincount(slots, weights, minlength=n).astype(np.float64))
            self._slot_loads = (arrays[0], arrays[1])
        return self._slot_loads

    # --- queries -------------------------------------------------------------------------

    def shortest(self, request: ComputePath) -> PathResult:
        """Dijkstra under the request's constraints; ``found=False`` with a reason if none."""
        problem = self._endpoints_problem(request)
        if problem:
            return PathResult(found=False, metric=request.metric, reason=problem)
        eng = self.engine
        source, target = eng.node_index[request.head_end], eng.node_index[request.end_point]
        potential = self._potential(request.metric, target)
        # one constrained search per TE type; the cheapest wins, preference breaks ties
        best: tuple[float, int, list[int], str, Eligible] | None = None
        for rank, te_type in enumerate(self._te_candidates(request)):
            eligible = self.link_costs(request, te_type)
            pairs = eligible.pair_costs(eng)
            matrix = eng.matrix(pairs)
            found = (
                eng.search(matrix, source, target)
                if potential is None
                else eng.guided(matrix, source, target, potential)
            )
            if found is None:
                continue
            cost = eng.path_cost(pairs, found.nodes)
            if best is None or (cost, rank) < best[:2]:
                best = (cost, rank, found.nodes, te_type, eligible)
        if best is None:
            return PathResult(
                found=False, metric=request.metric, reason=self._no_path_reason(request)
            )
        return self._result(best[2], request, best[4], te_type=best[3], only_way=True)

    def _potential(self, metric: str, target: int) -> Floats | None:
        """Every node's lower bound on its cost to ``target`` under ``metric``, for the guided
        search: from the links that are up, at their bare metric (no constraint, no penalty),
        which every request's costs are at least."""
        eng = self.engine

        def base() -> Floats:
            return np.where(eng.usable[: eng.slots], self._metric_costs(metric), np.inf)

        return eng.potential(metric, base, target)

    def _te_candidates(self, request: ComputePath) -> list[str]:
        """TE types to try, preferred first: the requested one, else those both ends support."""
        if request.te_type:
            return [request.te_type]
        return self.te_types([request.head_end, request.end_point])

    def k_shortest(self, request: ComputePath, k: int) -> list[PathResult]:
        """Up to ``k`` loopless paths, best first (Yen's algorithm)."""
        if self._endpoints_problem(request):
            return []
        eng = self.engine
        eligible = self.link_costs(request)
        matrix = eng.matrix(eligible.pair_costs(eng))
        source, target = eng.node_index[request.head_end], eng.node_index[request.end_point]
        return [
            self._result(found.nodes, request, eligible)
            for found in eng.k_shortest(matrix, source, target, k)
        ]

    def te_types(self, nodes: list[str]) -> list[str]:
        """The TE technologies every node of ``nodes`` supports, in order of preference."""
        common = set(TE_PREFERENCE)
        for node in nodes:
            common &= set(self.nodes[node].get("te_capabilities", []))
        return [te for te in TE_PREFERENCE if te in common]

    def summary(self) -> dict[str, Any]:
        """The graph as JSON: nodes with their attributes, links with theirs."""
        return {
            "digest": self.digest,
            "nodes": [{"node_id": n, **attrs} for n, attrs in self.nodes.items()],
            "links": [link.model_dump(mode="json") for link in self.links.values()],
        }

    # --- internals -----------------------------------------------------------------------

    def _endpoints_problem(self, request: ComputePath) -> str | None:
        for end in (request.head_end, request.end_point):
            if end not in self.nodes:
                return f"node {end} is not in the topology"
            if end in request.avoid_nodes:
                return f"node {end} is both an endpoint and to be avoided"
        if request.head_end == request.end_point:
            return "head_end and end_point are the same node"
        return None

    def _metric(self, name: str) -> Callable[[Link], float]:
        """A link's cost under the objective ``name``."""
        return self.delay_of if name == "delay" else _COST[name]

    def _chosen(self, nodes: list[int], eligible: Eligible) -> list[Link]:
        """The cheapest eligible parallel link between each pair of consecutive nodes."""
        eng = self.engine
        chosen: list[Link] = []
        for u, v in pairwise(nodes):
            pair = eng.pair_between(u, v)
            assert pair is not None, "a path only joins adjacent nodes"
            slot = min(eng.pair_slots[pair], key=lambda s: eligible.link_costs[s])
            chosen.append(eng.link(slot))
        return chosen

    def _result(
        self,
        indices: list[int],
        request: ComputePath,
        eligible: Eligible,
        te_type: str | None = None,
        *,
        only_way: bool = False,
    ) -> PathResult:
        nodes = [self.engine.node_ids[i] for i in indices]
        cost = self._metric(request.metric)
        chosen = self._chosen(indices, eligible)
        te_types = self.te_types(nodes)
        bandwidth: dict[str, Any] = {}
        if request.min_bandwidth_mbps is not None:
            bandwidth["min_headroom_mbps"] = min(self.headroom(link, request) for link in chosen)
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
        share, growth = self._limits(request)
        if request.min_bandwidth_mbps is not None or request.max_load_pct is not None:
            scaled = f", loads counted at {growth:g}x what links carry now" if growth > 1 else ""
            parts.append(
                f"with at least {request.min_bandwidth_mbps or 0:g} Mbps of headroom "
                f"(reservable {share * 100:g} % of capacity{scaled})"
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
        if request.min_bandwidth_mbps is None and request.max_load_pct is None:
            return ""
        unbounded = self.shortest(
            request.model_copy(update={"min_bandwidth_mbps": None, "max_load_pct": None})
        )
        if not unbounded.found:
            return ""
        room, tightest = min(
            (self.headroom(self.links[name], request), name) for name in unbounded.links
        )
        return (
            f" — bandwidth is the constraint: {' → '.join(unbounded.path)} would do"
            f" but has {room:g} Mbps of headroom on {tightest}"
        )


_COST: dict[str, Callable[[Link], float]] = {
    "te": lambda link: link.te_metric,
    "igp": lambda link: link.igp_metric,
    "hops": lambda link: 1.0,
}
"""Objectives other than delay, which needs the graph (a link's delay may be estimated)."""

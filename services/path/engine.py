"""The topology as arrays, kept up to date in place, and shortest paths over it in C.

Path computation used to run networkx's Dijkstra with a Python weight function: on a
10,000-node, 60,000-link network that took about 130 ms a request, and rebuilding the graph
on every topology change about 250 ms (``docs/benchmarks.md``, "Path computation"). Here:

- every link has a slot in flat numpy arrays (ends, metrics, capacity, status, SRLGs), and
  every node pair that has links one *pair*: the search runs on pairs, a pair costing its
  cheapest eligible link (parallel links stay separate, as the constraints need);
- a request turns its constraints into one cost per link (``inf`` where ineligible: see
  :meth:`services.path.graph.KnowledgeGraph.link_costs`, the one implementation of them),
  then into one cost per pair and per arc of a CSR matrix whose structure is kept: nothing
  is copied but that vector of floats;
- the search is scipy's C Dijkstra (``scipy.sparse.csgraph``) on costs reduced by a lower
  bound to the target from a few landmarks (A* with ALT bounds, :meth:`TeGraph.guided`), up
  to a growing ``limit``: it settles a narrow band along the way instead of the whole graph.
  Without a bound (no landmark reaches the target) it runs from both ends with a growing
  radius (:meth:`TeGraph.search`). k shortest paths are Yen's algorithm whose spur paths come
  from the reverse shortest-path tree when it proves them optimal, with a search guided by
  that tree's distances only when it cannot;
- a topology change is applied as a diff (:meth:`TeGraph.update`): a changed link rewrites
  its slot, an added or removed one its slot and the pair it belongs to; the CSR structure is
  rebuilt (a few ms) only when a node pair gains or loses its first link.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from shared.southbound import Link, Node, Topology, link_key

DEFAULT_MS_PER_TE = 0.1
"""Delay per TE-metric unit when no link's delay is known (TE metric = delay x 10)."""

TE_PREFERENCE: tuple[str, ...] = ("sr-mpls", "srv6", "rsvp-te")
"""Which tunnel technology to prefer when every node on a path supports several."""

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]

_UNREACHED = -9999
"""scipy's predecessor for a node a search did not reach (or the search's own source)."""


def pair_key(link: Link) -> str:
    """The link's two ends as one direction-free name (``pe1-pe2``, parallel links alike)."""
    return "-".join(sorted((link.source, link.destination)))


def node_attributes(node: Node) -> dict[str, Any]:
    """What the graph keeps of a node (its ``summary`` and TE capabilities)."""
    return {
        "loopback": node.loopback,
        "prefix_sid": node.prefix_sid,
        "te_capabilities": list(node.te_capabilities),
        "role": node.role,
    }


def _bare_node() -> dict[str, Any]:
    """A node CNC lists no entry for, only links to: no SID, no TE capability."""
    return {"loopback": None, "prefix_sid": None, "te_capabilities": []}


def topology_nodes(topology: Topology) -> dict[str, dict[str, Any]]:
    """Every node of ``topology`` with its attributes: listed nodes, then bare link ends."""
    nodes = {node.node_id: node_attributes(node) for node in topology.nodes}
    for link in topology.links:
        for end in (link.source, link.destination):
            if end not in nodes:
                nodes[end] = _bare_node()
    return nodes


@dataclass(frozen=True)
class Found:
    """A path the search found: its cost and its nodes, as indices."""

    cost: float
    nodes: list[int]


class TeGraph:
    """Nodes, links and node pairs as arrays; a CSR matrix of the pairs for the search.

    Link slots and node indices are never reused while the graph lives: a removed link's slot
    is dead (it costs ``inf``), a removed node keeps its index with no link and no TE
    capability. A full :meth:`build` compacts both.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        """Present nodes (by id) with their attributes, in topology order."""
        self.node_ids: list[str] = []
        self.node_index: dict[str, int] = {}
        self.links: dict[str, Link] = {}
        """Present links by id, in topology order."""
        self.slot_of: dict[str, int] = {}
        self.link_at: list[Link | None] = []
        """Slot → the link in it (None once removed)."""
        # per link slot
        self.src = np.zeros(0, np.int64)
        self.dst = np.zeros(0, np.int64)
        self.pair_of = np.zeros(0, np.int64)
        self.te = np.zeros(0, np.float64)
        self.igp = np.zeros(0, np.float64)
        self.delay = np.zeros(0, np.float64)
        """NaN where CNC measures no delay."""
        self.capacity = np.zeros(0, np.float64)
        self.usable = np.zeros(0, np.bool_)
        """Present and operationally up."""
        self.present = np.zeros(0, np.bool_)
        self.by_key: defaultdict[str, set[int]] = defaultdict(set)
        """``link_key`` of the link id → slots (``pe1-pe2#2`` names one parallel link)."""
        self.by_pair: defaultdict[str, set[int]] = defaultdict(set)
        """The ends' names (``pe1-pe2``) → slots: avoiding it avoids every parallel link."""
        self.by_srlg: defaultdict[int, set[int]] = defaultdict(set)
        # per node pair (the search's undirected edges)
        self.pair_index: dict[tuple[int, int], int] = {}
        self.pair_ends: list[tuple[int, int]] = []
        self.pair_slots: list[list[int]] = []
        self.node_caps: list[frozenset[str]] = []
        """Per node index: the TE types it runs."""
        self._caps: dict[str, Bools] = {}
        """Per TE type, per node: whether it runs it (built on demand, dropped on change)."""
        self._pairs: tuple[Ints, Ints] | None = None
        self._te_pairs: dict[str, Ints] = {}
        """Per TE type, the pairs an end of which does not run it (on demand, dropped on
        change)."""
        self._structure: tuple[NDArray[np.int32], NDArray[np.int32], Ints, Ints] | None = None
        """CSR ``indptr``, ``indices``, and per arc its pair and its tail node."""
        self._reduce: tuple[Ints, Ints, Ints, Ints, Ints] | None = None
        """See :meth:`_pair_slots`."""
        self.updates = 0
        """Topology changes applied in place since the build."""
        self._landmarks: dict[str, tuple[Floats, bool]] = {}
        self.cache: dict[str, Any] = {}
        """Values derived from the links (the delay rate, costs per objective): dropped on
        every change."""
        """Per objective: distances from a few far-apart nodes, for the search's first radius."""

    # --- building and updating ----------------------------------------------------------

    @classmethod
    def build(cls, topology: Topology) -> TeGraph:
        graph = cls()
        for node_id, attrs in topology_nodes(topology).items():
            graph._add_node(node_id, attrs)
        graph._add_links(topology.links)
        return graph

    def update(self, topology: Topology) -> bool:
        """Apply the difference between the graph and ``topology`` in place; True if any."""
        changed = False
        nodes = topology_nodes(topology)
        for node_id in [n for n in self.nodes if n not in nodes]:
            self._remove_node(node_id)
            changed = True
        for node_id, attrs in nodes.items():
            if self.nodes.get(node_id) != attrs:
                self._add_node(node_id, attrs)
                changed = True
        links = {link.link_id: link for link in topology.links}
        for link_id in [name for name in self.links if name not in links]:
            self._remove_link(link_id)
            changed = True
        added = [link for name, link in links.items() if name not in self.links]
        self._grow(len(added))
        for link_id, link in links.items():
            old = self.links.get(link_id)
            if old is None:
                self._add_link(link)
                changed = True
            elif old != link:
                if (old.source, old.destination) == (link.source, link.destination):
                    self._set_link(self.slot_of[link_id], link)
                else:
                    self._remove_link(link_id)
                    self._add_link(link)
                changed = True
        if changed:
            self.nodes = dict(nodes)
            self.links = links
            self.updates += 1
            self._landmarks = {}
            self.cache = {}
        return changed

    def _add_node(self, node_id: str, attrs: dict[str, Any]) -> None:
        if node_id not in self.node_index:
            self.node_index[node_id] = len(self.node_ids)
            self.node_ids.append(node_id)
            self.node_caps.append(frozenset())
            self._structure = None
        self.nodes[node_id] = attrs
        self.node_caps[self.node_index[node_id]] = frozenset(attrs.get("te_capabilities", []))
        self._caps, self._te_pairs = {}, {}

    def _remove_node(self, node_id: str) -> None:
        self.node_caps[self.node_index[node_id]] = frozenset()
        self._caps, self._te_pairs = {}, {}
        del self.nodes[node_id]

    def _grow(self, extra: int) -> None:
        """Room for ``extra`` more link slots (amortised: arrays grow by half at least)."""
        need = len(self.link_at) + extra
        if need <= len(self.src):
            return
        size = max(need, len(self.src) * 3 // 2, 16)
        for name in ("src", "dst", "pair_of", "te", "igp", "delay", "capacity"):
            old = getattr(self, name)
            new = np.zeros(size, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        for name in ("usable", "present"):
            old = getattr(self, name)
            new = np.zeros(size, np.bool_)
            new[: len(old)] = old
            setattr(self, name, new)

    def _add_links(self, links: Sequence[Link]) -> None:
        """Append ``links`` in one go: the arrays are filled whole, not slot by slot."""
        first = len(self.link_at)
        self._grow(len(links))
        end = first + len(links)
        index = self.node_index
        tails = [index[link.source] for link in links]
        heads = [index[link.destination] for link in links]
        self.src[first:end] = tails
        self.dst[first:end] = heads
        self.te[first:end] = [link.te_metric for link in links]
        self.igp[first:end] = [link.igp_metric for link in links]
        self.delay[first:end] = [
            np.nan if link.delay_ms is None else link.delay_ms for link in links
        ]
        self.capacity[first:end] = [link.capacity_mbps for link in links]
        self.present[first:end] = True
        self.usable[first:end] = [link.oper_status.lower() == "up" for link in links]
        pair_of: list[int] = []
        for slot, (link, u, v) in enumerate(zip(links, tails, heads, strict=True), start=first):
            self.link_at.append(link)
            self.slot_of[link.link_id] = slot
            self.links[link.link_id] = link
            ends = (u, v) if u < v else (v, u)
            pair = self.pair_index.get(ends)
            if pair is None:
                pair = self.pair_index[ends] = len(self.pair_slots)
                self.pair_slots.append([])
                self.pair_ends.append(ends)
            self.pair_slots[pair].append(slot)
            pair_of.append(pair)
            self.by_key[link_key(link.link_id)].add(slot)
            self.by_pair[pair_key(link)].add(slot)
            for srlg in link.srlgs:
                self.by_srlg[srlg].add(slot)
        self.pair_of[first:end] = pair_of
        self._structure = self._pairs = None
        self._te_pairs = {}
        self._reduce = None

    def _add_link(self, link: Link) -> None:
        slot = len(self.link_at)
        self.link_at.append(link)
        self.slot_of[link.link_id] = slot
        self.links[link.link_id] = link
        u, v = self.node_index[link.source], self.node_index[link.destination]
        self.src[slot], self.dst[slot] = u, v
        ends = (min(u, v), max(u, v))
        pair = self.pair_index.get(ends)
        if pair is None:
            pair = self.pair_index[ends] = len(self.pair_slots)
            self.pair_slots.append([])
            self.pair_ends.append(ends)
            self._structure = None
            self._pairs = None
            self._te_pairs = {}
        self.pair_slots[pair].append(slot)
        self.pair_of[slot] = pair
        self.by_key[link_key(link.link_id)].add(slot)
        self.by_pair[pair_key(link)].add(slot)
        self._set_link(slot, link)
        self._reduce = None

    def _set_link(self, slot: int, link: Link) -> None:
        old = self.link_at[slot]
        if old is not None:
            for srlg in old.srlgs:
                self.by_srlg[srlg].discard(slot)
        self.link_at[slot] = link
        self.links[link.link_id] = link
        self.te[slot] = link.te_metric
        self.igp[slot] = link.igp_metric
        self.delay[slot] = np.nan if link.delay_ms is None else link.delay_ms
        self.capacity[slot] = link.capacity_mbps
        self.present[slot] = True
        self.usable[slot] = link.oper_status.lower() == "up"
        for srlg in link.srlgs:
            self.by_srlg[srlg].add(slot)

    def _remove_link(self, link_id: str) -> None:
        slot = self.slot_of.pop(link_id)
        link = self.link_at[slot]
        assert link is not None
        for srlg in link.srlgs:
            self.by_srlg[srlg].discard(slot)
        self.by_key[link_key(link_id)].discard(slot)
        self.by_pair[pair_key(link)].discard(slot)
        self.pair_slots[int(self.pair_of[slot])].remove(slot)
        self.link_at[slot] = None
        self.links.pop(link_id, None)
        self.present[slot] = False
        self.usable[slot] = False
        self._reduce = None

    # --- lookups --------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """How many link slots are in use (present or dead)."""
        return len(self.link_at)

    def link(self, slot: int) -> Link:
        found = self.link_at[slot]
        assert found is not None, f"link slot {slot} is empty"
        return found

    def pair_between(self, u: int, v: int) -> int | None:
        return self.pair_index.get((min(u, v), max(u, v)))

    def ms_per_te(self) -> float:
        """The network's delay per TE-metric unit, from the links whose delay CNC measures."""
        if "ms_per_te" not in self.cache:
            self.cache["ms_per_te"] = self._ms_per_te()
        rate: float = self.cache["ms_per_te"]
        return rate

    def _ms_per_te(self) -> float:
        n = self.slots
        measured = self.present[:n] & ~np.isnan(self.delay[:n]) & (self.te[:n] > 0)
        total_te = float(self.te[:n][measured].sum())
        if not total_te:
            return DEFAULT_MS_PER_TE
        return float(self.delay[:n][measured].sum()) / total_te

    def capable(self, te_type: str) -> Bools:
        """Per node: whether it runs ``te_type``."""
        found = self._caps.get(te_type)
        if found is None:
            found = self._caps[te_type] = np.fromiter(
                (te_type in caps for caps in self.node_caps), np.bool_, len(self.node_caps)
            )
        return found

    def pair_nodes(self) -> tuple[Ints, Ints]:
        """Each pair's two ends (lower index first)."""
        if self._pairs is None:
            ends = np.array(self.pair_ends, np.int64).reshape(-1, 2)
            self._pairs = (ends[:, 0].copy(), ends[:, 1].copy())
        return self._pairs

    def slots_of_keys(self, values: Mapping[str, float]) -> tuple[list[int], list[float]]:
        """``values`` by ``link_key`` spread on the slots of those keys (unknown keys
        dropped): a slot list and a value list, for ``np.bincount``."""
        single: dict[str, int] | None = self.cache.get("slot_by_key")
        if single is None:  # most keys name one slot: one dict lookup each
            single = {k: next(iter(v)) for k, v in self.by_key.items() if len(v) == 1}
            self.cache["slot_by_key"] = single
        slots: list[int] = []
        weights: list[float] = []
        for key, value in values.items():
            slot = single.get(key)
            if slot is not None:
                slots.append(slot)
                weights.append(value)
            else:
                for slot in self.by_key.get(key, ()):
                    slots.append(slot)
                    weights.append(value)
        return slots, weights

    def slots_named(self, names: Iterable[str]) -> set[int]:
        """Slots of links a request names: by link key, or by their ends (every parallel)."""
        found: set[int] = set()
        for name in names:
            key = link_key(name)
            found |= self.by_key.get(key, set()) | self.by_pair.get(key, set())
        return found

    # --- from link costs to the search's matrix -------------------------------------------

    def te_barred(self, te_type: str) -> Ints:
        """The pairs an end of which does not run ``te_type`` (as indices: few, and cheaper
        to set to ``inf`` than a mask over every pair)."""
        found = self._te_pairs.get(te_type)
        if found is None:
            capable = self.capable(te_type)
            u, v = self.pair_nodes()
            found = self._te_pairs[te_type] = np.flatnonzero(~(capable[u] & capable[v]))
        return found

    def pair_costs(
        self, link_costs: Floats, te_type: str | None = None, avoid_nodes: Iterable[int] = ()
    ) -> Floats:
        """Each pair's cheapest link: ``inf`` when none is eligible, when an end does not run
        ``te_type`` (a tunnel is one technology end to end) or is to be avoided.

        Most pairs have one link: their cost is that link's, one gather; only the pairs with
        parallel links take a minimum (``reduceat`` over those slots alone).
        """
        single, empty, order, starts, multi = self._pair_slots()
        costs = np.take(link_costs, single)
        costs[empty] = np.inf
        if len(multi):
            costs[multi] = np.minimum.reduceat(link_costs[order], starts)
        if te_type is not None:
            costs[self.te_barred(te_type)] = np.inf
        indptr, _, arc_pair, _ = self._csr()
        for node in avoid_nodes:
            costs[arc_pair[indptr[node] : indptr[node + 1]]] = np.inf
        return costs

    def _pair_slots(self) -> tuple[Ints, Ints, Ints, Ints, Ints]:
        """Per pair one live slot (0 when it has none), the pairs with none (they cost
        ``inf``); for the pairs with parallel links, their live slots grouped by pair, where
        each group starts, and those pairs."""
        if self._reduce is None:
            live = np.flatnonzero(self.present[: self.slots])
            order = live[np.argsort(self.pair_of[live], kind="stable")]
            pairs = self.pair_of[order]
            first = np.flatnonzero(np.r_[True, pairs[1:] != pairs[:-1]]) if len(pairs) else pairs
            single = np.zeros(len(self.pair_slots), np.int64)
            single[pairs[first]] = order[first]
            empty = np.ones(len(self.pair_slots), np.bool_)
            empty[pairs[first]] = False
            sizes = np.diff(np.r_[first, len(pairs)])
            parallel = np.repeat(sizes > 1, sizes)
            grouped, grouped_pairs = order[parallel], pairs[parallel]
            starts = (
                np.flatnonzero(np.r_[True, grouped_pairs[1:] != grouped_pairs[:-1]])
                if len(grouped)
                else grouped
            )
            self._reduce = (single, np.flatnonzero(empty), grouped, starts, grouped_pairs[starts])
        return self._reduce

    def matrix(self, pair_costs: Floats) -> csr_matrix:
        """The pairs as a symmetric CSR matrix of arc costs (the structure is kept)."""
        indptr, indices, arc_pair, _ = self._csr()
        n = len(self.node_ids)
        return csr_matrix((np.take(pair_costs, arc_pair), indices, indptr), shape=(n, n))

    def _csr(self) -> tuple[NDArray[np.int32], NDArray[np.int32], Ints, Ints]:
        if self._structure is None:
            pairs = np.arange(len(self.pair_slots))
            u, v = self.pair_nodes()
            tails = np.concatenate([u, v])
            heads = np.concatenate([v, u])
            arc_pair = np.concatenate([pairs, pairs])
            order = np.lexsort((heads, tails))
            tails, heads, arc_pair = tails[order], heads[order], arc_pair[order]
            counts = np.bincount(tails, minlength=len(self.node_ids))
            indptr = np.zeros(len(self.node_ids) + 1, np.int32)
            np.cumsum(counts, out=indptr[1:])
            self._structure = (indptr, heads.astype(np.int32), arc_pair, tails)
        return self._structure

    def _arc_heads(self) -> tuple[Ints, Ints]:
        """Each arc's head as a gather index, and each node's arc count (its tail repeated)."""
        found: tuple[Ints, Ints] | None = self.cache.get("arc_heads")
        if found is None:
            indptr, indices, _, _ = self._csr()
            found = self.cache["arc_heads"] = (indices.astype(np.int64), np.diff(indptr))
        return found

    def _arcs_from(self, nodes: Ints) -> Ints:
        """Every arc leaving ``nodes``, as CSR positions."""
        indptr = self._csr()[0]
        starts = indptr[nodes].astype(np.int64)
        counts = indptr[nodes + 1] - starts
        offsets = np.cumsum(counts) - counts
        return np.arange(int(counts.sum())) + np.repeat(starts - offsets, counts)

    # --- searches -------------------------------------------------------------------------

    def potential(self, key: str, base: Callable[[], Floats], target: int) -> Floats | None:
        """Per node, a lower bound on its cost to ``target`` under a request whose costs are
        ``base``'s or more (constraints only remove links or add penalties); None when no
        landmark tells anything.

        ALT bounds: the distances from :data:`LANDMARKS` far-apart nodes, computed once per
        objective ``key`` on the link costs ``base()`` and dropped whenever the topology
        changes (:meth:`update`), bound it by the triangle inequality: ``|d(L, v) - d(L, t)|``
        for each landmark L. The bound is *consistent* (it falls by at most an arc's cost
        along the arc), which is what lets :meth:`guided` search on it and still find the
        cheapest path. A node a landmark does not reach gets nothing from that landmark.
        """
        found = self._landmarks.get(key)
        if found is None:
            table = _landmarks(self.matrix(self.pair_costs(base())), LANDMARKS)
            found = self._landmarks[key] = (table, bool(np.isfinite(table).all()))
        table, everywhere = found
        if not len(table) or not np.isfinite(table[:, target]).any():
            return None
        gaps = np.abs(table - table[:, target : target + 1])
        if not everywhere:  # a part of the network some landmark does not reach
            gaps[~np.isfinite(gaps)] = 0.0
        bound: Floats = gaps.max(axis=0)
        return bound

    def guided(
        self, matrix: csr_matrix, source: int, target: int, potential: Floats
    ) -> Found | None:
        """The cheapest path from ``source`` to ``target``, or None: A* with ``potential``
        (see :meth:`potential`) as its heuristic.

        A* with a consistent potential p is Dijkstra on the reduced costs
        ``w(u, v) - p(u) + p(v)`` (never negative), where a path's reduced cost is its cost
        minus ``p(source)``: the nodes it settles are those whose cost from the source plus
        their bound to the target stays under the path's, a narrow band around the way
        instead of the two balls of :meth:`search`. scipy's Dijkstra has no early exit at a
        target, so it runs up to a reduced-cost ``limit``: the slack over the bound, guessed
        from the bound and doubled until the target is reached, or until the settled region
        has no arc leaving it (the target is out of reach).
        """
        indptr, indices, _, _ = self._csr()
        heads, degrees = self._arc_heads()
        reduced = matrix.data + np.take(potential, heads)
        reduced -= np.repeat(potential, degrees)  # the tails: arcs are sorted by tail
        np.maximum(reduced, 0.0, out=reduced)  # rounding only: the potential is consistent
        n = len(self.node_ids)
        guided = csr_matrix((reduced, indices, indptr), shape=(n, n))
        limit = max(float(potential[source]) * GUIDED_SLACK, _typical(matrix.data))
        while True:
            dist, pred = dijkstra(
                guided, directed=True, indices=source, return_predecessors=True, limit=limit
            )
            if np.isfinite(dist[target]):
                cost = float(dist[target]) + float(potential[source] - potential[target])
                return Found(cost, _walk(pred, target)[::-1])
            arcs = self._arcs_from(np.flatnonzero(np.isfinite(dist)))
            if not _leaves(reduced[arcs], dist[indices[arcs]]):
                return None  # the source's component, all of it, without the target
            limit = max(limit * 2.0, np.nextafter(limit, np.inf))

    def search(self, matrix: csr_matrix, source: int, target: int) -> Found | None:
        """The cheapest path from ``source`` to ``target`` over a symmetric ``matrix``, or None.

        scipy's Dijkstra has no early exit at a target, so the search runs from both ends at
        once, each only up to a distance ``r`` (scipy's ``limit``), and looks at the arcs that
        leave the source's ball. A path of cost D <= 2r has an arc (u, v) with u within r of
        the source and v within r of the target (the last node within r of the source, and
        the next one); so when the cheapest arc-joined path costs less than 2r, it is the
        cheapest of all. Otherwise r grows (doubled, or to half that path's cost, which then
        settles it), until a ball closes on its component without meeting the other end.
        """
        _, indices, _, tails = self._csr()
        weights = matrix.data
        radius = 2.0 * _typical(weights)
        while True:
            dist, pred = dijkstra(
                matrix,
                directed=True,
                indices=[source, target],
                return_predecessors=True,
                limit=radius,
            )
            from_source, to_target = dist[0], dist[1]
            ball = np.flatnonzero(np.isfinite(from_source))
            arcs = self._arcs_from(ball)
            heads = indices[arcs]
            total = from_source[tails[arcs]] + weights[arcs] + to_target[heads]
            best = int(np.argmin(total)) if len(total) else -1
            cost = float(total[best]) if best >= 0 else np.inf
            if cost < 2.0 * radius:
                u, v = int(tails[arcs[best]]), int(heads[best])
                nodes = _walk(pred[0], u)[::-1] + _walk(pred[1], v)
                return Found(cost, nodes)
            if not _leaves(weights[arcs], from_source[heads]):
                return None  # the source's component, all of it, without the target
            ball_t = np.flatnonzero(np.isfinite(to_target))
            arcs_t = self._arcs_from(ball_t)
            if not _leaves(weights[arcs_t], to_target[indices[arcs_t]]):
                return None
            grown = 2.0 * radius
            if np.isfinite(cost):  # a path of that cost exists: half of it settles the search
                grown = min(grown, cost / 2.0 * (1.0 + 1e-9) + 1e-12)
            radius = max(grown, np.nextafter(radius, np.inf))

    def tree_to(self, matrix: csr_matrix, target: int) -> tuple[Floats, NDArray[np.int32]]:
        """Every node's distance to ``target`` and its next hop toward it."""
        dist, pred = dijkstra(matrix, directed=True, indices=target, return_predecessors=True)
        return dist, pred

    def k_shortest(self, matrix: csr_matrix, source: int, target: int, k: int) -> list[Found]:
        """Up to ``k`` loopless paths, cheapest first (Yen's algorithm).

        Each spur path (from a node of the previous path, its root's nodes and the edges the
        paths found already take out of it removed) is first read off the reverse tree of
        shortest paths to the target: the cheapest first step plus the tree's way on is a
        lower bound, and when that way crosses no removed node it is the spur path. Only when
        it does is a search run, on a copy of the arc costs with the removed ones at ``inf``.
        """
        if k <= 0:
            return []
        weights = matrix.data
        to_target, next_hop = self.tree_to(matrix, target)
        if not np.isfinite(to_target[source]):
            return []
        first = _walk(next_hop, source)
        found = [Found(self._path_cost(weights, first), first)]
        seen = {tuple(first)}
        candidates: list[tuple[float, int, list[int]]] = []
        counter = 0
        while len(found) < k:
            previous = found[-1].nodes
            for i in range(len(previous) - 1):
                spur, root = previous[i], previous[: i + 1]
                removed_next = {
                    path.nodes[i + 1]
                    for path in found
                    if len(path.nodes) > i + 1 and path.nodes[: i + 1] == root
                }
                blocked = set(root[:-1])
                tail = self._spur(matrix, to_target, next_hop, spur, target, blocked, removed_next)
                if tail is None:
                    continue
                nodes = root[:-1] + tail
                if tuple(nodes) in seen:
                    continue
                seen.add(tuple(nodes))
                counter += 1
                heapq.heappush(candidates, (self._path_cost(weights, nodes), counter, nodes))
            if not candidates:
                break
            cost, _, nodes = heapq.heappop(candidates)
            found.append(Found(cost, nodes))
        return found

    def _spur(
        self,
        matrix: csr_matrix,
        to_target: Floats,
        next_hop: NDArray[np.int32],
        spur: int,
        target: int,
        blocked: set[int],
        removed_next: set[int],
    ) -> list[int] | None:
        """The cheapest path ``spur`` → ``target`` avoiding ``blocked`` nodes and the arcs
        from ``spur`` to ``removed_next``; None if there is none."""
        indptr, indices, _, _ = self._csr()
        weights = matrix.data
        lo, hi = int(indptr[spur]), int(indptr[spur + 1])
        heads = indices[lo:hi]
        bounds = weights[lo:hi] + to_target[heads]
        for position in np.argsort(bounds, kind="stable"):
            head = int(heads[position])
            if not np.isfinite(bounds[position]):
                return None  # no first step leads anywhere near the target
            if head in blocked or head in removed_next:
                continue
            way = _walk(next_hop, head)
            if spur in way or blocked.intersection(way):
                break  # the tree's way re-enters the root: search instead
            return [spur, *way]
        else:
            return None
        cut = weights.copy()
        gone = np.fromiter(blocked, np.int64, len(blocked))
        if len(gone):
            out = self._arcs_from(gone)
            cut[out] = np.inf
            cut[_reverse_arcs(indptr, indices, out, self._csr()[3])] = np.inf
        # both directions: the search runs from the target over the same arcs, and a path
        # from the spur never comes back into it anyway
        for head in removed_next:
            arcs = lo + np.flatnonzero(heads == head)
            cut[arcs] = np.inf
            cut[_reverse_arcs(indptr, indices, arcs, self._csr()[3])] = np.inf
        n = len(self.node_ids)
        restricted = csr_matrix((cut, indices, indptr), shape=(n, n))
        # the tree's exact distances bound the restricted ones from below (arcs only went to
        # inf), so they guide the search; a node that cannot reach the target at all cannot
        # now either, and 0 keeps its arcs' reduced costs finite
        result = self.guided(restricted, spur, target, np.nan_to_num(to_target, posinf=0.0))
        return None if result is None else result.nodes

    def _path_cost(self, weights: Floats, nodes: Sequence[int]) -> float:
        """The path's cost summed from its source on, as Dijkstra adds it up."""
        indptr, indices, _, _ = self._csr()
        cost = 0.0
        for u, v in pairwise(nodes):
            lo, hi = int(indptr[u]), int(indptr[u + 1])
            position = lo + int(np.searchsorted(indices[lo:hi], v))
            cost += float(weights[position])
        return cost

    def path_cost(self, pair_costs: Floats, nodes: Sequence[int]) -> float:
        """The path's cost from per-pair costs, summed from its source on."""
        cost = 0.0
        for u, v in pairwise(nodes):
            pair = self.pair_between(u, v)
            cost += float(pair_costs[pair]) if pair is not None else np.inf
        return cost


LANDMARKS = 8
"""How many landmarks the guided search's bounds come from."""

GUIDED_SLACK = 0.05
"""The guided search's first limit, as a share of the source's bound: how much dearer than
the bound a constrained path usually is (measured on the bench's queries, ``bench/path.py``);
a path dearer than that costs one more, wider, search."""


def _landmarks(matrix: csr_matrix, count: int) -> Floats:
    """Distances from ``count`` far-apart nodes (each the farthest from those before it)."""
    n = matrix.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    rows: list[Floats] = []
    start = int(np.argmax(np.diff(matrix.indptr))) if n else 0
    nearest = dijkstra(matrix, directed=True, indices=start)
    for _ in range(count):
        reachable = np.isfinite(nearest)
        if not reachable.any():
            break
        landmark = int(np.argmax(np.where(reachable, nearest, -1.0)))
        row = dijkstra(matrix, directed=True, indices=landmark)
        rows.append(row)
        nearest = np.minimum(nearest, row) if len(rows) > 1 else row
    return np.array(rows) if rows else np.zeros((0, n))


def _typical(weights: Floats) -> float:
    """A typical arc's cost (the median of a sample): the smallest step worth searching."""
    sample = weights[:: max(1, len(weights) // 512)]
    finite = sample[np.isfinite(sample)]
    return max(float(np.median(finite)) if len(finite) else 1.0, 1e-9)


def _walk(pred: NDArray[np.int32], node: int) -> list[int]:
    """``node`` and its predecessors, in that order, up to the search's source."""
    way = [node]
    while (node := int(pred[node])) != _UNREACHED:
        way.append(node)
    return way


def _leaves(weights: Floats, reached_heads: Floats) -> bool:
    """Whether any usable arc leaves a ball for a node the ball does not hold."""
    return bool(np.any(np.isfinite(weights) & ~np.isfinite(reached_heads)))


def _reverse_arcs(
    indptr: NDArray[np.int32], indices: NDArray[np.int32], arcs: Ints, tails: Ints
) -> Ints:
    """The arc v → u for each arc u → v (CSR rows are sorted by head)."""
    heads = indices[arcs].astype(np.int64)
    back = np.empty(len(arcs), np.int64)
    for i, (u, v) in enumerate(zip(tails[arcs], heads, strict=True)):
        lo, hi = int(indptr[v]), int(indptr[v + 1])
        back[i] = lo + int(np.searchsorted(indices[lo:hi], u))
    return back

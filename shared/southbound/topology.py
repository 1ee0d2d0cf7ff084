"""CNC's ``ietf-network-state`` topology folded into CXM's, and the index over it.

CNC lists each direction of a link on its own, with router-ids and SIDs where CXM speaks node
ids; :func:`fold_topology` makes one :class:`Link` of the two directions and one :class:`Node`
of each node's attributes. :class:`TopologyIndex` then answers the questions every other read
asks of it: which node an address or label names, which link a hop crosses, and the IGP
shortest path a service with no policy follows.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.southbound.http import as_float
from shared.southbound.models import (
    DEFAULT_CAPACITY_MBPS,
    DEFAULT_IGP_METRIC,
    DEFAULT_SRGB_BASE,
    Link,
    LinkInterface,
    Node,
    Topology,
)


@functools.lru_cache(maxsize=1 << 17)
def link_key(link: str) -> str:
    """A link's name independent of direction: ``pe2-pe1`` and ``pe1-pe2`` are one link, and
    so are ``pe2-pe1#2`` and ``pe1-pe2#2`` (the second parallel link).

    Memoised: every service's path is keyed on every read of the services (22,000 names per
    request on a 60,000-link network), and a network's link names are few enough to keep; the
    bound only stops names that are not links (a request's typo) from growing it for ever."""
    base, sep, nth = link.partition("#")
    ends = base.split("-")
    key = "-".join(sorted(ends)) if len(ends) == 2 else base
    return f"{key}{sep}{nth}"


_L3_NODE = "ietf-l3-unicast-topology-state:l3-node-attributes"
_L3_LINK = "ietf-l3-unicast-topology-state:l3-link-attributes"
_SR_MPLS = "ietf-sr-mpls-topology-state:sr-mpls"
_PREFIX_SID = "ietf-sr-mpls-topology-state:prefix-sid"
_TE_LINK = "cisco-crosswork-l3-te-topology:l3-link-attributes"
_OPER = "cisco-crosswork-l3-te-topology:oper-status"


def _fold_node(raw: dict[str, Any]) -> Node:
    attrs = raw.get(_L3_NODE) or {}
    router_ids = [str(r) for r in attrs.get("router-id") or []]
    srgb = (raw.get(_SR_MPLS) or {}).get("srgb") or []
    lower = int(srgb[0].get("lower-bound", DEFAULT_SRGB_BASE)) if srgb else DEFAULT_SRGB_BASE
    with_sid = [p for p in attrs.get("prefix") or [] if isinstance(p.get(_PREFIX_SID), dict)]
    # The node SID is the algorithm-0 SID of the prefix that is the router-id (else the first).
    algo0 = [p for p in with_sid if int(p[_PREFIX_SID].get("algorithm", 0)) == 0] or with_sid
    chosen = next(
        (p for p in algo0 if str(p.get("prefix", "")).split("/")[0] in router_ids),
        algo0[0] if algo0 else None,
    )
    prefix_sid: int | None = None
    if chosen is not None:
        sid = chosen[_PREFIX_SID]
        start = int(sid.get("start-sid", 0))
        prefix_sid = start if sid.get("value-type") == "absolute" else lower + start
    srv6 = raw.get("cisco-crosswork-srv6-topology-state:srv6-node-sid") or []
    srv6_algo0 = [s for s in srv6 if int(s.get("algorithm", 0)) == 0] or srv6
    srv6_sid = str(srv6_algo0[0]["sid"]) if srv6_algo0 and srv6_algo0[0].get("sid") else None
    ipv6 = raw.get("cisco-crosswork-l3-te-topology:ipv6-router-id") or []
    rsvp = (raw.get("cisco-crosswork-l3-te-topology:rsvp-te") or {}).get("enabled") is True
    caps = [
        cap
        for cap, has in (
            ("sr-mpls", prefix_sid is not None),
            ("srv6", bool(srv6_sid)),
            ("rsvp-te", rsvp),
        )
        if has
    ]
    return Node(
        node_id=str(raw["node-id"]),
        loopback=router_ids[0] if router_ids else None,
        ipv6_router_id=str(ipv6[0]) if ipv6 else None,
        prefix_sid=prefix_sid,
        srv6_sid=srv6_sid,
        te_capabilities=caps,
        role=None,
    )


@dataclass
class _Direction:
    raw: dict[str, Any]
    source: str
    source_tp: str | None
    destination: str
    dest_tp: str | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> _Direction:
        src = raw.get("source") or {}
        dst = raw.get("destination") or {}
        return cls(
            raw,
            str(src.get("source-node")),
            src.get("source-tp"),
            str(dst.get("dest-node")),
            dst.get("dest-tp"),
        )

    def ends(self) -> frozenset[tuple[str, str | None]]:
        return frozenset({(self.source, self.source_tp), (self.destination, self.dest_tp)})


def _fold_link(name: str, directions: list[_Direction]) -> Link:
    """One CXM link from its directions, each attribute the worse of the two."""
    igp: list[float] = []
    te: list[float] = []
    kbps: list[float] = []
    srlgs: set[int] = set()
    down = False
    for d in directions:
        l3 = d.raw.get(_L3_LINK) or {}
        te_attrs = l3.get(_TE_LINK) or {}
        if (m1 := as_float(l3.get("metric1"))) is not None:
            igp.append(m1)
        if (m2 := as_float(l3.get("metric2"))) is not None:
            te.append(m2)
        if (bw := as_float(te_attrs.get("max-bandwidth-kbps"))) is not None:
            kbps.append(bw)
        srlgs.update(int(s) for s in te_attrs.get("srlg") or [])
        status = l3.get(_OPER) or d.raw.get(_OPER)
        down = down or str(status).lower() == "down"
    igp_metric = max(igp) if igp else DEFAULT_IGP_METRIC
    first = directions[0]
    return Link(
        link_id=name,
        source=first.source,
        destination=first.destination,
        igp_metric=igp_metric,
        te_metric=max(te) if te else igp_metric,
        capacity_mbps=min(kbps) / 1000 if kbps else DEFAULT_CAPACITY_MBPS,
        srlgs=sorted(srlgs),
        oper_status="down" if down else "up",
        interfaces=[
            LinkInterface(
                cnc_link_id=str(d.raw.get("link-id")),
                source=d.source,
                source_tp=d.source_tp,
                destination=d.destination,
                dest_tp=d.dest_tp,
            )
            for d in directions
        ],
    )


def fold_topology(nodes: Iterable[dict[str, Any]], links: Iterable[dict[str, Any]]) -> Topology:
    """CNC's ``ietf-network-state`` nodes and directional links as CXM's :class:`Topology`.

    The two directions between the same nodes over the same interfaces are one link named
    ``<source>-<dest>`` after the first listed; another parallel link is ``a-b#2``. Delay is
    not in CNC's topology: :meth:`CncClient.topology` fills it from performance metrics.
    """
    folded_nodes: dict[str, Node] = {}
    for raw in nodes:
        if raw.get("node-id") is not None and str(raw["node-id"]) not in folded_nodes:
            node = _fold_node(raw)
            folded_nodes[node.node_id] = node
    groups: list[list[_Direction]] = []
    waiting: dict[frozenset[tuple[str, str | None]], list[int]] = {}
    for raw in links:
        d = _Direction.of(raw)
        if d.source == d.destination:
            continue
        key = d.ends()
        match = next(
            (
                i
                for i in waiting.get(key, [])
                if len(groups[i]) == 1
                and groups[i][0].source == d.destination
                and groups[i][0].destination == d.source
            ),
            None,
        )
        if match is None:
            waiting.setdefault(key, []).append(len(groups))
            groups.append([d])
        else:
            groups[match].append(d)
    names: dict[frozenset[str], tuple[str, int]] = {}
    folded_links: list[Link] = []
    for directions in groups:
        first = directions[0]
        pair = frozenset({first.source, first.destination})
        base, count = names.get(pair, (f"{first.source}-{first.destination}", 0))
        names[pair] = (base, count + 1)
        name = base if count == 0 else f"{base}#{count + 1}"
        folded_links.append(_fold_link(name, directions))
    return Topology(nodes=list(folded_nodes.values()), links=folded_links)


@dataclass
class TopologyIndex:
    """Node ids by every address CNC may name a node with, and the links between node pairs."""

    topology: Topology
    nodes: dict[str, Node] = field(default_factory=dict)
    by_address: dict[str, str] = field(default_factory=dict)
    by_label: dict[int, str] = field(default_factory=dict)
    between: dict[frozenset[str], list[Link]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.topology.nodes:
            self.nodes[node.node_id] = node
            for address in (node.loopback, node.ipv6_router_id, node.srv6_sid):
                if address:
                    self.by_address[address] = node.node_id
            if node.prefix_sid is not None:
                self.by_label[node.prefix_sid] = node.node_id
        for link in self.topology.links:
            self.between.setdefault(frozenset({link.source, link.destination}), []).append(link)

    def node_of(self, name: Any) -> str | None:
        """The node id a node id, router-id or SRv6 SID names (None when unknown)."""
        if name is None:
            return None
        text = str(name)
        if text in self.nodes:
            return text
        return self.by_address.get(text)

    def hop_node(self, hop: dict[str, Any]) -> str | None:
        """A policy hop's node: by label (prefix SID), else by address (router-id)."""
        label = hop.get("label")
        if label is not None:
            try:
                found = self.by_label.get(int(label))
            except (TypeError, ValueError):
                found = None
            if found is not None:
                return found
        for key in ("local-ip-addr", "ip-address", "remote-ip-addr"):
            found = self.node_of(hop.get(key))
            if found is not None:
                return found
        return None

    def link_between(self, a: str, b: str) -> Link | None:
        """The link a hop from ``a`` to ``b`` crosses: the lowest-metric up one of parallels."""
        candidates = self.between.get(frozenset({a, b}), [])
        up = [c for c in candidates if c.oper_status != "down"] or candidates
        return min(up, key=lambda c: (c.igp_metric, c.link_id)) if up else None

    def igp_path(self, source: str, target: str) -> list[str] | None:
        """IGP shortest path (metric1) over up links as node ids; equal costs are broken by
        the lowest node-id sequence, so every read picks the same path."""
        if source == target:
            return [source]
        adjacency: dict[str, list[tuple[str, float]]] = {}
        for link in self.topology.links:
            if link.oper_status == "down":
                continue
            adjacency.setdefault(link.source, []).append((link.destination, link.igp_metric))
            adjacency.setdefault(link.destination, []).append((link.source, link.igp_metric))
        heap: list[tuple[float, tuple[str, ...]]] = [(0.0, (source,))]
        done: set[str] = set()
        while heap:
            cost, path = heapq.heappop(heap)
            node = path[-1]
            if node in done:
                continue
            done.add(node)
            if node == target:
                return list(path)
            for neighbour, metric in adjacency.get(node, []):
                if neighbour not in done:
                    heapq.heappush(heap, (cost + metric, (*path, neighbour)))
        return None

    def links_of(self, hops: Sequence[str]) -> list[str]:
        """The links a node sequence crosses; non-adjacent hops (loose, as a node SID is)
        follow the IGP shortest path between them."""
        out: list[str] = []
        for a, b in itertools.pairwise(hops):
            link = self.link_between(a, b)
            if link is not None:
                out.append(link.link_id)
                continue
            segment = self.igp_path(a, b) or []
            for x, y in itertools.pairwise(segment):
                hop_link = self.link_between(x, y)
                if hop_link is not None:
                    out.append(hop_link.link_id)
        return out

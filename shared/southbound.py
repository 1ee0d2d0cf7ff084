"""Southbound REST clients for Cisco Crosswork Network Controller 7.x (CNC) and Cisco Provider
Connectivity Assurance (PCA, formerly Accedian Skylight).

Agents reach the network only through these clients. Every path, body, field name, login and
failure answer used here is one Cisco documents for CNC 7.x and PCA (docs/southbound.md is the
contract, with the sources behind it): CNC's CAS-style ticket-granting login that hands out a
JWT, the topology, performance-metrics and SR-policy RESTCONF trees, the COE SR-policy and
RSVP-TE operations, the NSO proxy (SRv6 policies, L2NM/L3NM intent and TE-service mapping),
the CAT service inventory, and PCA's login, monitored objects, metrics aggregate and alerting
policies. No invented controller leaf is read or written, so the same code runs against a real
CNC/PCA or the built-in lab with only base URLs and credentials changed.

What a controller does not have (a service's SLA tier, its committed bandwidth) comes from the
operators' inventory export (:mod:`shared.inventory`).
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, SecretStr

from shared.errors import SouthboundError, SouthboundNotFound
from shared.inventory import InventoryEntry, ServiceInventory
from shared.logs import get_logger
from shared.models import TIERS

log = get_logger(__name__)

T = TypeVar("T")

YANG_JSON = "application/yang-data+json"
SSO_TICKETS = "/crosswork/sso/v1/tickets"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
NETWORKS = f"{TOPOLOGY}/ietf-network-state:networks"
LINK_PM = (
    f"{TOPOLOGY}/cisco-crosswork-performance-metrics:igp-links-performance-metrics/igp-link-pm="
)
SR_POLICIES = f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies"
RSVP_TUNNELS = f"{TOPOLOGY}/cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"
OPERATIONS = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS_MODULE = "cisco-crosswork-optimization-engine-sr-policy-operations"
RSVP_OPS_MODULE = "cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations"
INVENTORY = "/crosswork/nbi/cat-inventory/v1/restconf/data"
NSO = "/crosswork/proxy/nso/restconf/data"
SRV6_POLICY = f"{NSO}/cisco-sr-te-cfp:sr-te/cisco-sr-te-cfp-sr-policies:policies/policy="
TE_MAPPING = "ietf-te-service-mapping:te-service-mapping"

SERVICE_TYPES: tuple[str, ...] = ("l3vpn", "l2vpn")
"""CXM's ``VpnService.service_type`` values; each names its RFC 9182/9291 model."""

# What CXM asks of an SRv6 policy (docs/southbound.md, "SRv6"): a PCE-computed dynamic path on
# the TE metric, flex-algo 128 SIDs, from the default locator. With ``srv6`` CNC refuses
# explicit paths, binding SIDs and bandwidth, so none of those are sent.
SRV6_PREFERENCE = 100
SRV6_SID_ALGORITHM = 128
SRV6_LOCATOR = "ALGO0"

# RSVP-TE tunnels CXM creates signal no bandwidth (CXM accounts for bandwidth itself) and use
# the lowest priorities, so they never pre-empt the operator's own tunnels.
RSVP_PRIORITY = 7

DEFAULT_SRGB_BASE = 16000
"""Cisco's default SRGB lower bound, for an index SID on a node that advertises no SRGB."""
DEFAULT_IGP_METRIC = 10.0
DEFAULT_CAPACITY_MBPS = 10000.0

PCA_VENDOR = "accedian-twamp"
PCA_OBJECT_TYPE = "twamp-sf"
PCA_ROUND_TRIP = "2"
PCA_DELAY, PCA_JITTER, PCA_LOSS = "delayAvg", "delayVarAvg", "packetsLostPct"


# --- the models agents use ------------------------------------------------------------------


class Node(BaseModel):
    node_id: str = Field(alias="node-id")
    loopback: str | None = None
    """The node's (first) TE router-id, IPv4: what CNC's operations address it by."""
    ipv6_router_id: str | None = Field(default=None, alias="ipv6-router-id")
    prefix_sid: int | None = Field(default=None, alias="prefix-sid")
    """The SR-MPLS node SID as a label (SRGB lower bound + index, or the absolute value)."""
    srv6_sid: str | None = Field(default=None, alias="srv6-sid")
    te_capabilities: list[str] = Field(default_factory=list, alias="te-capabilities")
    role: str | None = None
    """Always None from CNC (it has no PE/P role); kept for the agents' views."""
    model_config = {"populate_by_name": True}


class LinkInterface(BaseModel):
    """One direction of a CXM link as CNC lists it (its id keys the performance-metrics read)."""

    cnc_link_id: str
    source: str
    source_tp: str | None = None
    destination: str
    dest_tp: str | None = None


class Link(BaseModel):
    link_id: str = Field(alias="link-id")
    source: str
    destination: str
    igp_metric: float = Field(default=DEFAULT_IGP_METRIC, alias="igp-metric")
    te_metric: float = Field(default=DEFAULT_IGP_METRIC, alias="te-metric")
    delay_ms: float | None = Field(default=None, alias="delay-ms")
    """From the performance-metrics read; None when it failed (path computation then uses the
    TE metric for this link)."""
    capacity_mbps: float = Field(default=DEFAULT_CAPACITY_MBPS, alias="capacity-mbps")
    srlgs: list[int] = Field(default_factory=list)
    oper_status: str = Field(default="up", alias="oper-status")
    interfaces: list[LinkInterface] = Field(default_factory=list)
    """Both directions, in CNC's order."""
    model_config = {"populate_by_name": True}


class Topology(BaseModel):
    nodes: list[Node]
    links: list[Link]


class VpnService(BaseModel):
    vpn_id: str = Field(alias="vpn-id")
    name: str
    service_type: str = Field(alias="service-type")  # l2vpn or l3vpn
    sla_tier: str = Field(alias="sla-tier")
    head_end: str = Field(alias="head-end")
    end_point: str = Field(alias="end-point")
    path: list[str] = Field(default_factory=list)  # links crossed, in order
    bandwidth_mbps: float = Field(default=100, alias="bandwidth-mbps")
    oper_status: str = Field(default="up", alias="oper-status")  # up, down or unknown
    color: int | None = None
    """The color of the SR policy the service rides now (its discovered underlay)."""
    steered: bool = False
    """A TE-service mapping (``map_services``) is set on the service."""
    mapped_color: int | None = Field(default=None, alias="mapped-color")
    """The color that mapping names (None when not steered)."""
    model_config = {"populate_by_name": True}


class SrPolicy(BaseModel):
    head_end: str = Field(alias="head-end")
    end_point: str = Field(alias="end-point")
    color: int
    """0 for an RSVP-TE tunnel (tunnels have no color; they are keyed by path-name)."""
    path_name: str = Field(default="", alias="path-name")
    binding_sid: int | None = Field(default=None, alias="binding-sid")
    te_type: str | None = Field(default=None, alias="te-type")  # sr-mpls, srv6 or rsvp-te
    hops: list[str] = Field(default_factory=list)  # node ids, head-end to end-point
    state: str = "up"
    tunnel_id: int | None = Field(default=None, alias="tunnel-id")  # RSVP-TE only
    model_config = {"populate_by_name": True}


class ExplicitPolicy(TypedDict):
    """What create, modify and dry-run take for one policy; the client builds each API's body.

    ``hops`` are node ids along the path; a leading head-end is dropped and a missing
    end-point appended, so both the full path and the hops after the head-end are accepted.
    An SRv6 policy ignores ``hops`` and ``binding_sid`` (its path is the PCE's, dynamic).
    """

    head_end: str
    end_point: str
    color: int
    path_name: str
    hops: list[str]
    binding_sid: NotRequired[int | None]
    description: NotRequired[str]
    te_type: NotRequired[str]  # sr-mpls (default), srv6 or rsvp-te


class LinkLoad(BaseModel):
    """A link's load now, from CNC's performance metrics (``link_utilisation``)."""

    link_id: str
    rate_mbps: float | None = None
    """The busier direction's rate."""
    capacity_mbps: float | None = None
    utilisation_pct: float | None = None
    delay_ms: float | None = None
    directions: dict[str, float] = Field(default_factory=dict)
    """Rate per direction, ``source-destination`` → Mbps."""
    timestamp: datetime


class LinkMetrics(BaseModel):
    object_name: str = Field(alias="objectName")
    delay_ms: float = Field(alias="delay-avg")
    jitter_ms: float = Field(alias="delay-var-avg")
    loss_pct: float = Field(alias="packets-lost-pct")
    timestamp: str
    model_config = {"populate_by_name": True}

    def within(self, limits: Thresholds) -> bool:
        """Below every threshold: reaching one is already a violation (as restore judges it)."""
        return (
            self.delay_ms < limits.delay_ms
            and self.jitter_ms < limits.jitter_ms
            and self.loss_pct < limits.loss_pct
        )


class Thresholds(BaseModel):
    """SLA thresholds from the PCA alert policy: above any of these the link is degraded."""

    delay_ms: float
    jitter_ms: float
    loss_pct: float


# --- pure helpers ---------------------------------------------------------------------------


def link_key(link: str) -> str:
    """A link's name independent of direction: ``pe2-pe1`` and ``pe1-pe2`` are one link, and
    so are ``pe2-pe1#2`` and ``pe1-pe2#2`` (the second parallel link)."""
    base, sep, nth = link.partition("#")
    ends = base.split("-")
    key = "-".join(sorted(ends)) if len(ends) == 2 else base
    return f"{key}{sep}{nth}"


def steering_share(services: Sequence[VpnService], pct: float) -> list[str]:
    """The vpn-ids of a group that stay on the protection policy at ``pct`` percent.

    Whole services move, so the kept set is the smallest prefix, highest tier first and then
    by vpn-id, whose bandwidth is at least ``pct`` % of the group's: as ``pct`` falls, bronze
    and silver go home first and platinum last. 100 keeps all, 0 none.
    """
    if pct <= 0:
        return []
    rank = {tier: i for i, tier in enumerate(TIERS)}  # platinum 0 … bronze 3
    ordered = sorted(services, key=lambda s: (rank.get(s.sla_tier, len(TIERS)), s.vpn_id))
    if pct >= 100:
        return [s.vpn_id for s in ordered]
    total = sum(max(s.bandwidth_mbps, 0.0) for s in ordered)
    kept: list[str] = []
    carried = 0.0
    for service in ordered:
        if carried * 100 >= pct * total:
            break
        kept.append(service.vpn_id)
        carried += max(service.bandwidth_mbps, 0.0)
    return kept


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` of a JWT's payload (not verified: the client is not the verifier)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return float(exp) if isinstance(exp, int | float) else None
    except (ValueError, TypeError):
        return None


def _restconf_message(response: httpx.Response) -> str:
    """The ``error-message`` (or PCA ``detail``) of an error answer, else its text, shortened."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    errors: Any = None
    if isinstance(data, dict):
        errors = data.get("ietf-restconf:errors") or data.get("errors") or {}
        if isinstance(errors, dict):
            errors = errors.get("error")
    if isinstance(errors, list):
        messages = [
            str(e.get("error-message") or e.get("detail") or e.get("error-tag"))
            for e in errors
            if isinstance(e, dict)
        ]
        if messages:
            return "; ".join(messages)[:300]
    return response.text[:300]


def _data_missing(response: httpx.Response) -> bool:
    return "data-missing" in response.text


def _raise_for(name: str, method: str, what: str, response: httpx.Response) -> None:
    """Turn a failure answer into the error docs/southbound.md's table says it is.

    ``what`` names the call without credentials (never the SSO path, which holds the TGT).
    """
    status = response.status_code
    if status < 400:
        return
    where = f"{name} {method} {what}"
    if status == 404 or (status == 409 and _data_missing(response)):
        raise SouthboundNotFound(f"{where}: not found ({_restconf_message(response)})")
    if status == 500 and not response.content:
        # CNC's answer to bad input: retrying the same body cannot help.
        raise SouthboundError(f"{where}: HTTP 500 with an empty body (input refused)")
    if status in (429, 500, 502, 503, 504):
        raise SouthboundError(f"{where}: HTTP {status}", transient=True)
    raise SouthboundError(f"{where}: HTTP {status}: {_restconf_message(response)}")


def _as_float(value: Any) -> float | None:
    """A number CNC/PCA may send as a string; None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _items(data: Any, *keys: str) -> list[dict[str, Any]]:
    """The list under the first of ``keys`` present (a RESTCONF list or its container)."""
    if not isinstance(data, dict):
        return []
    for key in keys:
        value = data.get(key)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
        if isinstance(value, dict):
            inner = value.get("vpn-service") or value.get("policy") or value.get("tunnel")
            if isinstance(inner, list):
                return [v for v in inner if isinstance(v, dict)]
    return []


# --- topology fold --------------------------------------------------------------------------

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
        if (m1 := _as_float(l3.get("metric1"))) is not None:
            igp.append(m1)
        if (m2 := _as_float(l3.get("metric2"))) is not None:
            te.append(m2)
        if (bw := _as_float(te_attrs.get("max-bandwidth-kbps"))) is not None:
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
class _Index:
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


# --- HTTP plumbing --------------------------------------------------------------------------


class _RedactTickets(logging.Filter):
    """Blanks CNC tickets in httpx's request log: the v1 SSO path carries the TGT, and httpx
    logs every request URL at INFO (``configure_logging`` quiets httpx, but a process that
    turns it up must still not log a credential)."""

    _TICKET = re.compile(r"(/sso/v\d+/tickets/)[^\s\"'?]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/tickets/" in message:
            record.msg, record.args = self._TICKET.sub(r"\1<redacted>", message), ()
        return True


def _redact_httpx_log() -> None:
    """Install :class:`_RedactTickets` on httpx's logger once (idempotent)."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTickets) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactTickets())


class _Refused(Exception):
    """CNC's SSO refused a ticket (401): the TGT is unknown or expired."""


def _secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


class _Http:
    def __init__(
        self,
        name: str,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None,
        timeout_s: float,
    ):
        self.name = name
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": f"{YANG_JSON}, application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The exception text is httpx's own (no URL, so no ticket in it).
            raise SouthboundError(
                f"{self.name} {method} {what} unreachable: {type(exc).__name__}: {exc}",
                transient=True,
            ) from exc

    def _json(self, response: httpx.Response, what: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise SouthboundError(f"{self.name} {what}: the answer is not JSON") from exc


def _first_result(data: Any, module: str, op: str, *, strict: bool = True) -> dict[str, Any]:
    """The one result of an operation (qualified or plain ``output``); ``failure`` raises
    unless ``strict`` is off (delete judges its own failures)."""
    data = data if isinstance(data, dict) else {}
    output = data.get(f"{module}:output") or data.get("output") or {}
    results = output.get("results") if isinstance(output, dict) else None
    if not results:
        raise SouthboundError(f"CNC {op}: the answer has no results")
    result: dict[str, Any] = dict(results[0])
    for key, value in output.items():  # dry-run: igp-route, segment-list-hops beside results
        if key != "results":
            result.setdefault(key, value)
    if strict and result.get("state") == "failure":
        raise SouthboundError(f"CNC {op} failed: {result.get('message') or 'no message'}")
    return result


class CncClient(_Http):
    """Crosswork Network Controller 7.x: topology, SR policies, services and their steering.

    One login serves every caller: the JWT is renewed ``refresh_s`` before its ``exp`` (or at
    half its lifetime when that is shorter), and on a 403 the call re-logs in and retries once.
    ``aclose`` deletes the TGT (CNC caps sessions per user).
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | SecretStr,
        service_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        refresh_s: float = 300.0,
        concurrency: int = 16,
        inventory: ServiceInventory | None = None,
        page_size: int = 500,
        clock: Callable[[], float] = time.time,
        default_tier: str = "silver",
        default_bandwidth_mbps: float = 100.0,
    ):
        super().__init__("CNC", base_url, transport, timeout_s)
        _redact_httpx_log()
        self._username = username
        self._password = _secret(password)
        host = self.http.base_url.host or "localhost"
        self.service_url = service_url or f"https://{host}:30603/app-dashboard"
        self.refresh_s = refresh_s
        self.page_size = page_size
        self.inventory = inventory
        self._default = InventoryEntry(
            vpn_id="", sla_tier=default_tier, bandwidth_mbps=default_bandwidth_mbps
        )
        self._clock = clock
        self._lock = asyncio.Lock()
        self._reads = asyncio.Semaphore(concurrency)
        self._tgt: str | None = None
        self._jwt: str | None = None
        self._renew_at = 0.0
        self._index: _Index | None = None
        self.logins = 0
        """TGTs obtained (tests and metrics: concurrent callers must share one)."""

    # --- login ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Delete the TGT (frees the session on CNC), then close the HTTP client."""
        try:
            if self._tgt is not None:
                tgt, self._tgt, self._jwt = self._tgt, None, None
                try:
                    response = await self.http.delete(f"{SSO_TICKETS}/{tgt}")
                    if response.status_code >= 400:
                        log.warning("CNC TGT delete refused", status=response.status_code)
                except httpx.HTTPError as exc:
                    log.warning("CNC TGT delete failed", error=type(exc).__name__)
        finally:
            await self.http.aclose()

    async def _bearer(self) -> str:
        if self._jwt is None or self._clock() >= self._renew_at:
            async with self._lock:
                if self._jwt is None or self._clock() >= self._renew_at:
                    await self._login()
        assert self._jwt is not None
        return self._jwt

    async def _relogin(self, stale: str) -> str:
        """A new JWT after CNC refused ``stale``, unless another caller already got one."""
        async with self._lock:
            if self._jwt is None or self._jwt == stale:
                await self._login()
        assert self._jwt is not None
        return self._jwt

    async def _login(self) -> None:
        """A JWT from the TGT, or from a new TGT when there is none or CNC no longer knows it.

        Called with the lock held.
        """
        jwt: str | None = None
        if self._tgt is not None:
            try:
                jwt = await self._service_ticket(self._tgt)
            except _Refused:
                self._tgt = None
        if jwt is None:
            self._tgt = await self._new_tgt()
            try:
                jwt = await self._service_ticket(self._tgt)
            except _Refused as exc:
                raise SouthboundError("CNC login: a fresh TGT was refused a JWT") from exc
        self._jwt = jwt
        now = self._clock()
        exp = _jwt_exp(jwt)
        if exp is None:
            self._renew_at = math.inf  # no exp to go by: renew only when CNC answers 403
        else:
            # Never renew sooner than half the lifetime, or a JWT that lives less than
            # refresh_s (a lab's short TTL) would be renewed on every call.
            self._renew_at = exp - min(self.refresh_s, max(exp - now, 0.0) / 2)

    async def _new_tgt(self) -> str:
        response = await self._send(
            "POST",
            SSO_TICKETS,
            "login",
            data={"username": self._username, "password": self._password.get_secret_value()},
            headers={"Accept": "text/plain"},
        )
        if response.status_code not in (200, 201):
            _raise_login(response)
        tgt = response.text.strip()
        if not tgt:
            raise SouthboundError("CNC login: empty ticket-granting ticket")
        self.logins += 1
        log.info("CNC login", user=self._username)
        return tgt

    async def _service_ticket(self, tgt: str) -> str:
        response = await self._send(
            "POST",
            f"{SSO_TICKETS}/{tgt}",
            "service ticket",
            data={"service": self.service_url},
            headers={"Accept": "text/plain"},
        )
        if response.status_code in (401, 404):
            raise _Refused()
        if response.status_code not in (200, 201):
            _raise_login(response)
        jwt = response.text.strip()
        if not jwt:
            raise SouthboundError("CNC login: empty JWT")
        return jwt

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        what: str | None = None,
    ) -> Any:
        """One authenticated call; the answer's JSON, or the error the answer means."""
        what = what or path
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["content"] = _dumps(json)
            kwargs["headers"] = {"Content-Type": YANG_JSON}
        token = await self._bearer()
        response = await self._send(method, path, what, **_auth(kwargs, token))
        if response.status_code == 403:
            # CNC's answer to an expired or unknown JWT ("Unauthorized request"). Any 403 is
            # taken as one: the retry is bounded to one, so a real refusal still surfaces.
            token = await self._relogin(token)
            response = await self._send(method, path, what, **_auth(kwargs, token))
        _raise_for(self.name, method, what, response)
        return self._json(response, what)

    # --- topology ------------------------------------------------------------------------

    async def _structure(self) -> _Index:
        """Nodes and links (no delay), paginated; the index serves address lookups after."""
        nodes: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        seen_nodes: set[str] = set()
        seen_links: set[str] = set()
        offset = 0
        while True:
            try:
                data = await self._call(
                    "GET", NETWORKS, params={"limit": self.page_size, "offset": offset}
                )
            except SouthboundNotFound:
                break
            longest = 0
            new = 0
            networks = (data or {}).get("ietf-network-state:networks", {}).get("network", [])
            for network in networks:
                page_nodes = network.get("node") or []
                page_links = network.get("ietf-network-topology-state:link") or []
                longest = max(longest, len(page_nodes), len(page_links))
                for node in page_nodes:
                    if str(node.get("node-id")) not in seen_nodes:
                        seen_nodes.add(str(node.get("node-id")))
                        nodes.append(node)
                        new += 1
                for link in page_links:
                    if str(link.get("link-id")) not in seen_links:
                        seen_links.add(str(link.get("link-id")))
                        links.append(link)
                        new += 1
            # A short page ends the list; so does a page with nothing new (a server that
            # ignores limit/offset would otherwise be read forever).
            if longest < self.page_size or new == 0:
                break
            offset += self.page_size
        index = _Index(fold_topology(nodes, links))
        self._index = index
        return index

    async def _link_pm(self, cnc_link_id: str) -> dict[str, Any] | None:
        """One direction's performance metrics; None when CNC has none for it."""
        async with self._reads:
            try:
                data = await self._call(
                    "GET", LINK_PM + quote(cnc_link_id, safe=""), what=f"igp-link-pm {cnc_link_id}"
                )
            except SouthboundNotFound:
                return None
        entries = (data or {}).get("cisco-crosswork-performance-metrics:igp-link-pm") or []
        return entries[0] if entries and isinstance(entries[0], dict) else None

    async def _link_pms(
        self, topology: Topology
    ) -> dict[str, list[tuple[LinkInterface, dict[str, Any] | BaseException | None]]]:
        """Every direction's performance metrics, ``concurrency`` reads at a time."""
        pairs = [(link, i) for link in topology.links for i in link.interfaces]
        answers = await asyncio.gather(
            *(self._link_pm(i.cnc_link_id) for _, i in pairs), return_exceptions=True
        )
        out: dict[str, list[tuple[LinkInterface, dict[str, Any] | BaseException | None]]] = {}
        for (link, interface), answer in zip(pairs, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancellation and the like are not read failures
            out.setdefault(link.link_id, []).append((interface, answer))
        return out

    async def topology(self) -> Topology:
        """Nodes and links, with each link's delay from its performance metrics (the worse
        direction; None when neither read answered)."""
        topology = (await self._structure()).topology
        pms = await self._link_pms(topology)
        failed = 0
        links: list[Link] = []
        for link in topology.links:
            delays: list[float] = []
            for _, pm in pms.get(link.link_id, []):
                if isinstance(pm, BaseException):
                    failed += 1
                elif pm is not None and (us := _as_float(pm.get("delay"))) is not None:
                    delays.append(us / 1000)
            links.append(link.model_copy(update={"delay_ms": max(delays) if delays else None}))
        if failed:
            log.warning("CNC link delay reads failed", failed=failed)
        return Topology(nodes=topology.nodes, links=links)

    async def link_utilisation(self) -> dict[str, LinkLoad]:
        """Per CXM link: the busier direction's rate, capacity, utilisation and delay now."""
        topology = (await self._structure()).topology
        pms = await self._link_pms(topology)
        errors = [pm for rows in pms.values() for _, pm in rows if isinstance(pm, Exception)]
        if errors and all(isinstance(pm, Exception) for rows in pms.values() for _, pm in rows):
            raise errors[0]  # nothing answered: say why rather than report no load
        now = datetime.now(UTC)
        out: dict[str, LinkLoad] = {}
        for link in topology.links:
            directions: dict[str, float] = {}
            delays: list[float] = []
            capacity: float | None = link.capacity_mbps
            for interface, pm in pms.get(link.link_id, []):
                if not isinstance(pm, dict):
                    continue
                rate = _as_float(pm.get("bandwidth-utilization-kbps"))
                if rate is not None:
                    directions[f"{interface.source}-{interface.destination}"] = rate / 1000
                if (us := _as_float(pm.get("delay"))) is not None:
                    delays.append(us / 1000)
                if (kbps := _as_float(pm.get("max-bandwidth-kbps"))) is not None:
                    capacity = min(capacity, kbps / 1000) if capacity else kbps / 1000
            busiest = max(directions.values()) if directions else None
            out[link.link_id] = LinkLoad(
                link_id=link.link_id,
                rate_mbps=busiest,
                capacity_mbps=capacity,
                utilisation_pct=(
                    busiest / capacity * 100 if busiest is not None and capacity else None
                ),
                delay_ms=max(delays) if delays else None,
                directions=directions,
                timestamp=now,
            )
        return out

    # --- SR policies: operational list ---------------------------------------------------

    async def _policy_lists(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async def read(path: str, key: str) -> list[dict[str, Any]]:
            try:
                return _items(await self._call("GET", path), key)
            except SouthboundNotFound:
                return []

        sr, rsvp = await asyncio.gather(
            read(SR_POLICIES, "cisco-crosswork-segment-routing-policy:sr-policies"),
            read(RSVP_TUNNELS, "cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"),
        )
        return sr, rsvp

    async def sr_policies(self) -> list[SrPolicy]:
        """SR-MPLS, SRv6 and RSVP-TE policies as CNC sees them, with node-id hops."""
        (sr, rsvp), index = await asyncio.gather(self._policy_lists(), self._known_index())
        policies, unresolved = _parse_policies(sr, rsvp, index)
        if unresolved:  # a node CXM has not seen yet: read the topology once more
            policies, _ = _parse_policies(sr, rsvp, await self._structure())
        return policies

    async def sr_policy(self, *, head_end: str, end_point: str, color: int) -> SrPolicy | None:
        """One SR policy by key (the keyed read); None when CNC has none (409 data-missing)."""
        head, end = await self._nodes(head_end, end_point)
        key = ",".join(quote(str(v), safe="") for v in (_address(head), _address(end), color))
        try:
            data = await self._call("GET", f"{SR_POLICIES}/policy={key}", what="sr-policy")
        except SouthboundNotFound:
            return None
        raw = _items(
            data,
            "cisco-crosswork-segment-routing-policy:policy",
            "cisco-crosswork-segment-routing-policy:sr-policies",
            "policy",
        )
        policies, _ = _parse_policies(raw, [], await self._known_index())
        return policies[0] if policies else None

    async def _known_index(self) -> _Index:
        return self._index if self._index is not None else await self._structure()

    # --- SR policies: operations ---------------------------------------------------------

    async def _nodes(self, *node_ids: str) -> list[Node]:
        """The nodes named, from the last topology read (read again for an unknown one)."""
        index = await self._known_index()
        if any(n not in index.nodes for n in node_ids):
            index = await self._structure()
        missing = [n for n in node_ids if n not in index.nodes]
        if missing:
            raise SouthboundError(f"CNC has no node {', '.join(missing)}")
        return [index.nodes[n] for n in node_ids]

    async def _path_nodes(self, policy: ExplicitPolicy) -> tuple[Node, Node, list[Node]]:
        hops = list(policy["hops"])
        if hops and hops[0] == policy["head_end"]:
            hops = hops[1:]
        if not hops or hops[-1] != policy["end_point"]:
            hops.append(policy["end_point"])
        head, end, *path = await self._nodes(policy["head_end"], policy["end_point"], *hops)
        return head, end, path

    async def _sr_mpls_body(self, policy: ExplicitPolicy) -> dict[str, Any]:
        head, end, path = await self._path_nodes(policy)
        hops = []
        for step, node in enumerate(path, start=1):
            if node.loopback is None or node.prefix_sid is None:
                raise SouthboundError(f"node {node.node_id} has no SR-MPLS router-id and SID")
            hops.append(
                {
                    "step": step,
                    "hop": {"node-ipv4-address": node.loopback, "node-ipv4-sid": node.prefix_sid},
                }
            )
        body: dict[str, Any] = {
            "head-end": _address(head),
            "end-point": _address(end),
            "color": policy["color"],
            "path-name": policy["path_name"],
            "description": policy.get("description") or f"CXM {policy['path_name']}",
        }
        if policy.get("binding_sid") is not None:
            body["binding-sid"] = policy.get("binding_sid")
        body["profile-id"] = 0
        body["sr-policy-path"] = {"hops": hops}  # the YANG choice, sent flat
        return body

    async def _rsvp_body(self, policy: ExplicitPolicy) -> dict[str, Any]:
        head, end, path = await self._path_nodes(policy)
        return {
            "head-end": _address(head),
            "end-point": _address(end),
            "path-name": policy["path_name"],
            "description": policy.get("description") or f"CXM {policy['path_name']}",
            "signaled-bandwidth": 0,
            "setup-priority": RSVP_PRIORITY,
            "hold-priority": RSVP_PRIORITY,
            "rsvp-te-tunnel-path": {
                "hops": [
                    {"step": step, "hop": {"node-ipv4-address": _address(node)}}
                    for step, node in enumerate(path, start=1)
                ]
            },
        }

    async def _srv6_body(self, policy: ExplicitPolicy) -> dict[str, Any]:
        head, end = await self._nodes(policy["head_end"], policy["end_point"])
        return {
            "cisco-sr-te-cfp-sr-policies:policy": [
                {
                    "name": policy["path_name"],
                    "head-end": [{"name": head.node_id}],  # NSO device name
                    "tail-end": end.loopback or _address(end),
                    "color": policy["color"],
                    "path": [
                        {
                            "preference": SRV6_PREFERENCE,
                            "dynamic": {
                                "metric-type": "te",
                                "pce": {},
                                "constraints": {"segments": {"sid-algorithm": SRV6_SID_ALGORITHM}},
                            },
                        }
                    ],
                    "srv6": {"locator": {"locator-name": SRV6_LOCATOR}},
                }
            ]
        }

    async def _operation(
        self, module: str, op: str, list_key: str, entry: dict[str, Any], *, strict: bool = True
    ) -> dict[str, Any]:
        data = await self._call(
            "POST",
            f"{OPERATIONS}/{module}:{op}",
            json={"input": {list_key: [entry]}},
            what=op,
        )
        return _first_result(data, module, op, strict=strict)

    async def _srv6_put(self, policy: ExplicitPolicy, *, dry_run: bool) -> dict[str, Any]:
        name = policy["path_name"]
        path = SRV6_POLICY + quote(name, safe="")
        body = await self._srv6_body(policy)
        if dry_run:
            data = await self._call(
                "PUT", path, json=body, params={"dry-run": "native"}, what="srv6 dry-run"
            )
            return {"state": "success", "path-name": name, **(data or {})}
        await self._call("PUT", path, json=body, what=f"srv6 policy {name}")
        return {
            "head-end": policy["head_end"],
            "end-point": policy["end_point"],
            "color": policy["color"],
            "path-name": name,
            "state": "success",
        }

    async def _apply(self, policy: ExplicitPolicy, kind: str) -> dict[str, Any]:
        te_type = policy.get("te_type") or "sr-mpls"
        if te_type == "srv6":
            return await self._srv6_put(policy, dry_run=kind == "dryrun")
        if te_type == "rsvp-te":
            return await self._operation(
                RSVP_OPS_MODULE,
                f"rsvp-te-tunnel-{kind}",
                "rsvp-te-tunnels",
                await self._rsvp_body(policy),
            )
        if te_type != "sr-mpls":
            raise SouthboundError(f"unknown TE type {te_type!r}")
        return await self._operation(
            SR_OPS_MODULE, f"sr-policy-{kind}", "sr-policies", await self._sr_mpls_body(policy)
        )

    async def create_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """Create the policy: SR-MPLS through ``sr-policy-create`` (explicit path), SRv6
        through the NSO proxy (dynamic, PCE-computed), RSVP-TE through ``rsvp-te-tunnel-create``.
        Returns the operation's result; a ``failure`` raises :class:`SouthboundError`."""
        return await self._apply(policy, "create")

    async def modify_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """A new path for the policy with this key (CNC keeps its binding SID, so traffic
        steered onto it follows the new path without being moved)."""
        return await self._apply(policy, "modify")

    async def dry_run_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """Validate the policy without changing anything (``-dryrun``, ``?dry-run=native``)."""
        return await self._apply(policy, "dryrun")

    async def delete_sr_policy(
        self,
        *,
        head_end: str,
        end_point: str,
        color: int,
        te_type: str = "sr-mpls",
        path_name: str | None = None,
    ) -> dict[str, Any]:
        """Delete the policy; one that is already gone counts as deleted (idempotent cleanup).

        SRv6 and RSVP-TE are keyed by name: without ``path_name`` it is looked up in the
        operational list by (head-end, end-point, color).
        """
        gone = {
            "head-end": head_end,
            "end-point": end_point,
            "color": color,
            "state": "success",
            "message": "not found (already deleted)",
        }
        if te_type in ("srv6", "rsvp-te") and path_name is None:
            path_name = next(
                (
                    p.path_name
                    for p in await self.sr_policies()
                    if p.te_type == te_type
                    and (p.head_end, p.end_point) == (head_end, end_point)
                    and (te_type == "rsvp-te" or p.color == color)
                ),
                None,
            )
            if path_name is None:
                return gone
        if te_type == "srv6":
            assert path_name is not None
            try:
                await self._call(
                    "DELETE", SRV6_POLICY + quote(path_name, safe=""), what=f"srv6 {path_name}"
                )
            except SouthboundNotFound:
                return gone
            return {**gone, "path-name": path_name, "message": "deleted"}
        head, end = await self._nodes(head_end, end_point)
        if te_type == "rsvp-te":
            module, op, key = RSVP_OPS_MODULE, "rsvp-te-tunnel-delete", "rsvp-te-tunnels"
            entry: dict[str, Any] = {"head-end": _address(head), "end-point": _address(end)}
        elif te_type == "sr-mpls":
            module, op, key = SR_OPS_MODULE, "sr-policy-delete", "sr-policies"
            entry = {"head-end": _address(head), "end-point": _address(end), "color": color}
        else:
            raise SouthboundError(f"unknown TE type {te_type!r}")
        if path_name is not None:
            entry["path-name"] = path_name
        result = await self._operation(module, op, key, entry, strict=False)
        if result.get("state") == "failure":
            message = str(result.get("message") or "no message")
            # "SR policy not found in Config DB": already gone, which is what delete wants.
            if "not found" in message.lower():
                return {**result, "state": "success"}
            raise SouthboundError(f"CNC {op} failed: {message}")
        return result

    # --- services ------------------------------------------------------------------------

    async def _read_or_empty(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self._call("GET", path, params=params)
        except SouthboundNotFound:
            return None  # RESTCONF's answer for an empty list (409 data-missing, NSO's 404)

    async def _inventory_entries(self) -> dict[str, InventoryEntry]:
        return await self.inventory.entries() if self.inventory is not None else {}

    async def services(self) -> list[VpnService]:
        """L3 and L2 VPN services: CAT's operational view (status, the policy ridden), the NSO
        intent (the ends, the TE-service mapping), the inventory (tier, bandwidth) and the
        policy's hops turned into links (IGP shortest path for a service with no policy)."""
        reads: list[Awaitable[Any]] = []
        for kind in SERVICE_TYPES:
            model = f"ietf-{kind}-ntw:{kind}-ntw/vpn-services/vpn-service"
            reads.append(self._read_or_empty(f"{INVENTORY}/{model}", {"content": "nonconfig"}))
            reads.append(self._read_or_empty(f"{NSO}/{model}"))
        (*answers, index, (sr, rsvp), inventory) = await asyncio.gather(
            *reads, self._structure(), self._policy_lists(), self._inventory_entries()
        )
        policies, _ = _parse_policies(sr, rsvp, index)
        out: list[VpnService] = []
        for i, kind in enumerate(SERVICE_TYPES):
            oper, config = answers[2 * i], answers[2 * i + 1]
            out.extend(self._fold_services(kind, oper, config, index, policies, inventory))
        return out

    def _fold_services(
        self,
        kind: str,
        oper_data: Any,
        config_data: Any,
        index: _Index,
        policies: list[SrPolicy],
        inventory: dict[str, InventoryEntry],
    ) -> list[VpnService]:
        keys = (f"ietf-{kind}-ntw:vpn-service", f"ietf-{kind}-ntw:vpn-services", "vpn-service")
        oper = {str(s.get("vpn-id")): s for s in _items(oper_data, *keys)}
        config = {str(s.get("vpn-id")): s for s in _items(config_data, *keys)}
        by_key: dict[tuple[str, str, int | None], SrPolicy] = {
            (p.head_end, p.end_point, p.color): p for p in policies if p.te_type != "rsvp-te"
        }
        tunnels: dict[int | None, SrPolicy] = {
            p.tunnel_id: p for p in policies if p.tunnel_id is not None
        }
        out: list[VpnService] = []
        for vpn_id in [*oper, *(v for v in config if v not in oper)]:
            o, c = oper.get(vpn_id, {}), config.get(vpn_id, {})
            underlay = (o.get("underlay-transport") or {}).get(
                f"cisco-{kind}-ntw:discovered-underlay-transport"
            ) or {}
            refs = [r for r in underlay.get("sr-policy-ref") or [] if isinstance(r, dict)]
            tunnel_refs = [r for r in underlay.get("te-tunnel-ref") or [] if isinstance(r, dict)]
            vpn_nodes = [
                str(n["vpn-node-id"])
                for n in (c.get("vpn-nodes") or {}).get("vpn-node") or []
                if isinstance(n, dict) and n.get("vpn-node-id") is not None
            ]
            head = (
                index.node_of(refs[0].get("headend"))
                if refs
                else index.node_of(tunnel_refs[0].get("source"))
                if tunnel_refs
                else None
            ) or (vpn_nodes[0] if vpn_nodes else None)
            end = next((n for n in vpn_nodes if n != head), None)
            if end is None and refs:
                end = index.node_of(refs[0].get("endpoint"))
            if end is None and tunnel_refs:
                end = index.node_of(tunnel_refs[0].get("destination"))
            if head is None or end is None:
                log.warning("service without two ends skipped", vpn_id=vpn_id, kind=kind)
                continue
            color = int(refs[0]["color"]) if refs and refs[0].get("color") is not None else None
            hops: list[str] = []
            if refs:
                ridden = by_key.get((head, index.node_of(refs[0].get("endpoint")) or end, color))
                hops = ridden.hops if ridden is not None else []
            elif tunnel_refs:
                tunnel = tunnels.get(_as_int(tunnel_refs[0].get("tunnel-id")))
                hops = tunnel.hops if tunnel is not None else []
            if len(hops) < 2:
                # No policy (or one CNC does not list): the service follows the IGP.
                hops = index.igp_path(head, end) or []
            mapping = (c.get(TE_MAPPING) or {}).get("te-mapping") or {}
            mapped = _as_int((mapping.get("sr-policy") or {}).get("color"))
            entry = inventory.get(vpn_id) or self._missing(vpn_id)
            status = str(((o.get("status") or {}).get("oper-status") or {}).get("status", ""))
            status = status.rsplit(":", 1)[-1]
            out.append(
                VpnService(
                    vpn_id=vpn_id,
                    name=entry.name or c.get("vpn-description") or vpn_id,
                    service_type=kind,
                    sla_tier=entry.sla_tier,
                    head_end=head,
                    end_point=end,
                    path=index.links_of(hops),
                    bandwidth_mbps=entry.bandwidth_mbps,
                    oper_status={"op-up": "up", "op-down": "down"}.get(status, "unknown"),
                    color=color,
                    steered=bool(c.get(TE_MAPPING)),
                    mapped_color=mapped,
                )
            )
        return out

    def _missing(self, vpn_id: str) -> InventoryEntry:
        if self.inventory is not None:
            return self.inventory.default(vpn_id)
        return self._default.model_copy(update={"vpn_id": vpn_id})

    # --- steering ------------------------------------------------------------------------

    async def map_services(
        self, services: Sequence[VpnService | tuple[str, str]], color: int
    ) -> None:
        """Give the services the color (TE-service mapping): one PATCH per L3NM/L2NM."""
        by_kind: dict[str, list[str]] = {}
        for vpn_id, kind in _pairs(services):
            by_kind.setdefault(kind, []).append(vpn_id)
        for kind, ids in by_kind.items():
            body = {
                f"ietf-{kind}-ntw:vpn-services": {
                    "vpn-service": [
                        {
                            "vpn-id": vpn_id,
                            TE_MAPPING: {"te-mapping": {"sr-policy": {"color": color}}},
                        }
                        for vpn_id in ids
                    ]
                }
            }
            await self._call(
                "PATCH",
                f"{NSO}/ietf-{kind}-ntw:{kind}-ntw/vpn-services",
                json=body,
                what=f"{kind} te-service-mapping",
            )

    async def unmap_services(self, services: Sequence[VpnService | tuple[str, str]]) -> None:
        """Delete the services' TE-service mapping (back to their own color), concurrently;
        a service without one is done already. Raises the first failure after all finished."""

        async def unmap(vpn_id: str, kind: str) -> None:
            path = (
                f"{NSO}/ietf-{kind}-ntw:{kind}-ntw/vpn-services/vpn-service="
                f"{quote(vpn_id, safe='')}/{TE_MAPPING}"
            )
            async with self._reads:
                with suppress(SouthboundNotFound):  # no mapping: nothing to undo
                    await self._call("DELETE", path, what=f"{kind} {vpn_id} te-service-mapping")

        results = await asyncio.gather(
            *(unmap(v, k) for v, k in _pairs(services)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _raise_login(response: httpx.Response) -> None:
    """A login answer that is neither a ticket nor a refused TGT (never quotes the ticket)."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise SouthboundError(f"CNC login: HTTP {status}", transient=True)
    raise SouthboundError(f"CNC login refused: HTTP {status}: {response.text[:200]}")


def _auth(kwargs: dict[str, Any], token: str) -> dict[str, Any]:
    headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    return {**kwargs, "headers": headers}


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _address(node: Node) -> str:
    address = node.loopback or node.ipv6_router_id
    if address is None:
        raise SouthboundError(f"node {node.node_id} has no TE router-id")
    return address


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _pairs(services: Sequence[VpnService | tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for service in services:
        if isinstance(service, VpnService):
            out.append((service.vpn_id, service.service_type))
        else:
            vpn_id, kind = service
            out.append((vpn_id, kind))
    for _, kind in out:
        if kind not in SERVICE_TYPES:
            raise ValueError(f"unknown service type {kind!r}")
    return out


def _parse_policies(
    sr: list[dict[str, Any]], rsvp: list[dict[str, Any]], index: _Index
) -> tuple[list[SrPolicy], bool]:
    """The operational lists as :class:`SrPolicy`; the flag says an address was unknown."""
    unresolved = False

    def node(value: Any) -> str:
        nonlocal unresolved
        found = index.node_of(value)
        if found is None:
            unresolved = True
            return str(value)
        return found

    def hops_of(head: str, raw_hops: list[dict[str, Any]]) -> list[str]:
        nonlocal unresolved
        hops: list[str] = []
        for hop in raw_hops:
            found = index.hop_node(hop)
            if found is None:
                unresolved = True
                found = str(hop.get("local-ip-addr") or hop.get("label"))
            hops.append(found)
        return hops if hops and hops[0] == head else [head, *hops]

    def state(raw: dict[str, Any]) -> str:
        up = str(raw.get("oper-state", "")).upper() == "UP"
        return "up" if up and str(raw.get("admin-state", "UP")).upper() == "UP" else "down"

    out: list[SrPolicy] = []
    for raw in sr:
        details = raw.get("policy-details") or {}
        paths = [p for p in details.get("path") or [] if isinstance(p, dict)]
        # The active candidate path is the one with the highest preference.
        path = max(paths, key=lambda p: _as_int(p.get("preference")) or 0) if paths else {}
        raw_hops = [h for h in path.get("hop") or [] if isinstance(h, dict)]
        srv6 = details.get("srv6-binding-sid") is not None or any(
            str(h.get("type", "")).startswith("srv6") for h in raw_hops
        )
        head = node(raw.get("headend"))
        out.append(
            SrPolicy(
                head_end=head,
                end_point=node(raw.get("endpoint")),
                color=int(raw.get("color") or 0),
                path_name=str(path.get("path-name") or ""),
                binding_sid=_as_int(details.get("binding-sid")),
                te_type="srv6" if srv6 else "sr-mpls",
                hops=hops_of(head, raw_hops),
                state=state(raw),
            )
        )
    for raw in rsvp:
        head = node(raw.get("headend"))
        out.append(
            SrPolicy(
                head_end=head,
                end_point=node(raw.get("endpoint")),
                color=0,
                path_name=str(raw.get("path-name") or ""),
                te_type="rsvp-te",
                hops=hops_of(head, [h for h in raw.get("hop") or [] if isinstance(h, dict)]),
                state=state(raw),
                tunnel_id=_as_int(raw.get("tunnel-id")),
            )
        )
    return out, unresolved


# --- PCA ------------------------------------------------------------------------------------


class PcaClient(_Http):
    """Provider Connectivity Assurance: per-link SLA metrics and the alerting thresholds.

    Logs in with ``POST /api/v1/auth/login`` (the token comes back in the ``authorization``
    response header); a 401 on a call logs in again and retries once.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | SecretStr,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        window_s: float = 60.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__("PCA", base_url, transport, timeout_s)
        self._username = username
        self._password = _secret(password)
        self.window_s = window_s
        self.page_size = page_size
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self.logins = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _bearer(self, stale: str | None = None) -> str:
        if self._token is None or self._token == stale:
            async with self._lock:
                if self._token is None or self._token == stale:
                    self._token = await self._login()
        return self._token

    async def _login(self) -> str:
        response = await self._send(
            "POST",
            "/api/v1/auth/login",
            "login",
            data={"username": self._username, "password": self._password.get_secret_value()},
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise SouthboundError(f"PCA login: HTTP {status}", transient=True)
        if status != 200:
            raise SouthboundError(f"PCA login refused: HTTP {status}")
        header = response.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SouthboundError("PCA login: no bearer token in the authorization header")
        self.logins += 1
        log.info("PCA login", user=self._username)
        return token.strip()

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        kwargs: dict[str, Any] = {"params": params, "json": json}
        token = await self._bearer()
        response = await self._send(method, path, path, **_auth(kwargs, token))
        if response.status_code == 401:
            token = await self._bearer(stale=token)
            response = await self._send(method, path, path, **_auth(kwargs, token))
        _raise_for(self.name, method, path, response)
        return self._json(response, path)

    async def monitored_objects(self) -> dict[str, str]:
        """Monitored-object id by link (its ``meta.link``, else its ``objectName``)."""
        out: dict[str, str] = {}
        offset = 0
        while True:
            data = await self._call(
                "GET",
                "/api/v2/monitored-objects",
                params={"page[limit]": self.page_size, "page[offset]": offset},
            )
            page = [d for d in (data or {}).get("data") or [] if isinstance(d, dict)]
            for item in page:
                attrs = item.get("attributes") or {}
                link = (attrs.get("meta") or {}).get("link") or attrs.get("objectName")
                if link and item.get("id"):
                    out.setdefault(str(link), str(item["id"]))
            offset += len(page)
            total = _as_int(((data or {}).get("meta") or {}).get("total"))
            if len(page) < self.page_size or not page or (total is not None and offset >= total):
                return out

    async def link_metrics(self, links: list[str]) -> dict[str, LinkMetrics]:
        """Round-trip delay, jitter and loss over the last ``window_s`` per link, keyed by the
        names asked for (either orientation); empty ``links`` means every monitored link. A
        link PCA has no session or no complete measurement for is absent."""
        objects = await self.monitored_objects()
        by_key = {link_key(link): mo for link, mo in objects.items()}
        wanted = (
            {link: by_key[link_key(link)] for link in links if link_key(link) in by_key}
            if links
            else dict(objects)
        )
        if not wanted:
            return {}
        end = datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)
        start = datetime.fromtimestamp(self._clock() - self.window_s, UTC).replace(microsecond=0)
        ids = sorted(set(wanted.values()))
        body = {
            "data": {
                "type": "aggregates",
                "attributes": {
                    "interval": f"{_iso(start)}/{_iso(end)}",
                    "granularity": "ALL",
                    "aggregation": "avg",
                    "metrics": [
                        {
                            "vendor": PCA_VENDOR,
                            "objectType": [PCA_OBJECT_TYPE],
                            "direction": [PCA_ROUND_TRIP],
                            "monitoredObjectId": ids,
                            "metric": metric,
                        }
                        for metric in (PCA_DELAY, PCA_JITTER, PCA_LOSS)
                    ],
                },
            }
        }
        data = await self._call("POST", "/api/v3/metrics/aggregate", json=body)
        result = ((data or {}).get("data") or {}).get("attributes", {}).get("result") or []
        values: dict[str, dict[str, float]] = {}
        stamps: dict[str, str] = {}
        for row in result:
            series = [s for s in row.get("series") or [] if isinstance(s, dict)]
            if not series:
                continue
            last = series[-1]
            value = _as_float(last.get("value"))
            if value is None:
                continue
            mo = str(row.get("monitoredObjectId"))
            values.setdefault(mo, {})[str(row.get("metric"))] = value
            stamps[mo] = max(stamps.get(mo, ""), str(last.get("timestamp") or ""))
        out: dict[str, LinkMetrics] = {}
        for link, mo in wanted.items():
            got = values.get(mo, {})
            if all(m in got for m in (PCA_DELAY, PCA_JITTER, PCA_LOSS)):
                out[link] = LinkMetrics(
                    object_name=link,
                    delay_ms=got[PCA_DELAY],
                    jitter_ms=got[PCA_JITTER],
                    loss_pct=got[PCA_LOSS],
                    timestamp=stamps.get(mo) or _iso(end),
                )
        return out

    async def thresholds(self) -> Thresholds:
        """The raise thresholds of the alerting policies (the lowest where several set one)."""
        data = await self._call("GET", "/api/v2/policies/alerting")
        aliases = {
            "delayAvg": "delay",
            "delay-avg": "delay",
            "delayVarAvg": "jitter",
            "jitterAvg": "jitter",
            "delay-var-avg": "jitter",
            "packetsLostPct": "loss",
            "packets-lost-pct": "loss",
        }
        found: dict[str, float] = {}
        for policy in (data or {}).get("data") or []:
            attrs = policy.get("attributes") or policy
            for condition in attrs.get("conditions") or []:
                trigger = condition.get("triggersOn") or {}
                kind = aliases.get(str((trigger.get("metric") or {}).get("id")))
                value = _as_float(trigger.get("value"))
                if kind is not None and value is not None:
                    found[kind] = min(found.get(kind, value), value)
        missing = {"delay", "jitter", "loss"} - set(found)
        if missing:
            log.warning(
                "PCA alerting policy lacks thresholds, using defaults", missing=sorted(missing)
            )
        return Thresholds(
            delay_ms=found.get("delay", 50.0),
            jitter_ms=found.get("jitter", 10.0),
            loss_pct=found.get("loss", 1.0),
        )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- wiring ---------------------------------------------------------------------------------


def service_inventory(
    settings: Any, *, transport: httpx.AsyncBaseTransport | None = None
) -> ServiceInventory:
    """The inventory the settings name (the lab's export, with the mesh token, when unset)."""
    source: str = settings.service_inventory_source
    lab = source.startswith(settings.lab_url.rstrip("/"))
    return ServiceInventory(
        source,
        ttl_s=settings.service_inventory_ttl_s,
        default_tier=settings.default_sla_tier,
        default_bandwidth_mbps=settings.default_service_bandwidth_mbps,
        token=settings.mesh_token if lab else None,
        transport=transport,
    )


def cnc_client(
    settings: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 10.0,
    inventory: ServiceInventory | None = None,
) -> CncClient:
    """A :class:`CncClient` from settings (for agents that open one outside the lifespan)."""
    return CncClient(
        settings.cnc_base,
        username=settings.cnc_username,
        password=settings.cnc_password,
        service_url=settings.cnc_service,
        transport=transport,
        timeout_s=timeout_s,
        refresh_s=settings.cnc_token_refresh_s,
        concurrency=settings.cnc_read_concurrency,
        inventory=inventory,
        default_tier=settings.default_sla_tier,
        default_bandwidth_mbps=settings.default_service_bandwidth_mbps,
    )


def pca_client(
    settings: Any, *, transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 10.0
) -> PcaClient:
    return PcaClient(
        settings.pca_base,
        username=settings.pca_username,
        password=settings.pca_password,
        transport=transport,
        timeout_s=timeout_s,
        window_s=settings.pca_window_s,
    )


@asynccontextmanager
async def southbound_clients(app: Any) -> AsyncIterator[None]:
    """Open ``app.state.cnc``, ``app.state.pca`` and ``app.state.inventory`` for the app's
    lifetime; close them after (the CNC TGT is deleted).

    Tests reach an in-process lab by setting ``app.state.southbound_transport``.
    """
    settings = app.state.settings
    transport = getattr(app.state, "southbound_transport", None)
    inventory = service_inventory(settings, transport=transport)
    cnc = cnc_client(settings, transport=transport, inventory=inventory)
    pca = pca_client(settings, transport=transport)
    app.state.inventory = inventory
    app.state.cnc = cnc
    app.state.pca = pca
    try:
        yield
    finally:
        try:
            await cnc.aclose()
        finally:
            await pca.aclose()
            await inventory.aclose()


class SharedRead(Generic[T]):
    """A read that is never cached, where callers that arrive while one is under way share it
    (a burst of incidents reads once, and each sees a result at most one read old)."""

    def __init__(self, read: Callable[[], Awaitable[T]]):
        self._read = read
        self._inflight: asyncio.Future[T] | None = None
        self.reads = 0

    async def __call__(self) -> T:
        if self._inflight is None:
            self.reads += 1
            self._inflight = asyncio.ensure_future(self._read())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, finished: asyncio.Future[T]) -> None:
        if self._inflight is finished:
            self._inflight = None

"""The lab's run-time state: link conditions, SR policies and RSVP-TE tunnels, steering, load.

:class:`LabNetwork` is plain synchronous code over the immutable :class:`LabTopology`. The
HTTP layer parses requests into the typed calls here and turns what they return (or the
:class:`PolicyError` they raise) into CNC's answers; timers live in the app's lifespan, so this
module can be tested and benchmarked without an event loop. Every value it reports is a
function of the state (no random noise), so tests are exact.

Traffic: every service rides an SR policy. At start each has its own base policy (ODN-style:
its head-end, its end-point, a color by tier, pinned to the service's path). A service mapped to
a color (the NSO te-service-mapping) rides the policy (head-end, end-point, that color) while it
exists and is up, else its base policy again. A link's load is the offered load of every
service whose ridden policy crosses it; its *native* load is what it would carry if every
service rode its base policy (what congestion mitigation must watch, since moving traffic away
lowers the measured load).

Load over time: a service's offered load is nominal x its static factor x the multiplier of
the link ramp that owns it (``POST /lab/links/{link}/load``) x the busy-hour profile. Ramps and
the profile store when they started and are evaluated lazily at :meth:`LabNetwork.now` (no timer
per link); :attr:`LabNetwork.clock` is the one time source, which tests replace to be exact.
While anything still moves, rates depend on time and are recomputed per instant (cheaply: per
ramp group, see :meth:`LabNetwork._groups`); once it stops, its end value is folded into the
static factors and rates are cached again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from services.lab.topology import TIERS, LabLink, LabService, LabTopology

PolicyKey = tuple[str, str, int]
"""(head-end node, end-point node, color): how CNC identifies an SR policy."""
TunnelKey = tuple[str, str, str]
"""(head-end node, end-point node, path-name): how the lab identifies an RSVP-TE tunnel."""
Operation = Literal[
    "topology",
    "performance-metrics",
    "services",
    "service-config",
    "steering",
    "sr-policies",
    "sr-policy-create",
    "sr-policy-modify",
    "sr-policy-delete",
    "srv6-policy",
    "rsvp-te",
    "metrics",
    "policies",
    "monitored-objects",
    "login",
]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
MAX_LABEL = 1_048_575
"""The largest MPLS label; binding SIDs above it cannot exist."""
SRGB = (16000, 23999)
"""The segment routing global block every SR-MPLS node announces."""
TIER_COLOR: dict[str, int] = {tier: 100 * (i + 1) for i, tier in enumerate(TIERS)}
"""Base (ODN) policy color of a service by tier: platinum 100, gold 200, silver 300, bronze 400."""
ODN_BSID_BASE = 900_000
AUTO_BSID_BASE = 800_000
Objective = Literal["igp-metric", "te-metric", "delay", "hop-count"]
OBJECTIVES: tuple[str, ...] = Objective.__args__  # type: ignore[attr-defined]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LinkCondition:
    """What is wrong with a link now: added delay/jitter/loss, or down altogether."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    down: bool = False
    since: datetime = field(default_factory=utcnow)
    until: datetime | None = None


@dataclass(frozen=True)
class Thresholds:
    delay_ms: float
    jitter_ms: float
    loss_pct: float


@dataclass(frozen=True)
class LinkMetrics:
    link_id: str
    delay_ms: float
    jitter_ms: float
    loss_pct: float
    utilization: float

    def violation(self, thresholds: Thresholds) -> tuple[str, float, float] | None:
        """The first SLA metric over its threshold as ``(metric, threshold, value)``."""
        if self.loss_pct > thresholds.loss_pct:
            return "packets-lost-pct", thresholds.loss_pct, self.loss_pct
        if self.delay_ms > thresholds.delay_ms:
            return "delay-avg", thresholds.delay_ms, self.delay_ms
        if self.jitter_ms > thresholds.jitter_ms:
            return "delay-var-avg", thresholds.jitter_ms, self.jitter_ms
        return None


@dataclass
class PolicyRecord:
    """An SR policy CNC knows: created through COE (SR-MPLS), the NSO proxy (SRv6), or ODN."""

    head_end: str
    end_point: str
    color: int
    path_name: str
    description: str
    binding_sid: int | None
    te_type: Literal["sr-mpls", "srv6"]
    policy_type: Literal["explicit", "dynamic", "odn"]
    origin: Literal["coe", "nso", "odn"]
    nodes: list[str]
    """The path from the head-end to the end-point (empty: the PCE found none)."""
    links: list[str]
    profile_id: int = 0
    objective: str | None = None
    srv6_binding_sid: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    @property
    def key(self) -> PolicyKey:
        return (self.head_end, self.end_point, self.color)


@dataclass
class TunnelRecord:
    head_end: str
    end_point: str
    path_name: str
    tunnel_id: int
    description: str
    signaled_bandwidth: int
    setup_priority: int
    hold_priority: int
    explicit: bool
    nodes: list[str]
    links: list[str]

    @property
    def key(self) -> TunnelKey:
        return (self.head_end, self.end_point, self.path_name)


@dataclass(frozen=True)
class Hop:
    step: int
    address: str
    sid: int | None = None


@dataclass(frozen=True)
class SrRequest:
    """One ``sr-policies[]`` entry of a COE operation, already type-checked."""

    head_end: str
    end_point: str
    color: int
    path_name: str = ""
    description: str = ""
    binding_sid: int | None = None
    profile_id: int = 0
    hops: tuple[Hop, ...] | None = None
    objective: str | None = None


@dataclass(frozen=True)
class TunnelRequest:
    head_end: str
    end_point: str
    path_name: str
    description: str = ""
    signaled_bandwidth: int = 0
    setup_priority: int = 7
    hold_priority: int = 7
    hops: tuple[Hop, ...] | None = None


@dataclass
class Fault:
    operation: str
    remaining: int
    status: int
    transient: bool
    message: str


@dataclass
class LoadRamp:
    """A link's native load moving linearly to a target: its services' traffic multiplier goes
    from ``from_multiplier`` to ``to_multiplier`` over ``ramp_s`` seconds from ``started``."""

    link_id: str
    services: set[str]
    started: float
    ramp_s: float
    from_multiplier: float
    to_multiplier: float
    from_pct: float
    target_pct: float

    @property
    def ends(self) -> float:
        return self.started + self.ramp_s

    def multiplier(self, now: float) -> float:
        if self.ramp_s <= 0 or now >= self.ends:
            return self.to_multiplier
        share = max(0.0, (now - self.started) / self.ramp_s)
        return self.from_multiplier + (self.to_multiplier - self.from_multiplier) * share


@dataclass(frozen=True)
class BusyHour:
    """A busy-hour traffic profile, as a multiplier of every service's traffic.

    Each of ``repeat`` cycles: ``gap_s`` at ``base``, then up to ``peak`` over ``up_s``, hold
    it ``hold_s``, down to ``base`` over ``down_s``. After the last cycle the traffic stays at
    ``base``. Seconds are real seconds (not scaled by CXM_TIME_SCALE)."""

    peak: float = 1.5
    base: float = 1.0
    up_s: float = 60.0
    hold_s: float = 60.0
    down_s: float = 60.0
    gap_s: float = 30.0
    repeat: int = 1

    @property
    def period_s(self) -> float:
        return self.gap_s + self.up_s + self.hold_s + self.down_s


@dataclass
class BusyHourProfile:
    spec: BusyHour
    started: float

    @property
    def ends(self) -> float:
        return self.started + self.spec.repeat * self.spec.period_s

    def multiplier(self, now: float) -> float:
        spec = self.spec
        t = now - self.started
        if t <= 0 or now >= self.ends or spec.period_s <= 0:
            return spec.base
        t -= min(int(t // spec.period_s), spec.repeat - 1) * spec.period_s
        span = spec.peak - spec.base
        if t < spec.gap_s:
            return spec.base
        t -= spec.gap_s
        if t < spec.up_s:
            return spec.base + span * t / spec.up_s
        t -= spec.up_s
        if t < spec.hold_s:
            return spec.peak
        t -= spec.hold_s
        if t < spec.down_s:
            return spec.peak - span * t / spec.down_s
        return spec.base

    def phase(self, now: float) -> tuple[int, str]:
        """(cycle from 1, ``gap``/``up``/``hold``/``down``/``done``) at ``now``."""
        spec = self.spec
        t = now - self.started
        if now >= self.ends or spec.period_s <= 0:
            return spec.repeat, "done"
        cycle = min(int(max(t, 0.0) // spec.period_s), spec.repeat - 1)
        t -= cycle * spec.period_s
        for name, length in (
            ("gap", spec.gap_s),
            ("up", spec.up_s),
            ("hold", spec.hold_s),
            ("down", spec.down_s),
        ):
            if t < length:
                return cycle + 1, name
            t -= length
        return cycle + 1, "gap"


class PolicyError(ValueError):
    """A request a PCE/CNC refuses: ``state: failure`` (COE) or a 400 (NSO), with this message."""


class LabNetwork:
    """Mutable state of the emulated network over an immutable topology."""

    def __init__(self, topology: LabTopology, thresholds: Thresholds):
        self.topology = topology
        self.thresholds = thresholds
        self.started = utcnow()
        self.conditions: dict[str, LinkCondition] = {}
        self.alerting: dict[str, tuple[str, float, float]] = {}
        """Links with a raised PCA alert → (metric, threshold, value) it was raised on."""
        self.policies: dict[PolicyKey, PolicyRecord] = {}
        self.base: dict[str, PolicyKey] = {}
        """service id → its base (ODN) policy."""
        self.mapping: dict[str, int] = {}
        """service id → the color its te-service-mapping names."""
        self.tunnels: dict[TunnelKey, TunnelRecord] = {}
        self.traffic_factor: dict[str, float] = {}
        self.faults: dict[str, Fault] = {}
        self.addresses: dict[str, str] = {}
        """IPv4 and IPv6 TE router-ids → node id."""
        for node in topology.nodes.values():
            self.addresses[node.loopback] = node.node_id
            if "srv6" in node.te_capabilities:
                self.addresses[topology.ipv6_router_id(node.node_id)] = node.node_id
        self._tunnel_serial = 0
        self.clock: Callable[[], float] = time.monotonic
        """The load clock (real seconds, not scaled by CXM_TIME_SCALE); tests replace it."""
        self.ramps: dict[str, LoadRamp] = {}
        """link → the load ramp moving its native load now."""
        self.owner: dict[str, str] = {}
        """service id → the link whose ramp moves its traffic (the last load call wins)."""
        self.profile: BusyHourProfile | None = None
        self._pinned: float | None = None
        self._rates: tuple[float, dict[str, float]] | None = None
        self._native: tuple[float, dict[str, float]] | None = None
        self._group_rates: (
            tuple[dict[str | None, dict[str, float]], dict[str | None, dict[str, float]]] | None
        ) = None
        self._native_index: dict[str, list[str]] | None = None
        self._odn_policies()

    # --- base policies and reset -----------------------------------------------------------

    def _odn_policies(self) -> None:
        """One ODN policy per (ends, tier, path): services that agree on all three share it."""
        colors: dict[tuple[str, str, str, tuple[str, ...]], PolicyKey] = {}
        serial = itertools.count(ODN_BSID_BASE + 1)
        for service in sorted(self.topology.services.values(), key=lambda s: s.vpn_id):
            group = (service.head_end, service.end_point, service.sla_tier, service.nodes)
            key = colors.get(group)
            if key is None:
                color = TIER_COLOR[service.sla_tier]
                while (service.head_end, service.end_point, color) in self.policies:
                    color += 1
                key = (service.head_end, service.end_point, color)
                colors[group] = key
                end = self.topology.nodes[service.end_point].loopback
                self.policies[key] = PolicyRecord(
                    head_end=service.head_end,
                    end_point=service.end_point,
                    color=color,
                    path_name=f"srte_c_{color}_ep_{end}",
                    description=f"ODN {service.sla_tier}",
                    binding_sid=next(serial),
                    te_type="sr-mpls",
                    policy_type="odn",
                    origin="odn",
                    nodes=list(service.nodes),
                    links=list(service.path),
                )
            self.base[service.vpn_id] = key

    def reset(self) -> None:
        """Back to the pristine network: no conditions, no CXM policies, mappings or faults.

        Raised alerts stay remembered, so the caller's next evaluation pushes their clears."""
        self.conditions.clear()
        self.policies = {k: p for k, p in self.policies.items() if p.origin == "odn"}
        self.tunnels.clear()
        self.mapping.clear()
        self.stop_load()
        self.faults.clear()
        self.changed()

    def changed(self) -> None:
        """Something traffic depends on changed: recompute the load on the next read."""
        self._rates = None
        self._native = None
        self._group_rates = None

    # --- lookups -------------------------------------------------------------------------

    def link(self, link_id: str) -> LabLink:
        """The link, also when named the other way round (``pe2-pe1``); KeyError otherwise."""
        link = self.topology.links.get(link_id)
        if link is None and link_id.count("-") == 1:
            a, b = link_id.split("-")
            other = self.topology.link_between(a, b)
            link = self.topology.links.get(other) if other else None
        if link is None:
            raise KeyError(link_id)
        return link

    def address(self, node_id: str) -> str:
        return self.topology.nodes[node_id].loopback

    def node_at(self, address: str) -> str | None:
        return self.addresses.get(address)

    def prefix_sid(self, node_id: str) -> int | None:
        node = self.topology.nodes[node_id]
        return node.prefix_sid if "sr-mpls" in node.te_capabilities else None

    def oper_status(self, link_id: str) -> str:
        cond = self.conditions.get(link_id)
        return "down" if cond is not None and cond.down else "up"

    def path_up(self, links: Iterable[str]) -> bool:
        return all(self.oper_status(link) == "up" for link in links)

    def policy_up(self, record: PolicyRecord) -> bool:
        return bool(record.nodes) and self.path_up(record.links)

    def created_policies(self) -> list[PolicyRecord]:
        """The policies CNC was asked for (COE and NSO), not the ODN base policies."""
        return [p for p in self.policies.values() if p.origin != "odn"]

    # --- faults --------------------------------------------------------------------------

    def add_fault(
        self, operation: str, *, count: int, status: int, transient: bool, message: str
    ) -> Fault:
        fault = Fault(operation, count, status, transient, message)
        self.faults[operation] = fault
        return fault

    def take_fault(self, operation: str) -> Fault | None:
        """Consume one injected failure for ``operation`` if any is pending."""
        fault = self.faults.get(operation)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self.faults[operation]
        return fault

    # --- link conditions -----------------------------------------------------------------

    def degrade(
        self,
        link_id: str,
        *,
        delay_ms: float,
        jitter_ms: float,
        loss_pct: float,
        down: bool = False,
        until: datetime | None = None,
    ) -> LinkCondition:
        cond = LinkCondition(
            delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, down=down, until=until
        )
        self.conditions[link_id] = cond
        self.changed()
        return cond

    def recover(self, link_id: str) -> LinkCondition | None:
        self.changed()
        return self.conditions.pop(link_id, None)

    def metrics(self, link_id: str) -> LinkMetrics:
        """PCA's view of a link (round trip): base delay + degradation + queueing when busy."""
        link = self.topology.links[link_id]
        cond = self.conditions.get(link_id)
        util = self.rates().get(link_id, 0.0) / link.capacity_mbps
        # a queue builds above 80 % load: up to +20 ms at 100 %, and drops what exceeds 100 %
        queue_ms = 0.0 if util <= 0.8 else 20.0 * (min(util, 1.2) - 0.8) / 0.2
        overflow_pct = 0.0 if util <= 1.0 else (util - 1.0) / util * 100.0
        delay = link.delay_ms + queue_ms + (cond.delay_ms if cond else 0.0)
        jitter = link.jitter_ms + queue_ms / 4 + (cond.jitter_ms if cond else 0.0)
        loss = overflow_pct + (cond.loss_pct if cond else 0.0)
        if cond is not None and cond.down:
            loss = 100.0
        return LinkMetrics(
            link_id=link_id,
            delay_ms=round(delay, 3),
            jitter_ms=round(jitter, 3),
            loss_pct=round(min(loss, 100.0), 3),
            utilization=round(util, 4),
        )

    def alert_transition(self, link_id: str) -> tuple[str, tuple[str, float, float]] | None:
        """Compare the link's metrics with the thresholds and remember the alert state.

        Returns ``("raised", violation)`` or ``("cleared", the violation it had)`` when the
        state changes, else None, so each degradation yields one raise and one clear.
        """
        violation = self.metrics(link_id).violation(self.thresholds)
        previous = self.alerting.get(link_id)
        if violation is not None and previous is None:
            self.alerting[link_id] = violation
            return "raised", violation
        if violation is None and previous is not None:
            del self.alerting[link_id]
            return "cleared", previous
        return None

    # --- the PCE -------------------------------------------------------------------------

    def pce(
        self, head: str, end: str, *, te_type: str, objective: str = "te-metric"
    ) -> list[str] | None:
        """Shortest path over nodes that support ``te_type`` and links that are up.

        Ties go to the lowest sequence of node ids, so the answer is deterministic.
        """
        caps = {n for n, node in self.topology.nodes.items() if te_type in node.te_capabilities}
        if head not in caps or end not in caps:
            return None

        def weight(link: LabLink) -> float:
            if objective == "igp-metric":
                return link.igp_metric
            if objective == "delay":
                return self.metrics(link.link_id).delay_ms
            if objective == "hop-count":
                return 1
            return link.te_metric

        best: dict[str, float] = {}
        queue: list[tuple[float, list[str]]] = [(0.0, [head])]
        while queue:
            cost, path = heapq.heappop(queue)
            node = path[-1]
            if node == end:
                return path
            if node in best:
                continue
            best[node] = cost
            for other, link_id in self.topology.adjacency[node].items():
                if other in best or other not in caps or self.oper_status(link_id) == "down":
                    continue
                link = self.topology.links[link_id]
                heapq.heappush(queue, (cost + weight(link), [*path, other]))
        return None

    # --- SR-MPLS policies (COE operations) -----------------------------------------------

    def _ends(self, head_addr: str, end_addr: str) -> tuple[str, str]:
        head, end = self.node_at(head_addr), self.node_at(end_addr)
        if head is None:
            raise PolicyError(f"head-end {head_addr} is not the TE router-id of any node")
        if end is None:
            raise PolicyError(f"end-point {end_addr} is not the TE router-id of any node")
        if head == end:
            raise PolicyError(f"head-end and end-point are the same node ({head}, {head_addr})")
        return head, end

    def _check_path(self, nodes: list[str], te_type: str, label: str) -> list[str]:
        """The links of a node path; PolicyError when it is not one the network can carry."""
        if len(set(nodes)) != len(nodes):
            raise PolicyError(f"the path {' -> '.join(nodes)} visits a node twice")
        for node in nodes:
            if te_type not in self.topology.nodes[node].te_capabilities:
                raise PolicyError(f"node {node} does not support {label}")
        links: list[str] = []
        for a, b in itertools.pairwise(nodes):
            link = self.topology.link_between(a, b)
            if link is None:
                raise PolicyError(f"no link between {a} and {b}: consecutive hops not adjacent")
            if self.oper_status(link) == "down":
                raise PolicyError(f"link {link} on the path is down")
            links.append(link)
        return links

    def _explicit_nodes(self, head: str, end: str, hops: tuple[Hop, ...], sids: bool) -> list[str]:
        if not hops:
            raise PolicyError("the explicit path has no hops")
        nodes = [head]
        for hop in sorted(hops, key=lambda h: h.step):
            node = self.node_at(hop.address)
            if node is None:
                raise PolicyError(f"hop {hop.step}: {hop.address} is not the router-id of any node")
            if sids:
                own = self.prefix_sid(node)
                if own is None:
                    raise PolicyError(f"hop {hop.step}: node {node} does not support SR-MPLS")
                if hop.sid != own:
                    raise PolicyError(
                        f"hop {hop.step}: node-ipv4-sid {hop.sid} is not the prefix SID of "
                        f"{hop.address} ({node}: {own})"
                    )
            nodes.append(node)
        if nodes[-1] != end:
            raise PolicyError(
                f"the last hop ({nodes[-1]}) is not the end-point ({end}): hops end with it"
            )
        return nodes

    def resolve_sr(self, req: SrRequest) -> PolicyRecord:
        """Validate a create/modify/dry-run entry the way a PCE would; PolicyError says why not."""
        head, end = self._ends(req.head_end, req.end_point)
        if not 1 <= req.color <= 4_294_967_295:
            raise PolicyError(f"color {req.color} is outside 1..4294967295")
        if req.binding_sid is not None and not 16 <= req.binding_sid <= MAX_LABEL:
            raise PolicyError(f"binding-sid {req.binding_sid} is outside 16..{MAX_LABEL}")
        for node in (head, end):
            if "sr-mpls" not in self.topology.nodes[node].te_capabilities:
                raise PolicyError(f"node {node} does not support SR-MPLS")
        if req.hops is not None:
            nodes = self._explicit_nodes(head, end, req.hops, sids=True)
            policy_type: Literal["explicit", "dynamic"] = "explicit"
        else:
            found = self.pce(head, end, te_type="sr-mpls", objective=req.objective or "te-metric")
            if found is None:
                raise PolicyError(
                    f"no SR-MPLS path from {head} to {end} ({req.objective}) over links that are up"
                )
            nodes, policy_type = found, "dynamic"
        links = self._check_path(nodes, "sr-mpls", "SR-MPLS")
        return PolicyRecord(
            head_end=head,
            end_point=end,
            color=req.color,
            path_name=req.path_name,
            description=req.description,
            binding_sid=req.binding_sid,
            te_type="sr-mpls",
            policy_type=policy_type,
            origin="coe",
            nodes=nodes,
            links=links,
            profile_id=req.profile_id,
            objective=req.objective,
        )

    def _bsid_taken(self, bsid: int, key: PolicyKey) -> PolicyRecord | None:
        for other in self.policies.values():
            if other.binding_sid == bsid and other.key != key:
                return other
        return None

    def _allocate_bsid(self) -> int:
        used = {p.binding_sid for p in self.policies.values()}
        bsid = AUTO_BSID_BASE + 1
        while bsid in used:
            bsid += 1
        return bsid

    def create_sr(self, req: SrRequest) -> tuple[PolicyRecord, str]:
        record = self.resolve_sr(req)
        existing = self.policies.get(record.key)
        if existing is not None:
            same = existing.origin == "coe" and existing.nodes == record.nodes
            if same and req.binding_sid in (None, existing.binding_sid):
                return existing, "no change"
            raise PolicyError("SR policy already exists")
        if record.binding_sid is None:
            record.binding_sid = self._allocate_bsid()
        elif (other := self._bsid_taken(record.binding_sid, record.key)) is not None:
            raise PolicyError(
                f"binding-sid {record.binding_sid} is in use by the policy "
                f"{self.address(other.head_end)} -> {self.address(other.end_point)} "
                f"color {other.color}"
            )
        self.policies[record.key] = record
        self.changed()
        return record, "SR policy created"

    def modify_sr(self, req: SrRequest) -> tuple[PolicyRecord, str]:
        head, end = self._ends(req.head_end, req.end_point)
        existing = self.policies.get((head, end, req.color))
        if existing is None or existing.origin != "coe":
            raise PolicyError("SR policy not found")
        record = self.resolve_sr(req)
        if req.binding_sid is not None and req.binding_sid != existing.binding_sid:
            if (other := self._bsid_taken(req.binding_sid, record.key)) is not None:
                raise PolicyError(
                    f"binding-sid {req.binding_sid} is in use by the policy "
                    f"{self.address(other.head_end)} -> {self.address(other.end_point)} "
                    f"color {other.color}"
                )
        else:
            record.binding_sid = existing.binding_sid
        if (
            record.nodes == existing.nodes
            and record.binding_sid == existing.binding_sid
            and record.path_name == existing.path_name
            and record.description == existing.description
        ):
            return existing, "no change"
        record.created_at = existing.created_at
        self.policies[record.key] = record
        self.changed()  # whatever rides the policy now crosses the new path's links
        return record, "SR policy modified"

    def delete_sr(self, head_addr: str, end_addr: str, color: int) -> str:
        head, end = self.node_at(head_addr), self.node_at(end_addr)
        key = (head or "", end or "", color)
        existing = self.policies.get(key)
        if existing is None or existing.origin != "coe":
            raise PolicyError("SR policy not found in Config DB")
        del self.policies[key]
        self.changed()  # whatever rode it falls back to its base policy
        return "SR policy deleted"

    # --- SRv6 policies (NSO proxy) ---------------------------------------------------------

    def put_srv6(
        self, *, name: str, head: str, tail_addr: str, color: int, description: str = ""
    ) -> tuple[PolicyRecord, bool]:
        """Create or replace the SRv6 policy ``name`` on a PCE path; (record, created)."""
        if head not in self.topology.nodes:
            raise PolicyError(f"head-end {head} is not a device NSO manages")
        if "srv6" not in self.topology.nodes[head].te_capabilities:
            raise PolicyError(f"device {head} has no SRv6 locator: it does not support SRv6")
        tail = self.node_at(tail_addr)
        if tail is None:
            raise PolicyError(f"tail-end {tail_addr} is not the router-id of any node")
        if tail == head:
            raise PolicyError(f"head-end and tail-end are the same node ({head})")
        if "srv6" not in self.topology.nodes[tail].te_capabilities:
            raise PolicyError(f"tail-end {tail} ({tail_addr}) does not support SRv6")
        if not 1 <= color <= 4_294_967_295:
            raise PolicyError(f"color {color} is outside 1..4294967295")
        previous = self.srv6_named(name)
        key = (head, tail, color)
        holder = self.policies.get(key)
        if holder is not None and holder is not previous:
            raise PolicyError(
                f"the policy {self.address(head)} -> {tail_addr} color {color} already "
                f"exists ({holder.path_name})"
            )
        nodes = self.pce(head, tail, te_type="srv6") or []
        record = PolicyRecord(
            head_end=head,
            end_point=tail,
            color=color,
            path_name=name,
            description=description,
            binding_sid=None,
            te_type="srv6",
            policy_type="dynamic",
            origin="nso",
            nodes=nodes,
            links=self.topology.links_of(nodes) or [] if nodes else [],
            objective="te-metric",
            srv6_binding_sid=f"{self.topology.srv6_node_sid(head)[:-1]}e{color % 0xFFF:03x}::",
        )
        if previous is not None:
            record.created_at = previous.created_at
            del self.policies[previous.key]
        self.policies[key] = record
        self.changed()
        return record, previous is None

    def srv6_named(self, name: str) -> PolicyRecord | None:
        for policy in self.policies.values():
            if policy.origin == "nso" and policy.path_name == name:
                return policy
        return None

    def delete_srv6(self, name: str) -> bool:
        policy = self.srv6_named(name)
        if policy is None:
            return False
        del self.policies[policy.key]
        self.changed()
        return True

    # --- RSVP-TE tunnels -----------------------------------------------------------------

    def resolve_tunnel(self, req: TunnelRequest) -> TunnelRecord:
        head, end = self._ends(req.head_end, req.end_point)
        for name, value in (("setup", req.setup_priority), ("hold", req.hold_priority)):
            if not 0 <= value <= 7:
                raise PolicyError(f"{name}-priority {value} is outside 0..7")
        if req.signaled_bandwidth < 0:
            raise PolicyError(f"signaled-bandwidth {req.signaled_bandwidth} is negative")
        for node in (head, end):
            if "rsvp-te" not in self.topology.nodes[node].te_capabilities:
                raise PolicyError(f"node {node} does not support RSVP-TE")
        if req.hops:
            nodes = self._explicit_nodes(head, end, req.hops, sids=False)
        else:
            found = self.pce(head, end, te_type="rsvp-te")
            if found is None:
                raise PolicyError(f"no RSVP-TE path from {head} to {end} over links that are up")
            nodes = found
        links = self._check_path(nodes, "rsvp-te", "RSVP-TE")
        return TunnelRecord(
            head_end=head,
            end_point=end,
            path_name=req.path_name,
            tunnel_id=0,
            description=req.description,
            signaled_bandwidth=req.signaled_bandwidth,
            setup_priority=req.setup_priority,
            hold_priority=req.hold_priority,
            explicit=bool(req.hops),
            nodes=nodes,
            links=links,
        )

    def create_tunnel(self, req: TunnelRequest) -> tuple[TunnelRecord, str]:
        record = self.resolve_tunnel(req)
        existing = self.tunnels.get(record.key)
        if existing is not None:
            if existing.nodes == record.nodes:
                return existing, "no change"
            raise PolicyError("RSVP-TE tunnel already exists")
        self._tunnel_serial += 1
        record.tunnel_id = self._tunnel_serial
        self.tunnels[record.key] = record
        return record, "RSVP-TE tunnel created"

    def modify_tunnel(self, req: TunnelRequest) -> tuple[TunnelRecord, str]:
        head, end = self._ends(req.head_end, req.end_point)
        existing = self.tunnels.get((head, end, req.path_name))
        if existing is None:
            raise PolicyError("RSVP-TE tunnel not found")
        record = self.resolve_tunnel(req)
        record.tunnel_id = existing.tunnel_id
        if record == existing:
            return existing, "no change"
        self.tunnels[record.key] = record
        return record, "RSVP-TE tunnel modified"

    def delete_tunnel(self, head_addr: str, end_addr: str, path_name: str) -> TunnelRecord:
        key = (self.node_at(head_addr) or "", self.node_at(end_addr) or "", path_name)
        existing = self.tunnels.pop(key, None)
        if existing is None:
            raise PolicyError("RSVP-TE tunnel not found in Config DB")
        return existing

    # --- steering and traffic ------------------------------------------------------------

    def rides(self, service: LabService) -> PolicyRecord:
        """The policy the service's traffic uses now: its mapped color's when that is up."""
        color = self.mapping.get(service.vpn_id)
        if color is not None:
            mapped = self.policies.get((service.head_end, service.end_point, color))
            if mapped is not None and self.policy_up(mapped):
                return mapped
        return self.policies[self.base[service.vpn_id]]

    def service_up(self, service: LabService) -> bool:
        return self.policy_up(self.rides(service))

    def map_services(self, colors: dict[str, int]) -> None:
        """Set te-service-mappings (service id → color); the caller checked the ids."""
        self.mapping.update(colors)
        self.changed()

    def unmap(self, vpn_id: str) -> bool:
        found = self.mapping.pop(vpn_id, None) is not None
        self.changed()
        return found

    def set_traffic(self, factor: float, services: Iterable[str]) -> None:
        """Scale services' offered load (1.0 = nominal), to drive congestion on purpose.

        The last call wins per service: a service a load ramp was moving leaves that ramp
        (a running busy-hour profile still multiplies it)."""
        now = self.now()
        self._settle(now)
        for service in services:
            self._release(service)
            if factor == 1.0:
                self.traffic_factor.pop(service, None)
            else:
                self.traffic_factor[service] = factor
        self.changed()

    def offered_mbps(self, service: LabService) -> float:
        """What the service offers now: nominal x its factor x its ramp x the busy hour."""
        now = self.now()
        self._settle(now)
        return service.bandwidth_mbps * self.factor(service.vpn_id, now)

    def factor(self, vpn_id: str, now: float | None = None) -> float:
        """The service's traffic factor at ``now`` (static factor x ramp x busy-hour profile)."""
        now = self.now() if now is None else now
        value = self.traffic_factor.get(vpn_id, 1.0)
        owner = self.owner.get(vpn_id)
        if owner is not None:
            value *= self.ramps[owner].multiplier(now)
        if self.profile is not None:
            value *= self.profile.multiplier(now)
        return value

    def rates(self) -> dict[str, float]:
        """Mbps on every link: each service's offered load on the links of the policy it rides."""
        return self._load(native=False)

    def native_rates(self) -> dict[str, float]:
        """Mbps on every link if every service rode its base (ODN) path, whatever the steering."""
        return self._load(native=True)

    def load_pct(self, link_id: str) -> float:
        """Measured load now (what rides the link) in % of its capacity."""
        return 100.0 * self.rates()[link_id] / self.topology.links[link_id].capacity_mbps

    def native_pct(self, link_id: str) -> float:
        """Native load now (every service on its base path) in % of its capacity."""
        return 100.0 * self.native_rates()[link_id] / self.topology.links[link_id].capacity_mbps

    # --- load over time: ramps and the busy-hour profile ----------------------------------

    def now(self) -> float:
        """The lab's load clock: :attr:`clock`, or the instant a :meth:`pinned` block froze."""
        return self._pinned if self._pinned is not None else self.clock()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[float]:
        """Read the whole network at one instant (a view, an alert sweep): every rate inside
        the block is computed once, at the same time, however many links are read."""
        if self._pinned is not None:
            yield self._pinned
            return
        self._pinned = self.clock()
        try:
            yield self._pinned
        finally:
            self._pinned = None

    def time_dependent(self) -> bool:
        """True while a ramp or the busy-hour profile is still moving the load."""
        self._settle(self.now())
        return bool(self.ramps) or self.profile is not None

    def native_services(self, link_id: str) -> list[str]:
        """Services whose base (ODN) path crosses the link, whatever rides it now."""
        if self._native_index is None:
            index: dict[str, list[str]] = {link: [] for link in self.topology.links}
            for service in self.topology.services.values():
                for link in self.policies[self.base[service.vpn_id]].links:
                    index[link].append(service.vpn_id)
            self._native_index = index
        return list(self._native_index[link_id])

    def ramp_load(self, link_id: str, *, target_pct: float, ramp_s: float) -> LoadRamp:
        """Move the link's native offered load from what it is now to ``target_pct`` of its
        capacity, linearly over ``ramp_s`` seconds of :attr:`clock`.

        Every service whose base path crosses the link is scaled by the same multiplier. The
        last call wins per service: each service's factor now is committed as its static
        factor (no jump) and the service leaves any other link's ramp, which goes on with the
        services it keeps (so that link's own target is then only approximate). A running
        busy-hour profile multiplies on top: the target holds at the profile's level of now.
        Raises ``ValueError`` when no service's base path crosses the link.
        """
        link = self.topology.links[link_id]
        services = self.native_services(link_id)
        if not services:
            raise ValueError(f"no service's base path crosses {link_id}: no load to move there")
        now = self.now()
        self._settle(now)
        from_pct = self.native_pct(link_id)
        for vpn_id in services:  # commit the factor of now, then leave the old ramp
            committed = self.factor(vpn_id, now) / (
                self.profile.multiplier(now) if self.profile is not None else 1.0
            )
            self._release(vpn_id)
            self._set_static(vpn_id, committed)
        profile = self.profile.multiplier(now) if self.profile is not None else 1.0
        base_mbps = sum(
            self.topology.services[v].bandwidth_mbps * self.traffic_factor.get(v, 1.0)
            for v in services
        )
        target_mbps = target_pct / 100.0 * link.capacity_mbps
        if base_mbps * profile > 0:
            start, end = 1.0, target_mbps / (base_mbps * profile)
        else:  # every one of them is at factor 0: start again from nominal x 0
            for vpn_id in services:
                self.traffic_factor.pop(vpn_id, None)
            nominal = sum(self.topology.services[v].bandwidth_mbps for v in services)
            start, end = 0.0, target_mbps / (nominal * profile)
        ramp = LoadRamp(
            link_id=link_id,
            services=set(services),
            started=now,
            ramp_s=ramp_s,
            from_multiplier=start,
            to_multiplier=end,
            from_pct=from_pct,
            target_pct=target_pct,
        )
        self.ramps[link_id] = ramp
        for vpn_id in services:
            self.owner[vpn_id] = link_id
        self.changed()
        self._settle(now)  # a ramp of 0 s is done at once
        return ramp

    def start_busy_hour(self, spec: BusyHour) -> BusyHourProfile:
        """Multiply every service's traffic by the busy-hour profile from now on (replacing a
        running one: its level of now is committed first, so nothing jumps but the start)."""
        now = self.now()
        self._settle(now)
        self._end_profile(now)
        self.profile = BusyHourProfile(spec=spec, started=now)
        self.changed()
        return self.profile

    def stop_load(self) -> None:
        """Drop every ramp and the busy-hour profile and all static factors (reset)."""
        self.ramps.clear()
        self.owner.clear()
        self.profile = None
        self.traffic_factor.clear()
        self.changed()

    def _set_static(self, vpn_id: str, value: float) -> None:
        if value == 1.0:
            self.traffic_factor.pop(vpn_id, None)
        else:
            self.traffic_factor[vpn_id] = value

    def _release(self, vpn_id: str) -> None:
        """Take the service out of the ramp that owns it (the ramp ends when it has none left)."""
        link = self.owner.pop(vpn_id, None)
        if link is None:
            return
        ramp = self.ramps[link]
        ramp.services.discard(vpn_id)
        if not ramp.services:
            del self.ramps[link]
        self.changed()

    def _end_profile(self, now: float) -> None:
        """Commit the profile's level of ``now`` into every static factor and drop it."""
        if self.profile is None:
            return
        level = self.profile.multiplier(now)
        self.profile = None
        if level != 1.0:
            for vpn_id in self.topology.services:
                self._set_static(vpn_id, self.traffic_factor.get(vpn_id, 1.0) * level)
        self.changed()

    def _settle(self, now: float) -> None:
        """Fold finished ramps and a finished profile into the static factors, so the load is
        constant again (and cached) once nothing moves any more."""
        for link, ramp in list(self.ramps.items()):
            if now >= ramp.ends:
                for vpn_id in ramp.services:
                    self._set_static(
                        vpn_id, self.traffic_factor.get(vpn_id, 1.0) * ramp.to_multiplier
                    )
                    self.owner.pop(vpn_id, None)
                del self.ramps[link]
                self.changed()
        if self.profile is not None and now >= self.profile.ends:
            self._end_profile(now)

    def _groups(
        self,
    ) -> tuple[dict[str | None, dict[str, float]], dict[str | None, dict[str, float]]]:
        """Per owner ramp (None: no ramp), the Mbps on every link at static factors: measured
        (the ridden policy) and native (the base policy). Rebuilt only when the state changes,
        so a load that moves with time costs one multiply-add per group and link per read."""
        if self._group_rates is None:
            measured: dict[str | None, dict[str, float]] = {}
            native: dict[str | None, dict[str, float]] = {}
            for service in self.topology.services.values():
                mbps = service.bandwidth_mbps * self.traffic_factor.get(service.vpn_id, 1.0)
                owner = self.owner.get(service.vpn_id)
                rides = measured.setdefault(owner, {})
                for link in self.rides(service).links:
                    rides[link] = rides.get(link, 0.0) + mbps
                base = native.setdefault(owner, {})
                for link in self.policies[self.base[service.vpn_id]].links:
                    base[link] = base.get(link, 0.0) + mbps
            self._group_rates = (measured, native)
        return self._group_rates

    def _load(self, *, native: bool) -> dict[str, float]:
        now = self.now()
        self._settle(now)
        cache = self._native if native else self._rates
        if cache is not None and (cache[0] == now or not (self.ramps or self.profile)):
            return cache[1]
        measured, base = self._groups()
        profile = self.profile.multiplier(now) if self.profile is not None else 1.0
        rates = dict.fromkeys(self.topology.links, 0.0)
        for owner, links in (base if native else measured).items():
            scale = profile * (self.ramps[owner].multiplier(now) if owner is not None else 1.0)
            for link, mbps in links.items():
                rates[link] += mbps if scale == 1.0 else mbps * scale
        if native:
            self._native = (now, rates)
        else:
            self._rates = (now, rates)
        return rates

    def services_on(self, link_id: str) -> list[LabService]:
        """The services whose traffic crosses the link now."""
        return [s for s in self.topology.services.values() if link_id in self.rides(s).links]

"""The lab's run-time state: link conditions, SR policies, steering shares, traffic counters.

:class:`LabNetwork` is plain synchronous code over the immutable :class:`LabTopology`. The
HTTP layer calls it and turns what it returns into responses and PCA alerts; timers live in the
app's lifespan, not here, so this module can be tested and benchmarked without an event loop.
Every value it reports is a function of the state (no random noise), so tests are exact.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from services.lab.topology import LabLink, LabService, LabTopology

PolicyKey = tuple[str, str, int]
Operation = Literal[
    "topology",
    "services",
    "sr-policies",
    "sr-policy-create",
    "sr-policy-modify",
    "sr-policy-delete",
    "traffic-steer",
    "link-counters",
    "metrics",
    "policies",
]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
MAX_BINDING_SID = 1_048_575
"""The largest MPLS label; binding SIDs above it cannot exist."""


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
class SrPolicyRecord:
    head_end: str
    end_point: str
    color: int
    path_name: str
    description: str
    binding_sid: int
    te_type: str
    nodes: list[str]
    links: list[str]
    created_at: datetime = field(default_factory=utcnow)

    @property
    def key(self) -> PolicyKey:
        return (self.head_end, self.end_point, self.color)

    def same_as(self, other: SrPolicyRecord) -> bool:
        """Identical intent: re-creating it is a no-op that succeeds."""
        return (
            self.path_name == other.path_name
            and self.binding_sid == other.binding_sid
            and self.te_type == other.te_type
            and self.nodes == other.nodes
        )


@dataclass
class Fault:
    operation: str
    remaining: int
    status: int
    transient: bool
    message: str


class PolicyError(ValueError):
    """An SR policy request COE would answer with ``state: failure`` and this message."""


class SteerError(ValueError):
    """A steering request that cannot apply (unknown policy or service, bad weight)."""


def policy_key(item: dict[str, Any], operation: str) -> PolicyKey:
    """The (head-end, end-point, color) an operation names; COE identifies policies by it."""
    try:
        return (str(item["head-end"]), str(item["end-point"]), int(item["color"]))
    except (KeyError, TypeError, ValueError):
        raise PolicyError(f"{operation} needs head-end, end-point and an integer color") from None


class LabNetwork:
    """Mutable state of the emulated network over an immutable topology."""

    def __init__(
        self,
        topology: LabTopology,
        thresholds: Thresholds,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.topology = topology
        self.thresholds = thresholds
        self.clock = clock
        self.conditions: dict[str, LinkCondition] = {}
        self.alerting: dict[str, tuple[str, float, float]] = {}
        """Links with a raised PCA alert → (metric, threshold, value) it was raised on."""
        self.policies: dict[PolicyKey, SrPolicyRecord] = {}
        self.steering: dict[str, tuple[PolicyKey, int]] = {}
        """service id → (policy, percent of its traffic on the policy)."""
        self.traffic_factor: dict[str, float] = {}
        self.faults: dict[str, Fault] = {}
        self.octets: dict[str, float] = dict.fromkeys(topology.links, 0.0)
        self._last_sample = clock()
        self._rates: dict[str, float] | None = None

    # --- reset ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the pristine network (counters keep counting: they are cumulative)."""
        self._accumulate()
        self.conditions.clear()
        self.alerting.clear()
        self.policies.clear()
        self.steering.clear()
        self.traffic_factor.clear()
        self.faults.clear()
        self._rates = None

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

    def oper_status(self, link_id: str) -> str:
        cond = self.conditions.get(link_id)
        return "down" if cond is not None and cond.down else "up"

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
        self._accumulate()
        cond = LinkCondition(
            delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, down=down, until=until
        )
        self.conditions[link_id] = cond
        self._rates = None
        return cond

    def recover(self, link_id: str) -> LinkCondition | None:
        self._accumulate()
        self._rates = None
        return self.conditions.pop(link_id, None)

    def metrics(self, link_id: str) -> LinkMetrics:
        """PCA's view of a link: base delay + injected degradation + queueing when congested."""
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

    # --- SR policies ---------------------------------------------------------------------

    def resolve_hop(self, hop: Any) -> str:
        """A node id from a COE explicit hop (SID, IPv4 address or, for the lab, a node id)."""
        if isinstance(hop, str):
            candidate: Any = hop
        elif isinstance(hop, dict):
            inner = hop.get("hop", hop)
            if not isinstance(inner, dict):
                raise PolicyError(f"hop {hop!r} is not an object")
            for key in ("node-id", "cisco-crosswork-cxm:node-id"):
                if key in inner:
                    candidate = inner[key]
                    break
            else:
                if "node-ipv4-address" in inner:
                    address = str(inner["node-ipv4-address"])
                    for node in self.topology.nodes.values():
                        if node.loopback == address:
                            return node.node_id
                    raise PolicyError(f"no node has loopback {address}")
                if "node-ipv4-sid" in inner:
                    sid = inner["node-ipv4-sid"]
                    for node in self.topology.nodes.values():
                        if str(node.prefix_sid) == str(sid):
                            return node.node_id
                    raise PolicyError(f"no node has prefix SID {sid}")
                raise PolicyError(
                    f"hop {hop!r} names no node (node-ipv4-address, node-ipv4-sid or node-id)"
                )
        else:
            raise PolicyError(f"hop {hop!r} is not an object")
        if candidate not in self.topology.nodes:
            raise PolicyError(f"hop names unknown node {candidate!r}")
        return str(candidate)

    def validate_policy(self, item: dict[str, Any]) -> SrPolicyRecord:
        """Check a create/modify entry the way a PCE would; PolicyError says why not."""
        head, end = item.get("head-end"), item.get("end-point")
        color, bsid = item.get("color"), item.get("binding-sid")
        for name, value in (("head-end", head), ("end-point", end)):
            if not isinstance(value, str) or value not in self.topology.nodes:
                raise PolicyError(f"{name} {value!r} is not a node of the network")
        assert isinstance(head, str) and isinstance(end, str)
        if head == end:
            raise PolicyError("head-end and end-point are the same node")
        if not isinstance(color, int) or isinstance(color, bool) or not 1 <= color <= 2**32 - 1:
            raise PolicyError(f"color {color!r} must be an integer from 1 to 4294967295")
        if not isinstance(bsid, int) or isinstance(bsid, bool) or not 16 <= bsid <= MAX_BINDING_SID:
            raise PolicyError(f"binding-sid {bsid!r} must be an integer from 16 to 1048575")
        te_type = str(item.get("cisco-crosswork-cxm:te-type") or item.get("te-type") or "sr-mpls")
        path = item.get("sr-policy-path") or {}
        explicit = path.get("explicit") if isinstance(path, dict) else None
        if not isinstance(explicit, dict) or not isinstance(explicit.get("hops"), list):
            raise PolicyError("the lab supports explicit paths only: sr-policy-path.explicit.hops")
        hops = sorted(
            explicit["hops"],
            key=lambda h: h.get("step", 0) if isinstance(h, dict) else 0,
        )
        nodes = [self.resolve_hop(h) for h in hops]
        if not nodes or nodes[0] != head:
            nodes.insert(0, head)
        if nodes[-1] != end:
            nodes.append(end)
        if len(set(nodes)) != len(nodes):
            raise PolicyError(f"the path {' → '.join(nodes)} visits a node twice")
        links: list[str] = []
        for a, b in itertools.pairwise(nodes):
            link = self.topology.link_between(a, b)
            if link is None:
                raise PolicyError(f"no link between {a} and {b}: the path is not contiguous")
            if self.oper_status(link) == "down":
                raise PolicyError(f"link {link} on the path is down")
            links.append(link)
        for node in nodes:
            if te_type not in self.topology.nodes[node].te_capabilities:
                raise PolicyError(f"node {node} does not support {te_type}")
        return SrPolicyRecord(
            head_end=head,
            end_point=end,
            color=color,
            path_name=str(item.get("path-name") or f"{head}-{end}-{color}"),
            description=str(item.get("description") or ""),
            binding_sid=bsid,
            te_type=te_type,
            nodes=nodes,
            links=links,
        )

    def create_policy(self, item: dict[str, Any]) -> tuple[SrPolicyRecord, str]:
        """Install a policy; identical re-creation succeeds and changes nothing."""
        record = self.validate_policy(item)
        existing = self.policies.get(record.key)
        if existing is not None:
            if existing.same_as(record):
                return existing, "policy already exists with the same path; nothing changed"
            raise PolicyError(
                f"a policy {record.head_end} → {record.end_point} color {record.color} "
                "already exists with another path or binding-sid (use sr-policy-modify)"
            )
        for other in self.policies.values():
            if other.binding_sid == record.binding_sid:
                raise PolicyError(
                    f"binding-sid {record.binding_sid} is in use by {other.head_end} → "
                    f"{other.end_point} color {other.color}"
                )
        self._accumulate()
        self.policies[record.key] = record
        return record, "policy created"

    def modify_policy(self, item: dict[str, Any]) -> tuple[SrPolicyRecord, str]:
        """Put an existing policy on a new explicit path.

        The key, binding SID and TE type stay, so whatever is steered onto the policy moves
        with it instead of being un-steered; what the request leaves out is kept as it was.
        """
        key = policy_key(item, "modify")
        existing = self.policies.get(key)
        if existing is None:
            raise PolicyError(
                f"no policy {key[0]} → {key[1]} color {key[2]} to modify (use sr-policy-create)"
            )
        kept = {
            "binding-sid": existing.binding_sid,
            "te-type": existing.te_type,
            "path-name": existing.path_name,
            "description": existing.description,
        }
        record = self.validate_policy({**kept, **item})
        for name, old, new in (
            ("binding-sid", existing.binding_sid, record.binding_sid),
            ("te-type", existing.te_type, record.te_type),
        ):
            if new != old:
                raise PolicyError(f"{name} cannot change from {old} to {new}: delete and create")
        if existing.same_as(record):
            return existing, "policy already has this path; nothing changed"
        self._accumulate()
        record.created_at = existing.created_at
        self.policies[key] = record
        self._rates = None  # the steered traffic now crosses the new path's links
        return record, "policy modified"

    def delete_policy(self, item: dict[str, Any]) -> tuple[bool, str]:
        """Remove a policy and whatever was steered onto it; absent is not an error."""
        key = policy_key(item, "delete")
        if key not in self.policies:
            return False, "no such policy; nothing to delete"
        self._accumulate()
        del self.policies[key]
        for service, (policy, _) in list(self.steering.items()):
            if policy == key:
                del self.steering[service]
        self._rates = None
        return True, "policy deleted"

    def policy_state(self, record: SrPolicyRecord) -> str:
        return "down" if any(self.oper_status(link) == "down" for link in record.links) else "up"

    # --- steering and traffic ------------------------------------------------------------

    def steer(
        self, *, head_end: str, end_point: str, color: int, services: list[str], weight: int
    ) -> list[str]:
        """Carry ``weight`` % of the services' traffic on the policy; returns the services."""
        key = (head_end, end_point, color)
        if key not in self.policies:
            raise SteerError(f"no SR policy {head_end} → {end_point} color {color}")
        if not 0 <= weight <= 100:
            raise SteerError(f"weight {weight} must be between 0 and 100")
        if not services:
            services = [
                s.vpn_id
                for s in self.topology.services.values()
                if s.head_end == head_end and s.end_point == end_point
            ]
        unknown = [s for s in services if s not in self.topology.services]
        if unknown:
            raise SteerError(f"unknown services: {', '.join(unknown)}")
        wrong = [
            s
            for s in services
            if (self.topology.services[s].head_end, self.topology.services[s].end_point)
            != (head_end, end_point)
        ]
        if wrong:
            raise SteerError(
                f"services {', '.join(wrong)} do not run {head_end} → {end_point}; "
                "a policy can only carry services between its own ends"
            )
        self._accumulate()
        for service in services:
            if weight == 0:
                self.steering.pop(service, None)
            else:
                self.steering[service] = (key, weight)
        self._rates = None
        return services

    def set_traffic(self, factor: float, services: Iterable[str]) -> None:
        """Scale services' offered load (1.0 = nominal), to drive congestion on purpose."""
        self._accumulate()
        for service in services:
            if factor == 1.0:
                self.traffic_factor.pop(service, None)
            else:
                self.traffic_factor[service] = factor
        self._rates = None

    def offered_mbps(self, service: LabService) -> float:
        return service.bandwidth_mbps * self.traffic_factor.get(service.vpn_id, 1.0)

    def rates(self) -> dict[str, float]:
        """Mbps on every link: each service on its own path x (1 - share) + policy x share."""
        if self._rates is not None:
            return self._rates
        rates = dict.fromkeys(self.topology.links, 0.0)
        for service in self.topology.services.values():
            mbps = self.offered_mbps(service)
            share = 0.0
            steered = self.steering.get(service.vpn_id)
            if steered is not None and steered[0] in self.policies:
                share = steered[1] / 100.0
                for link in self.policies[steered[0]].links:
                    rates[link] += mbps * share
            if share < 1.0:
                for link in service.path:
                    rates[link] += mbps * (1.0 - share)
        self._rates = rates
        return rates

    def _accumulate(self) -> None:
        """Integrate the current rates into the octet counters up to now."""
        now = self.clock()
        elapsed = max(0.0, now - self._last_sample)
        self._last_sample = now
        if elapsed == 0.0:
            return
        for link, mbps in self.rates().items():
            self.octets[link] += mbps * 1e6 / 8 * elapsed

    def counters(self) -> dict[str, float]:
        self._accumulate()
        return self.octets

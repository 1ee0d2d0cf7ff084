"""What agents see of the network: CXM's own shapes, not CNC's or PCA's.

The clients fold the controllers' answers into these, so an agent never reads a RESTCONF leaf.
The aliases are the hyphenated names the agents' JSON views and the lab use.
"""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, TypedDict

from pydantic import BaseModel, Field

DEFAULT_SRGB_BASE = 16000
"""Cisco's default SRGB lower bound, for an index SID on a node that advertises no SRGB."""
DEFAULT_IGP_METRIC = 10.0
DEFAULT_CAPACITY_MBPS = 10000.0


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
    base_path: list[str] = Field(default_factory=list, alias="base-path")
    """The links it would cross with no steering (its own ODN path; ``vpn.fold_services``)."""
    bandwidth_mbps: float = Field(default=100, alias="bandwidth-mbps")
    oper_status: str = Field(default="up", alias="oper-status")  # up, down or unknown
    color: int | None = None
    """The color of the SR policy the service rides now (its discovered underlay)."""
    steered: bool = False
    """A TE-service mapping (``map_services``) is set on the service."""
    mapped_color: int | None = Field(default=None, alias="mapped-color")
    """The color that mapping names (None when not steered)."""
    model_config = {"populate_by_name": True}


class ServiceMapping(BaseModel):
    """A service's TE-service mapping (its NSO intent) with its tier and bandwidth (the
    inventory): what moving a share of a steered group needs, without the operational view,
    the policies and the paths :class:`VpnService` is folded from
    (``CncClient.service_mappings``)."""

    vpn_id: str = Field(alias="vpn-id")
    service_type: str = Field(alias="service-type")  # l2vpn or l3vpn
    sla_tier: str = Field(alias="sla-tier")
    bandwidth_mbps: float = Field(default=100, alias="bandwidth-mbps")
    steered: bool = False
    """A TE-service mapping is set on the service."""
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

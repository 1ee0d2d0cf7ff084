"""The wire contract of the mesh: the task envelope and the models of every task's request and
answer (``shared.contracts`` pairs them per task type).

Every agent validates what it receives against these models, and callers validate answers
against them, so a field name here is a promise to every peer. IO notifications follow the
seed (003) field for field; they accept extra fields because IO stores what it is sent as-is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator

Severity = Literal["critical", "high", "medium", "low", "info"]
Tier = Literal["platinum", "gold", "silver", "bronze"]
TeType = Literal["sr-mpls", "srv6", "rsvp-te"]
LINK_PATTERN = r"^[A-Za-z0-9_.:]+-[A-Za-z0-9_.:]+$"

TIERS: tuple[str, ...] = ("platinum", "gold", "silver", "bronze")
HOLD_TIMER_S: dict[str, float] = {"platinum": 30, "gold": 60, "silver": 120, "bronze": 300}
"""Seed 003: how long the SLA must stay recovered before cutting back, by tier."""
CUTOVER_STEPS: tuple[tuple[int, int], ...] = ((75, 25), (50, 50), (25, 75), (0, 100))
"""Seed 003: (protection %, original %) at each step of the gradual cutover."""
AUDIT_EVENT_TYPES: tuple[str, ...] = (
    "incident_created",
    "alert_correlated",
    "service_impact_assessed",
    "path_computed",
    "tunnel_provisioned",
    "traffic_steered",
    "sla_recovered",
    "restoration_complete",
    "escalation",
    "notification_sent",
    "error",
    "state_change",
)
NODES: tuple[str, ...] = (
    "start",
    "detect",
    "assess",
    "compute",
    "provision",
    "steer",
    "monitor",
    "restore",
    "close",
)
"""The orchestrator's graph nodes, in the order ``nodes_executed`` lists them."""
IncidentState = Literal[
    "new",
    "detecting",
    "dampening",
    "assessing",
    "computing",
    "provisioning",
    "steering",
    "monitoring",
    "restoring",
    "closed",
    "escalated",
    "waiting_approval",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    """Commands between agents: an unknown field is a bug in the sender, so refuse it."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Notifications: keep what the sender added."""

    model_config = ConfigDict(extra="allow")


class TaskEnvelope(Strict):
    """``POST /a2a/tasks`` body."""

    task_type: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    incident_id: str | None = None
    source_agent: str | None = None


class TaskResult(BaseModel):
    """``POST /a2a/tasks`` answer."""

    task_id: str
    task_type: str
    status: Literal["completed", "accepted"] = "completed"
    result: dict[str, Any] = Field(default_factory=dict)
    replayed: bool = False


# --- IO agent (8009): the seed's notifications ---------------------------------------------


TicketKind = Literal["network", "host"]
"""A ticket about degraded links (the closed loop), or about a host, service or database
(matched to a runbook)."""


class NewTicket(Open):
    incident_id: str = Field(pattern=r"^INC-\d{4}-\d{4,}$")
    severity: Severity
    summary: str
    degraded_links: list[str] = Field(default_factory=list)
    affected_services: list[Any] = Field(default_factory=list)
    source_agent: str = "event_correlator"
    created_at: datetime = Field(default_factory=utcnow)
    status: str = "new"
    kind: TicketKind = "network"
    # a host ticket's own words, which runbook matching and placeholders read (absent for a
    # network ticket, so its payload is what it always was)
    title: str | None = Field(default=None, exclude_if=lambda v: v is None)
    description: str | None = Field(default=None, exclude_if=lambda v: v is None)
    host: str | None = Field(default=None, exclude_if=lambda v: v is None)
    labels: dict[str, str] | None = Field(default=None, exclude_if=lambda v: v is None)
    # predicted, not measured (issue 14): IO marks the ticket; absent when false (seed payload)
    proactive: bool = Field(default=False, exclude_if=lambda v: not v)


class StatusUpdate(Open):
    incident_id: str
    status: str
    phase: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    source_agent: str = "orchestrator"
    updated_at: datetime = Field(default_factory=utcnow)


class TicketClosed(Open):
    incident_id: str
    resolution: str
    duration_seconds: float
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    source_agent: str = "orchestrator"
    closed_at: datetime = Field(default_factory=utcnow)


class ErrorNotice(Open):
    incident_id: str | None = None
    error_code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    source_agent: str
    occurred_at: datetime = Field(default_factory=utcnow)


class ApprovalRequired(Open):
    approval_id: str
    incident_id: str
    action: str
    details: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime
    source_agent: str = "orchestrator"
    requested_at: datetime = Field(default_factory=utcnow)


class TicketStored(Open):
    """IO's answer to ``new_ticket``, ``status_update``, ``ticket_closed`` and ``error``."""

    incident_id: str
    """The ticket it went to (``unassigned`` for an error without an incident)."""
    stored: bool = True


class ApprovalStored(Open):
    """IO's answer to ``approval_required``."""

    approval_id: str
    stored: bool = True


# --- orchestrator (8000) -------------------------------------------------------------------


class StartIncident(Strict):
    """Correlator → orchestrator: run the network loop for degraded links (``kind`` network,
    the default), or match a host ticket to a runbook (``kind`` host: no links, a ``host``)."""

    incident_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="visible ASCII, no spaces: it travels in the Idempotency-Key of the "
        "incident's tasks",
    )
    severity: Severity
    summary: str
    degraded_links: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    triage: dict[str, Any] | None = None
    proactive: bool = False
    dampened_until: datetime | None = None
    """Set when the link is flapping: the incident starts in DAMPENING until then."""
    kind: TicketKind = "network"
    title: str | None = Field(default=None, exclude_if=lambda v: v is None)
    description: str | None = Field(default=None, exclude_if=lambda v: v is None)
    host: str | None = Field(default=None, exclude_if=lambda v: v is None)
    labels: dict[str, str] | None = Field(default=None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _subject(self) -> StartIncident:
        if self.kind == "network" and not self.degraded_links:
            raise ValueError("degraded_links: a network incident names at least one link")
        if self.kind == "host" and not self.host:
            raise ValueError("host: a host ticket names its host")
        return self


class IncidentSignal(Strict):
    """Correlator → orchestrator: something changed about an open incident."""

    incident_id: str
    signal: Literal["links_added", "dampen", "resume", "cleared", "operator_resolved"]
    links: list[str] = Field(default_factory=list)
    until: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class IncidentStarted(Open):
    """``start_incident``'s answer: the incident's row as it is now (``created`` False when the
    id was already known, which makes the task idempotent per incident)."""

    incident_id: str
    created: bool
    status: str
    phase: str
    final: bool


class SignalResult(Open):
    """``incident_signal``'s answer: ``accepted`` with the ``signal``, or not accepted because
    the incident is over, with its final ``status`` (each key only in its case)."""

    incident_id: str
    accepted: bool
    status: str | None = Field(default=None, exclude_if=lambda v: v is None)
    signal: str | None = Field(default=None, exclude_if=lambda v: v is None)


class GetIncident(Strict):
    """``get_incident``: an incident's row, timers, pending approval and graph state."""

    incident_id: str = Field(min_length=1)


class IncidentView(Open):
    """``get_incident``'s answer (and ``GET /api/v1/incidents/{id}``): the public row, its view
    of the graph state (links, nodes executed, tunnel, path, approvals...), ``state``,
    ``signals`` and ``next``; only the keys every caller relies on are declared."""

    incident_id: str
    severity: str
    status: str
    phase: str
    tier: str | None = None
    final: bool


class IncidentClosed(Strict):
    """Orchestrator → correlator: the incident is over; new alerts on its links open a new one."""

    incident_id: str
    resolution: str
    degraded_links: list[str] = Field(default_factory=list)


class ApprovalDecision(Strict):
    """IO → orchestrator: an operator decided on an approval."""

    approval_id: str
    incident_id: str
    decision: Literal["approve", "reject"]
    decided_by: str = Field(min_length=1)
    notes: str = ""
    option: Literal["retry", "skip"] | None = None
    """For a runbook step whose outcome is unknown (the orchestrator died while it ran):
    approve retries it (the default) or, with ``skip``, goes on without it; reject aborts."""


class DecisionResult(Open):
    """``approval_decision``'s answer: the decision was taken and the incident resumes."""

    incident_id: str
    approval_id: str
    decision: Literal["approve", "reject"]
    accepted: bool = True


# --- impact (8002) -------------------------------------------------------------------------


class AssessImpact(Strict):
    incident_id: str
    degraded_links: list[str] = Field(min_length=1)
    native: bool = False
    """The proactive flow's question: a service is affected when its base path (the one it
    rides with no steering) *or* its current path crosses a link, and ``degraded_links`` names
    the links crossed by either. Off (the SLA flow): the current path only."""


class AffectedService(Open):
    service_id: str
    name: str
    service_type: str
    tier: Tier
    head_end: str
    end_point: str
    path: list[str] = Field(default_factory=list)
    """The links it rides now."""
    base_path: list[str] = Field(default_factory=list)
    """The links it rides with no steering (empty: unknown, read as ``path``)."""
    bandwidth_mbps: float | None = None


class ImpactResult(Open):
    total_affected: int
    services_by_tier: dict[str, int]
    affected_services: list[AffectedService]
    highest_tier: Tier | None = None


# --- path (8003) ---------------------------------------------------------------------------


class ComputePath(Strict):
    incident_id: str
    head_end: str
    end_point: str
    avoid_links: list[str] = Field(default_factory=list)
    avoid_nodes: list[str] = Field(default_factory=list)
    metric: Literal["delay", "te", "igp", "hops"] = "delay"
    min_bandwidth_mbps: float | None = None
    """Headroom every link must have for the traffic the path will carry: capacity up to the
    reservable share, less what the services already on the link use (TE bandwidth accounting)."""
    carrying: list[str] = Field(default_factory=list)
    """Service ids the path is for: their current load is not counted against it (they move)."""
    srlg_disjoint: bool = False
    """Also avoid every link that shares an SRLG with an avoided link (a common fate)."""
    te_type: TeType | None = None
    """Every node must support this TE type; unset: the cheapest path on which every node
    shares one TE type (ties: sr-mpls, srv6, rsvp-te), since a tunnel is one technology."""
    reserved_mbps: dict[str, float] = Field(default_factory=dict)
    """Link id → Mbps already promised to the same incident's other protection policies, not
    yet visible in CNC: counted as load, so an incident's policies never oversubscribe a link
    together (each fits alone, all of them do not)."""
    load_growth: float = Field(default=1.0, ge=1.0, le=10.0)
    """The factor each link's load (what its services send now) is counted at: a proactive
    shift made early in a busy hour sizes its detour for the load at the forecast horizon,
    the detour's own traffic as well as the moved (``min_bandwidth_mbps`` is sized by the
    caller; ``reserved_mbps`` is not scaled)."""
    max_load_pct: float | None = Field(default=None, gt=0, le=100)
    """Every link of the path stays at or under this % of its capacity with the path's
    traffic on it (loads counted at ``load_growth``; the reservable share still applies): a
    proactive shift leaves no detour over the release threshold, so moving traffic off one
    link never makes the next congestion."""


class PathResult(Open):
    found: bool
    path: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)
    hop_count: int = 0
    total_delay_ms: float | None = None
    total_metric: float | None = None
    metric: str = "delay"
    reason: str | None = None
    """Why not, when nothing was found; why this path, when it crosses links out of SLA."""
    out_of_sla_links: list[str] = Field(default_factory=list)
    """Links PCA measures out of SLA that the path crosses. They are a cost, not a ban:
    ``compute_path`` crosses one only when no path avoids them all (the request's
    ``avoid_links`` stay a ban)."""


class ComputePaths(Strict):
    """``compute_paths``: one path per request, planned together for one incident.

    Requests are answered in order, each with the bandwidth of the paths found before it
    counted as load on their links (so the incident's policies fit together), and with the
    traffic of an earlier request that found no path left where it is (it does not move).
    One read of CNC's services and policies serves them all: an incident on a busy core link
    has hundreds of groups, and one call per group read the whole service list each time.
    """

    incident_id: str
    requests: list[ComputePath] = Field(min_length=1, max_length=5000)


class PathsResult(Open):
    results: list[PathResult]
    """One per request, in the same order."""


# --- tunnel (8004) -------------------------------------------------------------------------


class ProvisionTunnel(Strict):
    incident_id: str
    head_end: str
    end_point: str
    path: list[str] = Field(min_length=2)
    te_type: TeType | None = None
    color: int | None = None
    avoid_links: list[str] = Field(default_factory=list)
    """Links the tunnel must not cross (the incident's degraded links). An explicit path
    already avoids them; a dynamic SRv6 policy, routed by CNC's PCE, is read back and the
    provisioning fails, naming the link, when its path crosses one."""


class TunnelResult(Open):
    tunnel_id: str
    binding_sid: int
    te_type: TeType
    head_end: str
    end_point: str
    color: int
    path: list[str]
    state: str


class RerouteTunnel(Strict):
    """Orchestrator → tunnel: move a live protection tunnel onto a new explicit path.

    The policy keeps its head-end, end-point, color and binding SID (CNC ``sr-policy-modify``),
    so the traffic already steered onto it follows the new path without being moved.
    """

    incident_id: str
    tunnel_id: str
    path: list[str] = Field(min_length=2)


class TunnelRerouted(TunnelResult):
    """``reroute_tunnel``'s answer: the tunnel as ``provision_tunnel`` answers it, on its new
    path, and the path it left (the same path when a replay moved nothing)."""

    rerouted: bool = True
    previous_path: list[str]


class SteerTraffic(Strict):
    incident_id: str
    tunnel_id: str
    service_ids: list[str] = Field(default_factory=list)


class TrafficSteered(Open):
    """``steer_traffic``'s answer: the services now on the policy and those it cannot carry."""

    traffic_steered: bool = True
    tunnel_id: str
    head_end: str
    end_point: str
    color: int
    binding_sid: int | None
    protection_pct: int
    services: list[str]
    """Steered (mapped to the policy's color); when the request named none, every service
    between the policy's ends."""
    not_steered: list[str] = Field(default_factory=list)
    """Requested services whose ends are not the policy's."""
    cnc: dict[str, Any] = Field(default_factory=dict)
    """CNC's answer to the steering call, as it gave it."""


class DeleteTunnel(Strict):
    incident_id: str
    tunnel_id: str


class TunnelDeleted(Open):
    """``delete_tunnel``'s and ``cleanup``'s answer; both are idempotent, so deleting what is
    already gone is a success with ``already_absent``."""

    deleted: bool = True
    tunnel_id: str
    already_absent: bool


# --- restore (8005) ------------------------------------------------------------------------


class CheckSla(Strict):
    incident_id: str
    links: list[str] = Field(min_length=1)
    tier: Tier | None = None


class SlaResult(Open):
    within_sla: bool
    links: dict[str, dict[str, Any]]


class CutoverStep(Strict):
    incident_id: str
    tunnel_id: str
    links: list[str] = Field(min_length=1)
    protection_pct: int = Field(ge=0, le=100)
    original_pct: int = Field(ge=0, le=100)
    head_end: str | None = None
    end_point: str | None = None
    color: int | None = None
    """The policy's key; when absent, restore looks it up in CNC by path-name == tunnel_id."""
    service_ids: list[str] = Field(default_factory=list)


class CutoverResult(Open):
    applied: bool
    within_sla: bool
    protection_pct: int
    original_pct: int
    reverted: bool = False


class Cleanup(Strict):
    incident_id: str
    tunnel_id: str
    head_end: str | None = None
    end_point: str | None = None
    color: int | None = None
    service_ids: list[str] = Field(default_factory=list)


class PolicyRef(Strict):
    """One protection policy of a batch (``cutover_policies``, ``cleanup_policies``): the
    fields ``cutover_step`` and ``cleanup`` take for their one policy."""

    tunnel_id: str
    head_end: str | None = None
    end_point: str | None = None
    color: int | None = None
    """The policy's key; when absent, restore looks it up in CNC by path-name == tunnel_id."""
    service_ids: list[str] = Field(default_factory=list)


class CutoverPolicies(Strict):
    """One cutover step on every policy of an incident: one task where ``cutover_step`` takes
    one per policy, so what they share (the mappings, the SLA check of ``links``) is read once."""

    incident_id: str
    links: list[str] = Field(min_length=1)
    protection_pct: int = Field(ge=0, le=100)
    original_pct: int = Field(ge=0, le=100)
    policies: list[PolicyRef] = Field(min_length=1)


class PolicyFailure(Open):
    """Why one policy of a batch failed: the ``{code, message}`` and HTTP status its own
    ``cutover_step``/``cleanup`` would have answered, so the caller handles it the same way."""

    code: str
    message: str
    status: int


class PolicyCutover(Open):
    """One policy's part of ``cutover_policies``: its ``cutover_step`` answer, or its failure."""

    tunnel_id: str
    result: CutoverResult | None = None
    error: PolicyFailure | None = None


class CutoverPoliciesResult(Open):
    """``cutover_policies``'s answer: the one SLA check, and every policy in request order."""

    within_sla: bool
    sla: dict[str, Any] = Field(default_factory=dict)
    policies: list[PolicyCutover]


class CleanupPolicies(Strict):
    """Every policy of an incident taken down in one task (``cleanup`` takes one each)."""

    incident_id: str
    policies: list[PolicyRef] = Field(min_length=1)


class PolicyCleaned(Open):
    """One policy's part of ``cleanup_policies``: its ``cleanup`` answer, or its failure."""

    tunnel_id: str
    result: TunnelDeleted | None = None
    error: PolicyFailure | None = None


class CleanupPoliciesResult(Open):
    """``cleanup_policies``'s answer: every policy in request order."""

    policies: list[PolicyCleaned]


class ProvisionTunnels(Strict):
    """Every protection policy of one incident step in one task (``provision_tunnel`` takes
    one per policy), so what they share (CNC's topology and policies) is read once.

    Each request is exactly what ``provision_tunnel`` takes for its policy; a request for ends
    already asked for earlier in the batch answers as that one (one policy per incident and
    pair of ends)."""

    incident_id: str
    tunnels: list[ProvisionTunnel] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_incident(self) -> ProvisionTunnels:
        for i, tunnel in enumerate(self.tunnels):
            if tunnel.incident_id != self.incident_id:
                raise ValueError(f"tunnels[{i}].incident_id: not the batch's {self.incident_id}")
        return self


class PolicyProvisioned(Open):
    """One policy's part of ``provision_tunnels``, named by its ends: its ``provision_tunnel``
    answer, or its failure (a ``PolicyFailure``, as for restore's batches)."""

    head_end: str
    end_point: str
    result: TunnelResult | None = None
    error: PolicyFailure | None = None


class ProvisionTunnelsResult(Open):
    """``provision_tunnels``'s answer: every request in request order."""

    tunnels: list[PolicyProvisioned]


class SteerPolicies(Strict):
    """Every policy of one incident steered in one task (``steer_traffic`` takes one each), so
    the services' ends are looked up once. Each request is what ``steer_traffic`` takes."""

    incident_id: str
    policies: list[SteerTraffic] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_incident(self) -> SteerPolicies:
        for i, policy in enumerate(self.policies):
            if policy.incident_id != self.incident_id:
                raise ValueError(f"policies[{i}].incident_id: not the batch's {self.incident_id}")
        return self


class PolicySteered(Open):
    """One policy's part of ``steer_policies``: its ``steer_traffic`` answer, or its failure."""

    tunnel_id: str
    result: TrafficSteered | None = None
    error: PolicyFailure | None = None


class SteerPoliciesResult(Open):
    """``steer_policies``'s answer: every policy in request order."""

    policies: list[PolicySteered]


# --- notify (8007) and audit (8008) --------------------------------------------------------


NotifyChannel = Literal["webex", "servicenow", "email"]

SERVICENOW_SYS_ID_LABEL = "servicenow_sys_id"
SERVICENOW_NUMBER_LABEL = "servicenow_number"
"""The labels a ticket that came from ServiceNow carries (the correlator's ``servicenow``
source sets them). They travel with the ticket's labels to the runbook session, whose
notifications repeat them as ``Notify.details["servicenow"] = {"sys_id", "number"}`` so that
notify updates that record instead of creating a second one."""


class Notify(Strict):
    incident_id: str | None = None
    event: str
    severity: Severity = "medium"
    tier: Tier | None = None
    subject: str
    body: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    channels: list[NotifyChannel] | None = Field(default=None, exclude_if=lambda v: v is None)
    """Only these channels, of those the routing picks (a runbook step's work note goes to
    ServiceNow alone, never to Webex or Email); unset, the routing decides alone. Left out of
    the dump when unset, so a notification without it is the same on the wire as before."""


class NotifyResult(Open):
    """``notify``'s answer: the routing decision and one outcome per channel routed to (status
    sent/queued/retrying/skipped/failed/abandoned, attempts, the channel's id, the error)."""

    incident_id: str | None
    event: str
    template: str
    level: str
    channels: dict[str, dict[str, Any]]


class AuditEvent(Strict):
    event_type: str
    incident_id: str | None = None
    source_agent: str
    details: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime = Field(default_factory=utcnow)


class AuditAppended(Open):
    """``audit_event``'s answer, given once the event is committed: its place in the chain
    (``duplicate`` when this idempotency key was already appended)."""

    id: int
    seq: int
    hash: str
    event_type: str
    duplicate: bool


class AuditEventItem(Strict):
    """One event of ``audit_events``, with the idempotency key ``audit_event`` would have had."""

    key: str = Field(min_length=1, max_length=200)
    payload: AuditEvent


class AuditEvents(Strict):
    """``audit_events``: events appended in this order, in one transaction; each keeps its
    own key, so one already stored is answered from the stored row (as ``audit_event`` is)."""

    items: list[AuditEventItem] = Field(min_length=1, max_length=500)


class AuditEventsAppended(Open):
    """``audit_events``' answer, once all are committed: one ``AuditAppended`` per item."""

    results: list[AuditAppended]


# --- path (8003): extra skills -------------------------------------------------------------


class KShortestPaths(ComputePath):
    """``k_shortest_paths``: the constraints of ``compute_path``, up to ``k`` loopless paths."""

    k: int = Field(default=3, ge=1, le=10)


class KPathsResult(Open):
    paths: list[PathResult]


class GetTopology(Strict):
    """``get_topology``: the knowledge graph as the path agent sees it."""

    refresh: bool = False


class TopologyView(Open):
    """``get_topology``'s answer: the graph's digest, nodes with their attributes, links."""

    digest: str
    nodes: list[dict[str, Any]]
    links: list[dict[str, Any]]


# --- traffic (8006) ------------------------------------------------------------------------


class LinkUtilisation(Strict):
    """``link_utilisation``: every link's load and delay from CNC's performance metrics."""

    links: list[str] = Field(default_factory=list)
    """Links to report (``pe1-pe2``, either direction); empty means every link."""
    incident_id: str | None = None
    max_age_s: float | None = Field(default=None, ge=0)
    """Answer from the last sample when it is at most this old (seconds), else sample now;
    None samples now. A sample is two keyed reads per link (thousands on a large network):
    a caller that needs the loads often (the path agent) takes the sampler's instead."""


class LinkLoad(Open):
    link_id: str
    utilisation_pct: float | None = None
    """The busier direction's load in percent of capacity; None when CNC gave no rate."""
    directions: dict[str, float] = Field(default_factory=dict)
    capacity_mbps: float | None = None
    interval_s: float | None = None
    rate_mbps: float | None = None
    """What the busier direction carries (CNC's ``bandwidth-utilization-kbps``)."""
    delay_ms: float | None = None
    """The worse direction's delay; None when neither direction's read gave one."""


class UtilisationResult(Open):
    links: dict[str, LinkLoad]
    sampled_at: datetime


class DemandMatrix(Strict):
    """``demand_matrix``: head-end x end-point demand from the VPN services' bandwidth."""

    tiers: list[Tier] = Field(default_factory=list)
    """Only services of these tiers; empty means all."""
    incident_id: str | None = None


class Demand(Open):
    head_end: str
    end_point: str
    demand_mbps: float
    services: int


class DemandResult(Open):
    nodes: list[str]
    matrix: dict[str, dict[str, float]]
    """``matrix[head_end][end_point]`` in Mbps; pairs with no service are absent."""
    demands: list[Demand]
    total_mbps: float


class PredictCongestion(Strict):
    """``predict_congestion``: forecast each link's utilisation ``horizon_s`` ahead."""

    links: list[str] = Field(default_factory=list)
    horizon_s: float = Field(default=300.0, gt=0)
    threshold_pct: float = Field(default=70.0, gt=0, le=100)
    """Seed 003: the proactive flow pre-provisions at 70 % predicted utilisation."""
    incident_id: str | None = None


class LinkForecast(Open):
    link_id: str
    samples: int
    current_pct: float | None = None
    level_pct: float | None = None
    """The forecast line's value at the newest sample."""
    trend_pct_per_s: float = 0.0
    predicted_pct: float | None = None
    congested: bool = False


class CongestionResult(Open):
    horizon_s: float
    threshold_pct: float
    links: dict[str, LinkForecast]
    congested_links: list[str]


LinkName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:]+-[A-Za-z0-9_.:]+(#[0-9]+)?$")]
"""A link by its two nodes (``pe1-pe2``, either direction; ``#2`` names a parallel link)."""


class LinkForecastRequest(Strict):
    """``link_forecast``: a link's measured, native and forecast load (the proactive flow).

    ``moved_share[link]`` is 1 - W_now / W_native, W being the committed bandwidth of the
    services riding the link now and of those whose base path crosses it: positive when CXM
    moved traffic off the link, *negative* when it moved more onto it (tunnels) than off it.
    native = measured / (1 - share), the share clamped to [-19, 0.95] (native between 1/20 and
    20 times what is measured). It applies to the samples taken at or after
    ``moved_since[link]`` (the earlier ones carried all their traffic), or to the whole window
    when no time is given.
    """

    links: list[LinkName] = Field(default_factory=list, max_length=1000)
    """Links to report; empty means every link sampled."""
    incident_id: str | None = None
    moved_share: dict[LinkName, Annotated[float, Field(ge=-1000, le=1)]] = Field(
        default_factory=dict
    )
    """Per link, the share moved off it (negative: moved onto it); see above."""
    moved_since: dict[LinkName, datetime] = Field(default_factory=dict)
    """When the share was moved (ISO 8601 or epoch seconds); optional, see above."""


class LinkLoadForecast(Open):
    """One link's load for the proactive flow and the console's chart (percent of capacity)."""

    link_id: str
    threshold_pct: float
    measured_pct: float | None = None
    """The newest sample: what the link carries now."""
    native_pct: float | None = None
    """What it would carry if the moved traffic came back."""
    predicted_pct: float | None = None
    """Forecast of the native load, ``horizon_s`` ahead (``analytics.forecast``)."""
    samples: list[tuple[float, float]] = Field(default_factory=list)
    """``[epoch_s, measured_pct]``, oldest first (the last few)."""
    native: list[tuple[float, float]] = Field(default_factory=list)
    """``[epoch_s, native_pct]`` for the same samples."""
    forecast: list[tuple[float, float]] = Field(default_factory=list)
    """``[epoch_s, pct]`` from the newest sample to the horizon (the native forecast)."""
    capacity_mbps: float | None = None
    horizon_s: float | None = None
    moved_share: float = 0.0
    """The share applied (after the clamp; negative: traffic moved onto the link)."""


class LinkForecastResult(Open):
    links: dict[str, LinkLoadForecast]
    """Keyed by the link as requested (every link sampled when none was)."""
    horizon_s: float


# --- correlator (8001) ---------------------------------------------------------------------

AlertStatus = Literal["firing", "resolved"]
AlertDisposition = Literal[
    "new_incident",
    "correlated",
    "duplicate",
    "suppressed",
    "dampened",
    "discarded",
    "false_positive",
]


class NormalizedAlert(Strict):
    """One alert in the correlator's own format (``POST /api/v1/alerts``, ``ingest_alerts``).

    Every webhook source is normalized into this shape; a link is named by its two nodes
    (``pe1-pe2``), a node-level alarm names ``node`` and no link.
    """

    source: str = Field(default="rest", min_length=1, max_length=32)
    link: str | None = Field(default=None, pattern=LINK_PATTERN)
    node: str | None = Field(default=None, min_length=1, max_length=128)
    host: str | None = Field(default=None, min_length=1, max_length=128)
    """A host, service or database that is not a network node: the alert becomes a host
    ticket (runbooks), never the network loop."""
    status: AlertStatus = "firing"
    severity: Severity = "medium"
    metric: str | None = None
    value: float | None = None
    """The measured value that triggered the alert."""
    threshold: float | None = None
    summary: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    fingerprint: str | None = Field(default=None, max_length=128)
    """The source's own identity for the alert (Alertmanager's fingerprint); derived if absent."""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    timestamp: datetime | None = None
    """When the source observed this state; alerts older than the stale limit are discarded."""
    duration_s: float | None = Field(default=None, ge=0)
    external_id: str | None = None


class IngestAlerts(Strict):
    """``ingest_alerts``: normalized alerts from a peer (Traffic Analytics' proactive alerts)."""

    alerts: list[NormalizedAlert] = Field(min_length=1, max_length=10000)
    proactive: bool = False
    """Predicted, not measured: the incident starts as proactive and skips false-positive triage."""


class AlertOutcome(Open):
    """What the correlator did with one alert."""

    id: str
    disposition: str
    incident_id: str | None
    reason: str
    fingerprint: str
    link: str | None


class IngestResult(Open):
    """``ingest_alerts``'s answer: one outcome per alert, in the order sent."""

    accepted: int
    alerts: list[AlertOutcome]


class CloseResult(Open):
    """``incident_closed``'s answer: ``closed`` False when the correlator had already let the
    incident go (a redelivery)."""

    incident_id: str
    closed: bool


# --- orchestrator (8000): runbooks, sessions, connections and credentials (IO → orchestrator) --
#
# IO is the front door for people and forwards these; the orchestrator validates the
# contents with its own models (the vault's, the inventory's, the runbook documents'), so the
# wire carries them loosely and a 422 names the field the orchestrator refused. ``by`` is
# the authenticated user IO attributes the action to.


class CreateCredential(Strict):
    """``create_credential``: the secret travels once, to the vault; never echoed back."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    username: str | None = None
    secret: SecretStr
    by: str = Field(min_length=1)

    @field_serializer("secret", when_used="json")
    def _reveal_on_the_wire(self, value: SecretStr) -> str:
        # Only the JSON sent to the orchestrator holds it; repr and logs show asterisks.
        return value.get_secret_value()


class CredentialInfo(Open):
    """A credential as every answer shows it: never the secret."""

    name: str
    kind: str
    username: str | None = None
    created_at: datetime
    updated_at: datetime


class ListCredentials(Strict):
    pass


class CredentialList(Open):
    credentials: list[CredentialInfo]


class DeleteCredential(Strict):
    name: str = Field(min_length=1)
    by: str = Field(min_length=1)


class Deleted(Open):
    name: str
    deleted: bool


class RotateCredentialKey(Strict):
    by: str = Field(min_length=1)


class KeyRotated(Open):
    """``key_id`` fingerprints the key now in use (never the key)."""

    rotated: int
    key_id: str
    retired_keys: int


class CreateConnection(Strict):
    """``create_connection``: ``connection`` is the inventory entry (validated there)."""

    connection: dict[str, Any]
    by: str = Field(min_length=1)


class ConnectionInfo(Open):
    name: str
    environment: str
    connector: str


class ListConnections(Strict):
    environment: str | None = None


class ConnectionList(Open):
    connections: list[ConnectionInfo]


class TestConnection(Strict):
    __test__ = False  # a model, not a pytest class

    name: str = Field(min_length=1)
    by: str = Field(min_length=1)


class ConnectionTested(Open):
    ok: bool
    detail: str
    latency_ms: float
    kind: str | None = None


class SaveRunbook(Strict):
    """``save_runbook``: a document as sent (JSON or YAML text); no ``runbook_id`` creates
    version 1, a ``runbook_id`` stores the next version of that runbook."""

    body: str
    content_type: str = "application/json"
    runbook_id: str | None = None
    by: str = Field(min_length=1)


class RunbookSaved(Open):
    runbook_id: str
    version: int


class GetRunbook(Strict):
    runbook_id: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1)


class RunbookView(Open):
    runbook_id: str
    version: int
    document: dict[str, Any]
    source: str
    created_at: datetime


class ListRunbooks(Strict):
    pass


class MatchRunbooks(Strict):
    """A ticket's words, to rank the runbooks for (``POST /api/v1/runbooks/match``)."""

    title: str = Field(min_length=1, max_length=2000)
    description: str = Field(default="", max_length=20000)
    labels: dict[str, str] = Field(default_factory=dict)
    severity: Severity = "medium"
    host: str | None = None


class RunbookMatchFactors(Open):
    semantic: float
    keyword: float
    history: float
    recency: float


class RunbookMatch(Open):
    runbook_id: str
    title: str
    confidence: float
    factors: RunbookMatchFactors
    explanation: str


class RunbookMatches(Open):
    """The best runbooks first; ``none_likely`` when none of them really fits."""

    matches: list[RunbookMatch]
    none_likely: bool = False
    none_reason: str | None = None


class RunbookList(Open):
    runbooks: list[RunbookView]


class StartRunbookSession(Strict):
    """An operator (``started_by``) runs a runbook for a ticket; ``ticket`` holds the values
    the steps' placeholders read (``title``, ``host``, ``labels``...)."""

    incident_id: str = Field(min_length=1)
    runbook_id: str = Field(min_length=1)
    started_by: str = Field(min_length=1)
    ticket: dict[str, Any] = Field(default_factory=dict)


class SessionStarted(Open):
    session_id: str
    incident_id: str
    runbook_id: str
    version: int
    status: str


class GetRunbookSession(Strict):
    session_id: str = Field(min_length=1)


class SessionStep(Open):
    name: str
    phase: str
    status: str
    exit_code: int | None = None
    output: str = ""
    started_at: str | None = None
    finished_at: str | None = None


class SessionVerification(Open):
    outcome: Literal["resolved", "in_progress", "escalated"]
    confidence: float
    reasons: list[str]


class SessionView(Open):
    """``GET /api/v1/runbook-sessions/{id}``: DESIGN's fields, plus who started it and what
    waits for a decision."""

    session_id: str
    incident_id: str
    runbook_id: str
    status: Literal["running", "waiting_approval", "completed", "failed", "rejected"]
    steps: list[SessionStep]
    verification: SessionVerification | None = None

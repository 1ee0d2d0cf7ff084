"""Every mesh task type, declared once: who serves it, what it takes, what it answers.

A :class:`Contract` ties a task type to the agent that serves it, its request and response
models (``shared.models``), the error codes its handler may answer with, and the description
and tags of the agent card's skill. Both ends use the same object, so a call site and its
handler cannot drift apart, and mypy checks the request and the answer's type::

    @spec.serve(COMPUTE_PATH)                                    # services/path/app.py
    async def compute_path(request: ComputePath, ctx: TaskContext) -> PathResult: ...

    result = await mesh.call(COMPUTE_PATH, ComputePath(...))     # result: PathResult
    await outbox.put(AUDIT_EVENT, AuditEvent(...), key=...)      # fire-and-forget, durable

``handler`` names the function that serves each contract (tests/foundation checks it stays
true), so from a call site: go to the contract's definition, then to its handler.

``errors`` lists the codes of the handler's own ``TaskFailed`` answers (and ``southbound``
when a CNC/PCA failure reaches the caller). A caller matches them on ``PeerError.code``; every
handler may also answer ``mesh`` (502, a peer of its own failed) and 4xx without a code for an
envelope it refuses (unknown task type, invalid payload: ``PeerError.detail`` lists fields).

To add a task type: declare it here (models in ``shared.models``), serve it with
``@spec.serve`` in its agent's app, call it with ``mesh.call`` or ``outbox.put``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel

from shared.models import (
    AUDIT_EVENT_TYPES,
    ApprovalDecision,
    ApprovalRequired,
    ApprovalStored,
    AssessImpact,
    AuditAppended,
    AuditEvent,
    AuditEvents,
    AuditEventsAppended,
    CheckSla,
    Cleanup,
    CleanupPolicies,
    CleanupPoliciesResult,
    CloseResult,
    ComputePath,
    ComputePaths,
    CongestionResult,
    ConnectionInfo,
    ConnectionList,
    ConnectionTested,
    CreateConnection,
    CreateCredential,
    CredentialInfo,
    CredentialList,
    CutoverPolicies,
    CutoverPoliciesResult,
    CutoverResult,
    CutoverStep,
    DecisionResult,
    DeleteCredential,
    Deleted,
    DeleteTunnel,
    DemandMatrix,
    DemandResult,
    ErrorNotice,
    GetIncident,
    GetRunbook,
    GetRunbookSession,
    GetTopology,
    ImpactResult,
    IncidentClosed,
    IncidentSignal,
    IncidentStarted,
    IncidentView,
    IngestAlerts,
    IngestResult,
    KeyRotated,
    KPathsResult,
    KShortestPaths,
    LinkForecastRequest,
    LinkForecastResult,
    LinkUtilisation,
    ListConnections,
    ListCredentials,
    ListRunbooks,
    MatchRunbooks,
    NewTicket,
    Notify,
    NotifyResult,
    PathResult,
    PathsResult,
    PredictCongestion,
    ProvisionTunnel,
    ProvisionTunnels,
    ProvisionTunnelsResult,
    RerouteTunnel,
    RotateCredentialKey,
    RunbookList,
    RunbookMatches,
    RunbookSaved,
    RunbookView,
    SaveRunbook,
    SessionStarted,
    SessionView,
    SignalResult,
    SlaResult,
    StartIncident,
    StartRunbookSession,
    StatusUpdate,
    SteerPolicies,
    SteerPoliciesResult,
    SteerTraffic,
    TestConnection,
    TicketClosed,
    TicketStored,
    TopologyView,
    TrafficSteered,
    TunnelDeleted,
    TunnelRerouted,
    TunnelResult,
    UtilisationResult,
)

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)


@dataclass(frozen=True, eq=False)
class Contract(Generic[Req, Resp]):
    """One task type of the mesh: ``agent`` serves ``task_type``, taking ``request`` and
    answering ``response``; identity-compared, since each is declared exactly once."""

    agent: str
    task_type: str
    request: type[Req]
    response: type[Resp]
    description: str
    handler: str
    """The dotted name of the function that serves it (``services.path.app.compute_path``)."""
    errors: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    batch: Contract[Any, Any] | None = None
    """The same agent's contract that takes several of these requests in one task (its
    request is ``{items: [{key, payload}]}``, its answer one result per item, in order): the
    outbox sends a peer's due rows of this task type through it in one request."""

    def __repr__(self) -> str:
        return f"Contract({self.agent}/{self.task_type})"


# --- IO (8009): the seed's notifications ---------------------------------------------------

NEW_TICKET: Final = Contract(
    agent="io",
    task_type="new_ticket",
    request=NewTicket,
    response=TicketStored,
    description="Open a ticket for a new incident",
    handler="services.io.app.new_ticket",
    tags=("ticket",),
)
STATUS_UPDATE: Final = Contract(
    agent="io",
    task_type="status_update",
    request=StatusUpdate,
    response=TicketStored,
    description="Record a phase transition of an incident",
    handler="services.io.app.status_update",
    tags=("ticket",),
)
TICKET_CLOSED: Final = Contract(
    agent="io",
    task_type="ticket_closed",
    request=TicketClosed,
    response=TicketStored,
    description="Close a ticket with its resolution",
    handler="services.io.app.ticket_closed",
    tags=("ticket",),
)
ERROR_NOTICE: Final = Contract(
    agent="io",
    task_type="error",
    request=ErrorNotice,
    response=TicketStored,
    description="Record an error raised while handling an incident",
    handler="services.io.app.error",
    tags=("ticket",),
)
APPROVAL_REQUIRED: Final = Contract(
    agent="io",
    task_type="approval_required",
    request=ApprovalRequired,
    response=ApprovalStored,
    description="Ask an operator to approve an action",
    handler="services.io.app.approval_required",
    tags=("approval",),
)

# --- orchestrator (8000) -------------------------------------------------------------------

START_INCIDENT: Final = Contract(
    agent="orchestrator",
    task_type="start_incident",
    request=StartIncident,
    response=IncidentStarted,
    description=(
        "Run the incident state machine for a new incident (a known incident id is a no-op)"
    ),
    handler="services.orchestrator.app.start_incident",
    tags=("incident",),
)
INCIDENT_SIGNAL: Final = Contract(
    agent="orchestrator",
    task_type="incident_signal",
    request=IncidentSignal,
    response=SignalResult,
    description=(
        "Something changed about an open incident: links added, dampen/resume, cleared, resolved"
    ),
    handler="services.orchestrator.app.incident_signal",
    errors=("unknown_incident",),
    tags=("incident",),
)
APPROVAL_DECISION: Final = Contract(
    agent="orchestrator",
    task_type="approval_decision",
    request=ApprovalDecision,
    response=DecisionResult,
    description="An operator approved or rejected a pending action; resumes the incident",
    handler="services.orchestrator.app.approval_decision",
    errors=("approval_not_pending", "four_eyes"),
    tags=("approval",),
)
GET_INCIDENT: Final = Contract(
    agent="orchestrator",
    task_type="get_incident",
    request=GetIncident,
    response=IncidentView,
    description="An incident's state, phase, timers and approvals",
    handler="services.orchestrator.app.get_incident",
    errors=("unknown_incident",),
)

# --- orchestrator (8000): runbooks, sessions, connections, credentials (IO forwards) -------

_RB = "services.orchestrator.runbooks.api"
CREATE_CREDENTIAL: Final = Contract(
    agent="orchestrator",
    task_type="create_credential",
    request=CreateCredential,
    response=CredentialInfo,
    description="Store a credential encrypted in the vault (the answer never holds the secret)",
    handler=f"{_RB}.create_credential",
    errors=("invalid", "credential_exists"),
    tags=("runbook", "credential"),
)
LIST_CREDENTIALS: Final = Contract(
    agent="orchestrator",
    task_type="list_credentials",
    request=ListCredentials,
    response=CredentialList,
    description="The vault's credentials, without their secrets",
    handler=f"{_RB}.list_credentials",
    tags=("runbook", "credential"),
)
DELETE_CREDENTIAL: Final = Contract(
    agent="orchestrator",
    task_type="delete_credential",
    request=DeleteCredential,
    response=Deleted,
    description="Remove a credential from the vault and close what used it",
    handler=f"{_RB}.delete_credential",
    errors=("credential_not_found",),
    tags=("runbook", "credential"),
)
ROTATE_CREDENTIAL_KEY: Final = Contract(
    agent="orchestrator",
    task_type="rotate_credential_key",
    request=RotateCredentialKey,
    response=KeyRotated,
    description="Re-encrypt every credential under a new key, with no downtime (MultiFernet)",
    handler=f"{_RB}.rotate_credential_key",
    errors=("vault_key",),
    tags=("runbook", "credential"),
)
CREATE_CONNECTION: Final = Contract(
    agent="orchestrator",
    task_type="create_connection",
    request=CreateConnection,
    response=ConnectionInfo,
    description="Add a named target (ssh, database, http, local) to the connection inventory",
    handler=f"{_RB}.create_connection",
    errors=("invalid", "connection_exists"),
    tags=("runbook", "connection"),
)
LIST_CONNECTIONS: Final = Contract(
    agent="orchestrator",
    task_type="list_connections",
    request=ListConnections,
    response=ConnectionList,
    description="The connection inventory, optionally of one environment",
    handler=f"{_RB}.list_connections",
    tags=("runbook", "connection"),
)
TEST_CONNECTION: Final = Contract(
    agent="orchestrator",
    task_type="test_connection",
    request=TestConnection,
    response=ConnectionTested,
    description="Reach a connection's target with its credential; say what failed",
    handler=f"{_RB}.test_connection",
    tags=("runbook", "connection"),
)
SAVE_RUNBOOK: Final = Contract(
    agent="orchestrator",
    task_type="save_runbook",
    request=SaveRunbook,
    response=RunbookSaved,
    description="Store a runbook document (JSON or YAML): a new runbook, or its next version",
    handler=f"{_RB}.save_runbook",
    errors=("runbook_invalid", "runbook_exists", "runbook_not_found", "runbook_write_conflict"),
    tags=("runbook",),
)
GET_RUNBOOK: Final = Contract(
    agent="orchestrator",
    task_type="get_runbook",
    request=GetRunbook,
    response=RunbookView,
    description="A runbook's latest (or given) version",
    handler=f"{_RB}.get_runbook",
    errors=("runbook_not_found",),
    tags=("runbook",),
)
LIST_RUNBOOKS: Final = Contract(
    agent="orchestrator",
    task_type="list_runbooks",
    request=ListRunbooks,
    response=RunbookList,
    description="The latest version of every runbook",
    handler=f"{_RB}.list_runbooks",
    tags=("runbook",),
)
START_RUNBOOK_SESSION: Final = Contract(
    agent="orchestrator",
    task_type="start_runbook_session",
    request=StartRunbookSession,
    response=SessionStarted,
    description="Run a runbook for a ticket, step by step, as a durable session",
    handler=f"{_RB}.start_runbook_session",
    errors=("runbook_not_found", "session_limit"),
    tags=("runbook", "session"),
)
MATCH_RUNBOOKS: Final = Contract(
    agent="orchestrator",
    task_type="match_runbooks",
    request=MatchRunbooks,
    response=RunbookMatches,
    description="Rank the runbooks for a ticket's words (no side effect)",
    handler=f"{_RB}.match_runbooks",
    tags=("runbook",),
)
GET_RUNBOOK_SESSION: Final = Contract(
    agent="orchestrator",
    task_type="get_runbook_session",
    request=GetRunbookSession,
    response=SessionView,
    description="A runbook session's steps, status and verification",
    handler=f"{_RB}.get_runbook_session",
    errors=("unknown_session",),
    tags=("runbook", "session"),
)

# --- correlator (8001) ---------------------------------------------------------------------

INGEST_ALERTS: Final = Contract(
    agent="correlator",
    task_type="ingest_alerts",
    request=IngestAlerts,
    response=IngestResult,
    description="Ingest normalized alerts (proactive ones from Traffic Analytics)",
    handler="services.correlator.app.ingest_alerts",
    tags=("alerts",),
)
INCIDENT_CLOSED: Final = Contract(
    agent="correlator",
    task_type="incident_closed",
    request=IncidentClosed,
    response=CloseResult,
    description="The orchestrator closed an incident; its links are free again",
    handler="services.correlator.app.incident_closed",
    tags=("incident",),
)

# --- impact (8002) -------------------------------------------------------------------------

ASSESS_IMPACT: Final = Contract(
    agent="impact",
    task_type="assess_impact",
    request=AssessImpact,
    response=ImpactResult,
    description=(
        "List the VPN services whose path crosses the degraded links, with their SLA tiers"
    ),
    handler="services.impact.app.assess_impact",
    errors=("southbound",),
    tags=("impact", "cnc"),
)

# --- path (8003) ---------------------------------------------------------------------------

COMPUTE_PATH: Final = Contract(
    agent="path",
    task_type="compute_path",
    request=ComputePath,
    response=PathResult,
    description=("Shortest path avoiding links, nodes and SRLGs on a delay, TE, IGP or hop metric"),
    handler="services.path.app.compute_path",
    errors=("southbound",),
    tags=("path", "dijkstra"),
)
"""No path is an answer, not an error: ``found=False`` with a ``reason``."""
COMPUTE_PATHS: Final = Contract(
    agent="path",
    task_type="compute_paths",
    request=ComputePaths,
    response=PathsResult,
    description=(
        "A path per service group of one incident, each with room for its traffic on top of "
        "the groups before it"
    ),
    handler="services.path.app.compute_paths",
    errors=("southbound",),
    tags=("path", "dijkstra", "bandwidth"),
)
K_SHORTEST_PATHS: Final = Contract(
    agent="path",
    task_type="k_shortest_paths",
    request=KShortestPaths,
    response=KPathsResult,
    description="Up to k loopless alternative paths under the same constraints (Yen)",
    handler="services.path.app.k_shortest_paths",
    errors=("southbound",),
    tags=("path",),
)
GET_TOPOLOGY: Final = Contract(
    agent="path",
    task_type="get_topology",
    request=GetTopology,
    response=TopologyView,
    description="The topology knowledge graph",
    handler="services.path.app.get_topology",
    errors=("southbound",),
    tags=("topology",),
)

# --- tunnel (8004) -------------------------------------------------------------------------

PROVISION_TUNNEL: Final = Contract(
    agent="tunnel",
    task_type="provision_tunnel",
    request=ProvisionTunnel,
    response=TunnelResult,
    description=(
        "Create (once per incident) an explicit-path protection SR policy with a binding SID"
    ),
    handler="services.tunnel.app.provision_tunnel",
    errors=("bad_path", "unknown_node", "te_unsupported", "tunnel_provision_failed"),
    tags=("tunnel", "sr-policy", "cnc"),
)
"""``tunnel_provision_failed`` (502) comes after the agent's own retries: final."""
STEER_TRAFFIC: Final = Contract(
    agent="tunnel",
    task_type="steer_traffic",
    request=SteerTraffic,
    response=TrafficSteered,
    description="Steer the services' traffic onto the protection tunnel (100 %)",
    handler="services.tunnel.app.steer_traffic",
    errors=("unknown_tunnel", "tunnel_not_up", "no_steerable_services", "southbound"),
    tags=("tunnel", "steering"),
)
PROVISION_TUNNELS: Final = Contract(
    agent="tunnel",
    task_type="provision_tunnels",
    request=ProvisionTunnels,
    response=ProvisionTunnelsResult,
    description=(
        "Create (once per incident and pair of ends) several protection SR policies at once, "
        "CNC's topology and policies read once; each policy answered (or failed) on its own"
    ),
    handler="services.tunnel.app.provision_tunnels",
    errors=("tunnel_provision_failed", "southbound"),
    tags=("tunnel", "sr-policy", "cnc"),
)
"""A policy's own failure (``tunnel_provision_failed``, ``bad_path``…) is answered in its
place. The whole task fails with ``southbound`` (503) for a passing CNC failure of its shared
read, to be retried whole, and with ``tunnel_provision_failed`` (502, final) when that read
failed for good."""
STEER_POLICIES: Final = Contract(
    agent="tunnel",
    task_type="steer_policies",
    request=SteerPolicies,
    response=SteerPoliciesResult,
    description=(
        "Steer several groups' traffic, each onto its protection tunnel (100 %), at once; "
        "each policy answered (or failed) on its own"
    ),
    handler="services.tunnel.app.steer_policies",
    errors=("southbound",),
    tags=("tunnel", "steering"),
)
REROUTE_TUNNEL: Final = Contract(
    agent="tunnel",
    task_type="reroute_tunnel",
    request=RerouteTunnel,
    response=TunnelRerouted,
    description=(
        "Move a live protection tunnel onto a new explicit path; its binding SID, color and "
        "steered traffic stay (CNC sr-policy-modify)"
    ),
    handler="services.tunnel.app.reroute_tunnel",
    errors=(
        "unknown_tunnel",
        "tunnel_not_up",
        "bad_path",
        "unknown_node",
        "te_unsupported",
        "tunnel_reroute_failed",
    ),
    tags=("tunnel", "sr-policy", "cnc"),
)
DELETE_TUNNEL: Final = Contract(
    agent="tunnel",
    task_type="delete_tunnel",
    request=DeleteTunnel,
    response=TunnelDeleted,
    description="Remove the protection tunnel (idempotent: an absent tunnel is already deleted)",
    handler="services.tunnel.app.delete_tunnel",
    errors=("southbound",),
    tags=("tunnel", "sr-policy"),
)

# --- restore (8005) ------------------------------------------------------------------------

CHECK_SLA: Final = Contract(
    agent="restore",
    task_type="check_sla",
    request=CheckSla,
    response=SlaResult,
    description="Check the links' delay, jitter and loss against the PCA alert thresholds",
    handler="services.restore.app.check_sla",
    errors=("southbound",),
    tags=("sla", "pca"),
)
CUTOVER_STEP: Final = Contract(
    agent="restore",
    task_type="cutover_step",
    request=CutoverStep,
    response=CutoverResult,
    description=(
        "Move traffic back one step (protection/original %) and re-check the original links"
    ),
    handler="services.restore.app.cutover_step",
    errors=("bad_cutover_step", "unknown_tunnel", "southbound"),
    tags=("cutover", "cnc", "pca"),
)
CLEANUP: Final = Contract(
    agent="restore",
    task_type="cleanup",
    request=Cleanup,
    response=TunnelDeleted,
    description="Take all traffic off the protection tunnel and delete it (idempotent)",
    handler="services.restore.app.cleanup",
    errors=("southbound",),
    tags=("cleanup", "cnc"),
)
CUTOVER_POLICIES: Final = Contract(
    agent="restore",
    task_type="cutover_policies",
    request=CutoverPolicies,
    response=CutoverPoliciesResult,
    description=(
        "One cutover step on several policies at once (protection/original %), the original "
        "links checked once; each policy answered (or failed) on its own"
    ),
    handler="services.restore.app.cutover_policies",
    errors=("bad_cutover_step", "southbound"),
    tags=("cutover", "cnc", "pca"),
)
CLEANUP_POLICIES: Final = Contract(
    agent="restore",
    task_type="cleanup_policies",
    request=CleanupPolicies,
    response=CleanupPoliciesResult,
    description=(
        "Take all traffic off several protection tunnels and delete them (idempotent); each "
        "policy answered (or failed) on its own"
    ),
    handler="services.restore.app.cleanup_policies",
    errors=("southbound",),
    tags=("cleanup", "cnc"),
)

# --- traffic (8006) ------------------------------------------------------------------------

LINK_UTILISATION: Final = Contract(
    agent="traffic",
    task_type="link_utilisation",
    request=LinkUtilisation,
    response=UtilisationResult,
    description="Per-link utilisation (%) from the deltas of CNC interface counters",
    handler="services.traffic.app.link_utilisation",
    errors=("southbound",),
    tags=("traffic", "utilisation"),
)
DEMAND_MATRIX: Final = Contract(
    agent="traffic",
    task_type="demand_matrix",
    request=DemandMatrix,
    response=DemandResult,
    description="Head-end x end-point demand in Mbps from the VPN services",
    handler="services.traffic.app.demand_matrix",
    errors=("southbound",),
    tags=("traffic", "demand"),
)
PREDICT_CONGESTION: Final = Contract(
    agent="traffic",
    task_type="predict_congestion",
    request=PredictCongestion,
    response=CongestionResult,
    description=(
        "Forecast each link's utilisation (robust trend of the recent samples); "
        "flag links at or above the threshold"
    ),
    handler="services.traffic.app.predict_congestion",
    tags=("traffic", "forecast", "proactive"),
)
LINK_FORECAST: Final = Contract(
    agent="traffic",
    task_type="link_forecast",
    request=LinkForecastRequest,
    response=LinkForecastResult,
    description=(
        "A link's measured, native (moved traffic added back) and forecast load, with recent "
        "samples and forecast points for a chart"
    ),
    handler="services.traffic.app.link_forecast",
    tags=("traffic", "forecast", "proactive"),
)

# --- notify (8007) and audit (8008) --------------------------------------------------------

NOTIFY: Final = Contract(
    agent="notify",
    task_type="notify",
    request=Notify,
    response=NotifyResult,
    description="Notify people on the channels the severity and tier call for",
    handler="services.notify.app.notify",
)
AUDIT_EVENTS: Final = Contract(
    agent="audit",
    task_type="audit_events",
    request=AuditEvents,
    response=AuditEventsAppended,
    description=(
        "Append several events to the audit log in order, in one transaction, each with its "
        "own idempotency key (what senders' outboxes use for a backlog of audit_event)"
    ),
    handler="services.audit.app.audit_events",
    tags=("audit",),
)
AUDIT_EVENT: Final = Contract(
    agent="audit",
    task_type="audit_event",
    request=AuditEvent,
    response=AuditAppended,
    description=(
        "Append an event to the hash-chained audit log (durable before acknowledged); "
        f"event types include {', '.join(AUDIT_EVENT_TYPES)}"
    ),
    handler="services.audit.app.audit_event",
    tags=("audit",),
    batch=AUDIT_EVENTS,
)


CONTRACTS: Final[tuple[Contract[Any, Any], ...]] = (
    NEW_TICKET,
    STATUS_UPDATE,
    TICKET_CLOSED,
    ERROR_NOTICE,
    APPROVAL_REQUIRED,
    START_INCIDENT,
    INCIDENT_SIGNAL,
    APPROVAL_DECISION,
    GET_INCIDENT,
    CREATE_CREDENTIAL,
    LIST_CREDENTIALS,
    DELETE_CREDENTIAL,
    ROTATE_CREDENTIAL_KEY,
    CREATE_CONNECTION,
    LIST_CONNECTIONS,
    TEST_CONNECTION,
    SAVE_RUNBOOK,
    GET_RUNBOOK,
    LIST_RUNBOOKS,
    START_RUNBOOK_SESSION,
    MATCH_RUNBOOKS,
    GET_RUNBOOK_SESSION,
    INGEST_ALERTS,
    INCIDENT_CLOSED,
    ASSESS_IMPACT,
    COMPUTE_PATH,
    COMPUTE_PATHS,
    K_SHORTEST_PATHS,
    GET_TOPOLOGY,
    PROVISION_TUNNEL,
    STEER_TRAFFIC,
    PROVISION_TUNNELS,
    STEER_POLICIES,
    REROUTE_TUNNEL,
    DELETE_TUNNEL,
    CHECK_SLA,
    CUTOVER_STEP,
    CLEANUP,
    CUTOVER_POLICIES,
    CLEANUP_POLICIES,
    LINK_UTILISATION,
    DEMAND_MATRIX,
    PREDICT_CONGESTION,
    LINK_FORECAST,
    NOTIFY,
    AUDIT_EVENT,
    AUDIT_EVENTS,
)
"""Every task type of the mesh, in the order of the agents' ports."""


def served_by(agent: str) -> tuple[Contract[Any, Any], ...]:
    """The contracts ``agent`` serves: exactly its agent card's skills."""
    return tuple(c for c in CONTRACTS if c.agent == agent)

"""The incident state machine as a LangGraph ``StateGraph``.

Nodes (``NODES`` in the seed's order, plus three helpers that ``nodes_executed`` never lists):

    start → detect ─┬─ dampen → wait ──────────────▶ monitor
                    └─ assess ─┬─ close (no impact)
                               ├─ escalate (impact failed)
                               └─ compute ─┬─ escalate (no path)
                                           └─ [approval] → provision → [approval] → steer
                                                              │
    monitor ⇄ wait (SLA poll, hold timer) → restore ⇄ wait (cutover steps) → close

Every node is ``async def node(state, config)`` and says where to go next in ``state["next"]``.
Waiting is never a sleeping coroutine: ``wait`` and ``approval`` end the run with a LangGraph
``interrupt`` whose value carries the due time; the scheduler resumes the thread with
``Command(resume=...)`` when the timer fires, an operator decides, or a signal arrives.

Side effects are safe to replay (a node re-runs after a crash or on resume):
- calls to peers carry an idempotency key made of the incident id and the graph ``step``, so
  the peer answers a replay from its record (one tunnel, ever);
- notifications go through the outbox with keys made the same way, so a replay queues nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator import store
from services.orchestrator.settings import OrchestratorSettings
from shared.errors import MeshError, MeshUnavailable
from shared.logs import get_logger
from shared.mesh import MeshClient, backoff_delay
from shared.models import (
    CUTOVER_STEPS,
    HOLD_TIMER_S,
    NODES,
    TIERS,
    ApprovalRequired,
    AssessImpact,
    AuditEvent,
    CheckSla,
    Cleanup,
    ComputePath,
    CutoverResult,
    CutoverStep,
    ErrorNotice,
    ImpactResult,
    IncidentClosed,
    Notify,
    PathResult,
    ProvisionTunnel,
    RerouteTunnel,
    SlaResult,
    StatusUpdate,
    SteerTraffic,
    TicketClosed,
    TunnelResult,
    utcnow,
)
from shared.outbox import Outbox
from shared.settings import Settings
from shared.southbound import link_key

log = get_logger(__name__)

SOURCE = "orchestrator"
SEVERITY_TIER: dict[str, str] = {
    "critical": "platinum",
    "high": "gold",
    "medium": "silver",
    "low": "bronze",
    "info": "bronze",
}
"""Seed 003's notification matrix pairs severities with tiers; used before impact is known."""
FINAL_PEER_CODES = ("tunnel_provision_failed",)
"""5xx codes a peer sends after its own retries: retrying the call again cannot help."""
STATUS_EVERY_N_CHECKS = 12
"""While the SLA stays degraded, tell IO about every Nth check only (plus every change)."""


def merge_unique(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append what is new, keep first-seen order: a replayed or looping node appears once."""
    out = list(left or [])
    for item in right or []:
        if item not in out:
            out.append(item)
    return out


def merge_dict(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class IncidentState(TypedDict, total=False):
    """Checkpointed state: plain JSON types only (times are ISO strings)."""

    incident_id: str
    severity: str
    summary: str
    created_at: str
    proactive: bool
    degraded_links: Annotated[list[str], merge_unique]
    nodes_executed: Annotated[list[str], merge_unique]
    approvals: Annotated[dict[str, Any], merge_dict]
    signals: Annotated[list[dict[str, Any]], merge_unique]
    step: int
    status: str
    phase: str
    next: str
    tier: str
    dampened_until: str | None
    dampen_count: int
    impact: dict[str, Any] | None
    path: dict[str, Any] | None
    tunnel: dict[str, Any] | None
    steered: bool
    reroutes: int
    tunnel_degraded: Annotated[list[str], merge_unique]
    """Links of a protection path that went out of SLA: avoided by every later re-route."""
    monitor: dict[str, Any] | None
    restore: dict[str, Any]
    cleaned: bool
    gate: dict[str, Any] | None
    wait: dict[str, Any] | None
    escalation: dict[str, Any] | None
    close_reason: str | None
    resolution: str | None


@dataclass
class Deps:
    """What nodes need besides state; passed as ``config["configurable"]["deps"]``.

    Only primitives of ``configurable`` reach checkpoint metadata, so this object is never
    serialized.
    """

    settings: Settings
    orch: OrchestratorSettings
    mesh: MeshClient
    outbox: Outbox
    engine: AsyncEngine


def initial_state(start: dict[str, Any]) -> IncidentState:
    """The state a new thread starts from, built from a validated ``StartIncident`` dump."""
    return IncidentState(
        incident_id=start["incident_id"],
        severity=start["severity"],
        summary=start["summary"],
        created_at=start["created_at"],
        proactive=bool(start.get("proactive", False)),
        degraded_links=list(start["degraded_links"]),
        dampened_until=start.get("dampened_until"),
        dampen_count=0,
        tier=SEVERITY_TIER.get(start["severity"], "bronze"),
        nodes_executed=[],
        approvals={},
        signals=[],
        step=0,
        status="new",
        phase="0",
        restore={"attempt": 0, "step": 0},
        cleaned=False,
        steered=False,
    )


def iso(dt: datetime) -> str:
    return dt.isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- side effects --------------------------------------------------------------------------


class Effects:
    """One node execution's side effects, keyed so that a replay repeats none of them."""

    def __init__(self, state: IncidentState, config: RunnableConfig):
        self.deps: Deps = config["configurable"]["deps"]
        self.state = state
        self.iid = state["incident_id"]
        self.step = state.get("step", 0)
        self._n = 0

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def orch(self) -> OrchestratorSettings:
        return self.deps.orch

    def key(self, what: str) -> str:
        return f"{self.iid}:{self.step}:{what}"

    def scaled(self, seconds: float) -> timedelta:
        return timedelta(seconds=self.settings.scaled(seconds))

    async def put(self, agent: str, task_type: str, payload: BaseModel) -> None:
        """Queue a task for a peer through the outbox (ordered, durable, once per key)."""
        self._n += 1
        await self.deps.outbox.put(
            agent, task_type, payload, key=self.key(f"{self._n}:{task_type}"), incident_id=self.iid
        )

    async def io(self, task_type: str, payload: BaseModel) -> None:
        if self.settings.io_enabled:
            await self.put("io", task_type, payload)
        else:
            self._n += 1  # keep later keys stable whether IO is enabled or not

    async def audit(self, event_type: str, details: dict[str, Any]) -> None:
        await self.put(
            "audit",
            "audit_event",
            AuditEvent(
                event_type=event_type, incident_id=self.iid, source_agent=SOURCE, details=details
            ),
        )

    async def status(
        self, status: str, phase: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        """``status_update`` to IO and the matching ``state_change`` audit event."""
        await self.io(
            "status_update",
            StatusUpdate(
                incident_id=self.iid,
                status=status,
                phase=phase,
                message=message,
                details=details or {},
            ),
        )
        await self.audit(
            "state_change",
            {
                "from": self.state.get("status"),
                "to": status,
                "phase": phase,
                "message": message,
            },
        )

    async def notify(self, event: str, subject: str, body: str, details: dict[str, Any]) -> None:
        await self.put(
            "notify",
            "notify",
            Notify(
                incident_id=self.iid,
                event=event,
                severity=cast(Any, self.state["severity"]),
                tier=cast(Any, self.state.get("tier")),
                subject=subject,
                body=body,
                details=details,
            ),
        )

    async def error(self, code: str, message: str, details: dict[str, Any]) -> None:
        await self.io(
            "error",
            ErrorNotice(
                incident_id=self.iid,
                error_code=code,
                message=message,
                details=details,
                source_agent=SOURCE,
            ),
        )
        await self.audit("error", {"error_code": code, "message": message, **details})

    async def call(self, agent: str, task_type: str, payload: BaseModel) -> dict[str, Any]:
        """Run a task on a peer with a replay-stable idempotency key.

        Transient failures are retried with backoff, except a 5xx that says the peer already
        gave up after its own retries (a tunnel that failed three times).
        """
        attempts = 1 + self.settings.mesh_retries
        for attempt in range(attempts):
            try:
                return await self.deps.mesh.send(
                    agent,
                    task_type,
                    payload,
                    incident_id=self.iid,
                    idempotency_key=self.key(task_type),
                    retries=0,
                )
            except MeshUnavailable as exc:
                if attempt == attempts - 1 or any(c in str(exc) for c in FINAL_PEER_CODES):
                    raise
                await asyncio.sleep(backoff_delay(attempt, self.deps.mesh.backoff_base))
        raise AssertionError("unreachable")  # pragma: no cover

    def done(self, **update: Any) -> dict[str, Any]:
        """The node's state update; every node execution advances ``step`` by one."""
        return {"step": self.step + 1, **update}


def failure_code(exc: MeshError, default: str) -> str:
    text = str(exc)
    for code in FINAL_PEER_CODES:
        if code in text:
            return code
    if isinstance(exc, MeshUnavailable):
        return "agent_unavailable"
    return default


def escalation(
    reason: str,
    message: str,
    *,
    error_code: str | None = None,
    resolution: str = "escalated",
    **details: Any,
) -> dict[str, Any]:
    """Route to ``escalate``; ``error_code`` also sends IO an ``error`` notification."""
    return {
        "next": "escalate",
        "escalation": {
            "reason": reason,
            "message": message,
            "error_code": error_code,
            "resolution": resolution,
            "details": details,
        },
    }


def peer_failed(exc: MeshError, code: str, what: str, **details: Any) -> dict[str, Any]:
    """Escalate because a peer call failed; the error names the peer's own code when it gave one."""
    return escalation(code, f"{what}: {exc}", error_code=failure_code(exc, code), **details)


def gate(
    fx: Effects,
    *,
    action: str,
    key: str,
    then: str,
    phase: str,
    details: dict[str, Any],
) -> dict[str, Any]:
    """Go to ``then``, through the ``approval`` node when policy wants a human for ``action``."""
    state = fx.state
    needed = fx.orch.requires_approval(action, severity=state["severity"], tier=state.get("tier"))
    if not needed or key in (state.get("approvals") or {}):
        return {"next": then}
    now = utcnow()
    return {
        "next": "approval",
        "gate": {
            "action": action,
            "key": key,
            "then": then,
            "phase": phase,
            "approval_id": f"APR-{fx.iid}-{key.replace(':', '-')}",
            "requested_at": iso(now),
            "expires_at": iso(now + fx.scaled(fx.orch.approval_timeout_s)),
            "details": details,
        },
    }


def wait_for(fx: Effects, *, seconds: float, then: str, reason: str) -> dict[str, Any]:
    """Pause in the ``wait`` node for ``seconds`` of the seed's time (scaled)."""
    due = utcnow() + fx.scaled(seconds)
    return {"next": "wait", "wait": {"reason": reason, "due": iso(due), "then": then}}


def _context(state: IncidentState) -> dict[str, Any]:
    """What an approver needs to see: services, path, tunnel, tier and severity."""
    impact = state.get("impact") or {}
    return {
        "severity": state["severity"],
        "tier": state.get("tier"),
        "degraded_links": state.get("degraded_links", []),
        "affected_services": impact.get("service_ids", []),
        "total_affected": impact.get("total_affected", 0),
        "path": (state.get("path") or {}).get("path"),
        "tunnel": state.get("tunnel"),
    }


# --- nodes ---------------------------------------------------------------------------------


async def start(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    await fx.audit(
        "state_change",
        {"from": None, "to": "new", "severity": state["severity"], "summary": state["summary"]},
    )
    return fx.done(nodes_executed=["start"], next="detect")


async def detect(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    links = state["degraded_links"]
    await fx.status(
        "detecting",
        "1",
        f"SLA degradation detected on {', '.join(links)}, assessing impact",
        {"degraded_links": links, "severity": state["severity"], "proactive": state["proactive"]},
    )
    until = state.get("dampened_until")
    route = "dampen" if until and parse(until) > utcnow() else "assess"
    return fx.done(nodes_executed=["detect"], status="detecting", phase="1", next=route)


async def dampen(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """Flapping: hold off with exponential backoff, then look at the SLA again."""
    fx = Effects(state, config)
    count = state.get("dampen_count", 0) + 1
    backoff = min(fx.orch.dampen_max_s, fx.orch.dampen_base_s * 2 ** (count - 1))
    now = utcnow()
    due = now + fx.scaled(backoff)
    until = state.get("dampened_until")
    if until and (count == 1 or parse(until) > due):
        due = parse(until)
    await fx.status(
        "dampening",
        "1",
        f"Link flapping on {', '.join(state['degraded_links'])}: dampened until {iso(due)}",
        {
            "dampened_until": iso(due),
            "attempt": count,
            "backoff_seconds": round((due - now).total_seconds(), 3),
            "degraded_links": state["degraded_links"],
        },
    )
    return fx.done(
        status="dampening",
        phase="1",
        dampen_count=count,
        dampened_until=iso(due),
        next="wait",
        wait={"reason": "dampening", "due": iso(due), "then": "monitor"},
    )


async def assess(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    try:
        raw = await fx.call(
            "impact",
            "assess_impact",
            AssessImpact(incident_id=fx.iid, degraded_links=state["degraded_links"]),
        )
        impact = ImpactResult.model_validate(raw)
    except MeshError as exc:
        return fx.done(
            nodes_executed=["assess"],
            **peer_failed(
                exc,
                "impact_failed",
                "Service impact assessment failed",
                agent="impact",
            ),
        )
    services = impact.affected_services
    ids = [s.service_id for s in services]
    tiers_present = [t for t in TIERS if impact.services_by_tier.get(t)] or [
        s.tier for s in services
    ]
    tier = impact.highest_tier or (tiers_present[0] if tiers_present else None)
    summary: dict[str, Any] = {
        "total_affected": impact.total_affected,
        "services_by_tier": impact.services_by_tier,
        "service_ids": ids,
        "highest_tier": tier,
    }
    if impact.total_affected == 0 or not services:
        await fx.status(
            "assessing",
            "2",
            "No customer service affected; closing",
            {
                "total_affected": 0,
                "services_by_tier": impact.services_by_tier,
                "affected_services": [],
            },
        )
        await fx.audit("service_impact_assessed", summary)
        return fx.done(
            nodes_executed=["assess"],
            impact=summary,
            status="assessing",
            phase="2",
            close_reason="no_impact",
            next="close",
        )
    top = [s for s in services if s.tier == tier] or services
    pairs = Counter((s.head_end, s.end_point) for s in top)
    (head_end, end_point), _ = pairs.most_common(1)[0]
    # what a tunnel between these ends will carry: the bandwidth its path must have room for
    carried = [s for s in services if (s.head_end, s.end_point) == (head_end, end_point)]
    summary.update(
        head_end=head_end,
        end_point=end_point,
        carried_ids=[s.service_id for s in carried],
        carried_mbps=round(sum(s.bandwidth_mbps or 0.0 for s in carried), 3),
    )
    await fx.status(
        "assessing",
        "2",
        f"{impact.total_affected} services affected, computing alternate path",
        {
            "total_affected": impact.total_affected,
            "services_by_tier": impact.services_by_tier,
            "affected_services": ids,
            "highest_tier": tier,
        },
    )
    await fx.audit("service_impact_assessed", summary)
    return fx.done(
        nodes_executed=["assess"],
        impact=summary,
        tier=tier or state.get("tier"),
        status="assessing",
        phase="2",
        next="compute",
    )


async def compute(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    impact = state.get("impact") or {}
    head_end, end_point = impact["head_end"], impact["end_point"]
    try:
        raw = await fx.call(
            "path",
            "compute_path",
            ComputePath(
                incident_id=fx.iid,
                head_end=head_end,
                end_point=end_point,
                avoid_links=state["degraded_links"],
                metric="delay",
                te_type=fx.orch.te_type,
                **_bandwidth(fx, impact, impact.get("carried_ids") or []),
            ),
        )
        result = PathResult.model_validate(raw)
    except MeshError as exc:
        return fx.done(
            nodes_executed=["compute"],
            **peer_failed(
                exc,
                "path_failed",
                "Path computation failed",
                agent="path",
            ),
        )
    if not result.found or len(result.path) < 2:
        return fx.done(
            nodes_executed=["compute"],
            status="computing",
            phase="3",
            **escalation(
                "no_path",
                f"No alternate path from {head_end} to {end_point} avoiding "
                f"{', '.join(state['degraded_links'])}: {result.reason or 'none found'}",
                head_end=head_end,
                end_point=end_point,
            ),
        )
    # the TE type the path's nodes all support (the tunnel agent confirms it in phase 4)
    path_type = fx.orch.te_type or (result.model_extra or {}).get("path_type") or "sr-mpls"
    path = {
        "path_type": path_type,
        "hop_count": result.hop_count or len(result.path) - 1,
        "path": result.path,
        "links": result.links,
        "head_end": head_end,
        "end_point": end_point,
        "total_delay_ms": result.total_delay_ms,
        "metric": result.metric,
    }
    await fx.status(
        "computing",
        "3",
        f"Alternate path found ({path_type}), provisioning tunnel",
        path,
    )
    await fx.audit("path_computed", {**path, "avoid_links": state["degraded_links"]})
    update = fx.done(nodes_executed=["compute"], path=path, status="computing", phase="3")
    update.update(
        gate(
            fx,
            action="provision",
            key="provision",
            then="provision",
            phase="4",
            details={
                **_context(state),
                "path": result.path,
                "head_end": head_end,
                "end_point": end_point,
            },
        )
    )
    return update


async def provision(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    path = state.get("path") or {}
    if crossed := _crossed(path, state["degraded_links"]):
        # A link of the computed path degraded while the step waited (for an approval).
        await fx.status(
            "computing",
            "3",
            f"Computed path now crosses degraded {', '.join(crossed)}; computing again",
            {"crossed": crossed, "path": path.get("path")},
        )
        return fx.done(next="compute")
    try:
        raw = await fx.call(
            "tunnel",
            "provision_tunnel",
            ProvisionTunnel(
                incident_id=fx.iid,
                head_end=path["head_end"],
                end_point=path["end_point"],
                path=path["path"],
                te_type=fx.orch.te_type or path.get("path_type"),
            ),
        )
        tunnel = TunnelResult.model_validate(raw)
    except MeshError as exc:
        return fx.done(
            nodes_executed=["provision"],
            **peer_failed(
                exc,
                "tunnel_provision_failed",
                "Protection tunnel provisioning failed",
                agent="tunnel",
                path=path.get("path"),
            ),
        )
    info = tunnel.model_dump(mode="json")
    await fx.status(
        "provisioning",
        "4",
        f"Protection tunnel created ({tunnel.te_type}), steering traffic",
        {
            "tunnel_id": tunnel.tunnel_id,
            "binding_sid": int(tunnel.binding_sid),
            "te_type": tunnel.te_type,
            "path": tunnel.path,
            "head_end": tunnel.head_end,
            "end_point": tunnel.end_point,
            "color": tunnel.color,
        },
    )
    await fx.audit("tunnel_provisioned", info)
    update = fx.done(nodes_executed=["provision"], tunnel=info, status="provisioning", phase="4")
    update.update(
        gate(
            fx,
            action="steer",
            key="steer",
            then="steer",
            phase="5",
            details={**_context(state), "tunnel": info},
        )
    )
    return update


def _steered_ids(state: IncidentState) -> list[str]:
    """The services on the tunnel: what steering carried, else every affected one."""
    tunnel = state.get("tunnel") or {}
    ids: list[str] = tunnel.get("service_ids") or (state.get("impact") or {}).get("service_ids", [])
    return ids


async def steer(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    tunnel = state.get("tunnel") or {}
    if _crossed(state.get("path"), _avoid(state)):
        return fx.done(next="reroute")  # never steer traffic onto a path that degraded
    ids = (state.get("impact") or {}).get("service_ids", [])
    try:
        steered = await fx.call(
            "tunnel",
            "steer_traffic",
            SteerTraffic(incident_id=fx.iid, tunnel_id=tunnel["tunnel_id"], service_ids=ids),
        )
    except MeshError as exc:
        return fx.done(
            nodes_executed=["steer"],
            **peer_failed(
                exc,
                "steer_failed",
                f"Steering traffic onto {tunnel['tunnel_id']} failed",
                agent="tunnel",
                tunnel_id=tunnel["tunnel_id"],
            ),
        )
    # the policy carries only the services between its two ends; cutover moves those
    carried = steered.get("services") or ids
    details = {
        "traffic_steered": True,
        "tunnel_id": tunnel["tunnel_id"],
        "service_ids": carried,
        "not_steered": steered.get("not_steered", []),
    }
    await fx.status(
        "steering", "5", f"Traffic steered onto {tunnel['tunnel_id']}, monitoring SLA", details
    )
    await fx.audit("traffic_steered", details)
    update = fx.done(
        nodes_executed=["steer"], steered=True, status="steering", phase="5", next="monitor"
    )
    update["tunnel"] = {**tunnel, "service_ids": carried}
    return update


async def monitor(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """One SLA check; loops through ``wait`` while polling and while the hold timer runs."""
    fx = Effects(state, config)
    now = utcnow()
    m = dict(state.get("monitor") or {"checks": 0, "started_at": iso(now), "hold_until": None})
    tier = state.get("tier") or "bronze"
    links = state["degraded_links"]
    checks = int(m["checks"])
    hold_until = m.get("hold_until")
    reverify = bool(hold_until) and parse(cast(str, hold_until)) <= now
    base = fx.done(nodes_executed=["monitor"], status="monitoring", phase="6")
    protecting = bool(state.get("steered")) and not state.get("cleaned")
    if protecting and _crossed(state.get("path"), _avoid(state)):
        return {**base, "next": "reroute"}  # e.g. back from a cutover on a tunnel that degraded
    # The tunnel's own links are checked too: a link on the protection path may degrade
    # without the correlator relating it to this incident (no shared node or SRLG).
    tunnel_links = list((state.get("path") or {}).get("links") or []) if protecting else []
    try:
        raw = await fx.call(
            "restore",
            "check_sla",
            CheckSla(
                incident_id=fx.iid, links=merge_unique(links, tunnel_links), tier=cast(Any, tier)
            ),
        )
        sla = SlaResult.model_validate(raw)
    except MeshError as exc:
        return {
            **base,
            **peer_failed(
                exc,
                "sla_check_failed",
                "SLA recovery check failed",
                agent="restore",
            ),
        }
    m["checks"] = checks + 1
    within = all(sla.links.get(link, {}).get("within_sla", sla.within_sla) for link in links)
    metrics: dict[str, Any] = {
        "within_sla": within,
        "links": {link: sla.links[link] for link in links if link in sla.links},
        "check": checks + 1,
    }
    bad = [n for n in tunnel_links if sla.links.get(n, {}).get("within_sla") is False]
    if bad:
        await fx.status(
            "monitoring",
            "6",
            f"Protection path out of SLA on {', '.join(bad)}; re-routing the tunnel",
            {"tunnel_degraded": bad, "tunnel_links": {n: sla.links[n] for n in bad}},
        )
        return {**base, "monitor": m, "tunnel_degraded": bad, "next": "reroute"}
    hold_s = HOLD_TIMER_S.get(tier, HOLD_TIMER_S["bronze"])
    if reverify:
        await fx.status(
            "monitoring",
            "6",
            "Hold timer expired, SLA re-verified: "
            + ("still recovered, restoring" if within else "degraded again, monitoring"),
            {"hold_timer_expired": True, "tier": tier, **metrics},
        )
        if within:
            await fx.audit("sla_recovered", {"tier": tier, "hold_seconds": hold_s, **metrics})
            m["hold_until"] = None
            return {**base, "monitor": m, "next": "restore"}
        m["hold_until"] = None
        return {
            **base,
            "monitor": m,
            **wait_for(fx, seconds=fx.orch.sla_poll_s, then="monitor", reason="sla_poll"),
        }
    if hold_until:
        # Woken early (a signal): the hold timer keeps running.
        return {
            **base,
            "monitor": m,
            "next": "wait",
            "wait": {"reason": "hold_timer", "due": hold_until, "then": "monitor"},
        }
    if within:
        due = now + fx.scaled(hold_s)
        m["hold_until"] = iso(due)
        m["last_within"] = True
        await fx.status(
            "monitoring",
            "6",
            f"SLA recovered, hold timer started ({tier}, {hold_s:g} s)",
            {
                "hold_timer": {
                    "tier": tier,
                    "seconds": hold_s,
                    "scaled_seconds": fx.settings.scaled(hold_s),
                    "until": iso(due),
                },
                **metrics,
            },
        )
        return {
            **base,
            "monitor": m,
            "next": "wait",
            "wait": {"reason": "hold_timer", "due": iso(due), "then": "monitor"},
        }
    if not state.get("tunnel") and not (state.get("impact") or {}).get("total_affected"):
        # Dampening is over and the SLA is still bad: handle it as a real incident now.
        await fx.status("monitoring", "6", "SLA still degraded after dampening, assessing", metrics)
        return {**base, "monitor": None, "next": "assess"}
    elapsed = (now - parse(m["started_at"])).total_seconds()
    if elapsed >= fx.settings.scaled(fx.orch.monitor_timeout_s):
        return {
            **base,
            "monitor": m,
            **escalation(
                "sla_not_recovered",
                f"SLA not recovered after {elapsed:.0f} s of monitoring",
                error_code="sla_not_recovered",
                **metrics,
            ),
        }
    if checks == 0 or m.get("last_within") is not False or checks % STATUS_EVERY_N_CHECKS == 0:
        await fx.status(
            "monitoring", "6", f"SLA still degraded (check {checks + 1}), monitoring", metrics
        )
    m["last_within"] = False
    return {
        **base,
        "monitor": m,
        **wait_for(fx, seconds=fx.orch.sla_poll_s, then="monitor", reason="sla_poll"),
    }


async def restore(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """One cutover step (SLA checked by restore), then the tunnel's cleanup."""
    fx = Effects(state, config)
    r = dict(state.get("restore") or {"attempt": 0, "step": 0})
    attempt, index = int(r["attempt"]), int(r["step"])
    tunnel = state.get("tunnel")
    base = fx.done(nodes_executed=["restore"], status="restoring", phase="7")
    ids = _steered_ids(state)
    if not tunnel:
        await fx.status("restoring", "7", "SLA recovered; no protection tunnel to remove", {})
        await fx.audit("restoration_complete", {"tunnel_id": None})
        return {**base, "close_reason": "sla_recovered", "next": "close"}
    if index < len(CUTOVER_STEPS):
        protection, original = CUTOVER_STEPS[index]
        key = f"cutover:{attempt}:{index}"
        if key not in (state.get("approvals") or {}):
            gated = gate(
                fx,
                action="cutover",
                key=key,
                then="restore",
                phase="7",
                details={
                    **_context(state),
                    "protection_pct": protection,
                    "original_pct": original,
                    "step": index + 1,
                },
            )
            if gated["next"] == "approval":
                return {**base, **gated}
        try:
            raw = await fx.call(
                "restore",
                "cutover_step",
                CutoverStep(
                    incident_id=fx.iid,
                    tunnel_id=tunnel["tunnel_id"],
                    links=state["degraded_links"],
                    protection_pct=protection,
                    original_pct=original,
                    head_end=tunnel.get("head_end"),
                    end_point=tunnel.get("end_point"),
                    color=tunnel.get("color"),
                    service_ids=ids,
                ),
            )
            result = CutoverResult.model_validate(raw)
        except MeshError as exc:
            return {
                **base,
                **peer_failed(
                    exc,
                    "cutover_failed",
                    f"Cutover step {protection}/{original} failed",
                    agent="restore",
                    tunnel_id=tunnel["tunnel_id"],
                ),
            }
        details = {
            "step": index + 1,
            "steps": len(CUTOVER_STEPS),
            "protection_pct": protection,
            "original_pct": original,
            "within_sla": result.within_sla,
            "applied": result.applied,
            "reverted": result.reverted,
            "tunnel_id": tunnel["tunnel_id"],
        }
        if not result.within_sla or result.reverted:
            await fx.status(
                "restoring",
                "7",
                f"SLA degraded at cutover {protection}/{original}; back on the tunnel, monitoring",
                details,
            )
            return {
                **base,
                "restore": {"attempt": attempt + 1, "step": 0},
                "monitor": None,
                "next": "monitor",
            }
        await fx.status(
            "restoring", "7", f"Cutover {protection}/{original} (protection/original)", details
        )
        r["step"] = index + 1
        if index + 1 < len(CUTOVER_STEPS):
            return {
                **base,
                "restore": r,
                **wait_for(fx, seconds=fx.orch.cutover_step_s, then="restore", reason="cutover"),
            }
        return {**base, "restore": r, "next": "restore"}
    if not state.get("cleaned"):
        gated = gate(
            fx,
            action="cleanup",
            key=f"cleanup:{attempt}",
            then="restore",
            phase="7",
            details={**_context(state), "tunnel_id": tunnel["tunnel_id"]},
        )
        if gated["next"] == "approval":
            return {**base, **gated}
        try:
            await _cleanup(fx, state)
        except MeshError as exc:
            return {
                **base,
                **peer_failed(
                    exc,
                    "cleanup_failed",
                    f"Removing tunnel {tunnel['tunnel_id']} failed",
                    agent="restore",
                    tunnel_id=tunnel["tunnel_id"],
                ),
            }
    await fx.status(
        "restoring",
        "7",
        f"Traffic back on the original path; tunnel {tunnel['tunnel_id']} removed",
        {
            "tunnel_id": tunnel["tunnel_id"],
            "cleanup": True,
            "protection_pct": 0,
            "original_pct": 100,
        },
    )
    await fx.audit("restoration_complete", {"tunnel_id": tunnel["tunnel_id"]})
    return {**base, "cleaned": True, "close_reason": "sla_recovered", "next": "close"}


def _bandwidth(fx: Effects, impact: dict[str, Any], carrying: list[str]) -> dict[str, Any]:
    """Ask for a path with room for the carried services' traffic (none: any path will do)."""
    mbps = impact.get("carried_mbps")
    if not fx.orch.reserve_bandwidth or not mbps:
        return {}
    return {"min_bandwidth_mbps": mbps, "carrying": carrying}


def _avoid(state: IncidentState) -> list[str]:
    """Every link a protection path must avoid: the incident's and the tunnel's bad ones."""
    return merge_unique(state["degraded_links"], state.get("tunnel_degraded"))


def _crossed(path: dict[str, Any] | None, links: list[str]) -> list[str]:
    """The links of ``links`` that the protection path uses (names compared undirected)."""
    used = {link_key(link) for link in (path or {}).get("links") or []}
    return [link for link in links if link_key(link) in used]


async def reroute(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """Move the live tunnel off links that degraded after it was built.

    CNC modifies the policy's explicit path in place (same color and binding SID), so traffic
    already steered stays on the tunnel and follows the new path; nothing is torn down.
    """
    fx = Effects(state, config)
    tunnel = state.get("tunnel") or {}
    old = state.get("path") or {}
    degraded = _avoid(state)
    crossed = _crossed(old, degraded)
    then = "monitor" if state.get("steered") else "steer"
    base = fx.done(nodes_executed=["reroute"])
    if not crossed or not tunnel or state.get("cleaned"):
        return {**base, "next": then}
    tid = tunnel["tunnel_id"]
    n = int(state.get("reroutes") or 0) + 1
    try:
        raw = await fx.call(
            "path",
            "compute_path",
            ComputePath(
                incident_id=fx.iid,
                head_end=tunnel["head_end"],
                end_point=tunnel["end_point"],
                avoid_links=degraded,
                metric="delay",
                te_type=tunnel.get("te_type"),
                **_bandwidth(fx, state.get("impact") or {}, _steered_ids(state)),
            ),
        )
        result = PathResult.model_validate(raw)
    except MeshError as exc:
        return {
            **base,
            **peer_failed(exc, "path_failed", "Re-route path computation failed", agent="path"),
        }
    if not result.found or len(result.path) < 2:
        return {
            **base,
            **escalation(
                "no_path",
                f"Tunnel {tid} crosses degraded {', '.join(crossed)} and no other path "
                f"avoids {', '.join(degraded)}: {result.reason or 'none found'}",
                error_code="no_path",
                tunnel_id=tid,
                crossed=crossed,
            ),
        }
    gated = gate(
        fx,
        action="provision",
        key=f"reroute:{n}",
        then="reroute",
        phase=state.get("phase", "6"),
        details={**_context(state), "tunnel_id": tid, "new_path": result.path, "crossed": crossed},
    )
    if gated["next"] == "approval":
        return {**base, **gated}
    try:
        raw = await fx.call(
            "tunnel",
            "reroute_tunnel",
            RerouteTunnel(incident_id=fx.iid, tunnel_id=tid, path=result.path),
        )
        moved = TunnelResult.model_validate(raw)
    except MeshError as exc:
        return {
            **base,
            **peer_failed(
                exc,
                "tunnel_reroute_failed",
                f"Re-routing tunnel {tid} failed",
                agent="tunnel",
                tunnel_id=tid,
            ),
        }
    path = {
        **old,
        "path": moved.path,
        "links": result.links,
        "hop_count": result.hop_count or len(result.path) - 1,
        "total_delay_ms": result.total_delay_ms,
    }
    details = {
        "reroute": n,
        "tunnel_id": tid,
        "path": moved.path,
        "links": result.links,
        "previous_path": old.get("path"),
        "avoided": crossed,
        "total_delay_ms": result.total_delay_ms,
    }
    phase = "6" if state.get("steered") else "4"
    status = "monitoring" if state.get("steered") else "provisioning"
    await fx.status(
        status,
        phase,
        f"Tunnel {tid} re-routed onto {' → '.join(moved.path)}, avoiding {', '.join(crossed)}",
        details,
    )
    await fx.audit("path_computed", {**path, "avoid_links": degraded, "reroute": n})
    await fx.audit("tunnel_provisioned", {**moved.model_dump(mode="json"), "reroute": n})
    return {
        **base,
        "status": status,
        "phase": phase,
        "path": path,
        "tunnel": {**tunnel, "path": moved.path},
        "reroutes": n,
        "monitor": None,  # the SLA is judged afresh on the new path: the hold timer restarts
        "next": then,
    }


async def _cleanup(fx: Effects, state: IncidentState) -> None:
    tunnel = state.get("tunnel") or {}
    await fx.call(
        "restore",
        "cleanup",
        Cleanup(
            incident_id=fx.iid,
            tunnel_id=tunnel["tunnel_id"],
            head_end=tunnel.get("head_end"),
            end_point=tunnel.get("end_point"),
            color=tunnel.get("color"),
            service_ids=_steered_ids(state),
        ),
    )


async def _remove_tunnel(fx: Effects, state: IncidentState) -> bool:
    """Best-effort removal on the way out: a failure is reported, never blocks the close."""
    tunnel = state.get("tunnel") or {}
    try:
        await _cleanup(fx, state)
    except MeshError as exc:
        await fx.error(
            failure_code(exc, "cleanup_failed"),
            f"Tunnel {tunnel.get('tunnel_id')} could not be removed: {exc}",
            {"tunnel_id": tunnel.get("tunnel_id")},
        )
        return False
    return True


async def close(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    fx = Effects(state, config)
    reason = state.get("close_reason") or "sla_recovered"
    tunnel = state.get("tunnel") or {}
    if tunnel and not state.get("cleaned") and reason == "operator_resolved":
        await _remove_tunnel(fx, state)
    nodes = merge_unique(state.get("nodes_executed"), ["close"])
    impact = state.get("impact") or {}
    duration = (utcnow() - parse(state["created_at"])).total_seconds()
    summaries = {
        "sla_recovered": "Incident resolved: SLA recovered on original path",
        "no_impact": "Incident closed: no customer service affected",
        "operator_resolved": "Incident resolved by an operator",
        "cleared": "Incident closed: the degradation cleared",
    }
    summary = summaries.get(reason, f"Incident closed: {reason}")
    details = {
        "final_status": "resolved",
        "close_reason": reason,
        "degraded_links": state["degraded_links"],
        "affected_services_count": impact.get("total_affected", 0),
        "tunnel_id": tunnel.get("tunnel_id"),
        "nodes_executed": nodes,
    }
    await fx.io(
        "ticket_closed",
        TicketClosed(
            incident_id=fx.iid,
            resolution="resolved",
            duration_seconds=round(duration, 3),
            summary=summary,
            details=details,
        ),
    )
    await fx.audit("state_change", {"from": state.get("status"), "to": "closed", **details})
    await fx.notify("incident_closed", f"{fx.iid} resolved", summary, details)
    await fx.put(
        "correlator",
        "incident_closed",
        IncidentClosed(
            incident_id=fx.iid, resolution="resolved", degraded_links=state["degraded_links"]
        ),
    )
    return fx.done(
        nodes_executed=["close"],
        status="closed",
        resolution="resolved",
        close_reason=reason,
        next="end",
    )


async def escalate(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """Hand the incident to a human: IO, audit, notify and the correlator all hear of it."""
    fx = Effects(state, config)
    esc = state.get("escalation") or {"reason": "unknown", "message": "escalated"}
    resolution = esc.get("resolution") or "escalated"
    details = {
        "reason": esc["reason"],
        "degraded_links": state["degraded_links"],
        "tunnel_id": (state.get("tunnel") or {}).get("tunnel_id"),
        **(esc.get("details") or {}),
    }
    if state.get("tunnel") and not state.get("cleaned"):
        if state.get("steered"):
            # It carries the protected traffic: taking it away is the operator's call.
            details["tunnel"] = "left up: it carries the protected services"
        else:
            # Built but never used (steering failed or was rejected): nothing to leave behind.
            removed = await _remove_tunnel(fx, state)
            details["tunnel"] = "removed: never carried traffic" if removed else "removal failed"
    await fx.status("escalated", state.get("phase") or "0", esc["message"], details)
    if esc.get("error_code"):
        await fx.error(esc["error_code"], esc["message"], details)
    await fx.audit("escalation", {"message": esc["message"], **details})
    await fx.notify(
        "escalation",
        f"{fx.iid} escalated: {esc['reason']}",
        esc["message"],
        {**details, "error_code": esc.get("error_code"), "resolution": resolution},
    )
    await fx.put(
        "correlator",
        "incident_closed",
        IncidentClosed(
            incident_id=fx.iid, resolution=resolution, degraded_links=state["degraded_links"]
        ),
    )
    duration = (utcnow() - parse(state["created_at"])).total_seconds()
    await fx.io(
        "ticket_closed",
        TicketClosed(
            incident_id=fx.iid,
            resolution=resolution,
            duration_seconds=round(duration, 3),
            summary=f"Incident escalated to an operator: {esc['message']}",
            details={
                "final_status": "escalated",
                "close_reason": esc["reason"],
                "affected_services_count": (state.get("impact") or {}).get("total_affected", 0),
                "nodes_executed": state.get("nodes_executed", []),
                **details,
            },
        ),
    )
    return fx.done(status="escalated", resolution=resolution, next="end")


async def wait(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """Pause until the timer is due; signals arriving meanwhile may cut the wait short."""
    fx = Effects(state, config)
    w = dict(state.get("wait") or {})
    then = w.get("then", "monitor")
    update: dict[str, Any] = {}
    while True:
        value = interrupt({"kind": "timer", **w})
        if not isinstance(value, dict) or value.get("kind") == "timer":
            break
        if value.get("kind") != "signal":
            continue  # a stale approval decision: nothing waits for it here
        route, changes = await _signal(fx, state, value, waiting_for=w.get("reason"))
        _merge(update, changes)
        if route:
            then = route
            break
    return fx.done(wait=None, next=then, **update)


async def approval(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
    """Ask a human (IO ``approval_required``) and interrupt until they decide or time runs out."""
    fx = Effects(state, config)
    g = dict(state.get("gate") or {})
    approval_id = g["approval_id"]
    # Pending before anyone hears of it: an operator who approves the moment the request
    # shows up must not get "not pending" because the run has not reached its interrupt yet.
    await store.set_pending_approval(fx.deps.engine, fx.iid, approval_id)
    await fx.io(
        "approval_required",
        ApprovalRequired(
            approval_id=approval_id,
            incident_id=fx.iid,
            action=g["action"],
            details={**g.get("details", {}), "step_key": g["key"], "phase": g["phase"]},
            expires_at=parse(g["expires_at"]),
            requested_at=parse(g["requested_at"]),
        ),
    )
    await fx.status(
        "waiting_approval",
        g["phase"],
        f"Waiting for an operator to approve {g['action']}",
        {"approval_id": approval_id, "action": g["action"], "expires_at": g["expires_at"]},
    )
    update: dict[str, Any] = {}
    while True:
        value = interrupt(
            {
                "kind": "approval",
                "approval_id": approval_id,
                "action": g["action"],
                "due": g["expires_at"],
                "reason": f"approval:{g['action']}",
            }
        )
        if not isinstance(value, dict):
            continue
        if value.get("kind") == "signal":
            route, changes = await _signal(fx, state, value, waiting_for="approval")
            _merge(update, changes)
            if route:
                return fx.done(gate=None, next=route, **update)
            continue
        if value.get("kind") != "approval" or value.get("approval_id") != approval_id:
            continue
        break
    decision = value.get("decision")
    record = {
        "approval_id": approval_id,
        "action": g["action"],
        "decision": decision,
        "decided_by": value.get("decided_by"),
        "notes": value.get("notes", ""),
        "decided_at": value.get("decided_at"),
    }
    await fx.audit("state_change", {"approval": record, "from": "waiting_approval"})
    if decision == "approve":
        return fx.done(gate=None, approvals={g["key"]: record}, next=g["then"], **update)
    if decision == "reject":
        by = value.get("decided_by")
        notes = value.get("notes") or ""
        return fx.done(
            gate=None,
            approvals={g["key"]: record},
            **update,
            **escalation(
                "approval_rejected",
                f"{g['action']} rejected by {by}" + (f": {notes}" if notes else ""),
                rejected=True,
                approval_id=approval_id,
                action=g["action"],
                decided_by=by,
                notes=notes,
            ),
        )
    return fx.done(
        gate=None,
        **update,
        **escalation(
            "approval_timeout",
            f"No decision on {g['action']} before {g['expires_at']}",
            error_code="approval_timeout",
            approval_id=approval_id,
            action=g["action"],
        ),
    )


def _merge(update: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key in ("degraded_links", "signals"):
            update[key] = merge_unique(update.get(key), value)
        else:
            update[key] = value


async def _signal(
    fx: Effects, state: IncidentState, value: dict[str, Any], *, waiting_for: str | None
) -> tuple[str | None, dict[str, Any]]:
    """Apply an ``IncidentSignal`` received while waiting; return (route or None, changes)."""
    signal = value.get("signal")
    record = {k: value.get(k) for k in ("id", "signal", "links", "until", "received_at")}
    if record["id"] and any(s.get("id") == record["id"] for s in state.get("signals") or []):
        return None, {}  # delivered again after a crash: already applied
    changes: dict[str, Any] = {"signals": [record]}
    await fx.audit("state_change", {"signal": record, "waiting_for": waiting_for})
    if signal == "links_added":
        added = list(value.get("links") or [])
        changes["degraded_links"] = added
        if waiting_for in ("sla_poll", "hold_timer") and _crossed(state.get("path"), added):
            return "reroute", changes  # traffic is on the tunnel: move it off at once
        return None, changes
    if signal == "operator_resolved":
        changes["close_reason"] = "operator_resolved"
        return "close", changes
    if waiting_for == "dampening":
        if signal == "dampen":
            if value.get("until"):
                changes["dampened_until"] = value["until"]
            return "dampen", changes
        if signal == "resume":
            return "assess", changes
        if signal == "cleared":
            return "monitor", changes
    if waiting_for == "sla_poll" and signal == "cleared":
        return "monitor", changes
    return None, changes


# --- the graph -----------------------------------------------------------------------------

Node = Callable[[IncidentState, RunnableConfig], Awaitable[dict[str, Any]]]
NODE_FUNCS: dict[str, Node] = {
    "start": start,
    "detect": detect,
    "dampen": dampen,
    "assess": assess,
    "compute": compute,
    "provision": provision,
    "steer": steer,
    "reroute": reroute,
    "monitor": monitor,
    "restore": restore,
    "close": close,
    "escalate": escalate,
    "wait": wait,
    "approval": approval,
}
assert set(NODES) <= set(NODE_FUNCS)


def _route(state: IncidentState) -> str:
    return state.get("next") or "end"


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None) -> CompiledStateGraph[Any]:
    """Compile the incident graph; tests pass an in-memory saver, the app a durable one."""
    builder = StateGraph(IncidentState)
    for name, func in NODE_FUNCS.items():
        builder.add_node(name, cast(Any, func))
    builder.add_edge(START, "start")
    targets: dict[Hashable, str] = {name: name for name in NODE_FUNCS if name != "start"}
    targets["end"] = END
    for name in NODE_FUNCS:
        builder.add_conditional_edges(name, _route, targets)
    return builder.compile(checkpointer=checkpointer)

"""Phases 2-5: find what the degradation hurts, and build a tunnel around it.

assess ─┬─ close                  (no affected service)
        ├─ escalate               (impact agent failed or unreachable)
        └─ compute ─┬─ escalate   (no path, or the path agent failed)
                    └─ [approval] → provision ─┬─ escalate (tunnel failed)
                                               ├─ compute  (its path degraded meanwhile)
                                               └─ [approval] → steer ─┬─ monitor
                                                                      ├─ reroute
                                                                      └─ escalate
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import (
    Effects,
    bandwidth,
    escalation,
    gate,
    peer_failed,
)
from services.orchestrator.flow.phases import PHASE, Status, entered
from services.orchestrator.flow.state import (
    IncidentState,
    approval_context,
    avoid,
    crossed,
)
from shared.contracts import ASSESS_IMPACT, COMPUTE_PATH, PROVISION_TUNNEL, STEER_TRAFFIC
from shared.errors import MeshError
from shared.models import (
    TIERS,
    AssessImpact,
    ComputePath,
    ImpactResult,
    PathResult,
    ProvisionTunnel,
    SteerTraffic,
    TunnelResult,
)

# --- assess --------------------------------------------------------------------------------


def _impact_summary(impact: ImpactResult) -> dict[str, Any]:
    """What the state keeps of the impact: counts, ids and the highest tier hurt."""
    services = impact.affected_services
    tiers_present = [t for t in TIERS if impact.services_by_tier.get(t)] or [
        s.tier for s in services
    ]
    return {
        "total_affected": impact.total_affected,
        "services_by_tier": impact.services_by_tier,
        "service_ids": [s.service_id for s in services],
        "highest_tier": impact.highest_tier or (tiers_present[0] if tiers_present else None),
    }


def _tunnel_ends(impact: ImpactResult, tier: str | None) -> dict[str, Any]:
    """The ends to protect: the most common pair of the highest tier's services, and what a
    tunnel between them will carry (so its path must have room for that bandwidth)."""
    services = impact.affected_services
    top = [s for s in services if s.tier == tier] or services
    pairs = Counter((s.head_end, s.end_point) for s in top)
    (head_end, end_point), _ = pairs.most_common(1)[0]
    carried = [s for s in services if (s.head_end, s.end_point) == (head_end, end_point)]
    return {
        "head_end": head_end,
        "end_point": end_point,
        "carried_ids": [s.service_id for s in carried],
        "carried_mbps": round(sum(s.bandwidth_mbps or 0.0 for s in carried), 3),
    }


async def assess(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["close", "escalate", "compute"]]:
    """Ask the impact agent which services the degraded links hurt."""
    fx = Effects(state, config)
    try:
        impact = await fx.call(
            ASSESS_IMPACT,
            AssessImpact(incident_id=fx.iid, degraded_links=state["degraded_links"]),
        )
    except MeshError as exc:
        failed = peer_failed(
            exc, "impact_failed", "Service impact assessment failed", agent="impact"
        )
        return Command(goto="escalate", update=fx.done(nodes_executed=["assess"], **failed))
    summary = _impact_summary(impact)
    tier = summary["highest_tier"]
    update = fx.done(nodes_executed=["assess"], **entered(Status.ASSESSING))
    if impact.total_affected == 0 or not impact.affected_services:
        await fx.status(
            Status.ASSESSING,
            "No customer service affected; closing",
            {
                "total_affected": 0,
                "services_by_tier": impact.services_by_tier,
                "affected_services": [],
            },
        )
        await fx.audit("service_impact_assessed", summary)
        return Command(
            goto="close", update={**update, "impact": summary, "close_reason": "no_impact"}
        )
    summary.update(_tunnel_ends(impact, tier))
    await fx.status(
        Status.ASSESSING,
        f"{impact.total_affected} services affected, computing alternate path",
        {
            "total_affected": impact.total_affected,
            "services_by_tier": impact.services_by_tier,
            "affected_services": summary["service_ids"],
            "highest_tier": tier,
        },
    )
    await fx.audit("service_impact_assessed", summary)
    return Command(
        goto="compute", update={**update, "impact": summary, "tier": tier or state.get("tier")}
    )


# --- compute -------------------------------------------------------------------------------


async def _ask_path(fx: Effects, state: IncidentState) -> PathResult:
    """``compute_path`` between the protected ends, avoiding the degraded links, by delay."""
    impact = state.get("impact") or {}
    return await fx.call(
        COMPUTE_PATH,
        ComputePath(
            incident_id=fx.iid,
            head_end=impact["head_end"],
            end_point=impact["end_point"],
            avoid_links=state["degraded_links"],
            metric="delay",
            te_type=fx.orch.te_type,
            **bandwidth(fx, impact, impact.get("carried_ids") or []),
        ),
    )


def _path_record(fx: Effects, result: PathResult, head_end: str, end_point: str) -> dict[str, Any]:
    """The path as the state keeps it, with the TE type its nodes all support (the tunnel
    agent confirms it in phase 4)."""
    path_type = fx.orch.te_type or (result.model_extra or {}).get("path_type") or "sr-mpls"
    return {
        "path_type": path_type,
        "hop_count": result.hop_count or len(result.path) - 1,
        "path": result.path,
        "links": result.links,
        "head_end": head_end,
        "end_point": end_point,
        "total_delay_ms": result.total_delay_ms,
        "metric": result.metric,
    }


async def compute(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["escalate", "approval", "provision"]]:
    """Find a path around the degraded links; no path escalates (seed's error table)."""
    fx = Effects(state, config)
    impact = state.get("impact") or {}
    head_end, end_point = impact["head_end"], impact["end_point"]
    try:
        result = await _ask_path(fx, state)
    except MeshError as exc:
        failed = peer_failed(exc, "path_failed", "Path computation failed", agent="path")
        return Command(goto="escalate", update=fx.done(nodes_executed=["compute"], **failed))
    update = fx.done(nodes_executed=["compute"], **entered(Status.COMPUTING))
    if not result.found or len(result.path) < 2:
        no_path = escalation(
            "no_path",
            f"No alternate path from {head_end} to {end_point} avoiding "
            f"{', '.join(state['degraded_links'])}: {result.reason or 'none found'}",
            head_end=head_end,
            end_point=end_point,
        )
        return Command(goto="escalate", update={**update, **no_path})
    path = _path_record(fx, result, head_end, end_point)
    await fx.status(
        Status.COMPUTING, f"Alternate path found ({path['path_type']}), provisioning tunnel", path
    )
    await fx.audit("path_computed", {**path, "avoid_links": state["degraded_links"]})
    update["path"] = path
    ask = gate(
        fx,
        action="provision",
        key="provision",
        then="provision",
        phase=PHASE[Status.PROVISIONING],
        details={
            **approval_context(state),
            "path": result.path,
            "head_end": head_end,
            "end_point": end_point,
        },
    )
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    return Command(goto="provision", update=update)


# --- provision -----------------------------------------------------------------------------


async def provision(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["compute", "escalate", "approval", "steer"]]:
    """Build the protection tunnel on the computed path (unless that path degraded)."""
    fx = Effects(state, config)
    path = state.get("path") or {}
    if bad := crossed(path, state["degraded_links"]):
        # A link of the computed path degraded while the step waited (for an approval).
        await fx.status(
            Status.COMPUTING,
            f"Computed path now crosses degraded {', '.join(bad)}; computing again",
            {"crossed": bad, "path": path.get("path")},
        )
        return Command(goto="compute", update=fx.done())
    try:
        tunnel = await fx.call(
            PROVISION_TUNNEL,
            ProvisionTunnel(
                incident_id=fx.iid,
                head_end=path["head_end"],
                end_point=path["end_point"],
                path=path["path"],
                te_type=fx.orch.te_type or path.get("path_type"),
            ),
        )
    except MeshError as exc:
        failed = peer_failed(
            exc,
            "tunnel_provision_failed",
            "Protection tunnel provisioning failed",
            agent="tunnel",
            path=path.get("path"),
        )
        return Command(goto="escalate", update=fx.done(nodes_executed=["provision"], **failed))
    return await _provisioned(fx, state, tunnel)


async def _provisioned(
    fx: Effects, state: IncidentState, tunnel: TunnelResult
) -> Command[Literal["compute", "escalate", "approval", "steer"]]:
    """Report the new tunnel, then steer (through ``approval`` when policy says so)."""
    info = tunnel.model_dump(mode="json")
    await fx.status(
        Status.PROVISIONING,
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
    update = fx.done(nodes_executed=["provision"], tunnel=info, **entered(Status.PROVISIONING))
    ask = gate(
        fx,
        action="steer",
        key="steer",
        then="steer",
        phase=PHASE[Status.STEERING],
        details={**approval_context(state), "tunnel": info},
    )
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    return Command(goto="steer", update=update)


# --- steer ---------------------------------------------------------------------------------


async def steer(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["reroute", "escalate", "monitor"]]:
    """Put the affected services on the tunnel; never onto a path that degraded meanwhile."""
    fx = Effects(state, config)
    tunnel = state.get("tunnel") or {}
    if crossed(state.get("path"), avoid(state)):
        return Command(goto="reroute", update=fx.done())
    ids = (state.get("impact") or {}).get("service_ids", [])
    try:
        steered = await fx.call(
            STEER_TRAFFIC,
            SteerTraffic(incident_id=fx.iid, tunnel_id=tunnel["tunnel_id"], service_ids=ids),
        )
    except MeshError as exc:
        failed = peer_failed(
            exc,
            "steer_failed",
            f"Steering traffic onto {tunnel['tunnel_id']} failed",
            agent="tunnel",
            tunnel_id=tunnel["tunnel_id"],
        )
        return Command(goto="escalate", update=fx.done(nodes_executed=["steer"], **failed))
    # the policy carries only the services between its two ends; cutover moves those
    carried = steered.services or ids
    details = {
        "traffic_steered": True,
        "tunnel_id": tunnel["tunnel_id"],
        "service_ids": carried,
        "not_steered": steered.not_steered,
    }
    await fx.status(
        Status.STEERING, f"Traffic steered onto {tunnel['tunnel_id']}, monitoring SLA", details
    )
    await fx.audit("traffic_steered", details)
    update = fx.done(nodes_executed=["steer"], steered=True, **entered(Status.STEERING))
    update["tunnel"] = {**tunnel, "service_ids": carried}
    return Command(goto="monitor", update=update)

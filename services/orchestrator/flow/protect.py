"""Phases 2-5: find what the degradation hurts, and build a tunnel around it.

assess ─┬─ close                  (no affected service)
        ├─ escalate               (impact agent failed or unreachable)
        └─ compute ─┬─ escalate   (no path, or the path agent failed)
                    └─ [approval] → provision ─┬─ escalate (tunnel failed)
                                               ├─ compute  (its path degraded meanwhile)
                                               └─ [approval] → steer ─┬─ monitor
                                                                      ├─ watch (proactive)
                                                                      ├─ reroute
                                                                      └─ escalate
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import (
    Effects,
    bandwidth,
    call_batch,
    escalation,
    gate,
    peer_failed,
)
from services.orchestrator.flow.phases import PHASE, Status, entered
from services.orchestrator.flow.state import (
    TUNNEL_FIELDS,
    IncidentState,
    approval_context,
    avoid,
    crossed_any,
    group_of,
    groups,
    path_of,
    paths,
    tunnels,
    unprotected_ids,
    wire,
)
from shared.contracts import ASSESS_IMPACT, COMPUTE_PATHS, PROVISION_TUNNELS, STEER_POLICIES
from shared.errors import MeshError
from shared.models import (
    TIERS,
    AffectedService,
    AssessImpact,
    ComputePath,
    ComputePaths,
    ImpactResult,
    PathResult,
    ProvisionTunnel,
    ProvisionTunnels,
    SteerPolicies,
    SteerTraffic,
    TrafficSteered,
    TunnelResult,
)

# --- assess --------------------------------------------------------------------------------


def impact_summary(impact: ImpactResult) -> dict[str, Any]:
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


def policy_groups(impact: ImpactResult) -> list[dict[str, Any]]:
    """The affected services grouped by their ends, one policy per group: a policy carries
    only the services between its two ends. Highest tier first, then the most services, so
    the first group is the one the seed calls the tunnel (ties: the order impact gave)."""
    by_ends: dict[tuple[str, str], list[AffectedService]] = {}
    for service in impact.affected_services:
        by_ends.setdefault((service.head_end, service.end_point), []).append(service)

    def rank(services: list[AffectedService]) -> tuple[int, int]:
        return (min(TIERS.index(s.tier) for s in services), -len(services))

    ordered = sorted(by_ends.items(), key=lambda item: rank(item[1]))
    return [
        {
            "head_end": head_end,
            "end_point": end_point,
            "tier": TIERS[rank(services)[0]],
            "service_ids": [s.service_id for s in services],
            "mbps": round(sum(s.bandwidth_mbps or 0.0 for s in services), 3),
        }
        for (head_end, end_point), services in ordered
    ]


def tunnel_ends(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The first group's ends and load under the seed's names (older readers of the state)."""
    first = groups[0]
    return {
        "head_end": first["head_end"],
        "end_point": first["end_point"],
        "carried_ids": first["service_ids"],
        "carried_mbps": first["mbps"],
        "groups": groups,
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
    summary = impact_summary(impact)
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
    summary.update(tunnel_ends(policy_groups(impact)))
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


def path_request(fx: Effects, state: IncidentState, group: dict[str, Any]) -> ComputePath:
    """One group's ends, avoiding the degraded links, by delay, with room for its traffic
    (``reserve_mbps`` when the proactive flow sized it for the load to come, else ``mbps``;
    a proactive shift's ``load_growth`` and ``max_load_pct`` too: see ``proactive.detours``)."""
    detour = {k: group[k] for k in ("load_growth", "max_load_pct") if group.get(k) is not None}
    return ComputePath(
        **detour,
        incident_id=fx.iid,
        head_end=group["head_end"],
        end_point=group["end_point"],
        avoid_links=state["degraded_links"],
        metric="delay",
        te_type=fx.orch.te_type,
        **bandwidth(fx, group.get("reserve_mbps") or group.get("mbps"), group["service_ids"]),
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


def _left_out(group: dict[str, Any], reason: str, why: str) -> dict[str, Any]:
    """A group no policy will protect, and why (the escalation names its services)."""
    return {
        "head_end": group["head_end"],
        "end_point": group["end_point"],
        "service_ids": group["service_ids"],
        "reason": reason,
        "why": why,
    }


async def _plan(
    fx: Effects, state: IncidentState
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A path per group in one ``compute_paths`` call: the path agent reserves each group's
    traffic on its path for the groups after it, so the incident's policies fit together.
    Returns (paths found, groups left without one)."""
    wanted = groups(state)
    answer = await fx.call(
        COMPUTE_PATHS,
        ComputePaths(incident_id=fx.iid, requests=[path_request(fx, state, g) for g in wanted]),
    )
    found: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for group, result in zip(wanted, answer.results, strict=True):
        if not result.found or len(result.path) < 2:
            missing.append(_left_out(group, "no_path", result.reason or "none found"))
        else:
            found.append(_path_record(fx, result, group["head_end"], group["end_point"]))
    return found, missing


def _no_path(state: IncidentState, missing: list[dict[str, Any]]) -> dict[str, Any]:
    """Nothing can be protected: the seed's ``no_path`` escalation (groups named when many)."""
    first = missing[0]
    extra: dict[str, Any] = (
        {"unprotected_services": unprotected_ids(missing), "unprotected": missing}
        if len(missing) > 1
        else {}
    )
    return escalation(
        "no_path",
        f"No alternate path from {first['head_end']} to {first['end_point']} avoiding "
        f"{', '.join(state['degraded_links'])}: {first['why']}",
        head_end=first["head_end"],
        end_point=first["end_point"],
        **extra,
    )


async def compute(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["escalate", "approval", "provision"]]:
    """Find a path around the degraded links for every group; none at all escalates (seed's
    error table), some missing are protected later and named at the escalation."""
    fx = Effects(state, config)
    try:
        found, missing = await _plan(fx, state)
    except MeshError as exc:
        failed = peer_failed(exc, "path_failed", "Path computation failed", agent="path")
        return Command(goto="escalate", update=fx.done(nodes_executed=["compute"], **failed))
    update = fx.done(nodes_executed=["compute"], **entered(Status.COMPUTING))
    if not found:
        return Command(goto="escalate", update={**update, **_no_path(state, missing)})
    path = found[0]
    await fx.status(
        Status.COMPUTING, _computed_message(found, missing), _computed(state, found, missing)
    )
    for each in found:
        await fx.audit("path_computed", {**each, "avoid_links": state["degraded_links"]})
    update.update(path=path, paths=found, unprotected=missing)
    ask = gate(
        fx,
        action="provision",
        key="provision",
        then="provision",
        phase=PHASE[Status.PROVISIONING],
        details={
            **approval_context(state),
            "path": path["path"],
            "head_end": path["head_end"],
            "end_point": path["end_point"],
            # every policy the approval builds, not only the first (the seed's fields)
            "paths": [
                {
                    "head_end": p["head_end"],
                    "end_point": p["end_point"],
                    "path": p["path"],
                    "services": len(group_of(state, p)["service_ids"]),
                }
                for p in found
            ],
            **({"unprotected_services": unprotected_ids(missing)} if missing else {}),
        },
    )
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    return Command(goto="provision", update=update)


def _computed_message(found: list[dict[str, Any]], missing: list[dict[str, Any]]) -> str:
    if len(found) == 1 and not missing:
        return f"Alternate path found ({found[0]['path_type']}), provisioning tunnel"
    total = len(found) + len(missing)
    return f"Alternate paths found for {len(found)} of {total} service groups, provisioning"


def _computed(
    state: IncidentState, found: list[dict[str, Any]], missing: list[dict[str, Any]]
) -> dict[str, Any]:
    """Phase 3's details: the first path as the seed shows it, every group's in ``paths``."""
    details = {
        **found[0],
        "paths": [{**p, "service_ids": group_of(state, p)["service_ids"]} for p in found],
    }
    if missing:
        details.update(unprotected_services=unprotected_ids(missing), unprotected=missing)
    return details


# --- provision -----------------------------------------------------------------------------


async def provision(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["compute", "escalate", "approval", "steer"]]:
    """Build one protection policy per computed path (unless a path degraded meanwhile)."""
    fx = Effects(state, config)
    if bad := crossed_any(state, state["degraded_links"]):
        # A link of a computed path degraded while the step waited (for an approval).
        await fx.status(
            Status.COMPUTING,
            f"Computed path now crosses degraded {', '.join(bad)}; computing again",
            {"crossed": bad, "path": (state.get("path") or {}).get("path")},
        )
        return Command(goto="compute", update=fx.done())
    built: list[dict[str, Any]] = []
    missing = list(state.get("unprotected") or [])
    first_error: MeshError | None = None
    every = paths(state)
    avoid = list(state["degraded_links"])
    answers = await _provision_all(fx, every, avoid)
    for path, tunnel in zip(every, answers, strict=True):
        group = group_of(state, path)
        if isinstance(tunnel, MeshError):
            first_error = first_error or tunnel
            missing.append(_left_out(group, "tunnel_provision_failed", str(tunnel)))
            continue
        built.append({**tunnel.model_dump(mode="json"), "service_ids": group["service_ids"]})
    if not built:
        assert first_error is not None
        failed = peer_failed(
            first_error,
            "tunnel_provision_failed",
            "Protection tunnel provisioning failed",
            agent="tunnel",
            path=(state.get("path") or {}).get("path"),
        )
        return Command(goto="escalate", update=fx.done(nodes_executed=["provision"], **failed))
    return await _provisioned(fx, state, built, missing)


async def _provision_all(
    fx: Effects, every: list[dict[str, Any]], avoid: list[str]
) -> list[TunnelResult | MeshError]:
    """Every path's policy in one ``provision_tunnels`` task (the tunnel agent reads CNC once
    for all of them): an answer per path, in order, its tunnel or its own failure (a failure
    of the whole task stands for each; ``PeerDown`` propagates). A replay sends the same key,
    and a task the agent did not finish creates nothing twice (a policy is keyed by its
    incident and ends there)."""
    if not every:
        return []
    request = ProvisionTunnels(
        incident_id=fx.iid,
        tunnels=[
            ProvisionTunnel(
                incident_id=fx.iid,
                head_end=path["head_end"],
                end_point=path["end_point"],
                path=path["path"],
                te_type=fx.orch.te_type or path.get("path_type"),
                avoid_links=avoid,
            )
            for path in every
        ],
    )
    return await call_batch(
        fx,
        PROVISION_TUNNELS,
        request,
        [(path["head_end"], path["end_point"]) for path in every],
        lambda answer: {(a.head_end, a.end_point): (a.result, a.error) for a in answer.tunnels},
    )


async def _provisioned(
    fx: Effects,
    state: IncidentState,
    built: list[dict[str, Any]],
    missing: list[dict[str, Any]],
) -> Command[Literal["compute", "escalate", "approval", "steer"]]:
    """Report the new policies, then steer (through ``approval`` when policy says so)."""
    info = {k: v for k, v in built[0].items() if k != "service_ids"}
    many = len(built) > 1
    await fx.status(
        Status.PROVISIONING,
        f"Protection tunnel{'s' if many else ''} created "
        f"({', '.join(sorted({t['te_type'] for t in built}))}), steering traffic",
        {
            **{k: info.get(k) for k in TUNNEL_FIELDS if k != "service_ids"},
            "binding_sid": int(info["binding_sid"]),
            "tunnels": [wire(t) for t in built],
            **({"unprotected_services": unprotected_ids(missing)} if missing else {}),
        },
    )
    for tunnel in built:
        await fx.audit(
            "tunnel_provisioned", {k: v for k, v in tunnel.items() if k != "service_ids"}
        )
    update = fx.done(
        nodes_executed=["provision"],
        tunnel=info,
        tunnels=built,
        unprotected=missing,
        **entered(Status.PROVISIONING),
    )
    ask = gate(
        fx,
        action="steer",
        key="steer",
        then="steer",
        phase=PHASE[Status.STEERING],
        details={
            **approval_context(state),
            "tunnel": info,
            "tunnels": [
                {"tunnel_id": t["tunnel_id"], "services": len(t["service_ids"])} for t in built
            ],
        },
    )
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    return Command(goto="steer", update=update)


# --- steer ---------------------------------------------------------------------------------


SteerGoto = Literal["reroute", "escalate", "monitor", "watch"]
"""``watch``: a proactive incident watches its link's native load instead of the SLA."""


async def steer(state: IncidentState, config: RunnableConfig) -> Command[SteerGoto]:
    """Put each group's services on its own policy; never onto a path that degraded meanwhile.
    Services left unprotected (no path, no policy, not steered) escalate at once, the
    protected ones staying on their policies."""
    fx = Effects(state, config)
    if crossed_any(state, avoid(state)):
        return Command(goto="reroute", update=fx.done())
    done: list[dict[str, Any]] = []
    missing = list(state.get("unprotected") or [])
    first_error: MeshError | None = None
    every = tunnels(state)
    answers = await _steer_all(fx, every)
    for tunnel, steered in zip(every, answers, strict=True):
        if isinstance(steered, MeshError):
            first_error = first_error or steered
            missing.append(_left_out(tunnel, "steer_failed", str(steered)))
            done.append({**tunnel, "steered": False})
            continue
        done.append(_carried(tunnel, steered, missing))
    carrying = [t for t in done if t["steered"]]
    if not carrying:
        return _steer_failed(fx, state, done, first_error, missing)
    return await _steered(fx, state, done, missing)


async def _steer_all(fx: Effects, every: list[dict[str, Any]]) -> list[TrafficSteered | MeshError]:
    """Every policy's group steered in one ``steer_policies`` task: an answer per policy, in
    order, as :func:`_provision_all` gives them (steering twice says the same thing)."""
    if not every:
        return []
    request = SteerPolicies(
        incident_id=fx.iid,
        policies=[
            SteerTraffic(
                incident_id=fx.iid, tunnel_id=tunnel["tunnel_id"], service_ids=tunnel["service_ids"]
            )
            for tunnel in every
        ],
    )
    return await call_batch(
        fx,
        STEER_POLICIES,
        request,
        [tunnel["tunnel_id"] for tunnel in every],
        lambda answer: {a.tunnel_id: (a.result, a.error) for a in answer.policies},
    )


def _carried(
    tunnel: dict[str, Any], steered: TrafficSteered, missing: list[dict[str, Any]]
) -> dict[str, Any]:
    """The policy with the services it now carries; any it refused are left unprotected."""
    ids = tunnel["service_ids"]
    carried = steered.services or [sid for sid in ids if sid not in steered.not_steered]
    refused = [sid for sid in steered.not_steered if sid in ids]
    if refused:
        group = {**tunnel, "service_ids": refused}
        missing.append(_left_out(group, "not_steered", f"{tunnel['tunnel_id']} refused them"))
    return {**tunnel, "service_ids": carried, "steered": bool(carried), "not_steered": refused}


def _steer_failed(
    fx: Effects,
    state: IncidentState,
    done: list[dict[str, Any]],
    exc: MeshError | None,
    missing: list[dict[str, Any]],
) -> Command[SteerGoto]:
    """No policy carries anything: escalate as the seed does (every policy is then removed)."""
    tid = done[0]["tunnel_id"]
    update = fx.done(nodes_executed=["steer"], tunnels=done, unprotected=missing)
    message = f"Steering traffic onto {tid} failed"
    if exc is not None:
        failed = peer_failed(exc, "steer_failed", message, agent="tunnel", tunnel_id=tid)
    else:
        failed = escalation(
            "steer_failed",
            f"{message}: no service was steered",
            error_code="steer_failed",
            agent="tunnel",
            tunnel_id=tid,
            unprotected_services=unprotected_ids(missing),
        )
    return Command(goto="escalate", update={**update, **failed})


async def _steered(
    fx: Effects,
    state: IncidentState,
    done: list[dict[str, Any]],
    missing: list[dict[str, Any]],
) -> Command[SteerGoto]:
    """Report the steering; monitor, or escalate at once naming the services left out."""
    carrying = [t for t in done if t["steered"]]
    first = carrying[0]
    details = {
        "traffic_steered": True,
        "tunnel_id": first["tunnel_id"],
        "service_ids": first["service_ids"],
        "not_steered": first.get("not_steered", []),
        "tunnel_ids": [t["tunnel_id"] for t in carrying],
        "tunnels": [wire(t) for t in carrying],
    }
    if missing:
        details["unprotected_services"] = unprotected_ids(missing)
    names = ", ".join(t["tunnel_id"] for t in carrying)
    watching = "the link's load" if state.get("proactive") else "SLA"
    await fx.status(
        Status.STEERING, f"Traffic steered onto {names}, monitoring {watching}", details
    )
    await fx.audit("traffic_steered", details)
    update = fx.done(nodes_executed=["steer"], steered=True, **entered(Status.STEERING))
    tunnel = {k: v for k, v in first.items() if k not in ("steered", "not_steered")}
    update.update(tunnel=tunnel, tunnels=done, unprotected=missing, path=path_of(state, first))
    if missing:
        return Command(goto="escalate", update={**update, **_partial(missing, carrying)})
    return Command(goto="watch" if state.get("proactive") else "monitor", update=update)


def _partial(missing: list[dict[str, Any]], carrying: list[dict[str, Any]]) -> dict[str, Any]:
    """Some services are protected, some cannot be: a human must know now, not at the close."""
    ids = unprotected_ids(missing)
    why = "; ".join(
        f"{g['head_end']} → {g['end_point']} ({len(g['service_ids'])}): {g['reason']}"
        for g in missing
    )
    return escalation(
        "partially_protected",
        f"{len(ids)} services left unprotected ({why}); "
        f"{sum(len(t['service_ids']) for t in carrying)} protected by "
        f"{', '.join(t['tunnel_id'] for t in carrying)}",
        error_code="services_unprotected",
        unprotected_services=ids,
        unprotected=missing,
    )

"""Phase 6: watch the SLA while traffic is on the tunnel, and keep the tunnel on good links.

monitor ─┬─ wait (sla_poll | hold_timer) ─▶ monitor     (poll; hold timer; re-verify)
         ├─ restore                                     (held recovered: cut back)
         ├─ reroute                                     (the tunnel's own path degraded)
         ├─ assess                                      (dampening over, still degraded)
         └─ escalate                                    (never recovered, or check failed)
reroute ─┬─ monitor | steer                             (moved, or nothing to move)
         ├─ [approval] → reroute                        (policy: provision approval)
         └─ escalate                                    (no other path, or a peer failed)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import (
    Effects,
    bandwidth,
    escalation,
    gate,
    peer_failed,
    wait_for,
    wait_until,
)
from services.orchestrator.flow.phases import PHASE, Status, entered
from services.orchestrator.flow.state import (
    IncidentState,
    approval_context,
    avoid,
    crossed,
    crossed_any,
    group_of,
    iso,
    merge_unique,
    parse,
    path_of,
    paths,
    steered_ids,
    tunnels,
)
from shared.contracts import CHECK_SLA, COMPUTE_PATH, REROUTE_TUNNEL
from shared.errors import MeshError
from shared.models import (
    HOLD_TIMER_S,
    CheckSla,
    ComputePath,
    PathResult,
    RerouteTunnel,
    SlaResult,
    TunnelResult,
    utcnow,
)
from shared.southbound import link_key

STATUS_EVERY_N_CHECKS = 12
"""While the SLA stays degraded, tell IO about every Nth check only (plus every change)."""

# --- monitor -------------------------------------------------------------------------------

MonitorGoto = Literal["reroute", "escalate", "restore", "wait", "assess"]


async def monitor(state: IncidentState, config: RunnableConfig) -> Command[MonitorGoto]:
    """One SLA check; loops through ``wait`` while polling and while the hold timer runs."""
    fx = Effects(state, config)
    now = utcnow()
    m = dict(state.get("monitor") or {"checks": 0, "started_at": iso(now), "hold_until": None})
    base = fx.done(nodes_executed=["monitor"], **entered(Status.MONITORING))
    protecting = bool(state.get("steered")) and not state.get("cleaned")
    if protecting and crossed_any(state, avoid(state)):
        # e.g. back from a cutover on a tunnel that degraded
        return Command(goto="reroute", update=base)
    # The policies' own links are checked too: a link on a protection path may degrade
    # without the correlator relating it to this incident (no shared node or SRLG).
    tunnel_links = _protection_links(state) if protecting else []
    try:
        sla = await _check_sla(fx, state, tunnel_links)
    except MeshError as exc:
        failed = peer_failed(exc, "sla_check_failed", "SLA recovery check failed", agent="restore")
        return Command(goto="escalate", update={**base, **failed})
    checks = int(m["checks"])
    m["checks"] = checks + 1
    within, metrics = _reading(sla, state["degraded_links"], checks + 1)
    tolerated = {link_key(n) for n in state.get("tolerated") or []}
    out = [n for n in tunnel_links if sla.links.get(n, {}).get("within_sla") is False]
    if bad := [n for n in out if link_key(n) not in tolerated]:
        await fx.status(
            Status.MONITORING,
            f"Protection path out of SLA on {', '.join(bad)}; re-routing the tunnel",
            {"tunnel_degraded": bad, "tunnel_links": {n: sla.links[n] for n in bad}},
        )
        return Command(goto="reroute", update={**base, "monitor": m, "tunnel_degraded": bad})
    hold_until = m.get("hold_until")
    if hold_until and parse(cast(str, hold_until)) <= now:
        return await _hold_expired(fx, state, {**base, "monitor": m}, within, metrics)
    if hold_until:
        # Woken early (a signal): the hold timer keeps running.
        wait = wait_until(hold_until, then="monitor", reason="hold_timer")
        return Command(goto="wait", update={**base, "monitor": m, "wait": wait})
    if within:
        return await _start_hold(fx, state, {**base, "monitor": m}, now, metrics)
    return await _still_degraded(fx, state, {**base, "monitor": m}, now, metrics)


def _protection_links(state: IncidentState) -> list[str]:
    """Every link of every policy's path, once each."""
    return merge_unique([], [link for path in paths(state) for link in path.get("links") or []])


async def _check_sla(fx: Effects, state: IncidentState, tunnel_links: list[str]) -> SlaResult:
    """``check_sla`` on the degraded links plus the tunnel's, at the incident's tier."""
    return await fx.call(
        CHECK_SLA,
        CheckSla(
            incident_id=fx.iid,
            links=merge_unique(state["degraded_links"], tunnel_links),
            tier=cast(Any, _tier(state)),
        ),
    )


def _tier(state: IncidentState) -> str:
    return state.get("tier") or "bronze"


def _hold_s(tier: str) -> float:
    """The seed's hold timer for ``tier`` (an unknown tier waits as long as bronze)."""
    return HOLD_TIMER_S.get(tier, HOLD_TIMER_S["bronze"])


def _reading(sla: SlaResult, links: list[str], check: int) -> tuple[bool, dict[str, Any]]:
    """Whether every degraded link is back within SLA, and the metrics IO is shown."""
    within = all(sla.links.get(link, {}).get("within_sla", sla.within_sla) for link in links)
    metrics: dict[str, Any] = {
        "within_sla": within,
        "links": {link: sla.links[link] for link in links if link in sla.links},
        "check": check,
    }
    return within, metrics


async def _hold_expired(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    within: bool,
    metrics: dict[str, Any],
) -> Command[MonitorGoto]:
    """The seed's "hold timer expired → re-verify": restore if still recovered, else poll."""
    tier = _tier(state)
    await fx.status(
        Status.MONITORING,
        "Hold timer expired, SLA re-verified: "
        + ("still recovered, restoring" if within else "degraded again, monitoring"),
        {"hold_timer_expired": True, "tier": tier, **metrics},
    )
    update["monitor"]["hold_until"] = None
    if within:
        hold_s = _hold_s(tier)
        await fx.audit("sla_recovered", {"tier": tier, "hold_seconds": hold_s, **metrics})
        return Command(goto="restore", update=update)
    # degraded again: a change, so polling starts over at the short interval
    update["monitor"].update(last_within=False, degraded_polls=1)
    poll = wait_for(fx, seconds=poll_interval(fx, 0), then="monitor", reason="sla_poll")
    return Command(goto="wait", update={**update, "wait": poll})


def poll_interval(fx: Effects, degraded_polls: int) -> float:
    """Seconds (the seed's, scaled by ``wait_for``) until the next SLA poll, after
    ``degraded_polls`` polls in a row that found the SLA degraded: ``CXM_SLA_POLL_S`` doubled
    at each, up to ``CXM_SLA_POLL_MAX_S``.

    A poll is a whole graph resume with a ``check_sla`` (PCA reads) behind it; an incident
    whose SLA stays bad for minutes polled every 5 s all along. Recovery is not seen later
    for it: PCA's clear alert reaches the correlator, whose ``cleared`` signal wakes the poll
    at once (``control.on_signal``); the backoff only slows what nothing signals (a protection
    path's link degrading unnoticed by the correlator, a clear alert that was lost).
    """
    base = fx.orch.sla_poll_s
    longest = max(base, fx.orch.sla_poll_max_s)
    return min(longest, base * 2 ** min(degraded_polls, 32))


async def _start_hold(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    now: datetime,
    metrics: dict[str, Any],
) -> Command[MonitorGoto]:
    """Recovered: the SLA must now stay recovered for the tier's hold time."""
    tier = _tier(state)
    hold_s = _hold_s(tier)
    due = now + fx.scaled(hold_s)
    update["monitor"].update(hold_until=iso(due), last_within=True, degraded_polls=0)
    await fx.status(
        Status.MONITORING,
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
    wait = wait_until(due, then="monitor", reason="hold_timer")
    return Command(goto="wait", update={**update, "wait": wait})


async def _still_degraded(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    now: datetime,
    metrics: dict[str, Any],
) -> Command[MonitorGoto]:
    """Not recovered: assess (dampening is over), escalate (too long), or poll again."""
    m = update["monitor"]
    checks = int(m["checks"]) - 1  # the checks made before this one
    if not state.get("tunnel") and not (state.get("impact") or {}).get("total_affected"):
        # Dampening is over and the SLA is still bad: handle it as a real incident now.
        await fx.status(Status.MONITORING, "SLA still degraded after dampening, assessing", metrics)
        return Command(goto="assess", update={**update, "monitor": None})
    elapsed = (now - parse(m["started_at"])).total_seconds()
    if elapsed >= fx.settings.scaled(fx.orch.monitor_timeout_s):
        gave_up = escalation(
            "sla_not_recovered",
            f"SLA not recovered after {elapsed:.0f} s of monitoring",
            error_code="sla_not_recovered",
            **metrics,
        )
        return Command(goto="escalate", update={**update, **gave_up})
    if checks == 0 or m.get("last_within") is not False or checks % STATUS_EVERY_N_CHECKS == 0:
        await fx.status(
            Status.MONITORING, f"SLA still degraded (check {checks + 1}), monitoring", metrics
        )
    # polls in a row that found it degraded (a recovery seen in between starts over)
    streak = int(m.get("degraded_polls") or 0) if m.get("last_within") is False else 0
    m["last_within"] = False
    m["degraded_polls"] = streak + 1
    poll = wait_for(fx, seconds=poll_interval(fx, streak), then="monitor", reason="sla_poll")
    return Command(goto="wait", update={**update, "wait": poll})


# --- reroute -------------------------------------------------------------------------------

RerouteGoto = Literal["monitor", "steer", "escalate", "approval"]


def _to_move(state: IncidentState, degraded: list[str]) -> tuple[int, dict[str, Any], list[str]]:
    """The first policy whose path crosses a degraded link: (index, policy, links crossed).
    One moves per run of ``reroute``; monitor (or steer) sends the next one back here."""
    for index, tunnel in enumerate(tunnels(state)):
        if on_bad := crossed(path_of(state, tunnel), degraded):
            return index, tunnel, on_bad
    return -1, {}, []


async def reroute(state: IncidentState, config: RunnableConfig) -> Command[RerouteGoto]:
    """Move a live policy off links that degraded after it was built.

    CNC modifies the policy's explicit path in place (same color and binding SID), so traffic
    already steered stays on the tunnel and follows the new path; nothing is torn down.
    """
    fx = Effects(state, config)
    degraded = avoid(state)
    index, tunnel, on_bad = _to_move(state, degraded)
    base = fx.done(nodes_executed=["reroute"])
    if not on_bad or state.get("cleaned"):
        return Command(goto=_after_reroute(state), update=base)
    tid = tunnel["tunnel_id"]
    n = int(state.get("reroutes") or 0) + 1
    try:
        result = await _path_around(fx, state, tunnel, degraded)
        if not result.found and len(degraded) > len(state["degraded_links"]):
            # Only the incident's own links are a ban; another degraded link is a cost, which
            # path computation weighs (it crosses the fewest and mildest).
            own = list(state["degraded_links"])
            result = await _path_around(fx, state, tunnel, own, key="own-links-only")
    except MeshError as exc:
        failed = peer_failed(exc, "path_failed", "Re-route path computation failed", agent="path")
        return Command(goto="escalate", update={**base, **failed})
    if result.found and result.path == path_of(state, tunnel).get("path"):
        return await _stay(fx, state, base, tid, on_bad, result)
    if not result.found or len(result.path) < 2:
        no_path = escalation(
            "no_path",
            f"Tunnel {tid} crosses degraded {', '.join(on_bad)} and no other path "
            f"avoids {', '.join(degraded)}: {result.reason or 'none found'}",
            error_code="no_path",
            tunnel_id=tid,
            crossed=on_bad,
        )
        return Command(goto="escalate", update={**base, **no_path})
    ask = gate(
        fx,
        action="provision",
        key=f"reroute:{n}",
        then="reroute",
        phase=state.get("phase", PHASE[Status.MONITORING]),
        details={
            **approval_context(state),
            "tunnel_id": tid,
            "new_path": result.path,
            "crossed": on_bad,
        },
    )
    if ask:
        return Command(goto="approval", update={**base, "gate": ask})
    try:
        moved = await _move_tunnel(fx, tid, result.path)
    except MeshError as exc:
        failed = peer_failed(
            exc,
            "tunnel_reroute_failed",
            f"Re-routing tunnel {tid} failed",
            agent="tunnel",
            tunnel_id=tid,
        )
        return Command(goto="escalate", update={**base, **failed})
    return await _rerouted(fx, state, base, result, moved, (index, on_bad))


async def _stay(
    fx: Effects,
    state: IncidentState,
    base: dict[str, Any],
    tunnel_id: str,
    on_bad: list[str],
    result: PathResult,
) -> Command[RerouteGoto]:
    """No path is better than the policy's own: it stays, crossing ``on_bad``, and says why.

    Its customers are better off there than back on the incident's own degraded link; the
    links are ``tolerated`` so monitoring does not ask again each check.
    """
    await fx.status(
        Status.MONITORING if state.get("steered") else Status.PROVISIONING,
        f"Tunnel {tunnel_id} keeps crossing degraded {', '.join(on_bad)}: no path avoids "
        f"{'it' if len(on_bad) == 1 else 'them'} ({result.reason or 'its own is the best'})",
        {"tunnel_id": tunnel_id, "tolerated": on_bad, "reason": result.reason},
    )
    await fx.audit("reroute_skipped", {"tunnel_id": tunnel_id, "tolerated": on_bad})
    return Command(goto=_after_reroute(state), update={**base, "tolerated": on_bad})


def _after_reroute(state: IncidentState) -> Literal["monitor", "steer"]:
    """Traffic already on the tunnel goes back to monitoring; otherwise steering resumes."""
    return "monitor" if state.get("steered") else "steer"


def _reserved_by_others(state: IncidentState, tunnel: dict[str, Any]) -> dict[str, float]:
    """What the incident's other policies carry on their links: room the moved one must leave."""
    reserved: dict[str, float] = {}
    for other in tunnels(state):
        if other["tunnel_id"] == tunnel["tunnel_id"]:
            continue
        mbps = float(group_of(state, other).get("mbps") or 0.0)
        for link in path_of(state, other).get("links") or []:
            reserved[link] = reserved.get(link, 0.0) + mbps
    return reserved


async def _path_around(
    fx: Effects,
    state: IncidentState,
    tunnel: dict[str, Any],
    degraded: list[str],
    *,
    key: str | None = None,
) -> PathResult:
    """A path between the policy's ends, on its TE type, avoiding every degraded link."""
    group = group_of(state, tunnel)
    carrying = tunnel.get("service_ids") or steered_ids(state)
    return await fx.call(
        COMPUTE_PATH,
        ComputePath(
            incident_id=fx.iid,
            head_end=tunnel["head_end"],
            end_point=tunnel["end_point"],
            avoid_links=degraded,
            metric="delay",
            te_type=tunnel.get("te_type"),
            **bandwidth(fx, group.get("mbps"), carrying, _reserved_by_others(state, tunnel)),
        ),
        key=key,
    )


async def _move_tunnel(fx: Effects, tunnel_id: str, path: list[str]) -> TunnelResult:
    """CNC ``sr-policy-modify``: the same policy (color, binding SID) on a new path."""
    return await fx.call(
        REROUTE_TUNNEL,
        RerouteTunnel(incident_id=fx.iid, tunnel_id=tunnel_id, path=path),
    )


async def _rerouted(
    fx: Effects,
    state: IncidentState,
    base: dict[str, Any],
    result: PathResult,
    moved: TunnelResult,
    which: tuple[int, list[str]],
) -> Command[RerouteGoto]:
    """Report the move and judge the SLA afresh on the new path (the hold timer restarts)."""
    index, avoided = which
    tunnel = tunnels(state)[index]
    old = path_of(state, tunnel)
    n = int(state.get("reroutes") or 0) + 1
    path = {
        **old,
        "path": moved.path,
        "links": result.links,
        "hop_count": result.hop_count or len(result.path) - 1,
        "total_delay_ms": result.total_delay_ms,
    }
    status = Status.MONITORING if state.get("steered") else Status.PROVISIONING
    await fx.status(
        status,
        f"Tunnel {tunnel['tunnel_id']} re-routed onto {' → '.join(moved.path)}, "
        f"avoiding {', '.join(avoided)}",
        {
            "reroute": n,
            "tunnel_id": tunnel["tunnel_id"],
            "path": moved.path,
            "links": result.links,
            "previous_path": old.get("path"),
            "avoided": avoided,
            "total_delay_ms": result.total_delay_ms,
        },
    )
    await fx.audit("path_computed", {**path, "avoid_links": avoid(state), "reroute": n})
    await fx.audit("tunnel_provisioned", {**moved.model_dump(mode="json"), "reroute": n})
    update = {
        **base,
        **entered(status),
        **_moved(state, index, path, moved.path),
        "reroutes": n,
        "monitor": None,  # the SLA is judged afresh on the new path: the hold timer restarts
    }
    return Command(goto=_after_reroute(state), update=update)


def _moved(
    state: IncidentState, index: int, path: dict[str, Any], hops: list[str]
) -> dict[str, Any]:
    """The state with policy ``index`` on its new path (and the seed's first-policy fields)."""
    all_tunnels = tunnels(state)
    all_tunnels[index] = {**all_tunnels[index], "path": hops}
    ends = (path.get("head_end"), path.get("end_point"))
    all_paths = [
        path if (p.get("head_end"), p.get("end_point")) == ends else p for p in paths(state)
    ]
    update: dict[str, Any] = {"tunnels": all_tunnels, "paths": all_paths or [path]}
    first = state.get("tunnel") or {}
    if not first or first.get("tunnel_id") == all_tunnels[index]["tunnel_id"]:
        update.update(path=path, tunnel={**first, "path": hops})
    return update

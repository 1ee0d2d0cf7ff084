"""The proactive branch: congestion is predicted on a link, so move the least traffic off it
before customers feel anything, and bring it back without oscillating.

detect → relieve ─┬─ compute → … → steer → watch   (shift the fewest services off the link)
                  ├─ watch                          (the forecast is under target: nothing to move)
                  └─ escalate                       (impact or traffic agent failed)
watch ─┬─ wait (load_poll) → watch    (native load not calm, or not calm for the hold yet)
       ├─ relieve                     (nothing moved yet and the forecast went over the target)
       ├─ release                     (native calm for the hold, the last shift old enough)
       ├─ close                       (calm for the hold and nothing was ever moved)
       └─ escalate                    (the traffic agent failed)
release ─┬─ [approval] → release      (policy: each cutover step, the cleanup)
         ├─ wait (cutover) → release  (between the steps 75/25 → 50/50 → 25/75 → 0/100)
         ├─ watch                     (load climbed back: all on the tunnels again, a shift)
         ├─ close                     (policies removed: "congestion subsided")
         └─ escalate                  (a step failed, or one shift more than allowed)

Why *native* load: moving traffic off a link lowers the load measured on it, so a flow that
came back when the measured load looked fine would move the traffic straight back onto the
busy link, and out again (the oscillation the SLA branch's hold timer would cause). The
traffic agent's ``link_forecast`` reports the link's native load, what it would carry if every
service rode its base path (measured / (1 - moved share)), given the share the orchestrator
computes from the services' committed bandwidth and paths (``shares``: 1 - W_now / W_native,
negative on a link carrying more tunnel traffic than it lost). The thresholds form a
hysteresis (docs/orchestrator.md, "Proactive congestion"):
the traffic agent alerts at 70 %, a shift brings the forecast to 60 %, and traffic returns
only once native load has stayed under 50 % for the hold time, never sooner than the minimum
interval after the last shift; load that climbs back during the return puts everything back
on the tunnels and counts a shift, and one shift more than allowed escalates to a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import (
    Effects,
    cutover_policies,
    escalation,
    peer_failed,
    wait_until,
)
from services.orchestrator.flow.phases import Status, entered
from services.orchestrator.flow.protect import (
    impact_summary,
    path_request,
    policy_groups,
    tunnel_ends,
)
from services.orchestrator.flow.restore import cutover_failures, cutover_gate, remove_policies
from services.orchestrator.flow.state import (
    IncidentState,
    groups,
    iso,
    merge_unique,
    parse,
    paths,
    tunnel_ids,
    tunnels,
)
from shared.contracts import ASSESS_IMPACT, COMPUTE_PATHS, LINK_FORECAST
from shared.errors import MeshError
from shared.models import (
    CUTOVER_STEPS,
    TIERS,
    AssessImpact,
    ComputePaths,
    CutoverResult,
    ImpactResult,
    LinkForecastRequest,
    utcnow,
)
from shared.southbound import link_key

STATUS_EVERY_N_CHECKS = 6
"""While nothing changes, IO hears of every Nth load check (it draws the load chart)."""
MIN_GAP_PCT = 10.0
"""A link whose alert threshold is set low (per class) keeps the hysteresis' shape: the target
at least this far under the threshold, the release this far under the target."""
EPS = 1e-9

# --- the plan: which services move ----------------------------------------------------------


@dataclass(frozen=True)
class Rider:
    """A service riding one of the incident's links, with the weight it moves (its committed
    bandwidth) and the incident's links it rides."""

    service_id: str
    tier: str
    weight: float
    links: tuple[str, ...]


def _tier_rank(tier: str) -> int:
    """Lower tiers first: a detour's extra delay lands on the loosest SLAs."""
    return -TIERS.index(tier) if tier in TIERS else -len(TIERS)


def choose(
    riders: list[Rider],
    load: dict[str, float],
    target: dict[str, float],
    already: set[str] | frozenset[str] = frozenset(),
) -> list[Rider]:
    """The fewest services to move so that every link's ``load`` * (1 - moved share) ≤ its
    ``target``, the moved share being the moved services' weight over the weight of every
    service riding the link natively (``Rider.links``: its base path). ``already``: services
    moved before (a shift growing, or other incidents' moves), counted as moved and never
    chosen again; only the extra ones are returned. ``load`` is the *native* load: traffic
    other incidents' policies bring onto a link is theirs to move, not this link's riders'.

    On one link this is exact: while no single service closes the gap the largest moves
    (taking the largest first needs the fewest), and the last one is the smallest service
    that closes it (the same count, the least traffic moved). Equal weights: the lower tier
    moves first. Several links: the same rule on the link furthest from its target, again
    until none is.
    """
    total = {link: sum(r.weight for r in riders if link in r.links) for link in load}
    need = {
        link: total[link] * (1.0 - target[link] / load[link]) if load[link] > target[link] else 0.0
        for link in load
    }
    moved = {
        link: sum(r.weight for r in riders if r.service_id in already and link in r.links)
        for link in load
    }
    order = sorted(
        (r for r in riders if r.service_id not in already),
        key=lambda r: (-r.weight, _tier_rank(r.tier), r.service_id),
    )
    chosen: list[Rider] = []
    while True:
        short = {link: need[link] - moved[link] for link in load if need[link] - moved[link] > EPS}
        if not short:
            return chosen
        worst = max(short, key=lambda link: short[link])
        candidates = [r for r in order if r not in chosen and worst in r.links]
        if not candidates:
            return chosen  # everything on the link moves and it is still not enough
        closing = [r for r in candidates if r.weight >= short[worst] - EPS]
        pick = (
            min(closing, key=lambda r: (r.weight, _tier_rank(r.tier), r.service_id))
            if closing
            else candidates[0]
        )
        chosen.append(pick)
        for link in pick.links:
            if link in moved:
                moved[link] += pick.weight


def _crossed(hops: list[Any], links: list[str]) -> tuple[str, ...]:
    """The incident's links a path (a list of links, or of nodes) crosses."""
    keys = {link_key(link): link for link in links}
    path = [str(hop) for hop in hops]
    every = [*path, *(f"{a}-{b}" for a, b in pairwise(path))]
    return tuple(dict.fromkeys(keys[link_key(h)] for h in every if link_key(h) in keys))


def records_of(impact: ImpactResult, links: list[str]) -> dict[str, dict[str, Any]]:
    """What the shift keeps of every service the impact agent listed (``native`` question):
    ``weight`` (committed bandwidth; 1 each when the inventory lacks one's: then shares cannot
    be told apart by traffic), ``tier``, ``links`` (the incident's links its *base* path
    crosses: it is their native rider) and ``via`` (those the policy it is steered onto rides
    now; empty when it is not steered).

    An impact answer without ``base_path`` (an older agent) reads the path as the base, and a
    steered service as off the links (its policy's path unknown)."""
    services = [s.model_dump(mode="json") for s in impact.affected_services]
    by_count = any(not s.get("bandwidth_mbps") for s in services)
    out: dict[str, dict[str, Any]] = {}
    for s in services:
        path = s.get("path") or []
        now = _crossed(path, links) if path else _crossed(s.get("degraded_links") or [], links)
        base = _crossed(s["base_path"], links) if s.get("base_path") else now
        steered = bool(s.get("steered"))
        via = now if steered and s.get("base_path") else ()
        if base or via:
            out[s["service_id"]] = {
                "weight": 1.0 if by_count else float(s["bandwidth_mbps"]),
                "links": list(base),
                "via": list(via),
                "tier": s["tier"],
            }
    return out


def _riders(records: dict[str, dict[str, Any]]) -> list[Rider]:
    """The native riders (base path on a link): the services a shift may move."""
    return [
        Rider(sid, str(r.get("tier") or ""), float(r["weight"]), tuple(r["links"]))
        for sid, r in records.items()
        if r["links"]
    ]


def riders_of(
    impact: ImpactResult, links: list[str], mine: set[str] | frozenset[str] = frozenset()
) -> list[Rider]:
    """Every service whose base path crosses the links (``records_of``), weighted by
    committed bandwidth. ``mine`` is unused (kept for callers); see ``others_of``."""
    return _riders(records_of(impact, links))


def others_of(impact: ImpactResult, mine: set[str] | frozenset[str]) -> set[str]:
    """Services on the links (by base or current path) that another incident moved: the
    impact agent reports them ``steered`` (on an SR policy) and they are not on this
    incident's policies. A busy path crosses several links, which may be several incidents:
    their moves count in this link's share (moved off it when their base crosses it, onto it
    when their policy does: else its native load reads wrong and the return starts early or
    never), and they are never moved again (that would take them off the other incident's
    policy)."""
    return {
        s.service_id
        for s in impact.affected_services
        if (s.model_extra or {}).get("steered") and s.service_id not in mine
    }


def moved_all(shift: dict[str, Any], state: IncidentState) -> set[str]:
    """What counts as moved off the links: this incident's services and other incidents'."""
    return set(moved_ids(state)) | set(shift.get("others") or [])


MIN_SHARE, MAX_SHARE = -19.0, 0.95
"""The traffic agent's clamp (``services/traffic/analytics.clamp_share``), applied here too so
the residual load (native x (1 - share)) is what the link measures."""


def shares(shift: dict[str, Any], moved: list[str] | set[str]) -> dict[str, float]:
    """Per link, the share passed to ``link_forecast``: 1 - W_now / W_native.

    W_native is the committed bandwidth of the services whose base path crosses the link, W_now
    of those riding it with ``moved`` on their policies: a service not moved rides its base, a
    moved one its policy's path (``via``; a policy not seen yet avoids the incident's links, as
    ``compute`` asked). The agent's native = measured / (1 - share) = measured x W_native /
    W_now: over measured when traffic moved off the link, under it (a negative share) when the
    link carries tunnels. Clamped to [-19, 0.95]; a link no service rides either way: 0.
    """
    records: dict[str, dict[str, Any]] = shift.get("riders") or {}
    out: dict[str, float] = {}
    for link in shift.get("links") or []:
        native = now = 0.0
        for sid, r in records.items():
            native += float(r["weight"]) if link in r["links"] else 0.0
            rides = (r.get("via") or []) if sid in moved else r["links"]
            now += float(r["weight"]) if link in rides else 0.0
        share = (1.0 - now / native if native else MIN_SHARE) if native or now else 0.0
        out[link] = round(min(max(share, MIN_SHARE), MAX_SHARE), 6)
    return out


def _limits(fx: Effects, threshold: float | None) -> tuple[float, float]:
    """(target, release) for a link alerting at ``threshold``: the settings, kept under it."""
    target = fx.orch.proactive_target_pct
    release = fx.orch.proactive_release_pct
    if threshold is not None and target > threshold - MIN_GAP_PCT:
        target = threshold - MIN_GAP_PCT
        release = min(release, target - MIN_GAP_PCT)
    return target, release


def _pct(load: dict[str, Any] | None, name: str) -> float | None:
    value = (load or {}).get(name)
    return None if value is None else float(value)


def planning_load(load: dict[str, Any] | None) -> float | None:
    """The native load a shift is sized for: its forecast at the horizon, or what it is now
    when that is higher (a forecast lags a step up)."""
    known = [v for v in (_pct(load, "predicted_pct"), _pct(load, "native_pct")) if v is not None]
    return max(known) if known else None


MAX_GROWTH = 3.0
"""The most a moved group's reservation is scaled by the links' forecast growth."""


def growth(loads: dict[str, dict[str, Any]], links: list[str]) -> float:
    """How much the links' native load grows from now to the horizon (their planning load over
    their native load now; at least 1, at most ``MAX_GROWTH``).

    A shift happens before the peak: the services it moves grow with the busy hour on their
    new path as they would have on the old. A path with room only for what they send now
    was overloaded at the peak (bench/proactive.py: a link with 26 % native load carried
    91 % once the traffic moved onto it had grown), so the path is asked for room for the
    moved traffic at the horizon."""
    ratios = [
        planned / native
        for link in links
        if (native := _pct(loads.get(link), "native_pct"))
        and (planned := planning_load(loads.get(link))) is not None
    ]
    return min(MAX_GROWTH, max([1.0, *ratios]))


def detours(groups: list[dict[str, Any]], factor: float, release: float) -> list[dict[str, Any]]:
    """The groups as a shift asks for their paths: room for their committed bandwidth times
    ``factor`` (``reserve_mbps``), on links whose own load counts at ``factor`` too
    (``load_growth``) and that stay under ``release`` with the moved traffic on them
    (``max_load_pct``).

    Why the release threshold: the busy hour that fills the congested link fills its
    detours as well, and goes on past the forecast horizon. A detour filled to the
    reservable share at the horizon was overloaded at the peak (bench/proactive.py: a link
    with 26 % native load carried 91 % once the traffic moved onto it had grown, and the
    proactive incident its own alert opened could not move traffic that was not its own). A
    detour kept under the release threshold keeps the margin the hysteresis keeps: 20 points
    under the alert, so it is never the next proactive incident. Traffic for which no such
    path exists stays on the congested link (``_routable`` sets its group aside)."""
    return [
        {
            **g,
            "load_growth": round(factor, 3),
            "max_load_pct": release,
            **({"reserve_mbps": round(float(g["mbps"]) * factor, 3)} if g.get("mbps") else {}),
        }
        for g in groups
    ]


def calm(load: dict[str, Any] | None, release: float, *, measured: bool = False) -> bool:
    """Native load and its forecast both under the release threshold (unknown: not calm).
    ``measured``: the measured load too (an incident that moved nothing: a link full of other
    incidents' tunnel traffic reads a low native load, but its congestion has not subsided)."""
    native, predicted = _pct(load, "native_pct"), _pct(load, "predicted_pct")
    now = _pct(load, "measured_pct")
    return (
        native is not None
        and native < release
        and (predicted is None or predicted < release)
        and not (measured and now is not None and now >= release)
    )


def climbed(load: dict[str, Any] | None, *, now_only: bool = False) -> bool:
    """During a return: the link's measured or native load (or, unless ``now_only``, its
    forecast) is back at the alert threshold, so the return stops."""
    threshold = _pct(load, "threshold_pct")
    if threshold is None:
        return False
    names = (
        ("measured_pct", "native_pct")
        if now_only
        else ("measured_pct", "native_pct", "predicted_pct")
    )
    seen = [_pct(load, n) for n in names]
    return any(v is not None and v >= threshold for v in seen)


# --- talking to the traffic agent -----------------------------------------------------------


async def forecast(
    fx: Effects,
    links: list[str],
    moved: dict[str, float],
    since: str | None = None,
    *,
    key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """``link_forecast`` for the links, given the share of each (``shares``; since ``since``:
    the samples before it carried everything); the answer's links matched to ours whichever
    way round it names them. ``key``: a second question in one node (its own idempotency key,
    else the first answer is replayed)."""
    shares_now = {link: share for link, share in moved.items() if abs(share) > EPS}
    answer = await fx.call(
        LINK_FORECAST,
        LinkForecastRequest(
            links=links,
            incident_id=fx.iid,
            moved_share=shares_now,
            moved_since=dict.fromkeys(shares_now, parse(since)) if since else {},
        ),
        key=key,
    )
    theirs = {link_key(name): load for name, load in answer.links.items()}
    return {
        link: theirs[link_key(link)].model_dump(mode="json")
        for link in links
        if link_key(link) in theirs
    }


def _worst(loads: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """The link whose native load is highest (the one the console charts)."""
    if not loads:
        return None, None
    link = max(loads, key=lambda n: planning_load(loads[n]) or -1.0)
    return link, loads[link]


def load_details(
    fx: Effects, shift: dict[str, Any], loads: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """What every proactive status carries: IO draws the chart from ``load``."""
    link, load = _worst(loads)
    target, release = _limits(fx, _pct(load, "threshold_pct"))
    details: dict[str, Any] = {
        "proactive": True,
        "link": link,
        "load": load,
        "target_pct": target,
        "release_pct": release,
        "moved_share": shift.get("share") or {},
        "shifts": int(shift.get("shifts") or 0),
        "max_shifts": fx.orch.proactive_max_shifts,
    }
    if len(loads) > 1:
        details["loads"] = loads
    return details


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


# --- relieve --------------------------------------------------------------------------------

RelieveGoto = Literal["compute", "watch", "escalate"]


async def relieve(state: IncidentState, config: RunnableConfig) -> Command[RelieveGoto]:
    """Assess the services riding the congested links and pick the fewest to move.

    Both the forecast (before any move) and the impact agent's list of services riding the
    links are needed; either failing escalates, as the SLA branch's assessment does. With
    traffic already moved (``watch`` found the shift too small, or the incident gained links)
    the shift grows instead (``_grow``).
    """
    fx = Effects(state, config)
    if _carrying(state):
        return await _grow(fx, state)
    shift = dict(state.get("shift") or {})
    links: list[str] = _links(shift, state)
    base = fx.done(nodes_executed=["relieve"], **entered(Status.ASSESSING))
    try:
        loads = await forecast(fx, links, {})
    except MeshError as exc:
        failed = peer_failed(exc, "load_check_failed", "Link load forecast failed", agent="traffic")
        return Command(goto="escalate", update={**base, **failed})
    try:
        impact = await fx.call(ASSESS_IMPACT, _native_question(fx, links))
    except MeshError as exc:
        failed = peer_failed(
            exc, "impact_failed", "Service impact assessment failed", agent="impact"
        )
        return Command(goto="escalate", update={**base, **failed})
    records = records_of(impact, links)
    riders = _riders(records)
    others = others_of(impact, frozenset()) & set(records)
    shift.update(
        links=links,
        riders=records,
        others=sorted(others),
        shifts=int(shift.get("shifts") or 0),
        shifted_at=list(shift.get("shifted_at") or []),
        returns=int(shift.get("returns") or 0),
        active=False,
        calm_since=None,
        checks=int(shift.get("checks") or 0),
    )
    shift["share"] = shares(shift, others)  # other incidents' moves, off the links or onto them
    if any(shift["share"].values()):
        try:  # the native load with the others' moves accounted for
            loads = await forecast(fx, links, shift["share"], key="others")
        except MeshError as exc:
            failed = peer_failed(
                exc, "load_check_failed", "Link load forecast failed", agent="traffic"
            )
            return Command(goto="escalate", update={**base, **failed})
    planned = {link: planning_load(loads.get(link)) for link in links}
    known = {link: p for link, p in planned.items() if p is not None}
    targets = {link: _limits(fx, _pct(loads.get(link), "threshold_pct"))[0] for link in known}
    chosen = choose(riders, known, targets, others) if known else []
    factor = growth(loads, links)
    if chosen:
        try:
            routed, _ = await _routable(
                fx, state, impact, riders, known, targets, links, others, factor
            )
        except MeshError as exc:
            failed = peer_failed(exc, "path_failed", "Path computation failed", agent="path")
            return Command(goto="escalate", update={**base, **failed})
        # nothing at all has a path: compute escalates "no_path", as the SLA branch does
        chosen = routed or chosen
    summary = impact_summary(impact)
    details = {
        **load_details(fx, shift, loads),
        "total_affected": impact.total_affected,
        "services_by_tier": impact.services_by_tier,
        "affected_services": summary["service_ids"],
    }
    names = ", ".join(links)
    if not chosen:
        await fx.status(
            Status.ASSESSING,
            f"{len(riders)} services ride {names}; forecast "
            f"{', '.join(_fmt(p) for p in planned.values())} is not over the "
            f"{_fmt(min(targets.values(), default=fx.orch.proactive_target_pct))} target: "
            "nothing to move yet, watching the load",
            {**details, "moving": []},
        )
        await fx.audit("service_impact_assessed", {**summary, "moving": []})
        tier = summary["highest_tier"] or state.get("tier")
        return Command(
            goto="watch", update={**base, "impact": summary, "shift": shift, "tier": tier}
        )
    moving = [r.service_id for r in chosen]
    summary.update(
        tunnel_ends(
            detours(policy_groups(_subset(impact, moving)), factor, fx.orch.proactive_release_pct)
        )
    )
    after = shares(shift, set(moving) | others)
    expected = {
        link: (known[link] * (1.0 - after.get(link, 0.0))) for link in known if link in after
    }
    await fx.status(
        Status.ASSESSING,
        f"{len(riders)} services ride {names} (native load forecast "
        f"{', '.join(_fmt(p) for p in known.values())}); moving {len(moving)} of them "
        f"({', '.join(f'{s:.0%}' for s in after.values())} of the traffic) brings it to "
        f"{', '.join(_fmt(v) for v in expected.values())}, computing a path",
        {**details, "moving": moving, "moving_share": after, "expected_pct": expected},
    )
    await fx.audit("service_impact_assessed", {**summary, "moving": moving, "moving_share": after})
    return Command(
        goto="compute",
        update={
            **base,
            "impact": summary,
            "shift": shift,
            "tier": summary["highest_tier"] or state.get("tier"),
        },
    )


def _links(shift: dict[str, Any], state: IncidentState) -> list[str]:
    """The shift's links, and any the incident gained since (``links_added``), once each."""
    out = list(shift.get("links") or [])
    # ``ignored``: links an older version left out of the shift (tunnel traffic)
    seen = {link_key(link) for link in [*out, *(shift.get("ignored") or [])]}
    for link in state["degraded_links"]:
        if link_key(link) not in seen:
            seen.add(link_key(link))
            out.append(link)
    return out


def _native_question(fx: Effects, links: list[str]) -> AssessImpact:
    """The impact agent's services on the links by base *or* current path (``native``): the
    native riders wherever they ride now, and the tunnel traffic riding the links."""
    return AssessImpact(incident_id=fx.iid, degraded_links=links, native=True)


def _refreshed(
    records: dict[str, dict[str, Any]], impact: ImpactResult, links: list[str]
) -> dict[str, dict[str, Any]]:
    """The shift's records updated from a new answer: a service listed again takes what it
    rides now (its base links kept), one no longer listed rides none of the links now."""
    fresh = records_of(impact, links)
    out = {sid: {**r, "via": []} for sid, r in records.items()}
    for sid, r in fresh.items():
        old = out.get(sid) or {}
        out[sid] = {**r, "links": list(dict.fromkeys([*(old.get("links") or []), *r["links"]]))}
    return out


def _subset(impact: ImpactResult, ids: list[str] | set[str]) -> ImpactResult:
    keep = set(ids)
    return impact.model_copy(
        update={"affected_services": [s for s in impact.affected_services if s.service_id in keep]}
    )


PLAN_ROUNDS = 3
"""Tries at a plan whose every group has a path: services of a group without one are left
out and the choice made again among the others."""


async def _routable(
    fx: Effects,
    state: IncidentState,
    impact: ImpactResult,
    riders: list[Rider],
    load: dict[str, float],
    targets: dict[str, float],
    links: list[str],
    already: set[str] | frozenset[str] = frozenset(),
    factor: float = 1.0,
) -> tuple[list[Rider], list[str]]:
    """The fewest services to move, among those whose group has a path around the links.

    A plan whose group has no path with room (or no path at all) would make ``steer``
    escalate with those services unprotected and the link still full: the path agent is
    asked first (the same ``compute_paths`` as ``compute``; it reserves nothing), the
    services of a group left without a path are set aside and the choice is made again.
    Returns (chosen, set aside); none chosen when nothing with a path helps.
    """
    aside: set[str] = set()
    avoiding = {**state, "degraded_links": merge_unique(state["degraded_links"], links)}
    for n in range(PLAN_ROUNDS):
        pool = [r for r in riders if r.service_id not in aside]
        chosen = choose(pool, load, targets, already)
        if not chosen:
            return [], sorted(aside)
        wanted = detours(
            policy_groups(_subset(impact, [r.service_id for r in chosen])),
            factor,
            fx.orch.proactive_release_pct,
        )
        answer = await fx.call(
            COMPUTE_PATHS,
            ComputePaths(
                incident_id=fx.iid,
                requests=[path_request(fx, cast(IncidentState, avoiding), g) for g in wanted],
            ),
            key=f"plan{n}",  # each round its own idempotency key: its own question
        )
        blocked = {
            sid
            for group, result in zip(wanted, answer.results, strict=True)
            if not result.found or len(result.path) < 2
            for sid in group["service_ids"]
        }
        if not blocked:
            return chosen, sorted(aside)
        aside |= blocked
    return [], sorted(aside)


async def _grow(fx: Effects, state: IncidentState) -> Command[RelieveGoto]:
    """Move more: the moved share no longer brings the native load under the target (it grew
    past the forecast the shift was sized for), or the incident gained links.

    The services already moved stay on their policies; the extra ones (the fewest, among
    those with a path) become the groups ``compute`` → ``provision`` → ``steer`` handle, and
    ``watch`` then adds the new policies to the ones kept (``shift.kept``). It is part of
    the same shift (``shift.grown`` counts these). When nothing more can move (every rider
    moved, no path with room, a peer failing) the traffic stays as it is and ``watch``
    goes on; it tries again only once the load climbs further or the links change.
    """
    shift = dict(state.get("shift") or {})
    links = _links(shift, state)
    base = fx.done(nodes_executed=["relieve"], **entered(Status.ASSESSING))
    already = set(moved_ids(state))
    try:
        impact = await fx.call(ASSESS_IMPACT, _native_question(fx, links))
        # the records say where each service rides now: a link the incident gained that
        # carries this shift's (or another's) tunnels has that traffic in W_now, so its native
        # load reads under what it measures, and only its native riders can move
        records = _refreshed(dict(shift.get("riders") or {}), impact, links)
        others = others_of(impact, already) & set(records)
        grown = {**shift, "links": links, "riders": records, "others": sorted(others)}
        moved_now = shares(grown, already | others)
        loads = await forecast(fx, links, moved_now, shift.get("moved_since"))
        riders = _riders(records)
        planned = {link: planning_load(loads.get(link)) for link in links}
        known = {link: p for link, p in planned.items() if p is not None}
        targets = {link: _limits(fx, _pct(loads.get(link), "threshold_pct"))[0] for link in known}
        listed = {s.service_id for s in impact.affected_services}
        pool = [r for r in riders if r.service_id in listed or r.service_id in already]
        factor = growth(loads, links)
        extra, aside = await _routable(
            fx, state, impact, pool, known, targets, links, already | others, factor
        )
    except MeshError as exc:
        await fx.status(
            Status.MONITORING,
            f"Could not plan moving more traffic off {', '.join(links)} ({exc}); "
            "the traffic moved stays on its policies",
            {"proactive": True, "error": str(exc)},
        )
        stuck = {**shift, "links": links, "stuck": {"at": iso(utcnow()), "residual": {}}}
        return Command(goto="watch", update={**base, "shift": stuck})
    residual = {link: known[link] * (1.0 - moved_now.get(link, 0.0)) for link in known}
    details = {**load_details(fx, grown, loads), "expected_pct": residual}
    if not extra and all(v <= targets.get(n, 100.0) for n, v in residual.items()):
        # the gained links carry tunnel traffic (native under measured) or are under the
        # target: nothing to add
        return Command(goto="watch", update={**base, "shift": {**grown, "share": moved_now}})
    if not extra:
        await fx.status(
            Status.MONITORING,
            f"Native load on {', '.join(links)} less the traffic moved is "
            f"{', '.join(_fmt(v) for v in residual.values())}, over the target, and no more "
            f"service can move ({len(aside)} without a path with room): the traffic moved "
            "stays on its policies",
            {**details, "moving": [], "without_path": aside},
        )
        stuck = {**grown, "share": moved_now, "stuck": {"at": iso(utcnow()), "residual": residual}}
        return Command(goto="watch", update={**base, "shift": stuck})
    moving = [r.service_id for r in extra]
    after = shares(grown, already | others | set(moving))
    expected = {link: known[link] * (1.0 - after.get(link, 0.0)) for link in known}
    summary = impact_summary(_subset(impact, moving))
    summary.update(
        tunnel_ends(
            detours(policy_groups(_subset(impact, moving)), factor, fx.orch.proactive_release_pct)
        )
    )
    kept = {
        "tunnels": tunnels(state),
        "paths": paths(state),
        "groups": groups(state),
        "service_ids": (state.get("impact") or {}).get("service_ids") or [],
    }
    await fx.status(
        Status.ASSESSING,
        f"Native load on {', '.join(links)} less the traffic moved would be "
        f"{', '.join(_fmt(v) for v in residual.values())}: moving {len(moving)} more "
        f"service{'s' if len(moving) > 1 else ''} "
        f"({', '.join(f'{s:.0%}' for s in after.values())} of the traffic moved) brings it to "
        f"{', '.join(_fmt(v) for v in expected.values())}, computing a path",
        {**details, "moving": moving, "moving_share": after, "expected_pct": expected},
    )
    await fx.audit("service_impact_assessed", {**summary, "moving": moving, "moving_share": after})
    shift = {**grown, "share": moved_now, "kept": kept, "stuck": None}
    return Command(goto="compute", update={**base, "impact": summary, "shift": shift})


def _residual(
    shift: dict[str, Any], loads: dict[str, dict[str, Any]], share: dict[str, float]
) -> dict[str, float]:
    """Each link's planning load less the share moved off it (what the link would carry now
    and at the horizon with the shift as it is)."""
    out = {}
    for link, load in loads.items():
        p = planning_load(load)
        if p is not None:
            out[link] = p * (1.0 - share.get(link, 0.0))
    return out


# --- watch ----------------------------------------------------------------------------------

WatchGoto = Literal["wait", "relieve", "release", "close", "escalate"]


def _carrying(state: IncidentState) -> bool:
    """Traffic is on the incident's policies (steered, not yet removed)."""
    return bool(state.get("steered")) and not state.get("cleaned") and bool(tunnels(state))


def moved_ids(state: IncidentState) -> list[str]:
    """The services on the incident's policies."""
    return [
        sid
        for t in tunnels(state)
        if t.get("steered", bool(state.get("steered")))
        for sid in t.get("service_ids") or []
    ]


def _shifted(shift: dict[str, Any], state: IncidentState, now: datetime) -> dict[str, Any]:
    """Record a shift that steering just made: its time, count and the share it moved."""
    return {
        **shift,
        "active": True,
        "shifts": int(shift.get("shifts") or 0) + 1,
        "shifted_at": [*(shift.get("shifted_at") or []), iso(now)],
        "share": shares(shift, moved_all(shift, state)),
        "moved_since": iso(now),
        "calm_since": None,
    }


def not_before(fx: Effects, shift: dict[str, Any]) -> datetime | None:
    """The earliest a return may start: the minimum interval after the last shift."""
    at = shift.get("shifted_at") or []
    if not at:
        return None
    return parse(at[-1]) + fx.scaled(fx.orch.proactive_min_shift_interval_s)


async def watch(state: IncidentState, config: RunnableConfig) -> Command[WatchGoto]:
    """One native-load check; loops through ``wait`` (``load_poll``) at the monitor interval.

    Traffic returns only when the native load has been calm (under the release threshold,
    forecast too) for the whole hold and the last shift is at least the minimum interval
    old. An alert's "cleared" does not end this: measured load is low *because* traffic moved.
    """
    fx = Effects(state, config)
    now = utcnow()
    shift = dict(state.get("shift") or {})
    joined: dict[str, Any] = {}
    if shift.get("kept") and _carrying(state):
        state, joined, shift = _joined(state, shift, now)
    carrying = _carrying(state)
    fresh = carrying and not shift.get("active")
    if fresh:
        shift = _shifted(shift, state, now)
    base = fx.done(nodes_executed=["watch"], **entered(Status.MONITORING), **joined)
    links: list[str] = list(shift.get("links") or state["degraded_links"])
    # nothing of ours moved: the share is other incidents' moves (``relieve``), or none
    moved = shift.get("share") or {}
    try:
        loads = await forecast(fx, links, moved, shift.get("moved_since"))
    except MeshError as exc:
        failed = peer_failed(exc, "load_check_failed", "Link load check failed", agent="traffic")
        return Command(goto="escalate", update={**base, "shift": shift, **failed})
    checks = int(shift.get("checks") or 0) + 1
    was_calm = shift.get("calm_since") is not None
    limits = {n: _limits(fx, _pct(loads.get(n), "threshold_pct")) for n in links}
    quiet = bool(loads) and all(
        calm(loads.get(n), limits[n][1], measured=not carrying) for n in links
    )
    since = parse(shift["calm_since"]) if quiet and was_calm else now if quiet else None
    shift.update(checks=checks, calm_since=iso(since) if since else None)
    details = load_details(fx, shift, loads)
    update = {**base, "shift": shift}
    if not carrying and not quiet and _over_target(loads, limits):
        await fx.status(
            Status.MONITORING,
            f"Native load forecast on {', '.join(links)} now over the target; shifting traffic",
            details,
        )
        return Command(goto="relieve", update=update)
    if carrying and not quiet and (why := _grow_why(fx, state, shift, loads, limits, now)):
        await fx.status(Status.MONITORING, why, details)
        return Command(goto="relieve", update=update)
    if joined:
        await fx.status(
            Status.MONITORING,
            f"{len(joined['tunnels'])} policies now carry "
            f"{', '.join(f'{v:.0%}' for v in (shift.get('share') or {}).values())} of the "
            f"traffic of {', '.join(links)} (the shift grew)",
            {**details, "tunnel_ids": [t["tunnel_id"] for t in joined["tunnels"]]},
        )
    hold = fx.scaled(fx.orch.proactive_hold_s)
    earliest = not_before(fx, shift) if carrying else None
    releasing = since is not None and now - since >= hold and (earliest or now) <= now
    if (
        carrying
        and (releasing or checks % STATUS_EVERY_N_CHECKS == 0)
        and await _others_changed(fx, state, shift, links)
    ):
        # another incident moved (or brought back) services riding these links: the native
        # load read so far used the wrong share, so the calm timer starts again
        since, releasing = None, False
        shift["calm_since"] = None
        details = load_details(fx, shift, loads)
    if releasing:
        return await _calm_held(fx, state, update, details, carrying)
    due = now + fx.scaled(fx.orch.sla_poll_s)
    if since is not None:
        due = min(due, max(since + hold, earliest or since))
    details.update(
        calm_since=shift["calm_since"],
        release_after=iso(since + hold) if since else None,
        release_not_before=iso(earliest) if earliest else None,
        check=checks,
    )
    if fresh or checks == 1 or quiet != was_calm or checks % STATUS_EVERY_N_CHECKS == 0:
        await fx.status(Status.MONITORING, _watch_message(links, loads, quiet, carrying), details)
    poll = wait_until(max(due, now + timedelta(milliseconds=1)), then="watch", reason="load_poll")
    return Command(goto="wait", update={**update, "wait": poll})


def _joined(
    state: IncidentState, shift: dict[str, Any], now: datetime
) -> tuple[IncidentState, dict[str, Any], dict[str, Any]]:
    """Back from steering a grown shift: the policies kept and the new ones are the
    incident's policies together (state, the update that says so, the shift with its new
    share). The same shift (``shifts`` unchanged): ``grown`` counts it, ``moved_since`` is
    now, since the share the traffic agent divides by changed now."""
    kept = shift.get("kept") or {}
    every = [dict(t) for t in kept.get("tunnels") or []]
    for tunnel in tunnels(state):
        # the tunnel agent answers a second policy between the same ends of one incident
        # with the first one: the new services then ride that policy (one entry, all its ids)
        same = next((t for t in every if t["tunnel_id"] == tunnel["tunnel_id"]), None)
        if same is None:
            every.append(tunnel)
        else:
            same["service_ids"] = merge_unique(same.get("service_ids"), tunnel["service_ids"])
    routes = [*(kept.get("paths") or []), *paths(state)]
    impact = dict(state.get("impact") or {})
    impact["groups"] = [*(kept.get("groups") or []), *groups(state)]
    impact["service_ids"] = merge_unique(kept.get("service_ids") or [], impact.get("service_ids"))
    first = every[0]
    joined: dict[str, Any] = {
        "tunnels": every,
        "paths": routes,
        "impact": impact,
        "tunnel": {k: v for k, v in first.items() if k not in ("steered", "not_steered")},
        "path": routes[0] if routes else state.get("path"),
    }
    merged = cast(IncidentState, {**state, **joined})
    shift = {
        **shift,
        "kept": None,
        "grown": int(shift.get("grown") or 0) + 1,
        "grown_at": [*(shift.get("grown_at") or []), iso(now)],
        "share": shares(shift, moved_all(shift, merged)),
        "moved_since": iso(now),
        "calm_since": None,
    }
    return merged, joined, shift


def _grow_why(
    fx: Effects,
    state: IncidentState,
    shift: dict[str, Any],
    loads: dict[str, dict[str, Any]],
    limits: dict[str, tuple[float, float]],
    now: datetime,
) -> str | None:
    """Why the shift should grow (None: it should not): the incident gained links, or a
    link's native load (or forecast) less the share moved off it is more than the re-plan
    margin over the target. After a try that could move nothing more, again only once that
    load climbed another margin, or a hold time (or the minimum shift interval) later."""
    links = list(shift.get("links") or [])
    added = _links(shift, state)[len(links) :]
    if added:
        return f"The incident gained {', '.join(added)}: planning a larger shift"
    margin = fx.orch.proactive_replan_margin_pct
    residual = _residual(shift, loads, shift.get("share") or {})
    over = {n: v for n, v in residual.items() if n in limits and v > limits[n][0] + margin}
    if not over or not _seen_since(loads, over, shift.get("moved_since")):
        return None
    stuck = shift.get("stuck") or {}
    if stuck:
        before = stuck.get("residual") or {}
        higher = bool(before) and any(v > before.get(n, 0.0) + margin for n, v in over.items())
        wait = max(fx.orch.proactive_hold_s, fx.orch.proactive_min_shift_interval_s)
        retry = parse(stuck["at"]) + fx.scaled(wait)
        if not higher and now < retry:
            return None
    return (
        f"Native load on {', '.join(over)} less the traffic moved is "
        f"{', '.join(_fmt(v) for v in over.values())}, over the "
        f"{_fmt(min(limits[n][0] for n in over))} target: moving more"
    )


async def _others_changed(
    fx: Effects, state: IncidentState, shift: dict[str, Any], links: list[str]
) -> bool:
    """Ask the impact agent again where the links' services ride now (other incidents move
    theirs, and this one's policies may cross a link it gained); when the services other
    incidents moved or the moved share changed, update the shift's records, ``others`` and
    share (in place) and say so. A failing impact agent changes nothing (the load check
    itself decides)."""
    try:
        impact = await fx.call(ASSESS_IMPACT, _native_question(fx, links), key="others")
    except MeshError:
        return False
    records = _refreshed(dict(shift.get("riders") or {}), impact, links)
    others = others_of(impact, frozenset(moved_ids(state))) & set(records)
    share = shares({**shift, "riders": records}, set(moved_ids(state)) | others)
    before = shift.get("share") or {}
    same = all(abs(v - float(before.get(n, 0.0))) < 1e-3 for n, v in share.items())
    if others == set(shift.get("others") or []) and same:
        return False
    shift.update(riders=records, others=sorted(others), share=share)
    return True


def _seen_since(loads: dict[str, dict[str, Any]], links: Any, since: str | None) -> bool:
    """Every link's newest sample was taken after the last move: until then the native
    load is the measured one of before the move, and its forecast extends the ramp that led
    to the move (a shift must not grow on the samples that sized it)."""
    if not since:
        return True
    after = parse(since).timestamp()
    for link in links:
        samples = (loads.get(link) or {}).get("samples") or []
        if not samples or float(samples[-1][0]) <= after:
            return False
    return True


def _over_target(loads: dict[str, dict[str, Any]], limits: dict[str, tuple[float, float]]) -> bool:
    return any(
        (p := planning_load(load)) is not None and p > limits[link][0]
        for link, load in loads.items()
    )


def _watch_message(
    links: list[str], loads: dict[str, dict[str, Any]], quiet: bool, carrying: bool
) -> str:
    link, load = _worst(loads)
    if load is None:
        return f"No load measured yet on {', '.join(links)}; watching"
    now = (
        f"{link}: native load {_fmt(_pct(load, 'native_pct'))}, measured "
        f"{_fmt(_pct(load, 'measured_pct'))}, forecast {_fmt(_pct(load, 'predicted_pct'))}"
    )
    if quiet:
        return f"{now}: under the release threshold, hold timer running"
    return f"{now}: {'traffic stays on the tunnel' if carrying else 'watching'}"


async def _calm_held(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    details: dict[str, Any],
    carrying: bool,
) -> Command[WatchGoto]:
    """Calm for the hold: bring the traffic back (or close, when none ever moved)."""
    held = fx.orch.proactive_hold_s
    if not carrying:
        await fx.status(
            Status.MONITORING,
            f"Native load stayed under the release threshold for {held:g} s: "
            "congestion subsided, nothing was moved",
            details,
        )
        return Command(goto="close", update={**update, "close_reason": "congestion_subsided"})
    await fx.status(
        Status.MONITORING,
        f"Native load stayed under the release threshold for {held:g} s: returning the traffic",
        {**details, "hold_seconds": held},
    )
    await fx.audit("sla_recovered", {"proactive": True, "hold_seconds": held, **details})
    r = dict(state.get("restore") or {"attempt": 0, "step": 0})
    return Command(goto="release", update={**update, "restore": {**r, "step": 0}})


# --- release --------------------------------------------------------------------------------

ReleaseGoto = Literal["approval", "wait", "release", "watch", "close", "escalate"]


async def release(state: IncidentState, config: RunnableConfig) -> Command[ReleaseGoto]:
    """Check the link's load at the step applied last (not the SLA), then the next step; at
    the end the cleanup.

    The check comes a cutover pause after its step, so the traffic agent's samples already
    show the split; only what the link carries now (measured and native) is judged, not the
    forecast, whose history mixes samples taken at other splits.
    """
    fx = Effects(state, config)
    r = dict(state.get("restore") or {"attempt": 0, "step": 0})
    attempt, index = int(r["attempt"]), int(r["step"])
    update = fx.done(nodes_executed=["release"], **entered(Status.RESTORING))
    shift = dict(state.get("shift") or {})
    links: list[str] = list(shift.get("links") or state["degraded_links"])
    try:
        loads = await forecast(fx, links, shift.get("share") or {}, shift.get("moved_since"))
    except MeshError as exc:
        failed = peer_failed(exc, "load_check_failed", "Link load check failed", agent="traffic")
        return Command(goto="escalate", update={**update, **failed})
    details = {
        **load_details(fx, shift, loads),
        "step": index,
        "steps": len(CUTOVER_STEPS),
        "tunnel_id": tunnel_ids(state)[0],
        "tunnel_ids": tunnel_ids(state),
    }
    if index and any(climbed(load, now_only=True) for load in loads.values()):
        return await _back_on_tunnels(fx, state, update, shift, details)
    if index >= len(CUTOVER_STEPS):
        return await _returned(fx, state, update, attempt, details)
    protection, original = CUTOVER_STEPS[index]
    ask = cutover_gate(fx, state, attempt, index, then="release", proactive=True)
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    every = tunnels(state)
    outcomes = await _split(fx, state, every, protection, original)
    if broke := cutover_failures(every, outcomes, index):
        return Command(goto="escalate", update={**update, **broke})
    results = [o for o in outcomes if isinstance(o, CutoverResult)]
    now = utcnow()
    shift.update(
        share=shares(
            shift, set(_still_moved(state, results, protection)) | set(shift.get("others") or [])
        ),
        moved_since=iso(now),
    )
    details.update(step=index + 1, protection_pct=protection, original_pct=original)
    if any(not res.within_sla or res.reverted for res in results):
        # restore saw the SLA break on the link and put that policy's traffic back already
        return await _back_on_tunnels(fx, state, update, shift, {**details, "reverted": True})
    await fx.status(
        Status.RESTORING,
        f"Cutover {protection}/{original} (protection/original): "
        f"{max(shift['share'].values(), default=0.0):.0%} of the link's traffic still moved",
        {**details, "moved_share": shift["share"]},
    )
    r["step"] = index + 1
    pause = wait_until(now + fx.scaled(fx.orch.cutover_step_s), then="release", reason="cutover")
    return Command(goto="wait", update={**update, "restore": r, "shift": shift, "wait": pause})


async def _split(
    fx: Effects,
    state: IncidentState,
    every: list[dict[str, Any]],
    protection: int,
    original: int,
    *,
    again: bool = False,
) -> list[CutoverResult | MeshError]:
    """``cutover_policies`` on restore for every policy (which also checks the SLA on the link
    and puts every policy's traffic back on it if it broke). ``again`` (all traffic back on
    the policies after a step) takes a key of its own: the step's key already has an answer."""
    return await cutover_policies(
        fx,
        every,
        links=state["degraded_links"],
        protection=protection,
        original=original,
        key="back" if again else None,
    )


def _still_moved(
    state: IncidentState, results: list[CutoverResult], protection: int
) -> list[str] | set[str]:
    """The services still on the policies after a step: as restore reports them, else the
    step's share of each policy's services (restore moves whole services)."""
    named = [(res.model_extra or {}).get("on_protection") for res in results]
    if results and all(isinstance(n, list) for n in named):
        return {sid for n in named if isinstance(n, list) for sid in n}
    out: list[str] = []
    for tunnel in tunnels(state):
        ids = list(tunnel.get("service_ids") or [])
        out.extend(ids[: round(len(ids) * protection / 100)])
    return out


async def _back_on_tunnels(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    shift: dict[str, Any],
    details: dict[str, Any],
) -> Command[ReleaseGoto]:
    """The load climbed back during the return: every service back on its policy (a shift,
    counted); one shift more than allowed then escalates to a person, traffic protected."""
    every = tunnels(state)
    outcomes = await _split(fx, state, every, 100, 0, again=True)
    what = "Moving the traffic back onto the tunnel failed"
    if failed := cutover_failures(every, outcomes, 0, what=what):
        return Command(goto="escalate", update={**update, **failed})
    r = dict(state.get("restore") or {"attempt": 0, "step": 0})
    now = utcnow()
    shift = _shifted(shift, state, now)
    count, most = shift["shifts"], fx.orch.proactive_max_shifts
    step = int(details["step"])
    split = "/".join(str(v) for v in CUTOVER_STEPS[max(step - 1, 0)])
    details = {**details, "shifts": count, "reverted_at_step": step, "moved_share": shift["share"]}
    message = (
        f"Load climbed back at cutover {split} (protection/original): "
        f"traffic back on the tunnel (shift {count} of at most {most})"
    )
    again = {"restore": {"attempt": int(r["attempt"]) + 1, "step": 0}, "shift": shift}
    await fx.status(Status.RESTORING, message, details)
    if count > most:
        flapping = escalation(
            "proactive_flapping",
            f"{message}: more shifts than the {most} allowed; a person should look at "
            f"{details['link']} (traffic stays on the tunnel)",
            error_code="proactive_flapping",
            shifts=count,
            max_shifts=most,
            link=details["link"],
            load=details["load"],
        )
        return Command(goto="escalate", update={**update, **again, **flapping})
    return Command(goto="watch", update={**update, **again})


async def _returned(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    attempt: int,
    checked: dict[str, Any],
) -> Command[ReleaseGoto]:
    """Every service is home: remove the policies (after approval, if policy wants one)."""
    ids = tunnel_ids(state)
    details = {"proactive": True, "tunnel_ids": ids}
    not_yet = await remove_policies(fx, state, update, attempt, then="release", details=details)
    if not_yet:
        return not_yet
    shift = dict(state.get("shift") or {})
    shift.update(
        active=False,
        share=dict.fromkeys(shift.get("links") or [], 0.0),
        moved_since=None,
        stuck=None,
    )
    shift["returns"] = int(shift.get("returns") or 0) + 1
    await fx.status(
        Status.RESTORING,
        f"Congestion subsided: traffic back on its own path; tunnel{'s' if len(ids) > 1 else ''} "
        f"{', '.join(ids)} removed",
        {
            **checked,
            "moved_share": shift["share"],
            "tunnel_id": ids[0] if ids else None,
            "tunnel_ids": ids,
            "cleanup": True,
            "protection_pct": 0,
            "original_pct": 100,
            "shifts": shift.get("shifts", 0),
            "returns": shift["returns"],
        },
    )
    await fx.audit("restoration_complete", {"tunnel_id": ids[0] if ids else None})
    done = {"cleaned": True, "close_reason": "congestion_subsided", "shift": shift}
    return Command(goto="close", update={**update, **done})

"""One alert's fate, decided synchronously from the correlation state.

:func:`decide` is a plain function (never ``async``): it reads the state and returns a
:class:`Decision` (the disposition, the incident, the reason, and the ordered
:data:`~services.correlator.state.Change` records that carry it out), changing nothing. The
engine applies each decision before deciding the next alert of the same request, in one loop
with no await, so decisions are consistent without locks: that rule is now the shape of the
code rather than a comment.

Pipeline: nothing to be about (no link, node or host) → discarded; stale → discarded;
firing at info severity → discarded; same fingerprint in the same state within the dedup
window → duplicate; matched by an active silence → suppressed; then the link's flap state is
updated (RFC 2439 penalty); a cleared alert joins the open incident of its link or is
discarded; a firing alert on a dampened link is dampened; a weak signal recurring on a link
just closed as a false positive is false_positive; otherwise it joins an open incident that
holds its link, a node alarm covering its link (inhibition), or a related incident (shared
node or SRLG, within the
correlation window); else it opens a new incident. An alert about a host (a server, service
or database the topology does not know) joins its host's open ticket or opens a host ticket,
which the orchestrator matches to a runbook instead of running the network loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.correlator.dampening import DampeningParams, LinkFlapState
from services.correlator.settings import CorrelatorSettings
from services.correlator.state import (
    CONFIRMED,
    SEVERITY_RANK,
    AlertBrief,
    Change,
    ClearInto,
    CorrelationState,
    Dampen,
    Incident,
    JoinIncident,
    OpenIncident,
    RecordDedup,
    SignalCleared,
    SlideDedup,
    UpdateFlap,
)
from services.correlator.topology import TopologyView
from services.correlator.triage import Evidence, classify
from shared.models import AlertDisposition, NormalizedAlert
from shared.settings import Settings

Disposition = AlertDisposition
"""What became of an alert: the wire's own list (the 202 answer names it)."""


@dataclass(frozen=True)
class Rules:
    """The settings decisions depend on, already multiplied by the time scale."""

    group_wait: timedelta
    window: timedelta
    dedup_window: timedelta
    stale_after: timedelta
    dampening: DampeningParams
    auto_close_confidence: float

    @classmethod
    def of(cls, settings: Settings, config: CorrelatorSettings) -> Rules:
        # All times but stale_after follow CXM_TIME_SCALE: staleness is about the source's clock.
        scale = settings.time_scale
        return cls(
            group_wait=timedelta(seconds=config.group_wait_s * scale),
            window=timedelta(seconds=config.correlation_window_s * scale),
            dedup_window=timedelta(seconds=config.dedup_window_s * scale),
            stale_after=timedelta(seconds=config.stale_after_s),
            dampening=DampeningParams(
                penalty=config.flap_penalty,
                half_life_s=config.flap_half_life_s * scale,
                suppress=config.flap_suppress,
                reuse=config.flap_reuse,
                max_suppress_s=config.flap_max_suppress_s * scale,
            ),
            auto_close_confidence=config.auto_close_confidence,
        )


@dataclass(slots=True)
class Decision:
    """One alert's fate, and what the state must do to carry it out.

    ``changes`` are applied in order by ``CorrelationState.apply``; screening dispositions
    (discarded early, suppressed) change nothing. Not frozen for speed (see state.py).
    """

    disposition: Disposition
    incident_id: str | None
    reason: str
    fingerprint: str
    link: str | None
    changes: tuple[Change, ...] = ()


def decide(
    alert: NormalizedAlert,
    state: CorrelationState,
    topo: TopologyView,
    rules: Rules,
    now: datetime,
    *,
    proactive: bool = False,
) -> Decision:
    """The disposition of ``alert`` given ``state`` as it is now; ``state`` is not changed."""
    link = topo.canonical(alert.link) if alert.link else None
    fp = alert.fingerprint or _derived_fingerprint(alert, link)
    if link is None and not alert.node and not alert.host:
        return Decision("discarded", None, "no link or node (nor host) to correlate", fp, link)
    observed = alert.timestamp
    if observed is not None and now - observed > rules.stale_after:
        return Decision("discarded", None, f"stale: observed {observed.isoformat()}", fp, link)
    if alert.status == "firing" and alert.severity == "info":
        return Decision("discarded", None, "info severity", fp, link)
    seen = state.dedup.get(fp)
    if (
        seen is not None
        and seen.status == alert.status
        and now - seen.last_seen < rules.dedup_window
    ):
        why = "same alert in the same state within the dedup window"
        return Decision("duplicate", seen.incident_id, why, fp, link, (SlideDedup(fp),))
    labels = {
        **alert.labels,
        "source": alert.source,
        "link": link or "",
        "node": alert.node or "",
        "severity": alert.severity,
        "status": alert.status,
        "metric": alert.metric or "",
    }
    for silence in state.silences.values():
        if silence.state(now) == "active" and silence.matches(labels):
            why = f"{silence.kind} {silence.id} by {silence.created_by}"
            return Decision("suppressed", None, why, fp, link)
    brief = AlertBrief(
        fp,
        alert.source,
        link,
        alert.status,
        alert.severity,
        alert.value,
        alert.threshold,
        _duration(alert),
        labels,
        alert.summary,
        alert.annotations.get("description", ""),
    )
    flap = None
    if link is not None and not proactive:
        # a forecast says nothing of the link's state: it neither degrades the link, nor
        # keeps it degraded once its faults clear, nor counts toward flapping
        flap = _flap_step(state.flaps.get(link), link, fp, alert.status == "firing", now, rules)
    subject = _Subject(alert, fp, link, brief, flap, now, proactive)
    if alert.status == "resolved":
        return _cleared(subject, state)
    return _firing(subject, state, topo, rules)


@dataclass(slots=True)
class _Subject:
    """An alert past screening: what the cleared and firing branches need of it."""

    alert: NormalizedAlert
    fp: str
    link: str | None
    brief: AlertBrief
    flap: UpdateFlap | None
    now: datetime
    proactive: bool
    """A forecast (Traffic Analytics): it opens or joins proactive incidents only."""

    def out(
        self, disposition: Disposition, incident_id: str | None, reason: str, *changes: Change
    ) -> Decision:
        """The decision, its changes led by the dedup entry and the link's flap state.

        That is the order they were always made in: dampening reads the updated flap state.
        """
        record = RecordDedup(self.fp, self.alert.status, incident_id)
        lead: tuple[Change, ...] = (record, self.flap) if self.flap is not None else (record,)
        return Decision(disposition, incident_id, reason, self.fp, self.link, lead + changes)


def _cleared(s: _Subject, state: CorrelationState) -> Decision:
    """A cleared alert joins its link's (or node's) open incident; alone, it is noise."""
    link, flap = s.link, s.flap
    inc = state.open_for(link, s.alert.node or s.alert.host, s.proactive)
    if inc is None:
        return s.out("discarded", None, "cleared with nothing open")
    joined = ClearInto(inc.id, s.brief)
    if link is not None and flap is not None and flap.after.suppressed:
        why = f"link {link} flapping: dampened"
        return s.out("dampened", inc.id, why, joined, Dampen(inc.id, link))
    why = f"clears {link or s.alert.node or s.alert.host} of {inc.id}"
    if link is not None and flap is not None and not flap.after.degraded and inc.status == "open":
        return s.out("correlated", inc.id, why, joined, SignalCleared(inc.id, link))
    return s.out("correlated", inc.id, why, joined)


def _firing(s: _Subject, state: CorrelationState, topo: TopologyView, rules: Rules) -> Decision:
    link, flap, now, brief, proactive = s.link, s.flap, s.now, s.brief, s.proactive
    if link is None and s.alert.host:
        return _host_ticket(s, s.alert.host, state, rules)
    if link is not None and flap is not None and flap.after.suppressed:
        # A flapping link still belongs with its neighbours: two related links flapping
        # together are one dampened incident, not two that would each build a tunnel.
        target = (
            state.open_for(link, None)
            or _find_related(state, link, None, topo, now, rules, proactive)[0]
        )
        opened: tuple[Change, ...] = ()
        if target is None:
            new = _new_incident(state, [link], [], s.alert.severity, now, rules, proactive, None)
            opened, inc_id = (new,), new.incident_id
        else:
            inc_id = target.id
        return s.out(
            "dampened",
            inc_id,
            f"link {link} flapping (penalty {flap.after.decayed(now, rules.dampening):.0f})",
            *opened,
            JoinIncident(inc_id, link, None, brief, f"flapping {link}"),
            Dampen(inc_id, link),
        )

    recent = state.recent.get(link) if link is not None else None
    if (
        link is not None
        and not proactive
        and (False, link) not in state.link_index
        and recent is not None
        and recent.resolution == "false_positive"
        and now - recent.closed_at <= rules.window
    ):
        # The same weak signal right after an auto-closed false positive: closed again at once.
        verdict = classify(evidence(state, rules, [brief], [link], now, flap=flap))
        if (
            verdict.classification == "false_positive"
            and verdict.confidence >= rules.auto_close_confidence
        ):
            return s.out("false_positive", recent.incident_id, "; ".join(verdict.reasons))

    node = s.alert.node
    related, why = _find_related(state, link, node, topo, now, rules, proactive)
    if related is not None:
        return s.out(
            "correlated", related.id, why, JoinIncident(related.id, link, node, brief, why)
        )

    links = [link] if link else topo.links_of_node(node or "")
    if not links:
        return s.out("discarded", None, f"node {node} has no known links")
    nodes = [] if link else [node or ""]
    new = _new_incident(state, links, nodes, s.alert.severity, now, rules, proactive, brief)
    return s.out("new_incident", new.incident_id, "opened; emitted after the group wait", new)


def _host_ticket(s: _Subject, host: str, state: CorrelationState, rules: Rules) -> Decision:
    """A host's alerts share its open ticket (indexed like a node, but with no links: the
    orchestrator reads that as a host ticket); else the alert opens one."""
    proactive = s.proactive
    inc = state.open_for(None, host, proactive)
    if inc is not None:
        why = f"host {host} already in {inc.id}"
        return s.out("correlated", inc.id, why, JoinIncident(inc.id, None, host, s.brief, why))
    new = _new_incident(state, [], [host], s.alert.severity, s.now, rules, proactive, s.brief)
    why = f"host ticket for {host}; emitted after the group wait"
    return s.out("new_incident", new.incident_id, why, new)


def _flap_step(
    before: LinkFlapState | None, link: str, fp: str, firing: bool, now: datetime, rules: Rules
) -> UpdateFlap:
    """The link's flap state once this alert counts, computed on a copy.

    The link is degraded while any alert fires on it; whether that holds after this alert is
    read off the firing set without copying it. An alert that leaves a known link as it was
    (another firing alert on a degraded link: most of a storm) needs no copy at all.
    """
    current = before if before is not None else LinkFlapState(link=link)
    # Still degraded after a clear if another alert fires on the link.
    degraded = firing or len(current.firing) > (1 if fp in current.firing else 0)
    if before is not None and before.seen and before.degraded == degraded:
        return UpdateFlap(link, fp, firing, before)
    after = LinkFlapState(
        current.link,
        current.degraded,
        current.seen,
        current.penalty,
        current.updated_at,
        current.suppressed_since,
        current.changes,
        current.firing,
    )
    after.record(degraded, now, rules.dampening)
    return UpdateFlap(link, fp, firing, after)


def _new_incident(
    state: CorrelationState,
    links: list[str],
    nodes: list[str],
    severity: str,
    now: datetime,
    rules: Rules,
    proactive: bool,
    brief: AlertBrief | None,
) -> OpenIncident:
    year = now.year
    seq = state.sequence.get(year, 0) + 1
    return OpenIncident(
        incident_id=f"INC-{year}-{seq:04d}",
        year=year,
        seq=seq,
        links=tuple(links),
        nodes=tuple(nodes),
        severity=severity,
        proactive=proactive,
        emit_at=now + rules.group_wait,
        brief=brief,
    )


def _find_related(
    state: CorrelationState,
    link: str | None,
    node: str | None,
    topo: TopologyView,
    now: datetime,
    rules: Rules,
    proactive: bool,
) -> tuple[Incident | None, str]:
    """The incident of the alert's kind (SLA, or proactive) it belongs with, and why; the
    oldest related one wins."""
    if link is not None:
        for end in topo.nodes_of(link):
            if (proactive, end) in state.node_index:
                inc = state.incidents[state.node_index[(proactive, end)]]
                return inc, f"inhibited by node alarm on {end} ({inc.id})"
        if (proactive, link) in state.link_index:
            inc = state.incidents[state.link_index[(proactive, link)]]
            return inc, f"link {link} already in {inc.id}"
    elif node is not None and (proactive, node) in state.node_index:
        inc = state.incidents[state.node_index[(proactive, node)]]
        return inc, f"node {node} already in {inc.id}"
    best: tuple[Incident, str] | None = None
    for inc in state.incidents.values():
        if (
            inc.status == "closed"
            or inc.proactive != proactive
            or now - inc.last_alert_at > rules.window
        ):
            continue
        for other in inc.links:
            if link is not None:
                why = topo.related(link, other)
            elif node is not None and node in topo.nodes_of(other):
                why = f"node {node} is an end of {other}"
            else:
                why = None
            if why and (best is None or inc.created_at < best[0].created_at):
                best = (inc, f"{why} with {other}")
                break
    if best is None:
        return None, ""
    return best


def evidence(
    state: CorrelationState,
    rules: Rules,
    briefs: list[AlertBrief],
    links: list[str],
    now: datetime,
    *,
    flap: UpdateFlap | None = None,
) -> Evidence:
    """What triage weighs for these alerts and links.

    ``flap`` is a link's state as a decision in progress sees it (not yet applied): without it
    a recurring alert would be judged on its link's state before the alert itself.
    """
    params = rules.dampening

    def lookup(n: str) -> tuple[LinkFlapState, bool] | None:
        if flap is not None and n == flap.link:
            return flap.after, flap.after.degraded
        f = state.flaps.get(n)
        return (f, bool(f.firing)) if f is not None else None

    firing = [b for b in briefs if b.status == "firing"]
    maintenance = [
        s.id
        for s in state.silences.values()
        if s.kind == "maintenance"
        and s.ends_at <= now
        and now - s.ends_at <= rules.window
        and any(s.matches(b.labels) for b in briefs)
    ]
    flaps = [(n, f) for n in links if (f := lookup(n)) is not None]
    flap_changes = sum(
        f.changes for _, (f, _) in flaps if f.decayed(now, params) >= params.penalty * 0.25
    )
    recurs_after = sorted(
        {
            r.incident_id
            for n in links
            if (r := state.recent.get(n)) is not None
            and r.resolution in CONFIRMED
            and now - r.closed_at <= rules.window
        }
    )
    return Evidence(
        recurs_after=recurs_after,
        values=[(b.value, b.threshold) for b in firing],
        durations_s=[b.duration_s for b in firing if b.duration_s is not None],
        fingerprints=len({b.fingerprint for b in firing}),
        sources=len({b.source for b in firing}),
        links=len({b.link for b in firing if b.link}),
        all_cleared=(
            bool(flaps) and all(not on for _, (_, on) in flaps) if links else _all_cleared(briefs)
        ),
        flap_changes=flap_changes,
        maintenance_recent=maintenance,
        severity=max(
            (b.severity for b in firing), key=lambda s: SEVERITY_RANK[s], default="medium"
        ),
    )


def _all_cleared(briefs: list[AlertBrief]) -> bool:
    """A host ticket has no link state: each alert's latest state says whether it cleared."""
    latest = {b.fingerprint: b.status for b in briefs}
    return bool(latest) and "firing" not in latest.values()


def _duration(alert: NormalizedAlert) -> float | None:
    if alert.duration_s is not None:
        return alert.duration_s
    if alert.starts_at and alert.ends_at and alert.ends_at > alert.starts_at:
        return (alert.ends_at - alert.starts_at).total_seconds()
    return None


def _derived_fingerprint(alert: NormalizedAlert, link: str | None) -> str:
    """``sources.fingerprint(source, link, node or host, metric, sorted labels)``, the same
    text hashed the same way (a test holds them equal), written out: it runs for every alert
    without a fingerprint of its own, and the generic helper (an import and a generator per
    call) was a third of ``decide`` in the ingest profile."""
    text = "\x1f".join(
        (
            alert.source,
            link or "",
            alert.node or alert.host or "",
            alert.metric or "",
            str(sorted(alert.labels.items())),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]

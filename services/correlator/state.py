"""The correlator's memory: open incidents, their link and node indexes, dedup keys, flap state.

Decisions (decide.py) only read this; every change goes through :meth:`CorrelationState.apply`
with the :data:`Change` records a decision returned, or through the few timer and close
operations below. Keeping the writes in one place is what lets a failed database write be
undone by reloading (writer.py): nothing else holds a copy that could drift.

Mutations report what peers must hear of (:data:`Effect`); emit.py turns those into outbox
rows, so this module knows nothing of the mesh.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.correlator import store
from services.correlator.dampening import DampeningParams, LinkFlapState
from services.correlator.silences import Silence
from services.correlator.topology import TopologyView

SEVERITY_RANK: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
MAX_BRIEFS = 1000
"""Alerts remembered per incident for triage; a storm beyond this adds nothing to the verdict."""
CONFIRMED = frozenset({"resolved", "escalated"})
"""Resolutions that prove an incident was real: the loop ran, or a person took it over."""


# --- records ----------------------------------------------------------------------------------


@dataclass
class AlertBrief:
    """What triage needs to remember about an incident's alerts."""

    fingerprint: str
    source: str
    link: str | None
    status: str
    severity: str
    value: float | None
    threshold: float | None
    duration_s: float | None
    labels: dict[str, str]
    summary: str = ""
    description: str = ""


@dataclass
class Incident:
    id: str
    status: str  # pending (group wait), open (emitted), closed
    severity: str
    links: list[str]
    nodes: list[str]
    created_at: datetime
    emit_at: datetime
    last_alert_at: datetime
    emitted_at: datetime | None = None
    closed_at: datetime | None = None
    dampened_until: datetime | None = None
    proactive: bool = False
    triage: dict[str, Any] | None = None
    resolution: str | None = None
    alerts: list[AlertBrief] = field(default_factory=list)
    persisted: bool = False

    def row(self) -> dict[str, Any]:
        return {
            "incident_id": self.id,
            "status": self.status,
            "resolution": self.resolution,
            "severity": self.severity,
            "links": list(self.links),
            "nodes": list(self.nodes),
            "created_at": self.created_at,
            "emit_at": self.emit_at,
            "emitted_at": self.emitted_at,
            "last_alert_at": self.last_alert_at,
            "closed_at": self.closed_at,
            "dampened_until": self.dampened_until,
            "proactive": self.proactive,
            "triage": self.triage,
        }

    @property
    def kind(self) -> str:
        """``host`` for a host ticket: it holds its host as a node and never a link (a network
        node alarm always brings the node's links)."""
        return "network" if self.links else "host"

    @property
    def title(self) -> str:
        """A host ticket's title: its first alert's summary (or alert name)."""
        for brief in self.alerts:
            text = brief.summary or brief.labels.get("alertname") or brief.labels.get("metric")
            if text:
                return text
        return f"Alert on {', '.join(self.nodes)}"

    @property
    def summary(self) -> str:
        if self.links:
            return f"SLA degradation detected on {', '.join(self.links)}"
        return f"{self.title} ({', '.join(self.nodes)})"


@dataclass(frozen=True)
class RecentClose:
    incident_id: str
    closed_at: datetime
    resolution: str


@dataclass
class DedupEntry:
    status: str
    last_seen: datetime
    incident_id: str | None


# --- changes: what a decision asks of the state (applied in order) ---------------------------
# Records, never modified once made; not ``frozen``: a frozen dataclass costs several times
# as much to build, and a few are built per alert on the ingestion path.


@dataclass(slots=True)
class SlideDedup:
    """A duplicate: its dedup window slides to now."""

    fingerprint: str


@dataclass(slots=True)
class RecordDedup:
    """The alert is the fingerprint's latest state (and, once known, its incident)."""

    fingerprint: str
    status: str
    incident_id: str | None


@dataclass(slots=True)
class UpdateFlap:
    """The link's flap state after this alert.

    ``after`` carries the recorded penalty and suppression; its ``firing`` set is the live one,
    shared rather than copied (a copy per alert would cost a link's whole storm), and gets
    ``fingerprint`` added (``firing``) or removed when applied.
    """

    link: str
    fingerprint: str
    firing: bool
    after: LinkFlapState


@dataclass(slots=True)
class OpenIncident:
    """A new incident, pending until ``emit_at`` (the group wait)."""

    incident_id: str
    year: int
    seq: int
    links: tuple[str, ...]
    nodes: tuple[str, ...]
    severity: str
    proactive: bool
    emit_at: datetime
    brief: AlertBrief | None
    """The opening alert; None when a ``JoinIncident`` right after adds it."""


@dataclass(slots=True)
class JoinIncident:
    """The alert (and its link, or a node alarm's links) joins the incident."""

    incident_id: str
    link: str | None
    node: str | None
    brief: AlertBrief
    why: str


@dataclass(slots=True)
class ClearInto:
    """A cleared alert joins the open incident of its link or node."""

    incident_id: str
    brief: AlertBrief


@dataclass(slots=True)
class Dampen:
    """The incident's link is flapping: hold the incident until the link's penalty decays."""

    incident_id: str
    link: str


@dataclass(slots=True)
class SignalCleared:
    """The last alert on a link of an emitted incident cleared: the orchestrator hears of it."""

    incident_id: str
    link: str


Change = (
    SlideDedup
    | RecordDedup
    | UpdateFlap
    | OpenIncident
    | JoinIncident
    | ClearInto
    | Dampen
    | SignalCleared
)


# --- effects: what peers must hear of a change (emit.py makes the outbox rows) ---------------


@dataclass(slots=True)
class LinksAdded:
    incident: Incident
    links: list[str]
    why: str


@dataclass(slots=True)
class Dampened:
    incident: Incident
    link: str
    until: datetime
    penalty: int
    first: bool
    """First dampening of the incident: audited as a state change."""


@dataclass(slots=True)
class Cleared:
    incident: Incident
    link: str


@dataclass(slots=True)
class Resumed:
    incident: Incident
    link: str


Effect = LinksAdded | Dampened | Cleared | Resumed


class CorrelationState:
    """Everything the decisions read; mutated only by the methods here."""

    def __init__(self, params: DampeningParams):
        self.params = params
        self.reset()

    def reset(self) -> None:
        """Forget everything: the start of a reload from the database."""
        self.incidents: dict[str, Incident] = {}
        self.link_index: dict[tuple[bool, str], str] = {}
        """(proactive, link) → its open incident. A forecast and a fault on the same link are
        two incidents: a proactive alert never joins an SLA incident, nor the reverse."""
        self.node_index: dict[tuple[bool, str], str] = {}
        self.recent: dict[str, RecentClose] = {}
        """Per link, its last incident closed within the window: what a new alert recurs after."""
        self.dedup: OrderedDict[str, DedupEntry] = OrderedDict()
        """Fingerprint → its latest state, oldest ``last_seen`` first (every update moves its
        entry to the end), so :meth:`prune` stops at the first entry still in the window
        instead of scanning every fingerprint of the window each tick."""
        self.flaps: dict[str, LinkFlapState] = {}
        self.flaps_persisted: set[str] = set()
        self.silences: dict[str, Silence] = {}
        self.sequence: dict[int, int] = {}
        self.detached: dict[str, Incident] = {}
        """Incidents just closed: still to be written by the next snapshot."""

    # --- reads --------------------------------------------------------------------------------

    def open_for(
        self, link: str | None, node: str | None, proactive: bool = False
    ) -> Incident | None:
        """The open incident of this kind (SLA, or proactive) that holds the link, else node."""
        inc_id = self.link_index.get((proactive, link)) if link else None
        if inc_id is None and node:
            inc_id = self.node_index.get((proactive, node))
        return self.incidents.get(inc_id) if inc_id else None

    def index(self, inc: Incident) -> None:
        """Make the incident's links and nodes find it (its kind's index)."""
        for link in inc.links:
            self.link_index[(inc.proactive, link)] = inc.id
        for node in inc.nodes:
            self.node_index[(inc.proactive, node)] = inc.id

    def due(self, now: datetime, busy: set[str]) -> list[Incident]:
        """Pending incidents whose group wait is over (not ``busy`` being emitted), oldest first."""
        due = [
            i
            for i in self.incidents.values()
            if i.status == "pending" and i.emit_at <= now and i.id not in busy
        ]
        return sorted(due, key=lambda i: i.created_at)

    # --- applying a decision ------------------------------------------------------------------

    def apply(
        self,
        changes: tuple[Change, ...],
        now: datetime,
        ws: store.WriteSet,
        topo: TopologyView,
    ) -> list[Effect]:
        """Apply a decision's changes in order; mark what to write in ``ws``."""
        effects: list[Effect] = []
        for change in changes:
            if isinstance(change, RecordDedup):
                self.remember(
                    change.fingerprint, DedupEntry(change.status, now, change.incident_id)
                )
            elif isinstance(change, UpdateFlap):
                flap = change.after
                if change.firing:
                    flap.firing.add(change.fingerprint)
                else:
                    flap.firing.discard(change.fingerprint)
                self.flaps[change.link] = flap
                ws.touched_links.add(change.link)
            elif isinstance(change, JoinIncident):
                self._join(change, now, ws, topo, effects)
            elif isinstance(change, OpenIncident):
                self._open(change, now, ws)
            elif isinstance(change, ClearInto):
                inc = self.incidents[change.incident_id]
                inc.alerts.append(change.brief)
                inc.last_alert_at = now
                ws.touched_incidents.add(inc.id)
            elif isinstance(change, Dampen):
                self._dampen(self.incidents[change.incident_id], change.link, now, ws, effects)
            elif isinstance(change, SignalCleared):
                effects.append(Cleared(self.incidents[change.incident_id], change.link))
            elif isinstance(change, SlideDedup):
                self.dedup[change.fingerprint].last_seen = now
                self.dedup.move_to_end(change.fingerprint)
        return effects

    def remember(self, fingerprint: str, entry: DedupEntry) -> None:
        """The fingerprint's latest state, kept in ``last_seen`` order (see ``dedup``)."""
        self.dedup[fingerprint] = entry
        self.dedup.move_to_end(fingerprint)

    def _open(self, change: OpenIncident, now: datetime, ws: store.WriteSet) -> None:
        ws.sequences.append((change.year not in self.sequence, change.year, change.seq))
        self.sequence[change.year] = change.seq
        inc = Incident(
            id=change.incident_id,
            status="pending",
            severity=change.severity,
            links=list(change.links),
            nodes=list(change.nodes),
            created_at=now,
            emit_at=change.emit_at,
            last_alert_at=now,
            proactive=change.proactive,
        )
        if change.brief is not None:
            inc.alerts.append(change.brief)
        self.incidents[inc.id] = inc
        self.index(inc)
        ws.touched_incidents.add(inc.id)

    def _join(
        self,
        change: JoinIncident,
        now: datetime,
        ws: store.WriteSet,
        topo: TopologyView,
        effects: list[Effect],
    ) -> None:
        """Add the alert and its links; an incident already handed over hears of new links."""
        inc = self.incidents[change.incident_id]
        link, node, brief = change.link, change.node, change.brief
        added: list[str] = []
        candidates = [link] if link else topo.links_of_node(node or "")
        for name in candidates:
            if name and name not in inc.links:
                inc.links.append(name)
                added.append(name)
            if name:
                self.link_index[(inc.proactive, name)] = inc.id
        if node and not link and node not in inc.nodes:
            inc.nodes.append(node)
            self.node_index[(inc.proactive, node)] = inc.id
        if len(inc.alerts) < MAX_BRIEFS:
            inc.alerts.append(brief)
        inc.last_alert_at = now
        if SEVERITY_RANK[brief.severity] > SEVERITY_RANK[inc.severity]:
            inc.severity = brief.severity
        ws.touched_incidents.add(inc.id)
        for name in added:
            flap = self.flaps.get(name)
            if flap is not None and flap.suppressed:
                self._dampen(inc, name, now, ws, effects)
        if added and inc.status == "open":
            effects.append(LinksAdded(inc, added, change.why))

    def _dampen(
        self,
        inc: Incident,
        link: str,
        now: datetime,
        ws: store.WriteSet,
        effects: list[Effect],
    ) -> None:
        flap = self.flaps[link]
        until = flap.reuse_at(now, self.params)
        if inc.dampened_until is not None and inc.dampened_until >= until:
            return
        first = inc.dampened_until is None
        inc.dampened_until = until
        ws.touched_incidents.add(inc.id)
        penalty = round(flap.decayed(now, self.params))
        effects.append(Dampened(inc, link, until, penalty, first))

    # --- timers and closing -------------------------------------------------------------------

    def release(self, now: datetime, ws: store.WriteSet) -> list[Effect]:
        """Links whose penalty decayed are usable again; an incident resumes with its last."""
        effects: list[Effect] = []
        for link, flap in self.flaps.items():
            if flap.suppressed and flap.reusable(now, self.params):
                flap.release(now, self.params)
                ws.touched_links.add(link)
                inc = self.open_for(link, None)
                if inc is None:
                    continue
                still = [
                    n for n in inc.links if (f := self.flaps.get(n)) is not None and f.suppressed
                ]
                if still:
                    continue
                inc.dampened_until = None
                ws.touched_incidents.add(inc.id)
                effects.append(Resumed(inc, link))
        return effects

    def close(self, inc: Incident, resolution: str, now: datetime, ws: store.WriteSet) -> None:
        """The incident is over: its links and fingerprints are free for a new one."""
        inc.status = "closed"
        inc.resolution = resolution
        inc.closed_at = now
        ws.touched_incidents.add(inc.id)
        self.forget(inc)
        self.remember_close(inc, now)

    def remember_close(self, inc: Incident, closed_at: datetime) -> None:
        """What a new alert on the incident's links recurs after (triage weighs it). A forecast
        that subsided is not a fault that recurs: proactive incidents are not remembered."""
        if inc.proactive:
            return
        for link in inc.links:
            self.recent[link] = RecentClose(inc.id, closed_at, inc.resolution or "resolved")

    def forget(self, inc: Incident) -> None:
        for link in inc.links:
            if self.link_index.get((inc.proactive, link)) == inc.id:
                del self.link_index[(inc.proactive, link)]
        for node in inc.nodes:
            if self.node_index.get((inc.proactive, node)) == inc.id:
                del self.node_index[(inc.proactive, node)]
        fps = {b.fingerprint for b in inc.alerts}
        for fp in fps:
            entry = self.dedup.get(fp)
            if entry is not None and entry.incident_id == inc.id:
                del self.dedup[fp]
        self.incidents.pop(inc.id, None)
        self.detached[inc.id] = inc

    def prune(self, now: datetime, dedup_window: timedelta, window: timedelta) -> None:
        """Forget what has left its window. Dedup entries are in ``last_seen`` order, so this
        costs what it removes; should the clock step back, an entry behind a newer one waits
        for it (decisions check the window themselves, so a late prune changes nothing)."""
        dedup = self.dedup
        while dedup:
            entry = next(iter(dedup.values()))
            if now - entry.last_seen < dedup_window:
                break
            dedup.popitem(last=False)
        for link in [k for k, r in self.recent.items() if now - r.closed_at > window]:
            del self.recent[link]

    # --- writing ------------------------------------------------------------------------------

    def snapshot(self, ws: store.WriteSet) -> None:
        """Turn what ``ws`` touched into whole rows, as they are now (the last state wins)."""
        for inc_id in ws.touched_incidents:
            inc = self.incidents.get(inc_id) or self.detached.get(inc_id)
            if inc is None:
                continue
            ws.incidents.append((not inc.persisted, inc.row()))
            inc.persisted = True
        for link in ws.touched_links:
            flap = self.flaps[link]
            ws.links.append(
                (
                    link not in self.flaps_persisted,
                    {
                        "link": link,
                        "seen": flap.seen,
                        "degraded": flap.degraded,
                        "penalty": flap.penalty,
                        "updated_at": flap.updated_at,
                        "suppressed_since": flap.suppressed_since,
                        "changes": flap.changes,
                    },
                )
            )
            self.flaps_persisted.add(link)
        self.detached.clear()

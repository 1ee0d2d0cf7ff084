"""The correlator's core: every alert gets one disposition, and incidents are born and grown.

Decisions are made in memory, one alert after another with no await in between, so they are
consistent without locks; what they changed is then written in one transaction (coalesced
with whatever other requests decided meanwhile: a group commit) before the caller is
answered. If a write fails, the memory is rebuilt from the database, which holds exactly
what was acknowledged. A background ticker emits incidents whose group wait is over and
releases dampened links whose penalty has decayed.

Pipeline per alert: no network object → discarded; stale → discarded; firing at info
severity → discarded; same fingerprint in the same state within the dedup window →
duplicate; matched by an active silence → suppressed; then the link's flap state is updated
(RFC 2439 penalty); a cleared alert joins the open incident of its link or is discarded; a
firing alert on a dampened link is dampened; otherwise it joins an open incident that holds
its link, a node alarm covering its link (inhibition), or a related incident (shared node or
SRLG, within the correlation window); else it opens a new incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.correlator import store
from services.correlator.dampening import DampeningParams, LinkFlapState
from services.correlator.settings import CorrelatorSettings
from services.correlator.silences import Matcher, Silence
from services.correlator.topology import TopologyCache, TopologyView
from services.correlator.triage import Evidence, Triage, classify, refine
from shared.logs import get_logger
from shared.models import (
    AuditEvent,
    IncidentSignal,
    NewTicket,
    NormalizedAlert,
    Severity,
    StartIncident,
    TicketClosed,
    utcnow,
)
from shared.outbox import Outbox
from shared.settings import Settings

log = get_logger(__name__)

SOURCE_AGENT = "event_correlator"
SEVERITY_RANK: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
Clock = Callable[[], datetime]
MAX_BRIEFS = 1000
"""Alerts remembered per incident for triage; a storm beyond this adds nothing to the verdict."""


@dataclass
class Outcome:
    id: str
    disposition: str
    incident_id: str | None
    reason: str
    fingerprint: str
    link: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "disposition": self.disposition,
            "incident_id": self.incident_id,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "link": self.link,
        }


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
    def summary(self) -> str:
        if self.links:
            return f"SLA degradation detected on {', '.join(self.links)}"
        return f"Network alarm on {', '.join(self.nodes)}"


@dataclass(frozen=True)
class RecentClose:
    incident_id: str
    closed_at: datetime
    resolution: str


CONFIRMED = frozenset({"resolved", "escalated"})
"""Resolutions that prove an incident was real: the loop ran, or a person took it over."""


@dataclass
class DedupEntry:
    status: str
    last_seen: datetime
    incident_id: str | None


class WriteFailed(Exception):
    """The database refused a write; nothing of that step was acknowledged."""


class Correlator:
    """Holds the live correlation state; see the module docstring for the pipeline."""

    def __init__(
        self,
        *,
        settings: Settings,
        config: CorrelatorSettings,
        engine: AsyncEngine,
        outbox: Outbox | None,
        topology: TopologyCache,
        clock: Clock,
        llm_http: httpx.AsyncClient | None = None,
    ):
        self.settings = settings
        self.config = config
        self.engine = engine
        self.outbox = outbox
        self.topology = topology
        self.clock = clock
        self.llm_http = llm_http
        scale = settings.time_scale
        self.group_wait = timedelta(seconds=config.group_wait_s * scale)
        self.window = timedelta(seconds=config.correlation_window_s * scale)
        self.dedup_window = timedelta(seconds=config.dedup_window_s * scale)
        self.stale_after = timedelta(seconds=config.stale_after_s)
        self.tick_s = max(0.005, config.tick_s * scale)
        self.params = DampeningParams(
            penalty=config.flap_penalty,
            half_life_s=config.flap_half_life_s * scale,
            suppress=config.flap_suppress,
            reuse=config.flap_reuse,
            max_suppress_s=config.flap_max_suppress_s * scale,
        )
        self._reset()
        self._queue: list[tuple[store.WriteSet, asyncio.Future[None]]] = []
        self._writer_wake = asyncio.Event()
        self._ticker_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._emitting: set[str] = set()

    def _reset(self) -> None:
        self.incidents: dict[str, Incident] = {}
        self.link_index: dict[str, str] = {}
        self.node_index: dict[str, str] = {}
        self.recent: dict[str, RecentClose] = {}
        """Per link, its last incident closed within the window: what a new alert recurs after."""
        self.dedup: dict[str, DedupEntry] = {}
        self.flaps: dict[str, LinkFlapState] = {}
        self.flaps_persisted: set[str] = set()
        self.silences: dict[str, Silence] = {}
        self.sequence: dict[int, int] = {}
        self._detached: dict[str, Incident] = {}
        """Incidents just closed: still to be written by the next snapshot."""

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load()
        self._tasks = [
            asyncio.create_task(self._writer(), name="correlator-writer"),
            asyncio.create_task(self._ticker(), name="correlator-ticker"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(WriteFailed("correlator stopping"))
        self._queue.clear()

    async def load(self) -> None:
        """Rebuild memory from the database: what was acknowledged, nothing else."""
        self._reset()
        now = self.clock()
        async with self.engine.connect() as conn:
            for row in (await conn.execute(sa.select(store.sequences))).all():
                self.sequence[row.year] = row.last
            inc_rows = (
                (
                    await conn.execute(
                        sa.select(store.incidents).where(
                            sa.or_(
                                store.incidents.c.status != "closed",
                                store.incidents.c.closed_at >= now - self.window,
                            )
                        )
                    )
                )
                .mappings()
                .all()
            )
            for r in inc_rows:
                inc = Incident(
                    id=r["incident_id"],
                    status=r["status"],
                    severity=r["severity"],
                    links=list(r["links"]),
                    nodes=list(r["nodes"]),
                    created_at=r["created_at"],
                    emit_at=r["emit_at"],
                    last_alert_at=r["last_alert_at"],
                    emitted_at=r["emitted_at"],
                    closed_at=r["closed_at"],
                    dampened_until=r["dampened_until"],
                    proactive=bool(r["proactive"]),
                    triage=r["triage"],
                    resolution=r["resolution"],
                    persisted=True,
                )
                if inc.status == "closed":
                    self._remember_close(inc, inc.closed_at or now)
                    continue
                self.incidents[inc.id] = inc
                for link in inc.links:
                    self.link_index[link] = inc.id
                for node in inc.nodes:
                    self.node_index[node] = inc.id
            if self.incidents:
                a = store.alerts
                rows = (
                    (
                        await conn.execute(
                            sa.select(a)
                            .where(
                                a.c.incident_id.in_(list(self.incidents)),
                                a.c.disposition.in_(("new_incident", "correlated", "dampened")),
                            )
                            .order_by(a.c.received_at)
                        )
                    )
                    .mappings()
                    .all()
                )
                for r in rows:
                    self.incidents[r["incident_id"]].alerts.append(_brief_row(r))
            for r in (await conn.execute(sa.select(store.link_states))).mappings().all():
                self.flaps[r["link"]] = LinkFlapState(
                    link=r["link"],
                    degraded=r["degraded"],
                    seen=r["seen"],
                    penalty=r["penalty"],
                    updated_at=r["updated_at"],
                    suppressed_since=r["suppressed_since"],
                    changes=r["changes"],
                )
                self.flaps_persisted.add(r["link"])
            # Which alerts are firing on each link: the latest state of each recent alert.
            a = store.alerts
            firing_rows = await conn.execute(
                sa.select(a.c.link, a.c.fingerprint, a.c.status)
                .where(
                    a.c.link.is_not(None),
                    a.c.received_at >= now - self.stale_after,
                    a.c.disposition.in_(("new_incident", "correlated", "dampened")),
                )
                .order_by(a.c.received_at, a.c.id)
            )
            for link, fp, status in firing_rows:
                flap = self.flaps.setdefault(link, LinkFlapState(link=link))
                if status == "firing":
                    flap.firing.add(fp)
                else:
                    flap.firing.discard(fp)
            for r in (await conn.execute(sa.select(store.silences))).mappings().all():
                self.silences[r["id"]] = Silence(
                    id=r["id"],
                    matchers=[Matcher.model_validate(m) for m in r["matchers"]],
                    starts_at=r["starts_at"],
                    ends_at=r["ends_at"],
                    created_by=r["created_by"],
                    comment=r["comment"],
                    kind=r["kind"],
                    created_at=r["created_at"],
                )
            a = store.alerts
            i = store.incidents
            dedup_rows = (
                await conn.execute(
                    sa.select(a.c.fingerprint, a.c.status, a.c.received_at, a.c.incident_id)
                    .select_from(a.outerjoin(i, a.c.incident_id == i.c.incident_id))
                    .where(
                        a.c.received_at >= now - self.dedup_window,
                        a.c.disposition.notin_(("discarded", "suppressed", "duplicate")),
                        sa.or_(i.c.status.is_(None), i.c.status != "closed"),
                    )
                    .order_by(a.c.received_at)
                )
            ).all()
            for fp, status, seen, inc_id in dedup_rows:
                self.dedup[fp] = DedupEntry(status, seen, inc_id)

    # --- ingestion ----------------------------------------------------------------------------

    async def ingest(
        self, batch: list[NormalizedAlert], *, proactive: bool = False
    ) -> list[Outcome]:
        """Decide each alert's fate, persist it all, then answer: the 202's entries."""
        topo = await self.topology.get()
        now = self.clock()
        ws = store.WriteSet()
        outcomes = [self._decide(alert, topo, now, ws, proactive) for alert in batch]
        self._snapshot(ws)
        await self._commit(ws)
        if any(o.disposition == "new_incident" for o in outcomes):
            self._ticker_wake.set()
        return outcomes

    def _decide(
        self,
        alert: NormalizedAlert,
        topo: TopologyView,
        now: datetime,
        ws: store.WriteSet,
        proactive: bool,
    ) -> Outcome:
        alert_id = _alert_id()
        link = topo.canonical(alert.link) if alert.link else None
        fp = alert.fingerprint or _derived_fingerprint(alert, link)
        disposition, incident_id, reason = self._route(
            alert, link, fp, alert_id, topo, now, ws, proactive
        )
        ws.alerts.append(
            {
                "id": alert_id,
                "received_at": now,
                "source": alert.source,
                "link": link,
                "node": alert.node,
                "status": alert.status,
                "severity": alert.severity,
                "metric": alert.metric,
                "value": alert.value,
                "threshold": alert.threshold,
                "summary": alert.summary,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "fingerprint": fp,
                "starts_at": alert.starts_at,
                "ends_at": alert.ends_at,
                "observed_at": alert.timestamp,
                "duration_s": alert.duration_s,
                "external_id": alert.external_id,
                "disposition": disposition,
                "incident_id": incident_id,
                "reason": reason,
            }
        )
        ws.dispositions.append(
            (
                incident_id,
                disposition,
                {
                    "alert_id": alert_id,
                    "source": alert.source,
                    "link": link,
                    "node": alert.node,
                    "status": alert.status,
                    "fingerprint": fp,
                    "reason": reason,
                },
            )
        )
        return Outcome(alert_id, disposition, incident_id, reason, fp, link)

    def _audit_dispositions(self, ws: store.WriteSet, now: datetime) -> None:
        """One audit event per (incident, disposition) in a write, listing every alert.

        A write is a group commit of concurrent requests: per-alert (or per-request) events
        would multiply the outbox by the load for no extra information.
        """
        groups: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
        for incident_id, disposition, item in ws.dispositions:
            groups.setdefault((incident_id, disposition), []).append(item)
        for (incident_id, disposition), items in groups.items():
            event_type = (
                "alert_correlated" if disposition == "correlated" else f"alert_{disposition}"
            )
            self._audit(
                ws,
                event_type,
                incident_id,
                f"audit:alerts:{items[0]['alert_id']}:{disposition}",
                {"disposition": disposition, "count": len(items), "alerts": items},
                now,
            )

    def _route(
        self,
        alert: NormalizedAlert,
        link: str | None,
        fp: str,
        alert_id: str,
        topo: TopologyView,
        now: datetime,
        ws: store.WriteSet,
        proactive: bool,
    ) -> tuple[str, str | None, str]:
        if link is None and not alert.node:
            return "discarded", None, "no link or node to correlate"
        observed = alert.timestamp
        if observed is not None and now - observed > self.stale_after:
            return "discarded", None, f"stale: observed {observed.isoformat()}"
        if alert.status == "firing" and alert.severity == "info":
            return "discarded", None, "info severity"
        seen = self.dedup.get(fp)
        if (
            seen is not None
            and seen.status == alert.status
            and now - seen.last_seen < self.dedup_window
        ):
            seen.last_seen = now
            return (
                "duplicate",
                seen.incident_id,
                "same alert in the same state within the dedup window",
            )
        labels = {
            **alert.labels,
            "source": alert.source,
            "link": link or "",
            "node": alert.node or "",
            "severity": alert.severity,
            "status": alert.status,
            "metric": alert.metric or "",
        }
        for silence in self.silences.values():
            if silence.state(now) == "active" and silence.matches(labels):
                return "suppressed", None, f"{silence.kind} {silence.id} by {silence.created_by}"
        entry = DedupEntry(alert.status, now, None)
        self.dedup[fp] = entry
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
        )

        flap: LinkFlapState | None = None
        if link is not None:
            flap = self.flaps.setdefault(link, LinkFlapState(link=link))
            if alert.status == "firing":
                flap.firing.add(fp)
            else:
                flap.firing.discard(fp)
            flap.record(bool(flap.firing), now, self.params)
            ws.touched_links.add(link)

        if alert.status == "resolved":
            inc = self._open_for(link, alert.node)
            if inc is None:
                return "discarded", None, "cleared with nothing open"
            entry.incident_id = inc.id
            inc.alerts.append(brief)
            inc.last_alert_at = now
            ws.touched_incidents.add(inc.id)
            if link is not None and flap is not None and flap.suppressed:
                self._dampen(inc, link, now, ws)
                return "dampened", inc.id, f"link {link} flapping: dampened"
            if (
                link is not None
                and flap is not None
                and not flap.firing
                and inc.status == "open"
                and not flap.suppressed
            ):
                self._signal(
                    ws, inc, "cleared", [link], key=f"signal:{inc.id}:cleared:{alert_id}", now=now
                )
            return "correlated", inc.id, f"clears {link or alert.node} of {inc.id}"

        # Firing.
        if link is not None and flap is not None and flap.suppressed:
            # A flapping link still belongs with its neighbours: two related links flapping
            # together are one dampened incident, not two that would each build a tunnel.
            inc = self._open_for(link, None) or self._find_related(link, None, topo, now)[0]
            if inc is None:
                inc = self._new_incident([link], [], alert.severity, now, ws, proactive)
            self._attach(inc, link, None, brief, alert_id, f"flapping {link}", now, ws, topo)
            entry.incident_id = inc.id
            self._dampen(inc, link, now, ws)
            return (
                "dampened",
                inc.id,
                f"link {link} flapping (penalty {flap.decayed(now, self.params):.0f})",
            )

        recent = self.recent.get(link) if link is not None else None
        if (
            link is not None
            and link not in self.link_index
            and recent is not None
            and recent.resolution == "false_positive"
            and now - recent.closed_at <= self.window
        ):
            verdict = classify(self._evidence([brief], [link], now))
            if (
                verdict.classification == "false_positive"
                and verdict.confidence >= self.config.auto_close_confidence
            ):
                entry.incident_id = recent.incident_id
                return "false_positive", recent.incident_id, "; ".join(verdict.reasons)

        inc, why = self._find_related(link, alert.node, topo, now)
        if inc is not None:
            self._attach(inc, link, alert.node, brief, alert_id, why, now, ws, topo)
            entry.incident_id = inc.id
            return "correlated", inc.id, why

        links = [link] if link else topo.links_of_node(alert.node or "")
        if not links:
            return "discarded", None, f"node {alert.node} has no known links"
        inc = self._new_incident(
            links, [] if link else [alert.node or ""], alert.severity, now, ws, proactive
        )
        inc.alerts.append(brief)
        entry.incident_id = inc.id
        return "new_incident", inc.id, "opened; emitted after the group wait"

    def _attach(
        self,
        inc: Incident,
        link: str | None,
        node: str | None,
        brief: AlertBrief,
        alert_id: str,
        why: str,
        now: datetime,
        ws: store.WriteSet,
        topo: TopologyView,
    ) -> None:
        """Join the alert to ``inc``; an incident already handed over hears of its new links."""
        added = self._join(inc, link, node, brief, now, ws, topo)
        if added and inc.status == "open":
            self._signal(
                ws,
                inc,
                "links_added",
                added,
                key=f"signal:{inc.id}:links_added:{alert_id}",
                now=now,
                details={"reason": why},
            )

    def _open_for(self, link: str | None, node: str | None) -> Incident | None:
        inc_id = self.link_index.get(link) if link else None
        if inc_id is None and node:
            inc_id = self.node_index.get(node)
        return self.incidents.get(inc_id) if inc_id else None

    def _find_related(
        self, link: str | None, node: str | None, topo: TopologyView, now: datetime
    ) -> tuple[Incident | None, str]:
        if link is not None:
            for end in topo.nodes_of(link):
                if end in self.node_index:
                    inc = self.incidents[self.node_index[end]]
                    return inc, f"inhibited by node alarm on {end} ({inc.id})"
            if link in self.link_index:
                inc = self.incidents[self.link_index[link]]
                return inc, f"link {link} already in {inc.id}"
        elif node is not None and node in self.node_index:
            inc = self.incidents[self.node_index[node]]
            return inc, f"node {node} already in {inc.id}"
        best: tuple[Incident, str] | None = None
        for inc in self.incidents.values():
            if inc.status == "closed" or now - inc.last_alert_at > self.window:
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

    def _join(
        self,
        inc: Incident,
        link: str | None,
        node: str | None,
        brief: AlertBrief,
        now: datetime,
        ws: store.WriteSet,
        topo: TopologyView,
    ) -> list[str]:
        """Add the alert (and its link, or a node's links) to the incident; return new links."""
        added: list[str] = []
        candidates = [link] if link else topo.links_of_node(node or "")
        for name in candidates:
            if name and name not in inc.links:
                inc.links.append(name)
                added.append(name)
            if name:
                self.link_index[name] = inc.id
        if node and not link and node not in inc.nodes:
            inc.nodes.append(node)
            self.node_index[node] = inc.id
        if len(inc.alerts) < MAX_BRIEFS:
            inc.alerts.append(brief)
        inc.last_alert_at = now
        if SEVERITY_RANK[brief.severity] > SEVERITY_RANK[inc.severity]:
            inc.severity = brief.severity
        ws.touched_incidents.add(inc.id)
        for name in added:
            flap = self.flaps.get(name)
            if flap is not None and flap.suppressed:
                self._dampen(inc, name, now, ws)
        return added

    def _new_incident(
        self,
        links: list[str],
        nodes: list[str],
        severity: str,
        now: datetime,
        ws: store.WriteSet,
        proactive: bool,
    ) -> Incident:
        year = now.year
        seq = self.sequence.get(year, 0) + 1
        ws.sequences.append((year not in self.sequence, year, seq))
        self.sequence[year] = seq
        inc = Incident(
            id=f"INC-{year}-{seq:04d}",
            status="pending",
            severity=severity,
            links=list(links),
            nodes=list(nodes),
            created_at=now,
            emit_at=now + self.group_wait,
            last_alert_at=now,
            proactive=proactive,
        )
        self.incidents[inc.id] = inc
        for link in links:
            self.link_index[link] = inc.id
        for node in nodes:
            self.node_index[node] = inc.id
        ws.touched_incidents.add(inc.id)
        return inc

    def _dampen(self, inc: Incident, link: str, now: datetime, ws: store.WriteSet) -> None:
        flap = self.flaps[link]
        until = flap.reuse_at(now, self.params)
        if inc.dampened_until is not None and inc.dampened_until >= until:
            return
        first = inc.dampened_until is None
        inc.dampened_until = until
        ws.touched_incidents.add(inc.id)
        if inc.status == "open":
            self._signal(
                ws,
                inc,
                "dampen",
                [link],
                key=f"signal:{inc.id}:dampen:{link}:{until.isoformat()}",
                now=now,
                until=until,
                details={"penalty": round(flap.decayed(now, self.params))},
            )
        if first:
            self._audit(
                ws,
                "state_change",
                inc.id,
                f"audit:dampen:{inc.id}:{link}:{now.isoformat()}",
                {"state": "dampening", "link": link, "until": until.isoformat()},
                now,
            )

    # --- timers -------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Emit incidents whose group wait is over; release links whose penalty has decayed."""
        now = self.clock()
        ws = store.WriteSet()
        for link, flap in self.flaps.items():
            if flap.suppressed and flap.reusable(now, self.params):
                flap.release(now, self.params)
                ws.touched_links.add(link)
                inc = self._open_for(link, None)
                if inc is None:
                    continue
                still = [
                    n for n in inc.links if (f := self.flaps.get(n)) is not None and f.suppressed
                ]
                if still:
                    continue
                inc.dampened_until = None
                ws.touched_incidents.add(inc.id)
                if inc.status == "open":
                    self._signal(
                        ws,
                        inc,
                        "resume",
                        list(inc.links),
                        key=f"signal:{inc.id}:resume:{link}:{now.isoformat()}",
                        now=now,
                    )
                self._audit(
                    ws,
                    "state_change",
                    inc.id,
                    f"audit:resume:{inc.id}:{now.isoformat()}",
                    {"state": "resumed", "link": link},
                    now,
                )
        self._snapshot(ws)
        if ws:
            await self._commit(ws)
        due = [
            i
            for i in self.incidents.values()
            if i.status == "pending" and i.emit_at <= now and i.id not in self._emitting
        ]
        for inc in sorted(due, key=lambda i: i.created_at):
            await self._emit(inc)
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        for fp in [fp for fp, e in self.dedup.items() if now - e.last_seen >= self.dedup_window]:
            del self.dedup[fp]
        for link in [k for k, r in self.recent.items() if now - r.closed_at > self.window]:
            del self.recent[link]

    async def _ticker(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wake-up fires, and shutdown would then wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait()):
                    await self._ticker_wake.wait()
            self._ticker_wake.clear()
            try:
                await self.tick()
            except WriteFailed as exc:
                log.error("correlator timer step not written; state reloaded", error=str(exc))
            except Exception:  # the timers must survive one bad step; it is logged in full
                log.exception("correlator timer step failed")

    def _next_wait(self) -> float:
        now = self.clock()
        pending = [
            (i.emit_at - now).total_seconds()
            for i in self.incidents.values()
            if i.status == "pending"
        ]
        return max(0.001, min([self.tick_s, *pending]))

    # --- emission -----------------------------------------------------------------------------

    def _evidence(self, briefs: list[AlertBrief], links: list[str], now: datetime) -> Evidence:
        firing = [b for b in briefs if b.status == "firing"]
        maintenance = [
            s.id
            for s in self.silences.values()
            if s.kind == "maintenance"
            and s.ends_at <= now
            and now - s.ends_at <= self.window
            and any(s.matches(b.labels) for b in briefs)
        ]
        flap_changes = sum(
            f.changes
            for n in links
            if (f := self.flaps.get(n)) is not None
            and f.decayed(now, self.params) >= self.params.penalty * 0.25
        )
        link_alerts = [n for n in links if n in self.flaps]
        recurs_after = sorted(
            {
                r.incident_id
                for n in links
                if (r := self.recent.get(n)) is not None
                and r.resolution in CONFIRMED
                and now - r.closed_at <= self.window
            }
        )
        return Evidence(
            recurs_after=recurs_after,
            values=[(b.value, b.threshold) for b in firing],
            durations_s=[b.duration_s for b in firing if b.duration_s is not None],
            fingerprints=len({b.fingerprint for b in firing}),
            sources=len({b.source for b in firing}),
            links=len({b.link for b in firing if b.link}),
            all_cleared=bool(link_alerts) and all(not self.flaps[n].firing for n in link_alerts),
            flap_changes=flap_changes,
            maintenance_recent=maintenance,
            severity=max(
                (b.severity for b in firing), key=lambda s: SEVERITY_RANK[s], default="medium"
            ),
        )

    async def _emit(self, inc: Incident) -> None:
        self._emitting.add(inc.id)
        try:
            verdict: Triage | None = None
            if not inc.proactive:
                verdict = classify(self._evidence(inc.alerts, inc.links, self.clock()))
                if self.config.llm_base_url and self.llm_http is not None:
                    verdict = await refine(
                        self.llm_http,
                        base_url=self.config.llm_base_url,
                        model=self.config.llm_model,
                        api_key=self.config.llm_api_key,
                        incident={
                            "incident_id": inc.id,
                            "links": inc.links,
                            "nodes": inc.nodes,
                            "alerts": [b.__dict__ for b in inc.alerts],
                        },
                        verdict=verdict,
                        timeout_s=self.config.llm_timeout_s,
                    )
            if inc.status != "pending":
                return
            now = self.clock()
            ws = store.WriteSet()
            self._emission(inc, verdict, now, ws)
            self._snapshot(ws)
            await self._commit(ws)
        finally:
            self._emitting.discard(inc.id)

    def _emission(
        self, inc: Incident, verdict: Triage | None, now: datetime, ws: store.WriteSet
    ) -> None:
        inc.triage = verdict.model_dump() if verdict else None
        inc.emitted_at = now
        ws.touched_incidents.add(inc.id)
        severity: Severity = inc.severity  # type: ignore[assignment]
        ticket = NewTicket(
            incident_id=inc.id,
            severity=severity,
            summary=inc.summary,
            degraded_links=list(inc.links),
            affected_services=[],
            source_agent=SOURCE_AGENT,
            created_at=inc.created_at,
            status="new",
        )
        self._to_io(
            ws, "new_ticket", ticket.model_dump(mode="json"), f"new_ticket:{inc.id}", inc.id, now
        )
        self._audit(
            ws,
            "incident_created",
            inc.id,
            f"audit:incident_created:{inc.id}",
            {
                "severity": inc.severity,
                "degraded_links": inc.links,
                "nodes": inc.nodes,
                "alerts": len(inc.alerts),
                "triage": inc.triage,
                "proactive": inc.proactive,
            },
            now,
        )
        auto_close = (
            verdict is not None
            and verdict.classification == "false_positive"
            and verdict.confidence >= self.config.auto_close_confidence
        )
        if auto_close and verdict is not None:
            inc.status = "closed"
            inc.resolution = "false_positive"
            inc.closed_at = now
            closed = TicketClosed(
                incident_id=inc.id,
                resolution="false_positive",
                duration_seconds=round((now - inc.created_at).total_seconds(), 3),
                summary=(
                    f"Closed automatically as a false positive ({verdict.confidence:.2f}): "
                    f"{inc.summary}"
                ),
                details={
                    "final_status": "false_positive",
                    "close_reason": "false_positive",
                    "degraded_links": list(inc.links),
                    "triage": inc.triage,
                },
                source_agent=SOURCE_AGENT,
                closed_at=now,
            )
            self._to_io(
                ws,
                "ticket_closed",
                closed.model_dump(mode="json"),
                f"ticket_closed:{inc.id}",
                inc.id,
                now,
            )
            self._audit(
                ws,
                "incident_closed",
                inc.id,
                f"audit:false_positive:{inc.id}",
                {"resolution": "false_positive", "triage": inc.triage},
                now,
            )
            ws.alert_updates.append((inc.id, {"disposition": "false_positive"}))
            self._forget(inc)
            self._remember_close(inc, now)
            return
        inc.status = "open"
        start = StartIncident(
            incident_id=inc.id,
            severity=severity,
            summary=inc.summary,
            degraded_links=list(inc.links),
            created_at=inc.created_at,
            triage=inc.triage,
            proactive=inc.proactive,
            dampened_until=inc.dampened_until,
        )
        ws.outbox.append(
            self._outbox_row(
                "orchestrator",
                "start_incident",
                start.model_dump(mode="json", exclude_none=True),
                f"start_incident:{inc.id}",
                inc.id,
                now,
            )
        )

    def _remember_close(self, inc: Incident, closed_at: datetime) -> None:
        for link in inc.links:
            self.recent[link] = RecentClose(inc.id, closed_at, inc.resolution or "resolved")

    def _forget(self, inc: Incident) -> None:
        for link in inc.links:
            if self.link_index.get(link) == inc.id:
                del self.link_index[link]
        for node in inc.nodes:
            if self.node_index.get(node) == inc.id:
                del self.node_index[node]
        fps = {b.fingerprint for b in inc.alerts}
        for fp in fps:
            entry = self.dedup.get(fp)
            if entry is not None and entry.incident_id == inc.id:
                del self.dedup[fp]
        self.incidents.pop(inc.id, None)
        self._detached[inc.id] = inc

    async def close_incident(self, incident_id: str, resolution: str) -> bool:
        """The orchestrator closed it: new alerts on its links open a new incident."""
        inc = self.incidents.get(incident_id)
        if inc is None or inc.status == "closed":
            return False
        now = self.clock()
        ws = store.WriteSet()
        inc.status = "closed"
        inc.resolution = resolution
        inc.closed_at = now
        ws.touched_incidents.add(inc.id)
        self._forget(inc)
        self._remember_close(inc, now)
        self._audit(
            ws,
            "incident_closed",
            inc.id,
            f"audit:incident_closed:{inc.id}",
            {"resolution": resolution, "by": "orchestrator"},
            now,
        )
        self._snapshot(ws)
        await self._commit(ws)
        return True

    # --- silences ------------------------------------------------------------------------------

    async def add_silence(self, silence: Silence) -> None:
        ws = store.WriteSet()
        ws.silences.append((True, _silence_row(silence)))
        self._audit(
            ws,
            "silence_created",
            None,
            f"audit:silence:{silence.id}",
            {
                "silence_id": silence.id,
                "kind": silence.kind,
                "created_by": silence.created_by,
                "matchers": [m.model_dump() for m in silence.matchers],
            },
            self.clock(),
        )
        await self._commit(ws)
        self.silences[silence.id] = silence

    async def expire_silence(self, silence_id: str) -> Silence | None:
        silence = self.silences.get(silence_id)
        if silence is None:
            return None
        now = self.clock()
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at)
            ws = store.WriteSet()
            ws.silences.append((False, _silence_row(silence)))
            self._audit(
                ws,
                "silence_expired",
                None,
                f"audit:silence-expired:{silence.id}",
                {"silence_id": silence.id},
                now,
            )
            await self._commit(ws)
        return silence

    # --- writing ------------------------------------------------------------------------------

    def _snapshot(self, ws: store.WriteSet) -> None:
        for inc_id in ws.touched_incidents:
            inc = self.incidents.get(inc_id) or self._detached.get(inc_id)
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
        self._detached.clear()

    async def _commit(self, ws: store.WriteSet) -> None:
        if not ws:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((ws, fut))
        self._writer_wake.set()
        await fut

    async def _writer(self) -> None:
        """Group commit: everything queued since the last write goes in one transaction."""
        while True:
            await self._writer_wake.wait()
            self._writer_wake.clear()
            if not self._queue:
                continue
            batch, self._queue = self._queue, []
            try:
                # Inside the try: if this loop died, every later request would wait forever.
                ws = store.WriteSet.merge([ws for ws, _ in batch])
                self._audit_dispositions(ws, self.clock())
                async with self.engine.begin() as conn:
                    await store.apply(conn, ws)
            except Exception as exc:  # every waiter gets the error; memory is rebuilt below
                log.exception("correlator write failed; reloading state from the database")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(WriteFailed(f"{type(exc).__name__}: {exc}"))
                try:
                    await self.load()
                except Exception:  # the database may still be down; the next write retries
                    log.exception("correlator reload failed")
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            if ws.outbox and self.outbox is not None:
                # Rows were written in our own transaction; tell the deliverer they are there.
                self.outbox.wake()

    def _outbox_row(
        self,
        agent: str,
        task_type: str,
        payload: dict[str, Any],
        key: str,
        incident_id: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        # The outbox schedules by the wall clock, whatever clock decides correlation.
        wall = utcnow()
        return {
            "agent": agent,
            "task_type": task_type,
            "payload": payload,
            "incident_id": incident_id,
            "idempotency_key": key,
            "attempts": 0,
            "next_attempt_at": wall,
            "created_at": wall,
            "delivered_at": None,
            "dead": False,
            "last_error": None,
        }

    def _to_io(
        self,
        ws: store.WriteSet,
        task_type: str,
        payload: dict[str, Any],
        key: str,
        inc: str,
        now: datetime,
    ) -> None:
        if self.settings.io_enabled:
            ws.outbox.append(self._outbox_row("io", task_type, payload, key, inc, now))

    def _audit(
        self,
        ws: store.WriteSet,
        event_type: str,
        incident_id: str | None,
        key: str,
        details: dict[str, Any],
        now: datetime,
    ) -> None:
        event = AuditEvent(
            event_type=event_type,
            incident_id=incident_id,
            source_agent=SOURCE_AGENT,
            details=details,
            occurred_at=now,
        )
        ws.outbox.append(
            self._outbox_row(
                "audit",
                "audit_event",
                event.model_dump(mode="json", exclude_none=True),
                key,
                incident_id,
                now,
            )
        )

    def _signal(
        self,
        ws: store.WriteSet,
        inc: Incident,
        signal: str,
        links: list[str],
        *,
        key: str,
        now: datetime,
        until: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        payload = IncidentSignal(
            incident_id=inc.id,
            signal=signal,
            links=links,
            until=until,
            details=details or {},
        )
        ws.outbox.append(
            self._outbox_row(
                "orchestrator",
                "incident_signal",
                payload.model_dump(mode="json", exclude_none=True),
                key,
                inc.id,
                now,
            )
        )
        if signal in ("links_added", "dampen", "resume"):
            event = "alert_correlated" if signal == "links_added" else "state_change"
            self._audit(
                ws,
                event,
                inc.id,
                f"audit:{key}",
                {
                    "signal": signal,
                    "links": links,
                    **({"until": until.isoformat()} if until else {}),
                },
                now,
            )


def _alert_id() -> str:
    """Sortable by arrival (wall-clock nanoseconds first), unique by the random tail."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _duration(alert: NormalizedAlert) -> float | None:
    if alert.duration_s is not None:
        return alert.duration_s
    if alert.starts_at and alert.ends_at and alert.ends_at > alert.starts_at:
        return (alert.ends_at - alert.starts_at).total_seconds()
    return None


def _derived_fingerprint(alert: NormalizedAlert, link: str | None) -> str:
    from services.correlator.sources import fingerprint

    return fingerprint(alert.source, link, alert.node, alert.metric, sorted(alert.labels.items()))


def _brief_row(r: Any) -> AlertBrief:
    labels = {
        **(r["labels"] or {}),
        "source": r["source"],
        "link": r["link"] or "",
        "node": r["node"] or "",
        "severity": r["severity"],
        "status": r["status"],
        "metric": r["metric"] or "",
    }
    duration = r["duration_s"]
    if duration is None and r["starts_at"] and r["ends_at"] and r["ends_at"] > r["starts_at"]:
        duration = (r["ends_at"] - r["starts_at"]).total_seconds()
    return AlertBrief(
        r["fingerprint"],
        r["source"],
        r["link"],
        r["status"],
        r["severity"],
        r["value"],
        r["threshold"],
        duration,
        labels,
    )


def _silence_row(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [m.model_dump() for m in s.matchers],
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "created_by": s.created_by,
        "comment": s.comment,
        "kind": s.kind,
        "created_at": s.created_at,
    }

"""What the correlator tells its peers: IO, the orchestrator and audit, through the outbox.

Every message is a row added to the same write set as the state change it reports, so it is
committed with it (transactional outbox) and delivered once the write is acknowledged. Two
kinds leave from here:

- an incident's emission once its group wait is over (:meth:`Emitter.emission`): triage,
  ``new_ticket`` to IO, then ``start_incident`` to the orchestrator, or ``ticket_closed`` at
  once when triage is sure it is a false positive; a host ticket's both say ``kind: host``
  with its title, description, host and labels (what runbook matching reads);
- the signals that follow a decision or a timer (:meth:`Emitter.effects`): links added,
  dampen, resume, cleared, each with its audit event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from services.correlator import store
from services.correlator.decide import Rules, evidence
from services.correlator.settings import CorrelatorSettings
from services.correlator.state import (
    Cleared,
    CorrelationState,
    Dampened,
    Effect,
    Incident,
    LinksAdded,
    Resumed,
)
from services.correlator.triage import Triage, classify, refine
from shared.contracts import (
    AUDIT_EVENT,
    INCIDENT_SIGNAL,
    NEW_TICKET,
    START_INCIDENT,
    TICKET_CLOSED,
    Contract,
    Req,
)
from shared.models import (
    AuditEvent,
    IncidentSignal,
    NewTicket,
    Severity,
    StartIncident,
    TicketClosed,
)
from shared.outbox import outbox_row

SOURCE_AGENT = "event_correlator"


class Emitter:
    """Builds the outbox rows; holds only what decides whether and how peers are told."""

    def __init__(
        self,
        *,
        io_enabled: bool,
        rules: Rules,
        config: CorrelatorSettings,
        llm_http: httpx.AsyncClient | None = None,
    ):
        self.io_enabled = io_enabled
        self.rules = rules
        self.config = config
        self.llm_http = llm_http

    # --- the emission after the group wait ----------------------------------------------------

    async def triage(self, state: CorrelationState, inc: Incident, now: datetime) -> Triage | None:
        """The classifier's verdict, refined by the LLM endpoint when one is configured.

        Proactive incidents (Traffic Analytics) are predictions, not noise candidates: no
        verdict. This may await the LLM; the caller rechecks the incident afterwards.
        """
        if inc.proactive:
            return None
        verdict = classify(evidence(state, self.rules, inc.alerts, inc.links, now))
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
        return verdict

    def emission(
        self,
        state: CorrelationState,
        inc: Incident,
        verdict: Triage | None,
        now: datetime,
        ws: store.WriteSet,
    ) -> None:
        """Hand the incident over: ticket to IO, then the orchestrator (or close it as noise)."""
        inc.triage = verdict.model_dump() if verdict else None
        inc.emitted_at = now
        ws.touched_incidents.add(inc.id)
        severity: Severity = inc.severity  # type: ignore[assignment]
        subject = host_subject(inc)
        ticket = NewTicket(
            incident_id=inc.id,
            severity=severity,
            summary=inc.summary,
            degraded_links=list(inc.links),
            affected_services=[],
            source_agent=SOURCE_AGENT,
            created_at=inc.created_at,
            status="new",
            proactive=inc.proactive,
            **subject,
        )
        self.to_io(ws, NEW_TICKET, ticket, f"new_ticket:{inc.id}", inc.id)
        self.audit(
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
        if (
            verdict is not None
            and verdict.classification == "false_positive"
            and verdict.confidence >= self.rules.auto_close_confidence
        ):
            self._close_false_positive(state, inc, verdict, now, ws)
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
            **subject,
        )
        ws.outbox.append(
            outbox_row(START_INCIDENT, start, key=f"start_incident:{inc.id}", incident_id=inc.id)
        )

    def _close_false_positive(
        self,
        state: CorrelationState,
        inc: Incident,
        verdict: Triage,
        now: datetime,
        ws: store.WriteSet,
    ) -> None:
        """IO still gets the ticket (a record of what was dismissed), closed at once."""
        state.close(inc, "false_positive", now, ws)
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
        self.to_io(ws, TICKET_CLOSED, closed, f"ticket_closed:{inc.id}", inc.id)
        self.audit(
            ws,
            "incident_closed",
            inc.id,
            f"audit:false_positive:{inc.id}",
            {"resolution": "false_positive", "triage": inc.triage},
            now,
        )
        ws.alert_updates.append((inc.id, {"disposition": "false_positive"}))

    # --- signals after decisions and timers ---------------------------------------------------

    def effects(
        self, ws: store.WriteSet, effects: list[Effect], now: datetime, *, cause: str = ""
    ) -> None:
        """The orchestrator's signals (and their audit) for what a step changed.

        ``cause`` (the alert's id) makes the idempotency key of a signal an alert caused.
        """
        for effect in effects:
            inc = effect.incident
            if isinstance(effect, LinksAdded):
                self.signal(
                    ws,
                    inc,
                    "links_added",
                    effect.links,
                    key=f"signal:{inc.id}:links_added:{cause}",
                    now=now,
                    details={"reason": effect.why},
                )
            elif isinstance(effect, Dampened):
                until = effect.until
                if inc.status == "open":
                    self.signal(
                        ws,
                        inc,
                        "dampen",
                        [effect.link],
                        key=f"signal:{inc.id}:dampen:{effect.link}:{until.isoformat()}",
                        now=now,
                        until=until,
                        details={"penalty": effect.penalty},
                    )
                if effect.first:
                    self.audit(
                        ws,
                        "state_change",
                        inc.id,
                        f"audit:dampen:{inc.id}:{effect.link}:{now.isoformat()}",
                        {"state": "dampening", "link": effect.link, "until": until.isoformat()},
                        now,
                    )
            elif isinstance(effect, Cleared):
                self.signal(
                    ws,
                    inc,
                    "cleared",
                    [effect.link],
                    key=f"signal:{inc.id}:cleared:{cause}",
                    now=now,
                )
            elif isinstance(effect, Resumed):
                if inc.status == "open":
                    self.signal(
                        ws,
                        inc,
                        "resume",
                        list(inc.links),
                        key=f"signal:{inc.id}:resume:{effect.link}:{now.isoformat()}",
                        now=now,
                    )
                self.audit(
                    ws,
                    "state_change",
                    inc.id,
                    f"audit:resume:{inc.id}:{now.isoformat()}",
                    {"state": "resumed", "link": effect.link},
                    now,
                )

    def audit_dispositions(self, ws: store.WriteSet, now: datetime) -> None:
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
            key = f"audit:alerts:{items[0]['alert_id']}:{disposition}"
            self.audit(ws, event_type, incident_id, key, {}, now)
            # The list goes into the row as it is: it is JSON-ready already (the items are
            # str and None, writer.record), and validating then dumping a thousand alerts
            # through the model, to the same dict, was ~5 % of a 100-alert batch's CPU.
            details = {"disposition": disposition, "count": len(items), "alerts": items}
            ws.outbox[-1]["payload"]["details"] = details

    # --- rows ---------------------------------------------------------------------------------

    def to_io(
        self,
        ws: store.WriteSet,
        contract: Contract[Req, Any],
        request: Req,
        key: str,
        inc: str,
    ) -> None:
        if self.io_enabled:
            ws.outbox.append(outbox_row(contract, request, key=key, incident_id=inc))

    def audit(
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
        ws.outbox.append(outbox_row(AUDIT_EVENT, event, key=key, incident_id=incident_id))

    def signal(
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
        ws.outbox.append(outbox_row(INCIDENT_SIGNAL, payload, key=key, incident_id=inc.id))
        if signal in ("links_added", "dampen", "resume"):
            event = "alert_correlated" if signal == "links_added" else "state_change"
            self.audit(
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


def host_subject(inc: Incident) -> dict[str, Any]:
    """What a host ticket adds to ``new_ticket`` and ``start_incident``; nothing for a network
    incident (its messages stay as they were)."""
    if inc.kind != "host":
        return {}
    labels: dict[str, str] = {}
    for brief in inc.alerts:
        # the alerts' own labels; the correlator's bookkeeping keys are not the ticket's
        labels.update({k: v for k, v in brief.labels.items() if k not in _BOOKKEEPING and v})
    description = next((b.description for b in inc.alerts if b.description), "")
    return {
        "kind": "host",
        "title": inc.title,
        "description": description,
        "host": inc.nodes[0],
        "labels": labels,
    }


_BOOKKEEPING = frozenset({"source", "link", "node", "status", "metric"})

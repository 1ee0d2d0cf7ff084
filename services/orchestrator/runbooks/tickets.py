"""Tickets that are not about a link: matched to the runbooks on arrival, and a session started
by itself only when the severity's policy allows it (seed 000's "Runbook Search" and
"Auto-Execution Decision").

A host ticket (``start_incident`` with ``kind: host``: a disk filling, a service down, a
database out of connections) never enters the network state machine. On arrival it is
matched against the library (:class:`RunbookMatching`, owned by the lifespan); IO hears of
the top three in a ``status_update`` (``details.matches``, and ``details.runbook_session_id``
when one was started), and audit hears of the decision. If the best match clears
``may_auto_run`` for the ticket's severity (critical never does), a session is started as
``cxm-auto`` through the same handler an operator's choice goes through (so the frequency
guard applies to it too); otherwise nothing runs until an operator picks
(``POST /api/v1/tickets/{id}/runbook-sessions``). From there the session's own flow moves
the ticket: in_progress, waiting_approval, then resolved, in_progress (manual review) or
escalated.

Redelivery of the same ``start_incident`` (the correlator's outbox retries) matches again but
starts nothing twice: a ticket that already has a session keeps it.

A ticket that came from ServiceNow (labelled with the record's ``sys_id`` and ``number`` by
the correlator) also gets a first work note on that record with the matches; it is what
makes notify adopt the record, so the session's notes and its resolution land there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks import catalog, host_tickets
from services.orchestrator.runbooks.matching import (
    Embedder,
    EmbedderUnavailable,
    Matcher,
    MatchResult,
    MatchSettings,
    RunStats,
    TicketText,
    load_embedder,
)
from services.orchestrator.runbooks.notes import servicenow_ref
from services.orchestrator.runbooks.sessions import sessions as session_table
from shared.agent import TaskContext
from shared.contracts import AUDIT_EVENT, NOTIFY, STATUS_UPDATE
from shared.errors import TaskFailed
from shared.logs import get_logger
from shared.models import (
    AuditEvent,
    IncidentStarted,
    Notify,
    RunbookMatches,
    SessionStarted,
    StartIncident,
    StartRunbookSession,
    StatusUpdate,
    utcnow,
)

if TYPE_CHECKING:
    from services.orchestrator.runbooks.lifespan import RunbookServices

log = get_logger(__name__)

AUTO_STARTER = "cxm-auto"
"""Who a session started by the matching policy is attributed to."""
SUGGESTIONS = 3

StartSession = Callable[[StartRunbookSession, TaskContext], Awaitable[SessionStarted]]


# --- the matcher, owned by the lifespan ----------------------------------------------------


@dataclass
class RunbookMatching:
    """The library's :class:`Matcher` (rebuilt when a runbook is saved) and the embedding model
    it shares; history comes from the sessions table at each match."""

    engine: AsyncEngine
    matcher: Matcher

    @classmethod
    async def open(cls, engine: AsyncEngine, settings: MatchSettings) -> RunbookMatching:
        """Load the model (blocking, ~1 s: in a thread) unless the semantic factor weighs
        nothing, and index the library. Without the model, matching runs on keywords and
        says so in every explanation."""
        embedder: Embedder | None = None
        if settings.weight_semantic > 0:
            try:
                embedder = await asyncio.to_thread(load_embedder)
            except EmbedderUnavailable as exc:
                log.warning("runbook matching without its embedding model", error=str(exc))
        documents = [r.document for r in await catalog.list_all(engine)]
        return cls(engine, Matcher(documents, embedder=embedder, settings=settings))

    async def rebuild(self) -> None:
        """Index the library as it is now (after a runbook was saved); milliseconds."""
        documents = [r.document for r in await catalog.list_all(self.engine)]
        self.matcher = self.matcher.with_documents(documents)

    async def match(self, ticket: TicketText, *, limit: int = SUGGESTIONS) -> MatchResult:
        """The best runbooks for ``ticket``, history included; no side effect."""
        history = await run_stats(self.engine)
        return self.matcher.match(ticket, history=history, now=utcnow(), limit=limit)


async def run_stats(engine: AsyncEngine) -> dict[str, RunStats]:
    """Per runbook: its ended sessions, those that completed, and the last completion."""
    s = session_table
    completed = s.c.status == "completed"
    query = (
        sa.select(
            s.c.runbook_id,
            sa.func.count().label("runs"),
            sa.func.sum(sa.case((completed, 1), else_=0)).label("successes"),
            sa.func.max(sa.case((completed, s.c.updated_at), else_=None)).label("last"),
        )
        .where(s.c.final.is_(True))
        .group_by(s.c.runbook_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        r.runbook_id: RunStats(
            successes=int(r.successes or 0), runs=int(r.runs), last_success_at=_utc(r.last)
        )
        for r in rows
    }


def _utc(value: datetime | str | None) -> datetime | None:
    """SQLite hands an aggregate's datetime back as text; PostgreSQL as a datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def matches_of(result: MatchResult) -> RunbookMatches:
    return RunbookMatches.model_validate(result.model_dump())


# --- a host ticket arrives -----------------------------------------------------------------


def ticket_text(start: StartIncident) -> TicketText:
    return TicketText(
        title=start.title or start.summary,
        description=start.description or "",
        labels=start.labels or {},
        severity=start.severity,
        host=start.host,
    )


def ticket_values(start: StartIncident) -> dict[str, Any]:
    """What a session's placeholders read of the ticket (as IO's ``ticket_values`` gives)."""
    values: dict[str, Any] = {
        "id": start.incident_id,
        "kind": "host",
        "title": start.title or start.summary,
        "severity": start.severity,
        "host": start.host,
        "labels": start.labels or {},
    }
    if start.description:
        values["description"] = start.description
    return values


async def _sessions_of(engine: AsyncEngine, incident_id: str) -> list[str]:
    s = session_table
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(s.c.session_id).where(s.c.incident_id == incident_id).order_by(s.c.created_at)
        )
        return [r.session_id for r in rows]


async def arrive(
    start: StartIncident, ctx: TaskContext, *, start_session: StartSession
) -> IncidentStarted:
    """Match a host ticket, tell IO and audit, and start the best runbook if policy allows.

    ``start_session`` is the operator's own ``start_runbook_session`` handler, so an automatic
    start is refused by the same frequency guard.
    """
    services: RunbookServices = ctx.app.state.runbooks
    matching = services.matching
    await host_tickets.record(services.engine, start)
    result = await matching.match(ticket_text(start))
    known = await _sessions_of(services.engine, start.incident_id)
    session_id = known[0] if known else None
    best = result.matches[0] if result.matches else None
    if best is None:
        started, why = False, "the runbook library is empty"
    elif session_id is not None:
        started, why = False, f"session {session_id} already runs for this ticket"
    elif result.none_likely:
        started, why = False, result.none_reason or "no runbook clearly fits"
    else:
        started, why = matching.matcher.may_auto_run(best, start.severity)
    if started and best is not None:
        try:
            answer = await start_session(
                StartRunbookSession(
                    incident_id=start.incident_id,
                    runbook_id=best.runbook_id,
                    started_by=AUTO_STARTER,
                    ticket=ticket_values(start),
                ),
                ctx,
            )
            session_id = answer.session_id
        except TaskFailed as exc:  # the frequency guard, or the runbook removed meanwhile
            started, why = False, f"not started: {exc}"
    details = {
        "kind": "host",
        "matches": [m.model_dump() for m in result.matches],
        "none_likely": result.none_likely,
        "auto_run": {"started": started, "reason": why},
        "runbook_session_id": session_id,
        "triage": start.triage,
    }
    if best is None:
        message = "No runbook in the library: an operator takes it"
    elif started:
        message = f"Runbook {best.runbook_id} ({best.confidence:.2f}) started automatically"
    elif session_id is not None:
        message = f"Runbook session {session_id} already runs"
    else:
        message = (
            f"{len(result.matches)} runbook(s) suggested, best {best.runbook_id} "
            f"({best.confidence:.2f}); an operator picks: {why}"
        )
    status = "in_progress" if session_id else "analyzing"
    if ctx.settings.io_enabled:
        await ctx.outbox.put(
            STATUS_UPDATE,
            StatusUpdate(
                incident_id=start.incident_id,
                status=status,
                phase="runbook",
                message=message,
                details=details,
            ),
            key=f"runbook-matches:{start.incident_id}",
            incident_id=start.incident_id,
        )
    ref = servicenow_ref(ticket_values(start))
    if ref is not None:
        # The ticket came from a ServiceNow record: its first work note says what CXM found.
        # Notify adopts that record here (no second incident is created), and moves it to
        # In Progress when a session started.
        lines = [
            message,
            *(f"- {m.runbook_id} ({m.confidence:.2f}): {m.explanation}" for m in result.matches),
        ]
        await ctx.outbox.put(
            NOTIFY,
            Notify(
                incident_id=start.incident_id,
                event="status_update",
                severity=start.severity,
                subject=f"{start.incident_id}: matched to the runbooks",
                body="\n".join(lines),
                details={
                    "servicenow": ref,
                    "status": status,
                    "phase": "runbook",
                    "runbook_session_id": session_id,
                },
                channels=["servicenow"],
            ),
            key=f"runbook-matches-note:{start.incident_id}",
            incident_id=start.incident_id,
        )
    await ctx.outbox.put(
        AUDIT_EVENT,
        AuditEvent(
            event_type="runbook_matched",
            incident_id=start.incident_id,
            source_agent="orchestrator",
            details={**details, "host": start.host, "severity": start.severity},
        ),
        key=f"audit:runbook-matches:{start.incident_id}",
        incident_id=start.incident_id,
    )
    log.info(
        "host ticket matched",
        incident_id=start.incident_id,
        best=best.runbook_id if best else None,
        confidence=best.confidence if best else None,
        auto_started=started,
        session_id=session_id,
    )
    return IncidentStarted(
        incident_id=start.incident_id,
        created=not known,
        status=status,
        phase="runbook",
        final=False,
    )

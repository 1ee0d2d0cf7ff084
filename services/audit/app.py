"""Audit agent: durable, verifiable event log, search and compliance reports.

Task ``audit_event`` (``shared.models.AuditEvent``) appends to a hash-chained, append-only log
and answers only after the commit; ``audit_events`` appends several in one transaction (what a
sender's outbox uses for a backlog). Every seed event type is accepted (and any other name, so
new peers never lose events). ``/api/v1/audit/*`` serves search, chain verification, reports
and the Elasticsearch sink's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import event as sa_event

from services.audit import chain, reports
from services.audit.es import ElasticsearchSink
from services.audit.settings import AuditSettings
from services.audit.store import MIGRATIONS, events
from shared.agent import AgentSpec, EngineDep, TaskContext
from shared.contracts import AUDIT_EVENT, AUDIT_EVENTS
from shared.db import SQL_INTEGER_MAX
from shared.models import AuditAppended, AuditEvent, AuditEvents, AuditEventsAppended
from shared.settings import Settings

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
APPEND_ONLY = "the audit log is append-only: events cannot be changed or deleted"


def _period(
    start: datetime | None, end: datetime | None, start_name: str, end_name: str
) -> tuple[datetime, datetime]:
    """``reports.default_period``, or a 422 naming the bounds when UTC cannot hold them."""
    try:
        return reports.default_period(start, end)
    except OverflowError:
        raise HTTPException(
            422,
            f"{start_name}/{end_name} out of range: in UTC, and with 30 days before "
            f"{end_name} for a default {start_name}, they must fall within the years 1-9999",
        ) from None


@router.get("/events")
async def list_events(
    engine: EngineDep,
    incident_id: str | None = None,
    event_type: str | None = None,
    source_agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = Query(default=None, description="text searched in details"),
    limit: int = Query(default=200, ge=1, le=5000),
    offset: int = Query(default=0, ge=0, le=SQL_INTEGER_MAX),
) -> dict[str, Any]:
    """Events in chain order, filtered; ``q`` is a case-insensitive substring of the details."""
    t = events
    query = sa.select(t).order_by(t.c.seq)
    if incident_id:
        query = query.where(t.c.incident_id == incident_id)
    if event_type:
        query = query.where(t.c.event_type == event_type)
    if source_agent:
        query = query.where(t.c.source_agent == source_agent)
    if since:
        query = query.where(t.c.occurred_at >= _period(since, None, "since", "until")[0])
    if until:
        query = query.where(t.c.occurred_at < _period(None, until, "since", "until")[1])
    if q:
        text = sa.func.lower(sa.cast(t.c.details, sa.Text))
        query = query.where(text.contains(q.lower(), autoescape=True))
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(limit).offset(offset))).all()
    return {"events": [chain.as_dict(r) for r in rows], "count": len(rows), "offset": offset}


@router.get("/events/{event_id}")
async def get_event(
    event_id: Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX)], engine: EngineDep
) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
    if row is None:
        raise HTTPException(404, f"no audit event {event_id}")
    return chain.as_dict(row)


@router.api_route("/events", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/events/{event_id}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
async def refuse_change() -> JSONResponse:
    """Refused in the API; the database's triggers refuse it underneath too."""
    return JSONResponse({"detail": APPEND_ONLY}, status_code=405, headers={"Allow": "GET"})


@router.get("/verify")
async def verify(engine: EngineDep) -> JSONResponse:
    """Walk the hash chain: 200 when intact, 409 with the first broken row when not."""
    verdict = await chain.verify(engine)
    return JSONResponse(verdict.as_dict(), status_code=200 if verdict.ok else 409)


@router.get("/sink")
async def sink_state(request: Request) -> dict[str, Any]:
    """The Elasticsearch sink: enabled, backlog, last error."""
    sink: ElasticsearchSink | None = request.app.state.es_sink
    if sink is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "pending": await sink.pending(),
        "indexed": sink.indexed,
        "consecutive_failures": sink.failures,
        "last_error": sink.last_error,
    }


@router.get("/reports/incident/{incident_id}")
async def incident_report(
    incident_id: str, engine: EngineDep, format: reports.Format = "json"
) -> Response:
    """The incident's full timeline, in order, with each event's hash."""
    evs = await reports.timeline(engine, incident_id)
    if not evs:
        raise HTTPException(404, f"no audit events for incident {incident_id!r}")
    facts = reports.incident_facts(incident_id, evs)
    data = {
        "incident_id": incident_id,
        "tier": facts["tier"],
        "outcome": facts["outcome"],
        "started_at": facts["started_at"].isoformat() if facts["started_at"] else None,
        "restored_at": facts["restored_at"].isoformat() if facts["restored_at"] else None,
        "duration_s": facts["duration_s"],
        "event_count": len(evs),
        "events": evs,
    }
    rows = [
        {k: e[k] for k in ("occurred_at", "event_type", "source_agent", "details", "seq", "hash")}
        for e in evs
    ]
    return reports.render(
        format,
        title=f"Audit timeline {incident_id}",
        data=data,
        rows=rows,
        filename=f"audit-{incident_id}",
    )


@router.get("/reports/sla")
async def sla_report(
    request: Request,
    engine: EngineDep,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    bucket: reports.Bucket = "period",
    format: reports.Format = "json",
) -> Response:
    """MTTR and SLA compliance by tier and period (default: the last 30 days, one bucket)."""
    start, end = _period(period_start, period_end, "period_start", "period_end")
    if end <= start:
        raise HTTPException(422, "period_end must be after period_start")
    audit_settings: AuditSettings = request.app.state.audit_settings
    data = await reports.sla(
        engine,
        period_start=start,
        period_end=end,
        bucket=bucket,
        targets=audit_settings.audit_restore_targets_s,
    )
    return reports.render(
        format,
        title="CXM SLA report",
        data=data,
        rows=data["rows"],
        filename=f"sla-{start:%Y%m%d}-{end:%Y%m%d}",
    )


@asynccontextmanager
async def _resources(app: FastAPI) -> AsyncIterator[None]:
    engine = app.state.engine
    if engine.dialect.name == "sqlite":
        # Acknowledged means on disk: full fsync at each commit for the audit log (the other
        # agents keep WAL's NORMAL). Connections opened for the migrations are dropped.
        @sa_event.listens_for(engine.sync_engine, "connect")
        def _full_sync(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        await engine.dispose()
    app.state.audit_lock = asyncio.Lock()
    audit_settings: AuditSettings = app.state.audit_settings
    sink = None
    if audit_settings.elasticsearch_url:
        sink = ElasticsearchSink(engine, audit_settings, transport=app.state.es_transport)
        sink.start()
    app.state.es_sink = sink
    try:
        yield
    finally:
        if sink is not None:
            await sink.stop()


def build_spec() -> AgentSpec:
    """A fresh spec per app: nothing is built at import."""
    spec = AgentSpec(
        name="audit",
        title="Audit",
        description="Durable, verifiable event log, search and compliance reports",
        migrations=MIGRATIONS,
        resources=_resources,
    )
    spec.include_router(router)

    @spec.serve(AUDIT_EVENT)
    async def audit_event(payload: AuditEvent, ctx: TaskContext) -> AuditAppended:
        sink: ElasticsearchSink | None = ctx.state.es_sink
        appended = await chain.append(
            ctx.engine,
            ctx.state.audit_lock,
            payload,
            key=ctx.idempotency_key,
            es_index=sink is not None,
        )
        if sink is not None and not appended.duplicate:
            sink.wake()
        return _answer(appended)

    @spec.serve(AUDIT_EVENTS)
    async def audit_events(payload: AuditEvents, ctx: TaskContext) -> AuditEventsAppended:
        sink: ElasticsearchSink | None = ctx.state.es_sink
        appended = await chain.append_many(
            ctx.engine,
            ctx.state.audit_lock,
            [(item.key, item.payload) for item in payload.items],
            es_index=sink is not None,
        )
        if sink is not None and not all(a.duplicate for a in appended):
            sink.wake()
        return AuditEventsAppended(results=[_answer(a) for a in appended])

    return spec


def _answer(appended: chain.Appended) -> AuditAppended:
    row = appended.row
    return AuditAppended(
        id=row["id"],
        seq=row["seq"],
        hash=row["hash"],
        event_type=row["event_type"],
        duplicate=appended.duplicate,
    )


def create_app(
    settings: Settings,
    audit_settings: AuditSettings | None = None,
    *,
    es_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The agent; ``audit_settings`` default to the environment; tests may pass an ES transport."""
    app = build_spec().create_app(settings)
    app.state.audit_settings = audit_settings or AuditSettings()
    app.state.es_transport = es_transport
    return app

"""Event Correlator agent (8001): where noise dies before it becomes an incident.

Every source posts in its own format; every alert is normalized, persisted and given one
disposition before the 202 answer. Incidents go to IO (``new_ticket``), the orchestrator
(``start_incident``, ``incident_signal``) and audit through the durable outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.correlator import store
from services.correlator.decide import Decision
from services.correlator.engine import Correlator, WriteFailed
from services.correlator.settings import SOURCES, CorrelatorSettings
from services.correlator.silences import Silence, SilenceCreate, SilenceRead
from services.correlator.sources import PARSERS, SourceError, parse_csv, parse_generic
from services.correlator.topology import TopologyCache
from shared.agent import Access, AgentSpec, EngineDep, RouteAuth, TaskContext
from shared.contracts import INCIDENT_CLOSED, INGEST_ALERTS
from shared.models import (
    SERVICENOW_NUMBER_LABEL,
    SERVICENOW_SYS_ID_LABEL,
    AlertOutcome,
    CloseResult,
    IncidentClosed,
    IngestAlerts,
    IngestResult,
    NormalizedAlert,
    Severity,
    utcnow,
)
from shared.settings import Settings
from shared.southbound import cnc_client

Clock = Callable[[], datetime]


@asynccontextmanager
async def _resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    config: CorrelatorSettings = app.state.correlator_config
    cnc = cnc_client(
        settings, transport=app.state.cnc_transport, timeout_s=5.0, session="correlator"
    )
    llm_http = httpx.AsyncClient(transport=app.state.llm_transport) if config.llm_base_url else None
    correlator = Correlator(
        settings=settings,
        config=config,
        engine=app.state.engine,
        outbox=app.state.outbox,
        topology=TopologyCache(
            cnc, config.topology_ttl_s * settings.time_scale, config.interface_links
        ),
        clock=app.state.clock,
        llm_http=llm_http,
    )
    app.state.correlator = correlator
    await correlator.start()
    try:
        yield
    finally:
        await correlator.stop()
        await correlator.topology.aclose()
        await cnc.aclose()
        if llm_http is not None:
            await llm_http.aclose()


spec = AgentSpec(
    name="correlator",
    title="Event Correlator",
    description="Ingestion, dedup, correlation, flap dampening, silences, false-positive triage",
    migrations=store.MIGRATIONS,
    resources=_resources,
    outbox=True,
)
router = APIRouter(prefix="/api/v1", tags=["ingestion"])
spec.include_router(router)


async def get_correlator(request: Request) -> Correlator:
    # async: FastAPI would run a plain function in its thread pool, a thread hop per request
    correlator: Correlator = request.app.state.correlator
    return correlator


CorrelatorDep = Annotated[Correlator, Depends(get_correlator)]


# --- authentication ---------------------------------------------------------------------------

SOURCE_AUTH = RouteAuth(
    Access.WEBHOOK,
    "a sender (PCA, Alertmanager, Datadog, a CSV upload...) holds its own secret, not the mesh "
    "token: its bearer token and/or HMAC-SHA256 (CXM_CORRELATOR_WEBHOOK_AUTH), else the mesh "
    "token (authorize())",
)
"""Marks the routes that call :func:`authorize` first; reads take the mesh token."""


def authorize(request: Request, source: str, body: bytes) -> None:
    """Per-source bearer token and/or HMAC-SHA256; else the mesh token when one is configured."""
    settings: Settings = request.app.state.settings
    config: CorrelatorSettings = request.app.state.correlator_config
    auth = config.webhook_auth.get(source)
    given = request.headers.get("authorization", "")
    if auth is None:
        if settings.mesh_token and not hmac.compare_digest(
            given.encode(), f"Bearer {settings.mesh_token}".encode()
        ):
            raise HTTPException(401, f"{source}: missing or wrong bearer token")
        return
    if auth.bearer_token and not hmac.compare_digest(
        given.encode(), f"Bearer {auth.bearer_token}".encode()
    ):
        raise HTTPException(401, f"{source}: missing or wrong bearer token")
    if auth.hmac_secret:
        signature = request.headers.get(auth.hmac_header, "").strip()
        if signature.lower().startswith("sha256="):
            signature = signature[7:]
        expected = hmac.new(auth.hmac_secret.encode(), body, hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(signature.lower().encode(), expected.encode()):
            raise HTTPException(
                401, f"{source}: missing or wrong HMAC-SHA256 signature in {auth.hmac_header}"
            )


async def _accept(
    correlator: Correlator, alerts: list[NormalizedAlert], *, proactive: bool = False
) -> Response:
    try:
        outcomes = await correlator.ingest(alerts, proactive=proactive)
    except WriteFailed as exc:
        raise HTTPException(503, f"alerts not stored, retry: {exc}") from None
    # orjson writes the Outcome dataclasses as they are, several times faster than json.
    body = orjson.dumps({"accepted": len(outcomes), "alerts": outcomes})
    return Response(body, status_code=202, media_type="application/json")


async def _read_body(request: Request) -> bytes:
    """The raw body. A sender that goes away before the end of it (a cut connection it will
    retry) gets a 499 no one reads, as /a2a/tasks does: nothing is stored, and it is not an
    application error."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise HTTPException(499, "the sender went away before the end of the body") from None


def _json(body: bytes) -> Any:
    if not body.strip():
        raise HTTPException(400, "empty body: expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses and json takes (NaN, huge integers) is still accepted
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None


ALERT_LIST = TypeAdapter(list[NormalizedAlert])
"""Validates a whole request's alerts in one call into pydantic-core."""


# --- ingestion --------------------------------------------------------------------------------


@router.post("/tickets/webhook/{source}", status_code=202, dependencies=[SOURCE_AUTH.depends])
async def webhook(source: str, request: Request, correlator: CorrelatorDep) -> Response:
    """A source's native webhook: pca, cnc, alertmanager, datadog, servicenow (incident
    records from a Business Rule or Flow), or generic (mapped)."""
    if source not in SOURCES:
        raise HTTPException(404, f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    raw = await _read_body(request)
    authorize(request, source, raw)
    body = _json(raw)
    topo = await correlator.topology.get()
    config: CorrelatorSettings = request.app.state.correlator_config
    try:
        if source == "generic":
            alerts = parse_generic(body, topo, config.generic_mapping, config.generic_items_path)
        else:
            alerts = PARSERS[source](body, topo)
    except SourceError as exc:
        raise HTTPException(422, str(exc)) from None
    if source == "servicenow":
        return await _accept_servicenow(correlator, alerts)
    return await _accept(correlator, alerts)


async def _accept_servicenow(correlator: Correlator, alerts: list[NormalizedAlert]) -> Response:
    """Idempotent on the record's sys_id: a record that already made (or joined) a ticket is
    answered with that ticket and not correlated again, however long ago it was, so a Business
    Rule that fires again (on update, or a retry) never opens a second ticket. It is stored as
    a ``duplicate`` all the same (every alert answered for has its row); the answer is 200
    when every record was known. The rest go through the pipeline as any source's alerts
    (within the dedup window two posts at once are a ``duplicate`` there)."""
    known: dict[int, Decision] = {}
    for i, alert in enumerate(alerts):
        fp = alert.fingerprint or ""
        if alert.status != "firing":
            continue
        incident_id = await store.incident_of_fingerprint(correlator.engine, "servicenow", fp)
        if incident_id is not None:
            ref = alert.labels.get(SERVICENOW_NUMBER_LABEL) or alert.labels[SERVICENOW_SYS_ID_LABEL]
            why = f"ServiceNow {ref} is already CXM ticket {incident_id}"
            known[i] = Decision("duplicate", incident_id, why, fp, alert.link)
    try:
        outcomes = await correlator.ingest(alerts, settled=known)
    except WriteFailed as exc:
        raise HTTPException(503, f"alerts not stored, retry: {exc}") from None
    fresh = len(alerts) - len(known)
    body = orjson.dumps({"accepted": fresh, "alerts": outcomes})
    return Response(body, status_code=202 if fresh else 200, media_type="application/json")


@router.post("/tickets/upload-csv", status_code=202, dependencies=[SOURCE_AUTH.depends])
async def upload_csv(request: Request, correlator: CorrelatorDep) -> Response:
    """A CSV file (multipart field ``file``, or the raw body as text/csv); all rows or none."""
    raw = await _read_body(request)
    authorize(request, "csv", raw)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart upload needs a file field named 'file'")
        data = await upload.read()
    else:
        data = raw
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(400, "the CSV file must be UTF-8 text") from None
    topo = await correlator.topology.get()
    try:
        alerts = parse_csv(text, topo)
    except SourceError as exc:
        raise HTTPException(422, str(exc)) from None
    return await _accept(correlator, alerts)


@router.post("/alerts", status_code=202, dependencies=[SOURCE_AUTH.depends])
async def post_alerts(request: Request, correlator: CorrelatorDep) -> Response:
    """Normalized alerts: one object, a list, or ``{"alerts": [...]}``."""
    raw = await _read_body(request)
    authorize(request, "rest", raw)
    body = _json(raw)
    items = (
        body.get("alerts")
        if isinstance(body, dict) and isinstance(body.get("alerts"), list)
        else body
    )
    items = items if isinstance(items, list) else [items]
    if not items:
        raise HTTPException(422, "no alerts in the body")
    try:
        alerts = ALERT_LIST.validate_python(items)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        index, *path = err["loc"]
        field = ".".join(str(p) for p in path) or "alert"
        raise HTTPException(422, f"alerts[{index}].{field}: {err['msg']}") from None
    return await _accept(correlator, alerts)


class AlertsFastPath:
    """``POST /api/v1/alerts`` served in plain ASGI, in front of the framework.

    Why: it is the hot route (every monitoring system posts there), and profiled under load
    the framework around it (exception and exit-stack middleware, routing through every
    route, dependency solving) cost more CPU than the alert's own work. This does exactly
    what :func:`post_alerts` does on success: :func:`authorize` (the same credentials), the
    body validated straight from bytes (``validate_json``), :meth:`Correlator.ingest` (stored
    before the 202), the same answer. Anything else, an error of any kind before the ingest
    included, is handed to the framework with the body replayed, so the route answers it as
    it always did; only a failed write (nothing stored) is answered here, with the route's 503.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != ALERTS_PATH:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the sender went away: the route answers it (499, nothing stored)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        correlator: Correlator | None = getattr(scope["app"].state, "correlator", None)
        alerts = None
        if correlator is not None and messages[-1]["type"] == "http.request":
            raw = b"".join(chunks)
            try:
                authorize(Request(scope), "rest", raw)
                if raw.lstrip()[:1] == b"[":
                    alerts = ALERT_LIST.validate_json(raw) or None
            except (HTTPException, ValidationError):
                alerts = None  # the route gives the error its usual shape
        if alerts is None or correlator is None:
            await self.app(scope, replay, send)
            return
        try:
            outcomes = await correlator.ingest(alerts)
        except WriteFailed as exc:
            response = JSONResponse({"detail": f"alerts not stored, retry: {exc}"}, status_code=503)
            await response(scope, replay, send)
            return
        # The route's 202, its two ASGI messages written here: a Starlette Response (its
        # header building, its background-task check) was a few % of a single POST's CPU.
        body = orjson.dumps({"accepted": len(outcomes), "alerts": outcomes})
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


ALERTS_PATH = "/api/v1/alerts"


class DemoHostTicket(BaseModel):
    """The demo ticket API for a ticket about a host, service or database (seed 000)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=20000)
    severity: Severity = "medium"
    host: str = Field(min_length=1, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict)


def _host_alert(body: dict[str, Any]) -> NormalizedAlert:
    try:
        ticket = DemoHostTicket.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise HTTPException(422, f"demo ticket: {field}: {err['msg']}") from None
    run = uuid.uuid4().hex[:8]
    return NormalizedAlert(
        source="demo",
        host=ticket.host,
        severity=ticket.severity,
        summary=ticket.title,
        labels={**ticket.labels, "demo": run},
        annotations={"description": ticket.description} if ticket.description else {},
        fingerprint=f"demo-{run}-{ticket.host}",
    )


@router.post("/tickets/demo/ticket", status_code=202, dependencies=[SOURCE_AUTH.depends])
async def demo_ticket(request: Request, correlator: CorrelatorDep) -> Response:
    """The seed's demo: PCA-style delay alerts on pe1-pe2 and pe2-pe3 (or the links given);
    with ``{title, description, severity, host, labels}``, a ticket about that host."""
    raw = await _read_body(request)
    authorize(request, "demo", raw)
    body = _json(raw) if raw.strip() else {}
    if isinstance(body, dict) and "host" in body:
        return await _accept(correlator, [_host_alert(body)])
    links = body.get("links", ["pe1-pe2", "pe2-pe3"]) if isinstance(body, dict) else None
    if not isinstance(links, list) or not links or not all(isinstance(x, str) for x in links):
        raise HTTPException(422, "links must be a non-empty list of link names")
    run = uuid.uuid4().hex[:8]
    try:
        alerts = [
            NormalizedAlert(
                source="demo",
                link=link,
                status="firing",
                severity=body.get("severity", "high"),
                metric="delay-avg",
                value=float(body.get("value", 85.0)),
                threshold=50.0,
                summary=f"Demo: delay-avg above the SLA threshold on {link}",
                labels={"demo": run},
                fingerprint=f"demo-{run}-{link}",
            )
            for link in links
        ]
    except (ValidationError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"demo ticket: {exc}") from None
    return await _accept(correlator, alerts)


@router.get("/alerts")
async def list_alerts(
    engine: EngineDep,
    source: str | None = None,
    link: str | None = None,
    disposition: str | None = None,
    incident_id: str | None = None,
    since: datetime | None = None,
    before: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[dict[str, Any]]:
    """Recent alerts, newest first, with their disposition and incident; ``before`` (an
    alert id, the last of the previous page) pages back through all of them."""
    return await store.list_alerts(
        engine,
        source=source,
        link=link,
        disposition=disposition,
        incident_id=incident_id,
        since=since,
        before=before,
        limit=limit,
    )


@router.get("/incidents")
async def list_incidents(
    engine: EngineDep, status: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Incidents the correlator opened: pending (group wait), open, or closed."""
    return await store.list_incidents(engine, status=status, limit=limit)


# --- silences and maintenance windows --------------------------------------------------------


@router.post("/silences", status_code=201, tags=["silences"], dependencies=[SOURCE_AUTH.depends])
async def create_silence(request: Request, correlator: CorrelatorDep) -> SilenceRead:
    raw = await _read_body(request)
    authorize(request, "silences", raw)
    try:
        data = SilenceCreate.model_validate(_json(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise HTTPException(422, f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    now = correlator.clock()
    starts = data.starts_at or now
    if data.ends_at <= starts:
        raise HTTPException(422, "ends_at must be after starts_at")
    silence = Silence(
        id=uuid.uuid4().hex,
        matchers=data.matchers,
        starts_at=starts,
        ends_at=data.ends_at,
        created_by=data.created_by,
        comment=data.comment,
        kind=data.kind,
        created_at=now,
    )
    try:
        await correlator.add_silence(silence)
    except WriteFailed as exc:
        raise HTTPException(503, str(exc)) from None
    return silence.read(now)


@router.get("/silences", tags=["silences"])
async def list_silences(correlator: CorrelatorDep, state: str | None = None) -> list[SilenceRead]:
    now = correlator.clock()
    out = [s.read(now) for s in correlator.silences.values()]
    if state:
        out = [s for s in out if s.state == state]
    return sorted(out, key=lambda s: s.created_at, reverse=True)


@router.get("/silences/{silence_id}", tags=["silences"])
async def get_silence(silence_id: str, correlator: CorrelatorDep) -> SilenceRead:
    silence = correlator.silences.get(silence_id)
    if silence is None:
        raise HTTPException(404, f"no silence {silence_id!r}")
    return silence.read(correlator.clock())


@router.delete("/silences/{silence_id}", tags=["silences"], dependencies=[SOURCE_AUTH.depends])
async def expire_silence(
    silence_id: str, request: Request, correlator: CorrelatorDep
) -> SilenceRead:
    """Expire a silence now (it stays listed, as in Alertmanager)."""
    authorize(request, "silences", b"")
    try:
        silence = await correlator.expire_silence(silence_id)
    except WriteFailed as exc:
        raise HTTPException(503, str(exc)) from None
    if silence is None:
        raise HTTPException(404, f"no silence {silence_id!r}")
    return silence.read(correlator.clock())


# --- A2A tasks --------------------------------------------------------------------------------


@spec.serve(INGEST_ALERTS)
async def ingest_alerts(payload: IngestAlerts, ctx: TaskContext) -> IngestResult:
    correlator: Correlator = ctx.app.state.correlator
    outcomes = await correlator.ingest(list(payload.alerts), proactive=payload.proactive)
    return IngestResult(
        accepted=len(outcomes), alerts=[AlertOutcome(**o.as_dict()) for o in outcomes]
    )


@spec.serve(INCIDENT_CLOSED)
async def incident_closed(payload: IncidentClosed, ctx: TaskContext) -> CloseResult:
    correlator: Correlator = ctx.app.state.correlator
    closed = await correlator.close_incident(payload.incident_id, payload.resolution)
    return CloseResult(incident_id=payload.incident_id, closed=closed)


def create_app(
    settings: Settings,
    *,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
    config: CorrelatorSettings | None = None,
    clock: Clock | None = None,
    cnc_transport: httpx.AsyncBaseTransport | None = None,
    llm_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The agent; tests inject a clock and transports for CNC and the LLM endpoint."""
    app = spec.create_app(settings, mesh_transport=mesh_transport)
    app.state.correlator_config = config or CorrelatorSettings()
    app.state.clock = clock or utcnow
    app.state.cnc_transport = cnc_transport
    app.state.llm_transport = llm_transport
    app.add_middleware(AlertsFastPath)  # outermost of the app's own: ahead of routing
    return app

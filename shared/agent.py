"""Declare an agent's task handlers once; get every endpoint the mesh contract asks for.

    spec = AgentSpec("io", "IO Agent", "Operator console and ticket views")

    @spec.serve(NEW_TICKET)                       # shared.contracts: io/new_ticket
    async def new_ticket(request: NewTicket, ctx: TaskContext) -> TicketStored: ...

    app = spec.create_app(load_settings("io"))

From each contract the app serves ``POST /a2a/tasks`` (the envelope), both agent-card paths
with one skill per contract (its description and tags), the A2A 1.0 JSON-RPC binding through
a2a-sdk (a data part ``{task_type, payload}`` reaches the same handler), ``/health`` and
``/metrics``. The lifespan
owns the database engine, the mesh client and whatever the agent adds.

Secure by default: when a mesh token is configured, every route asks for
``Authorization: Bearer <mesh token>`` except the few in :data:`OPEN_PATHS` and the routes an
agent marks with a :class:`RouteAuth` (a webhook checked per source, IO's user tokens, an open
console page). Nothing is skipped for loopback callers; ``docs/security.md`` says why.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import httpx
import sqlalchemy as sa
from a2a.helpers import get_data_parts, new_data_part, new_task, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    add_a2a_routes_to_fastapi,
    create_agent_card_routes,
    create_jsonrpc_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskState,
)
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import RouteContext, iter_route_contexts
from google.protobuf.struct_pb2 import Struct
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import __version__
from shared.contracts import Contract
from shared.db import Migration, UtcDateTime, create_tables, make_engine, migrate
from shared.errors import MeshError, SouthboundError, TaskFailed
from shared.logs import get_logger
from shared.mesh import MeshClient, trace_id_var
from shared.models import TaskEnvelope, TaskResult, utcnow
from shared.outbox import Outbox
from shared.settings import Settings

log = get_logger(__name__)

JSONRPC_PATH = "/a2a/jsonrpc"
TASKS_PATH = "/a2a/tasks"
AGENT_CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
DOCS_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
OPEN_PATHS: frozenset[str] = frozenset({"/health", "/metrics", *AGENT_CARD_PATHS, *DOCS_PATHS})
"""The only routes every agent serves without the mesh token: these exact paths, GET only.

Health and metrics are what a supervisor, a load balancer and Prometheus poll, which carry no
token; the agent cards are how an A2A client discovers the agent and learns that it needs the
token; the OpenAPI document and its pages describe the API, which is public in the source, and
IO's Swagger page (and a fuzzer) reads the document before it has any token. None of them
reads or changes any incident, alert, audit event or topology.
"""

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)
Handler = Callable[[Req, "TaskContext"], Awaitable[Resp]]
Resources = Callable[[FastAPI], AbstractAsyncContextManager[None]]
HealthCheck = Callable[[FastAPI], Awaitable[str | None]]

_meta = sa.MetaData()
idempotency_table = sa.Table(
    "a2a_idempotency",
    _meta,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("task_type", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
FRAMEWORK_MIGRATIONS = (
    Migration(1, "idempotency records", create_tables(_meta, "a2a_idempotency")),
)


class TaskRejected(Exception):
    """An envelope the agent can never accept: answered 4xx, nothing changes."""

    def __init__(self, status: int, detail: Any):
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


class Access(enum.StrEnum):
    """What a route asks of its caller; every route has exactly one (``docs/security.md``)."""

    MESH = "mesh"
    """``Authorization: Bearer <mesh token>``: the default for every route not marked otherwise."""
    OPEN = "open"
    """Nothing, on purpose: :data:`OPEN_PATHS`, IO's console page and the lab's control API."""
    USER = "user"
    """An IO user's token and role (IO's ``/api/v1/*``): 401 without, 403 below the role."""
    WEBHOOK = "webhook"
    """The source's own secret (bearer and/or HMAC of the body, per source): 401 without."""
    CONTROLLER = "controller"
    """CNC's or PCA's own login, as the lab emulates them: 401/403 without."""


@dataclass(frozen=True)
class RouteAuth:
    """Declares that a route checks its own credential (or none), not the mesh token.

    Put it on a route or a router as a dependency, or on a mounted ASGI app as ``route_auth``::

        @router.post("/webhook", dependencies=[RouteAuth(Access.WEBHOOK, "HMAC").depends])
        spec.include_router(router, auth=RouteAuth(Access.USER, "IO user token and role"))

    It does nothing when a request comes: the route (or its own dependency) does the checking.
    It tells the mesh middleware to let the request through and the route-auth test what to
    expect of the route, and ``why`` says it to a reader.
    """

    access: Access
    why: str

    def __post_init__(self) -> None:
        if self.access is Access.MESH:
            raise ValueError("the mesh token is the default; do not declare it")
        if not self.why.strip():
            raise ValueError("say why the route does not ask for the mesh token")

    async def __call__(self) -> None:
        """A no-op dependency: the marker is read from the route, not run."""

    @property
    def depends(self) -> Any:
        """``Depends(self)``, for ``dependencies=[...]`` of a route, a router or an include."""
        return Depends(self)


def route_auth(route: BaseRoute | RouteContext) -> RouteAuth | None:
    """How ``route`` is authenticated: its marker, :data:`OPEN_PATHS`, or ``None`` (mesh token).

    Takes what ``fastapi.routing.iter_route_contexts`` yields, so routes of included routers
    come with the dependencies of the router and of the include.
    """
    found = {
        dep.dependency
        for dep in getattr(route, "dependencies", None) or ()
        if isinstance(dep.dependency, RouteAuth)
    }
    original = route.original_route if isinstance(route, RouteContext) else route
    if isinstance(original, Mount):
        marker = getattr(original.app, "route_auth", None)
        if isinstance(marker, RouteAuth):
            found.add(marker)
    if len(found) > 1:
        raise ValueError(f"{getattr(route, 'path', route)}: declared twice: {found}")
    if found:
        return found.pop()
    methods = getattr(route, "methods", None) or set()
    if getattr(route, "path", None) in OPEN_PATHS and methods <= {"GET", "HEAD"}:
        return RouteAuth(Access.OPEN, "the framework's allowlist (shared.agent.OPEN_PATHS)")
    return None


RouteTable = list[tuple[RouteContext, RouteAuth | None]]


def route_table(app: FastAPI) -> RouteTable:
    """Every route of ``app`` as the router tries them, with how each is authenticated."""
    return [(route, route_auth(route)) for route in iter_route_contexts(app.routes)]


def access_of(table: RouteTable, scope: Scope) -> RouteAuth | None:
    """How the route that will answer ``scope`` is authenticated; ``None``: the mesh token.

    The route is found the way the router finds it: the first full match, else the first
    route whose path matches with another method (it answers 405). A request that reaches no
    route (a 404) needs the token too, which keeps which paths exist to callers that hold it.
    """
    partial: tuple[RouteAuth | None] | None = None
    for route, auth in table:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return auth
        if match is Match.PARTIAL and partial is None:
            partial = (auth,)
    return partial[0] if partial else None


@dataclass(frozen=True)
class Skill:
    """A contract this agent serves and the function serving it."""

    contract: Contract[Any, Any]
    handler: Handler[Any, Any]

    @property
    def task_type(self) -> str:
        return self.contract.task_type


@dataclass
class TaskContext:
    """What a handler knows about the task besides its payload."""

    app: FastAPI
    task_id: str
    incident_id: str | None = None
    source_agent: str | None = None
    idempotency_key: str | None = None

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings

    @property
    def mesh(self) -> MeshClient:
        mesh: MeshClient = self.app.state.mesh
        return mesh

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.engine
        return engine

    @property
    def outbox(self) -> Outbox:
        outbox: Outbox | None = self.app.state.outbox
        if outbox is None:
            raise RuntimeError(f"{self.app.state.spec.name} was declared without an outbox")
        return outbox

    @property
    def state(self) -> Any:
        return self.app.state


@dataclass
class AgentSpec:
    """An agent's identity, task handlers, routers, migrations and resources."""

    name: str
    title: str
    description: str
    migrations: Sequence[Migration] = ()
    resources: Resources | None = None
    health_checks: list[HealthCheck] = field(default_factory=list)
    routers: list[tuple[APIRouter, RouteAuth | None]] = field(default_factory=list)
    skills: dict[str, Skill] = field(default_factory=dict)
    outbox: bool = False
    """Give the agent a durable outbox (``app.state.outbox``) for tasks it sends to peers."""

    def serve(
        self, contract: Contract[Req, Resp]
    ) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
        """Register the decorated ``async (request, ctx) -> response`` as ``contract``'s handler.

        Payloads are validated into ``contract.request`` before the handler runs; the handler
        must answer a ``contract.response``. Refuses a contract declared for another agent, so
        an agent cannot quietly take over a task type its peers send elsewhere.
        """
        if contract.agent != self.name:
            raise ValueError(
                f"{self.name} cannot serve {contract.agent}/{contract.task_type}: "
                f"shared.contracts declares it for {contract.agent!r}"
            )

        def register(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
            if contract.task_type in self.skills:
                raise ValueError(f"{self.name}: task type {contract.task_type!r} served twice")
            self.skills[contract.task_type] = Skill(contract, handler)
            return handler

        return register

    def include_router(self, router: APIRouter, *, auth: RouteAuth | None = None) -> None:
        """Serve ``router``'s routes; ``auth`` when none of them takes the mesh token."""
        self.routers.append((router, auth))

    # --- the app ---------------------------------------------------------------------------

    def create_app(
        self, settings: Settings, *, mesh_transport: httpx.AsyncBaseTransport | None = None
    ) -> FastAPI:
        """Build the app; tests pass ``mesh_transport`` to route mesh calls to in-process peers."""
        spec = self

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            engine = make_engine(settings.db_url(spec.name))
            mesh = MeshClient(settings, source_agent=spec.name, transport=mesh_transport)
            app.state.engine = engine
            app.state.mesh = mesh
            app.state.key_locks = {}
            outbox = Outbox(engine, mesh) if spec.outbox else None
            app.state.outbox = outbox
            try:
                await migrate(engine, "a2a", FRAMEWORK_MIGRATIONS)
                await migrate(engine, spec.name, spec.migrations)
                if outbox is not None:
                    await outbox.start()
                if spec.resources is None:
                    yield
                else:
                    async with spec.resources(app):
                        yield
            finally:
                if outbox is not None:
                    await outbox.stop()
                await mesh.aclose()
                await engine.dispose()

        app = FastAPI(
            title=f"CXM {self.title}",
            description=self.description,
            version=__version__,
            lifespan=lifespan,
            # FastAPI's native OpenTelemetry, unused here (no provider is ever configured), still
            # looked a tracer provider up in os.environ on every request: 6 % of the correlator's
            # CPU per alert POST in the ingest profile (docs/benchmarks.md).
            telemetry={"tracing": False, "metrics": False, "logs": False},
        )
        app.state.settings = settings
        app.state.spec = self
        registry = CollectorRegistry()
        app.state.metrics = _Metrics(registry)
        # every route not in OPEN_PATHS nor marked with a RouteAuth asks for the mesh token
        app.add_middleware(_MeshAuthMiddleware, token=settings.mesh_token)

        @app.get("/health", tags=["ops"])
        async def health() -> JSONResponse:
            reasons = [r for check in [_db_check, *spec.health_checks] if (r := await check(app))]
            body: dict[str, Any] = {"status": "ok", "agent": spec.name, "version": __version__}
            if reasons:
                body.update(status="degraded", reasons=reasons)
                return JSONResponse(body, status_code=503)
            return JSONResponse(body)

        @app.get("/metrics", tags=["ops"])
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        @app.post(TASKS_PATH, tags=["a2a"], response_model=TaskResult)
        async def tasks(request: Request) -> Response:
            try:
                raw = await request.body()
            except ClientDisconnect:
                # the sender went away mid-request (killed, or it timed out): nobody reads an
                # answer, nothing was done, and it will send the task again under its key
                log.info("task request abandoned by its sender", path=TASKS_PATH)
                return Response(status_code=499)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                return _problem(400, f"malformed JSON: {exc}")
            trace_id_var.set(request.headers.get("x-trace-id") or uuid.uuid4().hex)
            try:
                outcome = await dispatch(app, body, request.headers.get("idempotency-key"))
            except TaskRejected as exc:
                return JSONResponse({"detail": exc.detail}, status_code=exc.status)
            return JSONResponse(outcome.model_dump(mode="json"))

        card = self.agent_card(settings)
        handler = DefaultRequestHandler(
            agent_executor=_EnvelopeExecutor(app),
            task_store=InMemoryTaskStore(),
            agent_card=card,
        )
        add_a2a_routes_to_fastapi(
            app,
            agent_card_routes=[
                *create_agent_card_routes(card),
                *create_agent_card_routes(card, card_url="/.well-known/agent.json"),
            ],
            jsonrpc_routes=create_jsonrpc_routes(handler, rpc_url=JSONRPC_PATH),
        )
        for router, auth in self.routers:
            app.include_router(router, dependencies=[auth.depends] if auth else None)
        return app

    def agent_card(self, settings: Settings) -> AgentCard:
        base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        card = AgentCard(
            name=f"cxm-{self.name}",
            description=f"{self.title}: {self.description}",
            version=__version__,
            supported_interfaces=[
                AgentInterface(
                    url=f"{base}{JSONRPC_PATH}", protocol_binding="JSONRPC", protocol_version="1.0"
                )
            ],
            capabilities=AgentCapabilities(
                streaming=False,
                push_notifications=False,
                extensions=[
                    AgentExtension(
                        uri="urn:cxm:task-envelope:v1",
                        description="POST {task_type, payload} to this URL for the same skills",
                        params=_struct({"url": f"{base}{TASKS_PATH}"}),
                    )
                ],
            ),
            default_input_modes=["application/json"],
            default_output_modes=["application/json"],
            skills=[
                AgentSkill(
                    id=skill.task_type,
                    name=skill.task_type.replace("_", " "),
                    description=skill.contract.description,
                    tags=[self.name, *skill.contract.tags],
                    input_modes=["application/json"],
                    output_modes=["application/json"],
                )
                for skill in self.skills.values()
            ],
        )
        if settings.mesh_token:
            card.security_schemes["mesh"].CopyFrom(
                SecurityScheme(
                    http_auth_security_scheme=HTTPAuthSecurityScheme(
                        scheme="bearer", description="CXM_MESH_TOKEN"
                    )
                )
            )
            card.security_requirements.append(
                SecurityRequirement(schemes={"mesh": StringList(list=[])})
            )
        return card


async def dispatch(app: FastAPI, body: Any, idempotency_key: str | None) -> TaskResult:
    """Validate an envelope and run its handler once per idempotency key."""
    spec: AgentSpec = app.state.spec
    metrics: _Metrics = app.state.metrics
    if not isinstance(body, dict):
        raise TaskRejected(400, "the body must be a JSON object {task_type, payload}")
    try:
        envelope = TaskEnvelope.model_validate(body)
    except ValidationError as exc:
        raise TaskRejected(422, _errors(exc)) from None
    skill = spec.skills.get(envelope.task_type)
    if skill is None:
        accepted = ", ".join(sorted(spec.skills)) or "none"
        raise TaskRejected(
            400, f"unknown task_type {envelope.task_type!r}; {spec.name} accepts: {accepted}"
        )
    try:
        payload = skill.contract.request.model_validate(envelope.payload)
    except ValidationError as exc:
        metrics.tasks.labels(skill.task_type, "invalid").inc()
        raise TaskRejected(422, _errors(exc, prefix="payload")) from None

    if idempotency_key:
        locks: dict[str, asyncio.Lock] = app.state.key_locks
        lock = locks.setdefault(f"{skill.task_type}:{idempotency_key}", asyncio.Lock())
        try:
            async with lock:
                previous = await _recorded(app.state.engine, idempotency_key, skill.task_type)
                if previous is not None:
                    return previous
                outcome = await _run(app, skill, payload, envelope, idempotency_key)
                await _record(app.state.engine, idempotency_key, outcome)
                return outcome
        finally:
            if not lock.locked():
                locks.pop(f"{skill.task_type}:{idempotency_key}", None)
    return await _run(app, skill, payload, envelope, None)


async def _run(
    app: FastAPI, skill: Skill, payload: BaseModel, envelope: TaskEnvelope, key: str | None
) -> TaskResult:
    metrics: _Metrics = app.state.metrics
    task_id = envelope.task_id or uuid.uuid4().hex
    ctx = TaskContext(
        app=app,
        task_id=task_id,
        incident_id=envelope.incident_id or getattr(payload, "incident_id", None),
        source_agent=envelope.source_agent,
        idempotency_key=key,
    )
    started = time.perf_counter()
    try:
        result = await skill.handler(payload, ctx)
    except TaskFailed as exc:
        metrics.tasks.labels(skill.task_type, "failed").inc()
        detail: dict[str, Any] = {"code": exc.code, "message": str(exc)}
        if exc.problems is not None:
            detail["problems"] = exc.problems
        raise TaskRejected(exc.status, detail) from None
    except SouthboundError as exc:
        metrics.tasks.labels(skill.task_type, "southbound_error").inc()
        raise TaskRejected(
            503 if exc.transient else 502, {"code": "southbound", "message": str(exc)}
        ) from None
    except MeshError as exc:
        metrics.tasks.labels(skill.task_type, "mesh_error").inc()
        raise TaskRejected(502, {"code": "mesh", "message": str(exc)}) from None
    finally:
        metrics.seconds.labels(skill.task_type).observe(time.perf_counter() - started)
    response = skill.contract.response
    if not isinstance(result, response):
        # A bug in the handler, not in the request: a 500, named, rather than a wrong answer.
        raise TypeError(
            f"{spec_name(app)}/{skill.task_type} answered {type(result).__name__}, "
            f"not its contract's {response.__name__}"
        )
    metrics.tasks.labels(skill.task_type, "completed").inc()
    data = result.model_dump(mode="json")
    return TaskResult(task_id=task_id, task_type=skill.task_type, result=data)


def spec_name(app: FastAPI) -> str:
    spec: AgentSpec = app.state.spec
    return spec.name


async def _recorded(engine: AsyncEngine, key: str, task_type: str) -> TaskResult | None:
    t = idempotency_table
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(t.c.task_id, t.c.result).where(t.c.key == key, t.c.task_type == task_type)
            )
        ).first()
    if row is None:
        return None
    return TaskResult(task_id=row.task_id, task_type=task_type, result=row.result, replayed=True)


async def _record(engine: AsyncEngine, key: str, outcome: TaskResult) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            idempotency_table.insert().values(
                key=key,
                task_type=outcome.task_type,
                task_id=outcome.task_id,
                result=outcome.result,
                created_at=utcnow(),
            )
        )


class _EnvelopeExecutor(AgentExecutor):
    """The A2A JSON-RPC side: a data part ``{task_type, payload}`` runs the same handler."""

    def __init__(self, app: FastAPI):
        self.app = app

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = context.task_id or uuid.uuid4().hex
        context_id = context.context_id or uuid.uuid4().hex
        await event_queue.enqueue_event(
            new_task(
                task_id,
                context_id,
                TaskState.TASK_STATE_WORKING,
                history=[context.message] if context.message else None,
            )
        )
        updater = TaskUpdater(event_queue, task_id, context_id)
        parts = list(context.message.parts) if context.message else []
        envelopes = [d for d in get_data_parts(parts) if isinstance(d, dict) and "task_type" in d]
        if not envelopes:
            await updater.reject(
                new_text_message("send one data part {task_type, payload}", context_id, task_id)
            )
            return
        body = {**envelopes[0], "task_id": task_id}
        try:
            outcome = await dispatch(self.app, body, context.metadata.get("idempotency_key"))
        except TaskRejected as exc:
            text = json.dumps(exc.detail) if not isinstance(exc.detail, str) else exc.detail
            await updater.failed(new_text_message(text, context_id, task_id))
            return
        await updater.add_artifact([new_data_part(outcome.result)], name=outcome.task_type)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Tasks here finish in one call; there is nothing left to cancel."""
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


class _MeshAuthMiddleware:
    """Every request needs the mesh bearer token when one is configured, unless the route it
    reaches is open or checks its own credential (:func:`route_auth`, :func:`access_of`).

    Loopback callers get no exemption: on a shared host, behind a local reverse proxy or a
    container's published port, "from 127.0.0.1" proves nothing about who is calling.

    Plain ASGI rather than ``BaseHTTPMiddleware``: it sits in front of every request, and the
    latter costs an extra task and stream per call.
    """

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.table: RouteTable | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected and scope["type"] in ("http", "websocket"):
            if self.table is None:  # on the first request, once every router and mount is in
                self.table = route_table(scope["app"])
            given = dict(scope["headers"]).get(b"authorization", b"")
            # the token first: a peer's call costs no route lookup
            if (
                not hmac.compare_digest(given, self.expected)
                and access_of(self.table, scope) is None
            ):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = _problem(401, "missing or wrong mesh bearer token (CXM_MESH_TOKEN)")
                response.headers["WWW-Authenticate"] = 'Bearer realm="cxm-mesh"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.tasks = Counter(
            "cxm_tasks", "A2A tasks handled", ["task_type", "outcome"], registry=registry
        )
        self.seconds = Histogram(
            "cxm_task_seconds", "Time spent in task handlers", ["task_type"], registry=registry
        )


async def _db_check(app: FastAPI) -> str | None:
    engine: AsyncEngine | None = getattr(app.state, "engine", None)
    if engine is None:
        return "database not open"
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # reported, not hidden: it becomes the 503's reason
        return f"database: {type(exc).__name__}: {exc}"
    return None


def _errors(exc: ValidationError, prefix: str | None = None) -> list[dict[str, Any]]:
    """Pydantic errors as ``{field, message}`` with a dotted path a person can read."""
    out = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        out.append({"field": loc or "body", "message": err["msg"], "type": err["type"]})
    return out


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _struct(data: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(data)
    return struct


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]

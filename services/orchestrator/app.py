"""Orchestrator agent: the LangGraph incident state machine, approvals and timers.

Task types served: ``start_incident`` (idempotent per incident id; a host ticket is matched to
runbooks instead, ``runbooks/tickets.py``), ``incident_signal``,
``approval_decision`` (an incident's, or a runbook session step's) and ``get_incident``, and
the runbook tasks (``runbooks/api.py``: credentials, connections, runbooks, sessions);
REST: ``GET /api/v1/incidents`` and ``GET /api/v1/incidents/{incident_id}``. The graph is
checkpointed with LangGraph's SQLite saver under ``data_dir``, or its Postgres saver when the
orchestrator's database is PostgreSQL. See ``docs/orchestrator.md``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from services.orchestrator import store
from services.orchestrator.flow import Deps, build_graph
from services.orchestrator.runbooks import api as runbook_api
from services.orchestrator.runbooks import host_tickets, sessions, tickets
from services.orchestrator.runbooks.catalog import LibrarySettings
from services.orchestrator.runbooks.lifespan import RunbookServices, runbook_resources
from services.orchestrator.runbooks.matching import MatchSettings
from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.runner import Runner, public_row
from services.orchestrator.settings import OrchestratorSettings
from shared.agent import AgentSpec, TaskContext
from shared.contracts import APPROVAL_DECISION, GET_INCIDENT, INCIDENT_SIGNAL, START_INCIDENT
from shared.errors import TaskFailed
from shared.logs import get_logger
from shared.models import (
    ApprovalDecision,
    DecisionResult,
    GetIncident,
    IncidentSignal,
    IncidentStarted,
    IncidentView,
    SignalResult,
    StartIncident,
    utcnow,
)
from shared.settings import Settings

log = get_logger(__name__)

spec = AgentSpec(
    name="orchestrator",
    title="Orchestrator",
    description="LangGraph incident state machine, approvals, timers",
    migrations=store.MIGRATIONS,
    outbox=True,
)
router = APIRouter(prefix="/api/v1", tags=["incidents"])
spec.include_router(router)
for _contract, _handler in runbook_api.HANDLERS:
    spec.serve(_contract)(_handler)


def postgres_conninfo(url: str) -> str | None:
    """The libpq URL for psycopg when the orchestrator's database is PostgreSQL, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        return None
    return f"postgresql://{rest}"


@asynccontextmanager
async def _checkpointer(
    settings: Settings, orch: OrchestratorSettings
) -> AsyncIterator[tuple[BaseCheckpointSaver[Any], AsyncConnectionPool[Any] | None]]:
    """The Postgres saver on a psycopg pool (autocommit, dict rows, no prepared statements,
    as the saver requires) or the SQLite saver on a file under ``data_dir``."""
    conninfo = postgres_conninfo(settings.db_url("orchestrator"))
    if conninfo is not None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=orch.max_concurrent_runs * 2 + 4,
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
            open=False,
        )
        await pool.open(wait=True)
        try:
            saver = AsyncPostgresSaver(pool)
            await saver.setup()
            yield saver, pool
        finally:
            await pool.close()
        return
    path = orch.checkpoint_path or settings.data_dir / "orchestrator-graph.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as sqlite_saver:
        yield sqlite_saver, None


def _resources(
    orch: OrchestratorSettings,
    runbook_settings: RunbookSettings | None,
    library: LibrarySettings | None,
    match_settings: MatchSettings | None,
) -> Any:
    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        async with AsyncExitStack() as stack:
            saver, pool = await stack.enter_async_context(_checkpointer(settings, orch))
            base = {
                "settings": settings,
                "orch": orch,
                "mesh": app.state.mesh,
                "outbox": app.state.outbox,
                "engine": app.state.engine,
            }
            runner = Runner(
                graph=build_graph(saver), engine=app.state.engine, deps=Deps(**base), pg_pool=pool
            )
            app.state.orch_settings = orch
            app.state.runner = runner
            app.state.runbooks = await stack.enter_async_context(
                runbook_resources(
                    app,
                    saver=saver,
                    pg_pool=pool,
                    orch=orch,
                    deps_base=base,
                    runbook_settings=runbook_settings,
                    library=library,
                    match_settings=match_settings,
                )
            )
            await runner.start()
            stack.push_async_callback(runner.stop)
            yield

    return resources


def _runner(ctx: TaskContext) -> Runner:
    runner: Runner = ctx.app.state.runner
    return runner


def get_runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


# --- task handlers -------------------------------------------------------------------------


@spec.serve(START_INCIDENT)
async def start_incident(payload: StartIncident, ctx: TaskContext) -> IncidentStarted:
    if payload.kind == "host":
        # not a link: no network loop, the ticket is matched to the runbooks
        return await tickets.arrive(payload, ctx, start_session=runbook_api.start_runbook_session)
    runner = _runner(ctx)
    created = await store.create(
        runner.engine,
        incident_id=payload.incident_id,
        severity=payload.severity,
        start=payload.model_dump(mode="json"),
    )
    row = await store.get(runner.engine, payload.incident_id)
    assert row is not None
    if created:
        log.info("incident started", incident_id=payload.incident_id, severity=payload.severity)
        runner.wake()
    return IncidentStarted(
        incident_id=payload.incident_id,
        created=created,
        status=row["status"],
        phase=row["phase"],
        final=row["final"],
    )


@spec.serve(INCIDENT_SIGNAL)
async def incident_signal(payload: IncidentSignal, ctx: TaskContext) -> SignalResult:
    runner = _runner(ctx)
    row = await store.get(runner.engine, payload.incident_id)
    if row is None:
        host = await host_tickets.signal(payload, ctx)
        if host is not None:
            return host
        raise TaskFailed(
            f"unknown incident {payload.incident_id}", code="unknown_incident", status=404
        )
    if row["final"]:
        return SignalResult(incident_id=payload.incident_id, accepted=False, status=row["status"])
    value = {
        "kind": "signal",
        "id": ctx.idempotency_key or uuid.uuid4().hex,
        **payload.model_dump(mode="json"),
        "received_at": utcnow().isoformat(),
    }
    await store.push(runner.engine, payload.incident_id, value)
    runner.wake()
    return SignalResult(incident_id=payload.incident_id, accepted=True, signal=payload.signal)


@spec.serve(APPROVAL_DECISION)
async def approval_decision(payload: ApprovalDecision, ctx: TaskContext) -> DecisionResult:
    if sessions.is_session_approval(payload.approval_id):
        # a runbook step's approval: the session's index and runner take it
        services: RunbookServices = ctx.app.state.runbooks
        await sessions.decide(
            services.engine,
            approval_id=payload.approval_id,
            decision=payload.decision,
            decided_by=payload.decided_by,
            notes=payload.notes,
            option=payload.option,
            four_eyes=services.orch.runbook_four_eyes,
        )
        services.runner.wake()
        return DecisionResult(
            incident_id=payload.incident_id,
            approval_id=payload.approval_id,
            decision=payload.decision,
            accepted=True,
        )
    runner = _runner(ctx)
    resume = {
        "kind": "approval",
        "approval_id": payload.approval_id,
        "decision": payload.decision,
        "decided_by": payload.decided_by,
        "notes": payload.notes,
        "decided_at": utcnow().isoformat(),
    }
    if not await store.claim_approval(
        runner.engine, payload.incident_id, payload.approval_id, resume
    ):
        raise TaskFailed(
            f"approval {payload.approval_id} of {payload.incident_id} is not pending",
            code="approval_not_pending",
            status=409,
        )
    log.info(
        "approval decided",
        incident_id=payload.incident_id,
        approval_id=payload.approval_id,
        decision=payload.decision,
        decided_by=payload.decided_by,
    )
    runner.wake()
    return DecisionResult(
        incident_id=payload.incident_id,
        approval_id=payload.approval_id,
        decision=payload.decision,
        accepted=True,
    )


@spec.serve(GET_INCIDENT)
async def get_incident(payload: GetIncident, ctx: TaskContext) -> IncidentView:
    found = await _describe(_runner(ctx), payload.incident_id)
    if found is None:
        raise TaskFailed(
            f"unknown incident {payload.incident_id}", code="unknown_incident", status=404
        )
    return IncidentView.model_validate(found)


# --- REST ----------------------------------------------------------------------------------


class IncidentList(BaseModel):
    incidents: list[dict[str, Any]]


RunnerDep = Annotated[Runner, Depends(get_runner)]


@router.get("/incidents", response_model=IncidentList)
async def list_incidents(runner: RunnerDep, open_only: bool = False) -> IncidentList:
    rows = await store.list_all(runner.engine, open_only=open_only)
    return IncidentList(incidents=[public_row(r) for r in rows])


@router.get("/incidents/{incident_id}")
async def read_incident(incident_id: str, runner: RunnerDep) -> dict[str, Any]:
    found = await _describe(runner, incident_id)
    if found is None:
        raise HTTPException(404, f"unknown incident {incident_id}")
    return found


async def _describe(runner: Runner, incident_id: str) -> dict[str, Any] | None:
    """A network incident (its graph run) or else a host ticket (its runbook sessions)."""
    found = await runner.describe(incident_id)
    return found if found is not None else await host_tickets.describe(runner.engine, incident_id)


def create_app(
    settings: Settings,
    *,
    orchestrator_settings: OrchestratorSettings | None = None,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
    runbook_settings: RunbookSettings | None = None,
    library: LibrarySettings | None = None,
    match_settings: MatchSettings | None = None,
) -> FastAPI:
    """The orchestrator app; tests pass their own policy settings, a mesh transport, runbook
    settings (a key file of their own), a library folder and matching settings."""
    orch = orchestrator_settings or OrchestratorSettings()
    resources = _resources(orch, runbook_settings, library, match_settings)
    agent = dataclasses.replace(spec, resources=resources)
    return agent.create_app(settings, mesh_transport=mesh_transport)

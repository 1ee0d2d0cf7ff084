"""Task handlers for runbooks, sessions, connections and credentials (IO forwards them).

Thin on purpose: each validates with the owning module's model, calls it, and turns its
typed errors into ``TaskFailed`` with the status and code IO passes on to the person (a 422
lists every problem with the field it is about; a secret is never part of an answer or of an
error). ``app.py`` registers them on the orchestrator's spec (``HANDLERS``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from services.orchestrator.runbooks import catalog, sessions
from services.orchestrator.runbooks.documents import RunbookError, RunbookInvalid, parse_runbook
from services.orchestrator.runbooks.inventory import (
    ConnectionCreate,
    ConnectionExists,
)
from services.orchestrator.runbooks.inventory import (
    test_connection as reach_connection,
)
from services.orchestrator.runbooks.lifespan import RunbookServices
from services.orchestrator.runbooks.matching import TicketText
from services.orchestrator.runbooks.tickets import matches_of
from services.orchestrator.runbooks.vault import (
    CredentialCreate,
    CredentialExists,
    VaultKeyError,
)
from shared.agent import TaskContext
from shared.contracts import (
    CREATE_CONNECTION,
    CREATE_CREDENTIAL,
    DELETE_CREDENTIAL,
    GET_RUNBOOK,
    GET_RUNBOOK_SESSION,
    LIST_CONNECTIONS,
    LIST_CREDENTIALS,
    LIST_RUNBOOKS,
    MATCH_RUNBOOKS,
    ROTATE_CREDENTIAL_KEY,
    SAVE_RUNBOOK,
    START_RUNBOOK_SESSION,
    TEST_CONNECTION,
    Contract,
)
from shared.errors import TaskFailed
from shared.logs import get_logger
from shared.models import (
    ConnectionInfo,
    ConnectionList,
    ConnectionTested,
    CreateConnection,
    CreateCredential,
    CredentialInfo,
    CredentialList,
    DeleteCredential,
    Deleted,
    GetRunbook,
    GetRunbookSession,
    KeyRotated,
    ListConnections,
    ListCredentials,
    ListRunbooks,
    MatchRunbooks,
    RotateCredentialKey,
    RunbookList,
    RunbookMatches,
    RunbookSaved,
    RunbookView,
    SaveRunbook,
    SessionStarted,
    SessionView,
    StartRunbookSession,
    TestConnection,
    utcnow,
)

log = get_logger(__name__)


def _services(ctx: TaskContext) -> RunbookServices:
    services: RunbookServices = ctx.app.state.runbooks
    return services


def _invalid(exc: ValidationError, what: str) -> TaskFailed:
    """A 422 naming every field (pydantic's messages, never the input: secrets stay out)."""
    problems = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or what,
            "message": str(err["msg"]).removeprefix("Value error, "),
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return TaskFailed(f"invalid {what}: {text}", code="invalid", status=422, problems=problems)


def _runbook_failed(exc: RunbookError) -> TaskFailed:
    problems = None
    if isinstance(exc, RunbookInvalid):
        problems = [{"field": p.path, "message": p.message} for p in exc.problems]
    return TaskFailed(str(exc), code=exc.code, status=exc.status, problems=problems)


# --- credentials ---------------------------------------------------------------------------


async def create_credential(payload: CreateCredential, ctx: TaskContext) -> CredentialInfo:
    try:
        credential = CredentialCreate(
            name=payload.name,
            kind=payload.kind,  # validated by CredentialCreate, named on failure
            username=payload.username,
            secret=payload.secret,
        )
    except ValidationError as exc:
        raise _invalid(exc, "credential") from None
    try:
        stored = await _services(ctx).vault.create(credential)
    except CredentialExists as exc:
        raise TaskFailed(str(exc), code="credential_exists", status=409) from None
    log.info("credential created", credential=stored.name, by=payload.by)
    return CredentialInfo.model_validate(stored.model_dump())


async def list_credentials(payload: ListCredentials, ctx: TaskContext) -> CredentialList:
    found = await _services(ctx).vault.list_all()
    return CredentialList(
        credentials=[CredentialInfo.model_validate(c.model_dump()) for c in found]
    )


async def delete_credential(payload: DeleteCredential, ctx: TaskContext) -> Deleted:
    services = _services(ctx)
    if not await services.vault.delete(payload.name):
        raise TaskFailed(
            f"no credential named {payload.name!r}", code="credential_not_found", status=404
        )
    await services.pool.forget(credential=payload.name)
    log.info("credential deleted", credential=payload.name, by=payload.by)
    return Deleted(name=payload.name, deleted=True)


async def rotate_credential_key(payload: RotateCredentialKey, ctx: TaskContext) -> KeyRotated:
    try:
        rotation = await _services(ctx).vault.rotate_key()
    except VaultKeyError as exc:
        raise TaskFailed(str(exc), code="vault_key", status=409) from None
    log.info("credential key rotated", by=payload.by, key_id=rotation.key_id)
    return KeyRotated.model_validate(rotation.model_dump())


# --- connections ---------------------------------------------------------------------------


async def create_connection(payload: CreateConnection, ctx: TaskContext) -> ConnectionInfo:
    try:
        connection = ConnectionCreate.model_validate(payload.connection)
    except ValidationError as exc:
        raise _invalid(exc, "connection") from None
    try:
        stored = await _services(ctx).inventory.create(connection)
    except ConnectionExists as exc:
        raise TaskFailed(str(exc), code="connection_exists", status=409) from None
    log.info("connection created", connection=stored.name, by=payload.by)
    return ConnectionInfo.model_validate(stored.model_dump(mode="json"))


async def list_connections(payload: ListConnections, ctx: TaskContext) -> ConnectionList:
    if payload.environment not in (None, "prod", "staging", "dev"):
        raise TaskFailed(
            f"environment must be prod, staging or dev, not {payload.environment!r}",
            code="invalid",
            status=422,
        )
    found = await _services(ctx).inventory.list_all(
        environment=payload.environment  # type: ignore[arg-type]  # checked above
    )
    return ConnectionList(
        connections=[ConnectionInfo.model_validate(c.model_dump(mode="json")) for c in found]
    )


async def test_connection(payload: TestConnection, ctx: TaskContext) -> ConnectionTested:
    services = _services(ctx)
    result = await reach_connection(services.inventory, services.pool, payload.name)
    return ConnectionTested.model_validate(result.model_dump())


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --- runbooks ------------------------------------------------------------------------------


async def save_runbook(payload: SaveRunbook, ctx: TaskContext) -> RunbookSaved:
    engine = _services(ctx).engine
    try:
        document = parse_runbook(payload.body, payload.content_type)
        if payload.runbook_id is None:
            stored = await catalog.create(engine, document)
        else:
            stored = await catalog.put(engine, payload.runbook_id, document)
    except RunbookError as exc:
        raise _runbook_failed(exc) from None
    await _services(ctx).matching.rebuild()
    log.info("runbook stored", runbook_id=stored.runbook_id, version=stored.version, by=payload.by)
    return RunbookSaved(runbook_id=stored.runbook_id, version=stored.version)


def _runbook_view(found: catalog.RunbookRead) -> RunbookView:
    return RunbookView.model_validate(found.model_dump(mode="json"))


async def get_runbook(payload: GetRunbook, ctx: TaskContext) -> RunbookView:
    try:
        found = await catalog.get(_services(ctx).engine, payload.runbook_id, payload.version)
    except RunbookError as exc:
        raise _runbook_failed(exc) from None
    return _runbook_view(found)


async def list_runbooks(payload: ListRunbooks, ctx: TaskContext) -> RunbookList:
    found = await catalog.list_all(_services(ctx).engine)
    return RunbookList(runbooks=[_runbook_view(r) for r in found])


async def match_runbooks(payload: MatchRunbooks, ctx: TaskContext) -> RunbookMatches:
    """The best runbooks for a ticket's words, best first; nothing is started or stored."""
    ticket = TicketText.model_validate(payload.model_dump())
    return matches_of(await _services(ctx).matching.match(ticket))


# --- sessions ------------------------------------------------------------------------------


async def start_runbook_session(payload: StartRunbookSession, ctx: TaskContext) -> SessionStarted:
    """Start a session on the runbook's latest version (pinned: a later PUT does not change a
    session under way), unless the frequency guard refuses it."""
    services = _services(ctx)
    try:
        found = await catalog.get(services.engine, payload.runbook_id)
    except RunbookError as exc:
        raise _runbook_failed(exc) from None
    ticket = {"id": payload.incident_id, **payload.ticket}
    severity = str(ticket.get("severity") or "medium")
    orch = services.orch
    session_id = await sessions.create(
        services.engine,
        incident_id=payload.incident_id,
        runbook_id=found.runbook_id,
        version=found.version,
        severity=severity,
        started_by=payload.started_by,
        ticket=ticket,
        start={
            "incident_id": payload.incident_id,
            "runbook_id": found.runbook_id,
            "version": found.version,
            "severity": severity,
            "started_by": payload.started_by,
            "ticket": ticket,
            "document": found.document.model_dump(mode="json"),
            "created_at": utcnow().isoformat(),
        },
        limit=orch.runbook_session_limit,
        window=timedelta(seconds=ctx.settings.scaled(orch.runbook_session_window_s)),
    )
    log.info(
        "runbook session started",
        session_id=session_id,
        incident_id=payload.incident_id,
        runbook_id=found.runbook_id,
        by=payload.started_by,
    )
    services.runner.wake()
    return SessionStarted(
        session_id=session_id,
        incident_id=payload.incident_id,
        runbook_id=found.runbook_id,
        version=found.version,
        status="running",
    )


async def get_runbook_session(payload: GetRunbookSession, ctx: TaskContext) -> SessionView:
    found = await sessions.describe(_services(ctx).engine, payload.session_id)
    if found is None:
        raise TaskFailed(
            f"unknown session {payload.session_id}", code="unknown_session", status=404
        )
    return SessionView.model_validate(found)


HANDLERS: tuple[tuple[Contract[Any, Any], Any], ...] = (
    (CREATE_CREDENTIAL, create_credential),
    (LIST_CREDENTIALS, list_credentials),
    (DELETE_CREDENTIAL, delete_credential),
    (ROTATE_CREDENTIAL_KEY, rotate_credential_key),
    (CREATE_CONNECTION, create_connection),
    (LIST_CONNECTIONS, list_connections),
    (TEST_CONNECTION, test_connection),
    (SAVE_RUNBOOK, save_runbook),
    (GET_RUNBOOK, get_runbook),
    (LIST_RUNBOOKS, list_runbooks),
    (MATCH_RUNBOOKS, match_runbooks),
    (START_RUNBOOK_SESSION, start_runbook_session),
    (GET_RUNBOOK_SESSION, get_runbook_session),
)
"""Each contract with the function serving it (``app.py`` registers them on the spec)."""

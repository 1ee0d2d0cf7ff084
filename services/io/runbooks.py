"""Runbooks, sessions, connections and credentials for people and ticketing tools.

The orchestrator owns all of them; IO is the front door: it authenticates, checks the role
(admin for credentials and the key rotation, operator for changes and sessions, viewer for
reading), attributes the action to the user, and forwards it over the mesh. The
orchestrator's 4xx answers pass through with their detail (a runbook's validation problems,
the frequency guard's limit), an unreachable orchestrator is a 503, and no answer here ever
holds a secret: credentials are created without echoing theirs.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, get_args

from fastapi import APIRouter, Body, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError

from services.io import store
from services.io.auth import AdminDep, OperatorDep, ViewerDep
from shared.agent import EngineDep
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
from shared.errors import MeshError, MeshUnavailable, PeerError
from shared.models import (
    CreateConnection,
    CreateCredential,
    DeleteCredential,
    GetRunbook,
    GetRunbookSession,
    ListConnections,
    ListCredentials,
    ListRunbooks,
    MatchRunbooks,
    RotateCredentialKey,
    SaveRunbook,
    Severity,
    StartRunbookSession,
    TestConnection,
)

router = APIRouter(prefix="/api/v1", tags=["runbooks"])

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)
JsonObject = Annotated[dict[str, Any], Body()]
SEVERITIES = frozenset(get_args(Severity))
TICKET_VALUES = ("title", "description", "host", "service", "source", "environment", "kind")


async def forward(
    request: Request, contract: Contract[Req, Resp], payload: Req, *, incident_id: str | None = None
) -> dict[str, Any]:
    """Ask the orchestrator; its refusal (4xx) reaches the person as it is."""
    try:
        answer = await request.app.state.mesh.call(
            contract,
            payload,
            incident_id=incident_id,
            timeout=request.app.state.io_settings.peer_timeout_s,
        )
    except MeshUnavailable as exc:
        raise HTTPException(503, f"the orchestrator is unreachable: {exc}") from None
    except PeerError as exc:
        if 400 <= exc.status < 500:
            raise HTTPException(exc.status, exc.detail) from None
        raise HTTPException(502, f"the orchestrator failed: {exc.message}") from None
    except MeshError as exc:
        raise HTTPException(502, f"the orchestrator answered out of contract: {exc}") from None
    data: dict[str, Any] = answer.model_dump(mode="json")
    return data


def _build(model: type[Req], data: dict[str, Any]) -> Req:
    """The wire request, or a 422 naming each bad field (never echoing a value)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise HTTPException(422, {"code": "invalid", "problems": problems}) from None


# --- credentials (admin) -------------------------------------------------------------------


@router.post("/credentials", status_code=201)
async def create_credential(body: JsonObject, request: Request, admin: AdminDep) -> dict[str, Any]:
    """``{name, kind: ssh_key|password|token, username?, secret}`` → the credential, no secret."""
    payload = _build(CreateCredential, {**body, "by": admin.username})
    return await forward(request, CREATE_CREDENTIAL, payload)


@router.get("/credentials")
async def list_credentials(request: Request, _admin: AdminDep) -> dict[str, Any]:
    return await forward(request, LIST_CREDENTIALS, ListCredentials())


@router.post("/credentials/rotate-key")
async def rotate_key(request: Request, admin: AdminDep) -> dict[str, Any]:
    """Re-encrypt every secret under a new key (no downtime)."""
    return await forward(request, ROTATE_CREDENTIAL_KEY, RotateCredentialKey(by=admin.username))


@router.delete("/credentials/{name}", status_code=204)
async def delete_credential(name: str, request: Request, admin: AdminDep) -> Response:
    await forward(request, DELETE_CREDENTIAL, DeleteCredential(name=name, by=admin.username))
    return Response(status_code=204)


# --- connections ---------------------------------------------------------------------------


@router.post("/connections", status_code=201)
async def create_connection(
    body: JsonObject, request: Request, user: OperatorDep
) -> dict[str, Any]:
    payload = CreateConnection(connection=body, by=user.username)
    return await forward(request, CREATE_CONNECTION, payload)


@router.get("/connections")
async def list_connections(
    request: Request, _user: ViewerDep, environment: str | None = None
) -> dict[str, Any]:
    return await forward(request, LIST_CONNECTIONS, ListConnections(environment=environment))


@router.post("/connections/{name}/test")
async def test_connection(name: str, request: Request, user: OperatorDep) -> dict[str, Any]:
    """``{ok, detail, latency_ms}``: the target reached with the connection's credential."""
    return await forward(request, TEST_CONNECTION, TestConnection(name=name, by=user.username))


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --- runbooks ------------------------------------------------------------------------------


async def _document(request: Request) -> tuple[str, str]:
    """The body as text and its media type (JSON unless the client says YAML)."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "the runbook document must be UTF-8 text") from None
    return text, request.headers.get("content-type") or "application/json"


@router.post("/runbooks", status_code=201)
async def create_runbook(request: Request, user: OperatorDep) -> dict[str, Any]:
    """A runbook document as JSON, or YAML with ``Content-Type: application/yaml``."""
    text, media = await _document(request)
    payload = SaveRunbook(body=text, content_type=media, by=user.username)
    return await forward(request, SAVE_RUNBOOK, payload)


@router.put("/runbooks/{runbook_id}")
async def put_runbook(runbook_id: str, request: Request, user: OperatorDep) -> dict[str, Any]:
    """Store the document as the runbook's next version."""
    text, media = await _document(request)
    payload = SaveRunbook(body=text, content_type=media, runbook_id=runbook_id, by=user.username)
    return await forward(request, SAVE_RUNBOOK, payload)


@router.get("/runbooks")
async def list_runbooks(request: Request, _user: ViewerDep) -> dict[str, Any]:
    return await forward(request, LIST_RUNBOOKS, ListRunbooks())


@router.post("/runbooks/match")
async def match_runbooks(body: JsonObject, request: Request, _user: ViewerDep) -> dict[str, Any]:
    """``{title, description, labels, severity}`` → ``{matches: [...]}``, best first, each with
    its confidence, factors and explanation. Nothing is started or stored."""
    return await forward(request, MATCH_RUNBOOKS, _build(MatchRunbooks, body))


@router.get("/runbooks/{runbook_id}")
async def get_runbook(
    runbook_id: str, request: Request, _user: ViewerDep, version: int | None = None
) -> dict[str, Any]:
    if version is not None and version < 1:
        raise HTTPException(422, "version must be 1 or more")
    return await forward(request, GET_RUNBOOK, GetRunbook(runbook_id=runbook_id, version=version))


# --- sessions ------------------------------------------------------------------------------


class SessionCreate(BaseModel):
    runbook_id: str = Field(min_length=1, max_length=64)


def ticket_values(ticket: dict[str, Any]) -> dict[str, Any]:
    """What a runbook's placeholders may read from an IO ticket: its view, and what the
    ticket's first ``new_ticket`` carried (host, labels, title...)."""
    opened: dict[str, Any] = next(
        (e["payload"] for e in ticket.get("events", []) if e["task_type"] == "new_ticket"), {}
    )
    values: dict[str, Any] = {
        "id": ticket["incident_id"],
        "title": ticket.get("summary") or "",
        "severity": ticket.get("severity"),
    }
    values.update({k: opened[k] for k in TICKET_VALUES if opened.get(k) not in (None, "")})
    if isinstance(opened.get("labels"), dict):
        values["labels"] = opened["labels"]
    for key in ("alert_status",):
        if opened.get(key):
            values[key] = opened[key]
    return values


@router.post("/tickets/{incident_id}/runbook-sessions", status_code=201)
async def start_session(
    incident_id: str, body: SessionCreate, request: Request, user: OperatorDep, engine: EngineDep
) -> dict[str, Any]:
    """Run a runbook for this ticket (an operator's choice) → ``{session_id, ...}``."""
    ticket = await store.get_ticket(engine, incident_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {incident_id!r}")
    payload = StartRunbookSession(
        incident_id=incident_id,
        runbook_id=body.runbook_id,
        started_by=user.username,
        ticket=ticket_values(ticket),
    )
    return await forward(request, START_RUNBOOK_SESSION, payload, incident_id=incident_id)


@router.get("/tickets/{incident_id}/runbook-matches")
async def ticket_matches(
    incident_id: str, request: Request, _user: ViewerDep, engine: EngineDep
) -> dict[str, Any]:
    """The runbooks for this ticket, ranked now (as ``POST /runbooks/match`` would for its
    title, description, labels and severity); no side effect."""
    ticket = await store.get_ticket(engine, incident_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {incident_id!r}")
    values = ticket_values(ticket)
    severity = values.get("severity")
    payload = _build(
        MatchRunbooks,
        {
            "title": values.get("title") or incident_id,
            "description": values.get("description") or "",
            "labels": values.get("labels") or {},
            "severity": severity if severity in SEVERITIES else "medium",
            "host": values.get("host"),
        },
    )
    answer = await forward(request, MATCH_RUNBOOKS, payload, incident_id=incident_id)
    return {"incident_id": incident_id, **answer}


@router.get("/runbook-sessions/{session_id}")
async def get_session(session_id: str, request: Request, _user: ViewerDep) -> dict[str, Any]:
    return await forward(request, GET_RUNBOOK_SESSION, GetRunbookSession(session_id=session_id))

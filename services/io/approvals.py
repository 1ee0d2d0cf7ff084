"""Approvals: what the orchestrator asked a human to allow, and what the human decided.

The orchestrator sends ``approval_required`` and waits (a LangGraph interrupt, no process
blocked). An operator approves or rejects here; the decision goes back as the
``approval_decision`` task and only once the orchestrator has taken it is the approval
recorded as decided, so a decision is never shown as taken when it was not. Who decided is
the authenticated user, never a field of the request.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from services.io import auth
from services.io.auth import OperatorDep, Principal, ViewerDep
from shared.agent import EngineDep
from shared.contracts import APPROVAL_DECISION
from shared.db import Migration, UtcDateTime, create_tables
from shared.errors import MeshError, MeshUnavailable
from shared.logs import get_logger
from shared.models import ApprovalDecision, ApprovalRequired, utcnow

log = get_logger(__name__)

Status = Literal["pending", "approved", "rejected", "expired", "cancelled"]
Decision = Literal["approve", "reject"]
Option = Literal["retry", "skip"]
"""For a runbook step whose outcome is unknown: approve retries it, or skips it."""

metadata = sa.MetaData()
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("approval_id", sa.String(100), primary_key=True),
    sa.Column("incident_id", sa.String(40), nullable=False, index=True),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("source_agent", sa.String(40), nullable=True),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("delegated_to", sa.String(64), nullable=True),
    sa.Column("delegated_by", sa.String(64), nullable=True),
    sa.Column("decided_by", sa.String(64), nullable=True),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.Column("notes", sa.Text, nullable=True),
    sa.Column("outcome", sa.Text, nullable=True),
)
MIGRATIONS = (Migration(3, "approvals", create_tables(metadata, "approvals")),)


def _view(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return data


# --- store -----------------------------------------------------------------------------------


async def record_required(engine: AsyncEngine, payload: ApprovalRequired) -> dict[str, Any] | None:
    """Store a request once; a repeat of the same approval_id changes nothing (returns None)."""
    async with engine.begin() as conn:
        exists = (
            await conn.execute(
                sa.select(approvals.c.approval_id).where(
                    approvals.c.approval_id == payload.approval_id
                )
            )
        ).first()
        if exists is not None:
            return None
        await conn.execute(
            approvals.insert().values(
                approval_id=payload.approval_id,
                incident_id=payload.incident_id,
                action=payload.action,
                details=payload.details,
                status="pending",
                source_agent=payload.source_agent,
                requested_at=payload.requested_at,
                expires_at=payload.expires_at,
            )
        )
    return await get(engine, payload.approval_id)


async def get(engine: AsyncEngine, approval_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(approvals).where(approvals.c.approval_id == approval_id))
        ).first()
    return _view(row) if row else None


async def list_approvals(
    engine: AsyncEngine,
    *,
    status: str | None = "pending",
    incident_id: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    query = sa.select(approvals).order_by(approvals.c.requested_at.desc()).limit(limit)
    if status and status != "all":
        query = query.where(approvals.c.status == status)
    if incident_id:
        query = query.where(approvals.c.incident_id == incident_id)
    async with engine.connect() as conn:
        return [_view(r) for r in await conn.execute(query)]


async def _transition(
    engine: AsyncEngine, where: Any, values: dict[str, Any], *, skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Move pending approvals matching ``where`` (but not those in ``skip``); return them."""
    async with engine.begin() as conn:
        ids = [
            r.approval_id
            for r in await conn.execute(
                sa.select(approvals.c.approval_id).where(where, approvals.c.status == "pending")
            )
            if r.approval_id not in skip
        ]
        if not ids:
            return []
        await conn.execute(
            approvals.update()
            .where(approvals.c.approval_id.in_(ids), approvals.c.status == "pending")
            .values(**values)
        )
        rows = await conn.execute(sa.select(approvals).where(approvals.c.approval_id.in_(ids)))
        return [_view(r) for r in rows]


async def expire_due(engine: AsyncEngine) -> list[dict[str, Any]]:
    now = utcnow()
    return await _transition(
        engine,
        approvals.c.expires_at <= now,
        {"status": "expired", "decided_at": now, "outcome": "expired before a decision"},
    )


async def end_for_incident(
    engine: AsyncEngine,
    incident_id: str,
    *,
    status: Status,
    reason: str,
    skip: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The incident escalated or closed: its pending approvals can no longer be decided.

    ``skip`` holds approvals whose decision is in flight: the orchestrator may close the
    incident while still answering that decision, and the decision must then stand.
    """
    return await _transition(
        engine,
        approvals.c.incident_id == incident_id,
        {"status": status, "decided_at": utcnow(), "outcome": reason},
        skip=skip,
    )


# --- the service -----------------------------------------------------------------------------


def publish(app: FastAPI, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        app.state.broadcaster.publish("approval", {"approval": row})


async def sweep(app: FastAPI) -> list[dict[str, Any]]:
    """Expire what is past its deadline and tell the consoles."""
    moved = await expire_due(app.state.engine)
    publish(app, moved)
    return moved


def _lock(app: FastAPI, approval_id: str) -> asyncio.Lock:
    locks: dict[str, asyncio.Lock] = app.state.approval_locks
    return locks.setdefault(approval_id, asyncio.Lock())


async def decide(
    app: FastAPI,
    approval_id: str,
    decision: Decision,
    principal: Principal,
    notes: str,
    option: Option | None = None,
) -> dict[str, Any]:
    """Forward the decision to the orchestrator; record it only once the orchestrator took it.

    409 when the approval is no longer pending (here, or at the orchestrator), 403 when it was
    delegated to someone else, 503 (still pending) when the orchestrator cannot be reached.
    """
    lock = _lock(app, approval_id)
    try:
        async with lock:
            return await _decide_locked(app, approval_id, decision, principal, notes, option)
    finally:
        if not lock.locked():
            app.state.approval_locks.pop(approval_id, None)


async def _decide_locked(
    app: FastAPI,
    approval_id: str,
    decision: Decision,
    principal: Principal,
    notes: str,
    option: Option | None = None,
) -> dict[str, Any]:
    engine: AsyncEngine = app.state.engine
    await sweep(app)
    current = await get(engine, approval_id)
    if current is None:
        raise HTTPException(404, f"no approval {approval_id!r}")
    if current["status"] != "pending":
        raise HTTPException(
            409,
            f"approval {approval_id} is {current['status']}"
            + (f" (by {current['decided_by']})" if current.get("decided_by") else ""),
        )
    delegate = current.get("delegated_to")
    if delegate and principal.username != delegate and not principal.can("admin"):
        raise HTTPException(403, f"approval {approval_id} is delegated to {delegate}")
    message = ApprovalDecision(
        approval_id=approval_id,
        incident_id=current["incident_id"],
        decision=decision,
        decided_by=principal.username,
        notes=notes,
        option=option,
    )
    inflight: set[str] = app.state.approvals_inflight
    inflight.add(approval_id)
    try:
        return await _forward(app, current, message, notes)
    finally:
        inflight.discard(approval_id)


async def _forward(
    app: FastAPI, current: dict[str, Any], message: ApprovalDecision, notes: str
) -> dict[str, Any]:
    engine: AsyncEngine = app.state.engine
    settings = app.state.io_settings
    approval_id, decision = message.approval_id, message.decision
    try:
        await app.state.mesh.call(
            APPROVAL_DECISION,
            message,
            incident_id=current["incident_id"],
            idempotency_key=f"io-approval-{approval_id}-{decision}",
            retries=settings.decision_retries,
            timeout=settings.peer_timeout_s,
        )
    except MeshUnavailable as exc:
        log.warning("orchestrator unreachable; approval stays pending", error=str(exc))
        raise HTTPException(
            503, f"the orchestrator is unreachable; the approval is still pending ({exc})"
        ) from None
    except MeshError as exc:  # PeerError (its own status and code) or an invalid answer
        if exc.status == 409:
            moved = await _transition(
                engine,
                approvals.c.approval_id == approval_id,
                {"status": "cancelled", "decided_at": utcnow(), "outcome": str(exc)},
            )
            publish(app, moved)
            raise HTTPException(
                409, f"the orchestrator says this approval is no longer pending: {exc}"
            ) from None
        if exc.status in (403, 404, 422):
            # the orchestrator's own refusal (four-eyes policy, ...): the approval stays
            # pending for someone who may decide it
            raise HTTPException(
                exc.status, f"the orchestrator refused the decision: {exc}"
            ) from None
        raise HTTPException(502, f"the orchestrator refused the decision: {exc}") from None
    moved = await _transition(
        engine,
        approvals.c.approval_id == approval_id,
        {
            "status": "approved" if decision == "approve" else "rejected",
            "decided_by": message.decided_by,
            "decided_at": utcnow(),
            "notes": notes,
            "outcome": "accepted",
        },
    )
    publish(app, moved)
    if not moved:
        raise HTTPException(409, f"approval {approval_id} changed while deciding")
    return moved[0]


async def delegate(app: FastAPI, approval_id: str, to: str, principal: Principal) -> dict[str, Any]:
    engine: AsyncEngine = app.state.engine
    target = await auth.get_user(engine, to)
    if target is None or target["disabled"]:
        raise HTTPException(422, f"no active user {to!r} to delegate to")
    if auth.RANK.get(target["role"], 0) < auth.RANK["operator"]:
        raise HTTPException(422, f"{to} is {target['role']}; approvals need an operator")
    async with _lock(app, approval_id):
        current = await get(engine, approval_id)
        if current is None:
            raise HTTPException(404, f"no approval {approval_id!r}")
        if current["status"] != "pending":
            raise HTTPException(409, f"approval {approval_id} is {current['status']}")
        holder = current.get("delegated_to")
        if holder and principal.username != holder and not principal.can("admin"):
            raise HTTPException(403, f"approval {approval_id} is delegated to {holder}")
        moved = await _transition(
            engine,
            approvals.c.approval_id == approval_id,
            {"delegated_to": to, "delegated_by": principal.username},
        )
    publish(app, moved)
    return moved[0]


# --- the API ---------------------------------------------------------------------------------


class DecisionBody(BaseModel):
    notes: str = Field(default="", max_length=4000)
    option: Option | None = None


class DelegateBody(BaseModel):
    to: str = Field(min_length=1, max_length=64)


class BatchBody(BaseModel):
    ids: list[str] | None = None
    incident_id: str | None = None
    decision: Decision = "approve"
    notes: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def one_selector(self) -> BatchBody:
        if not self.ids and not self.incident_id:
            raise ValueError("give ids or incident_id")
        return self


router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])


@router.get("")
async def get_approvals(
    request: Request,
    _user: ViewerDep,
    engine: EngineDep,
    status: Status | Literal["all"] = "pending",
    incident_id: str | None = None,
) -> list[dict[str, Any]]:
    """Pending approvals by default; ``status=all`` or one status for the others."""
    await sweep(request.app)
    return await list_approvals(engine, status=status, incident_id=incident_id)


@router.get("/{approval_id}")
async def get_approval(
    approval_id: str, request: Request, _user: ViewerDep, engine: EngineDep
) -> dict[str, Any]:
    await sweep(request.app)
    found = await get(engine, approval_id)
    if found is None:
        raise HTTPException(404, f"no approval {approval_id!r}")
    return found


@router.post("/batch")
async def batch(body: BatchBody, request: Request, user: OperatorDep) -> dict[str, Any]:
    """Decide several at once: every pending approval of ``incident_id``, or the ``ids``.

    Each is forwarded on its own; the answer lists each outcome, so a partial failure shows.
    """
    ids = list(body.ids or [])
    if body.incident_id:
        await sweep(request.app)
        pending = await list_approvals(
            request.app.state.engine, status="pending", incident_id=body.incident_id
        )
        ids += [a["approval_id"] for a in pending if a["approval_id"] not in ids]
    results = []
    for approval_id in ids:
        try:
            row = await decide(request.app, approval_id, body.decision, user, body.notes)
            results.append({"approval_id": approval_id, "ok": True, "status": row["status"]})
        except HTTPException as exc:
            results.append(
                {
                    "approval_id": approval_id,
                    "ok": False,
                    "code": exc.status_code,
                    "error": exc.detail,
                }
            )
    return {
        "decided": sum(1 for r in results if r["ok"]),
        "failed": sum(1 for r in results if not r["ok"]),
        "results": results,
    }


@router.post("/{approval_id}/approve")
async def approve(
    approval_id: str, request: Request, user: OperatorDep, body: DecisionBody | None = None
) -> dict[str, Any]:
    given = body or DecisionBody()
    return await decide(request.app, approval_id, "approve", user, given.notes, given.option)


@router.post("/{approval_id}/reject")
async def reject(
    approval_id: str, request: Request, user: OperatorDep, body: DecisionBody | None = None
) -> dict[str, Any]:
    return await decide(request.app, approval_id, "reject", user, (body or DecisionBody()).notes)


@router.post("/{approval_id}/delegate")
async def post_delegate(
    approval_id: str, body: DelegateBody, request: Request, user: OperatorDep
) -> dict[str, Any]:
    """Hand the decision to another operator; afterwards only they (or an admin) decide."""
    return await delegate(request.app, approval_id, body.to, user)

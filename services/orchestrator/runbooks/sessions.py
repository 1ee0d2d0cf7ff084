"""Runbook execution sessions: their index, starting one, reading one, deciding its approvals.

A session is a durable LangGraph run (``runbooks/flow.py``) driven by the orchestrator's
:class:`~services.orchestrator.runner.Runner` exactly as an incident is: the checkpoint is
the truth, ``orchestrator_sessions`` is the index the scheduler and the API read (it has the
incident index's run columns, so :class:`~services.orchestrator.store.RunStore` serves both),
and ``orchestrator_session_inbox`` holds approval decisions until the graph has taken them.

Two columns are the session's own safety:

- ``target``/``created_at``: the frequency guard counts recent sessions of a runbook on a
  target (ONAP's FrequencyLimiter), so a flapping alert cannot start an action storm;
- ``running``: the key of the non-idempotent step attempt that was started. It is set in one
  conditional UPDATE right before the action runs, after the step was checkpointed as
  ``running``; finding it already set means the process died while that attempt ran, so the
  step's outcome is unknown and a person decides (see ``flow.execute``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.orchestrator.flow.effects import Deps
from services.orchestrator.runbooks.connectors import ConnectorPool
from services.orchestrator.runbooks.inventory import Inventory
from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.store import RunStore, run_columns
from shared.db import Migration, UtcDateTime, create_tables, migrate
from shared.errors import TaskFailed
from shared.models import utcnow

OWNER = "orchestrator.sessions"
APPROVAL_PREFIX = "APR-RBS-"
"""Session approvals are told apart from an incident's by this prefix of their id."""

_meta = sa.MetaData()
sessions = sa.Table(
    "orchestrator_sessions",
    _meta,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("incident_id", sa.String(64), nullable=False, index=True),
    sa.Column("runbook_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("started_by", sa.String(64), nullable=False),
    sa.Column("running", sa.String(64), nullable=True),
    # the run index, as orchestrator_incidents has it (RunStore and the Runner read these)
    *run_columns(phase_length=16),
    sa.Index("ix_orchestrator_sessions_due", "final", "due_at"),
    sa.Index("ix_orchestrator_sessions_guard", "runbook_id", "target", "created_at"),
)
session_inbox = sa.Table(
    "orchestrator_session_inbox",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), nullable=False, index=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (
    Migration(
        1,
        "runbook sessions and their inbox",
        create_tables(_meta, "orchestrator_sessions", "orchestrator_session_inbox"),
    ),
)
SESSIONS = RunStore(sessions, session_inbox, "session_id")


async def init(engine: AsyncEngine) -> list[int]:
    return await migrate(engine, OWNER, MIGRATIONS)


@dataclass
class SessionDeps(Deps):
    """What session nodes need besides the incident nodes' dependencies."""

    pool: ConnectorPool
    inventory: Inventory
    runbook_settings: RunbookSettings


def target_of(ticket: dict[str, Any], incident_id: str) -> str:
    """What the frequency guard counts runs on: the ticket's host, else the ticket itself."""
    host = ticket.get("host")
    return str(host) if isinstance(host, str) and host.strip() else incident_id


async def create(
    engine: AsyncEngine,
    *,
    incident_id: str,
    runbook_id: str,
    version: int,
    severity: str,
    started_by: str,
    ticket: dict[str, Any],
    start: dict[str, Any],
    limit: int,
    window: timedelta,
) -> str:
    """Insert a new session, due now, unless the frequency guard refuses it (409; not 429,
    which the mesh client retries as transient).

    The count and the insert are one critical section per runbook and target
    (:func:`_guard_lock`), so starts racing from any number of requests or replicas let
    exactly ``limit`` through.
    """
    target = target_of(ticket, incident_id)
    session_id = f"RBS-{uuid.uuid4().hex[:12]}"
    async with engine.begin() as conn:
        await _guard_lock(conn, runbook_id, target)
        now = utcnow()  # read under the lock: the window is judged after the racers ahead
        recent = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(sessions)
            .where(
                sessions.c.runbook_id == runbook_id,
                sessions.c.target == target,
                sessions.c.created_at > now - window,
            )
        )
        if (recent or 0) >= limit:
            raise TaskFailed(
                f"frequency guard: runbook {runbook_id!r} already ran {recent} time(s) on "
                f"{target} in the last {window.total_seconds():g}s (limit "
                f"CXM_RUNBOOK_SESSION_LIMIT={limit} per CXM_RUNBOOK_SESSION_WINDOW_S)",
                code="session_limit",
                status=409,
            )
        await conn.execute(
            sessions.insert().values(
                session_id=session_id,
                incident_id=incident_id,
                runbook_id=runbook_id,
                version=version,
                target=target,
                started_by=started_by,
                severity=severity,
                status="running",
                phase="runbook",
                waiting="run",
                due_at=now,
                final=False,
                start={**start, "session_id": session_id},
                view={},
                failures=0,
                created_at=now,
                updated_at=now,
            )
        )
    return session_id


async def _guard_lock(conn: AsyncConnection, runbook_id: str, target: str) -> None:
    """Serialise the guard's count-then-insert for one runbook on one target until the
    transaction ends.

    Under READ COMMITTED two transactions both count ``limit - 1`` and both insert, so the
    count needs a lock. PostgreSQL: a transaction-scoped advisory lock on the pair (released
    by the commit or rollback, so a crash cannot leave it held; other pairs do not wait).
    SQLite: a write that matches no row takes the database's single RESERVED lock now rather
    than at the INSERT, so a second writer waits (busy timeout) until this one commits and
    then counts its row; pysqlite's deferred BEGIN would otherwise let both read first.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"cxm-session-guard:{runbook_id}:{target}"},
        )
    else:
        await conn.execute(sessions.update().where(sa.false()).values(running=sessions.c.running))


async def claim_attempt(engine: AsyncEngine, session_id: str, key: str) -> bool:
    """Record that attempt ``key`` of a non-idempotent step starts now; False when it was
    recorded before (the process died while it ran: its outcome is unknown)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            sessions.update()
            .where(
                sessions.c.session_id == session_id,
                sa.or_(sessions.c.running.is_(None), sessions.c.running != key),
            )
            .values(running=key, updated_at=utcnow())
        )
    return bool(result.rowcount == 1)


def is_session_approval(approval_id: str) -> bool:
    return approval_id.startswith(APPROVAL_PREFIX)


def session_of_approval(approval_id: str) -> str:
    """``APR-RBS-<session>-<step key>`` → the session id."""
    rest = approval_id.removeprefix(APPROVAL_PREFIX)
    return "RBS-" + rest.split("-", 1)[0]


async def decide(
    engine: AsyncEngine,
    *,
    approval_id: str,
    decision: str,
    decided_by: str,
    notes: str,
    option: str | None,
    four_eyes: bool,
) -> str:
    """Take an operator's decision on a session's step; the session id it belongs to.

    Refused with 403 ``four_eyes`` when the policy forbids the session's starter to
    approve, and 409 ``approval_not_pending`` unless it is pending right now (claiming is
    the run index's conditional UPDATE, so a decision and the timeout never both win).
    """
    session_id = session_of_approval(approval_id)
    row = await SESSIONS.get(engine, session_id)
    if row is None:
        raise TaskFailed(f"unknown session {session_id}", code="unknown_session", status=404)
    if four_eyes and decision == "approve" and decided_by == row["started_by"]:
        raise TaskFailed(
            f"four-eyes policy (CXM_RUNBOOK_FOUR_EYES): {decided_by} started session "
            f"{session_id} and cannot approve its steps; another operator must",
            code="four_eyes",
            status=403,
        )
    resume = {
        "kind": "approval",
        "approval_id": approval_id,
        "decision": decision,
        "decided_by": decided_by,
        "notes": notes,
        "option": option,
        "decided_at": utcnow().isoformat(),
    }
    if not await SESSIONS.claim_approval(engine, session_id, approval_id, resume):
        raise TaskFailed(
            f"approval {approval_id} of {session_id} is not pending",
            code="approval_not_pending",
            status=409,
        )
    return session_id


def view_of(values: dict[str, Any]) -> dict[str, Any]:
    """What the session row keeps of the checkpoint for the API: DESIGN's session fields."""
    return {
        "steps": [
            {k: step.get(k) for k in _STEP_FIELDS if k in step}
            for step in values.get("steps") or []
        ],
        "verification": values.get("verification"),
        "reason": values.get("reason"),
    }


_STEP_FIELDS = (
    "name",
    "phase",
    "status",
    "exit_code",
    "output",
    "started_at",
    "finished_at",
    "connection",
    "command",
    "reason",
    "attempts",
    "approval_id",
)


async def describe(engine: AsyncEngine, session_id: str) -> dict[str, Any] | None:
    """A session as ``GET /api/v1/runbook-sessions/{id}`` shows it (never a secret: steps
    carry the command as displayed for approval and the output the target printed)."""
    row = await SESSIONS.get(engine, session_id)
    if row is None:
        return None
    view = row["view"] or {}
    pending = (
        {"approval_id": row["approval_id"], "expires_at": row["approval_expires_at"].isoformat()}
        if row["approval_id"] and row["approval_expires_at"] is not None
        else None
    )
    return {
        "session_id": row["session_id"],
        "incident_id": row["incident_id"],
        "runbook_id": row["runbook_id"],
        "version": row["version"],
        "started_by": row["started_by"],
        "target": row["target"],
        "status": row["status"] if row["status"] != "new" else "running",
        "steps": view.get("steps", []),
        "verification": view.get("verification"),
        "reason": view.get("reason"),
        "pending_approval": pending,
        "final": row["final"],
        "last_error": row["last_error"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }

"""The orchestrator's own tables: one row per incident (its timer and pending approval) and
an inbox of resume values (approval decisions, signals) waiting to be fed to the graph.

The LangGraph checkpoint is the truth about where an incident's flow stands; this row is the
index the scheduler and the REST API read: when the incident is due next, and which approval
it waits for. Claiming an approval is one conditional UPDATE, so a decision and a timeout (or
two operators) can never both win.

The same index serves runbook sessions (``runbooks/sessions.py``): :class:`RunStore` is the
index over any table of runs with these columns and its inbox, so one runner and one
scheduler pattern drive incidents and sessions alike.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.models import utcnow


def run_columns(*, phase_length: int = 8) -> list[sa.Column[Any]]:
    """The columns the :class:`Runner` and :class:`RunStore` read on any run table (incidents,
    runbook sessions): status and phase, when it is due next, the pending approval, the
    start payload, the row's view and the failure count. Fresh objects on every call, since
    a column belongs to one table."""
    return [
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("phase", sa.String(phase_length), nullable=False),
        sa.Column("tier", sa.String(16), nullable=True),
        sa.Column("waiting", sa.String(16), nullable=True),
        sa.Column("wait_reason", sa.String(64), nullable=True),
        sa.Column("due_at", UtcDateTime, nullable=True),
        sa.Column("approval_id", sa.String(128), nullable=True),
        sa.Column("approval_claimed", sa.String(128), nullable=True),
        sa.Column("approval_action", sa.String(32), nullable=True),
        sa.Column("approval_expires_at", UtcDateTime, nullable=True),
        sa.Column("final", sa.Boolean, nullable=False, default=False),
        sa.Column("start", sa.JSON, nullable=False),
        sa.Column("view", sa.JSON, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, default=0),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    ]


_meta = sa.MetaData()
incidents = sa.Table(
    "orchestrator_incidents",
    _meta,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    *run_columns(),
    sa.Index("ix_orchestrator_incidents_due", "final", "due_at"),
)
inbox = sa.Table(
    "orchestrator_inbox",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(64), nullable=False, index=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (
    Migration(
        1,
        "incidents and inbox",
        create_tables(_meta, "orchestrator_incidents", "orchestrator_inbox"),
    ),
)


async def create(
    engine: AsyncEngine, *, incident_id: str, severity: str, start: dict[str, Any]
) -> bool:
    """Insert a new incident, due now; False when it already exists."""
    now = utcnow()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                incidents.insert().values(
                    incident_id=incident_id,
                    severity=severity,
                    status="new",
                    phase="0",
                    waiting="run",
                    due_at=now,
                    final=False,
                    start=start,
                    view={},
                    failures=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class RunStore:
    """The index of one kind of durable run: ``runs`` has the columns of
    ``orchestrator_incidents`` (status, timer, pending approval, ...) keyed by ``key``, and
    ``inbox`` holds resume values with a ``key`` column and an ``id``."""

    runs: sa.Table
    inbox: sa.Table
    key: str

    def _id(self, table: sa.Table) -> sa.Column[Any]:
        column: sa.Column[Any] = table.c[self.key]
        return column

    async def get(self, engine: AsyncEngine, run_id: str) -> dict[str, Any] | None:
        async with engine.connect() as conn:
            row = (
                await conn.execute(sa.select(self.runs).where(self._id(self.runs) == run_id))
            ).first()
        return dict(row._mapping) if row is not None else None

    async def list_all(
        self, engine: AsyncEngine, *, open_only: bool = False
    ) -> list[dict[str, Any]]:
        query = sa.select(self.runs).order_by(self.runs.c.created_at)
        if open_only:
            query = query.where(self.runs.c.final.is_(False))
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def update(self, engine: AsyncEngine, run_id: str, **values: Any) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                self.runs.update()
                .where(self._id(self.runs) == run_id)
                .values(updated_at=utcnow(), **values)
            )

    async def set_pending_approval(
        self, engine: AsyncEngine, run_id: str, approval_id: str
    ) -> None:
        """Show ``approval_id`` as pending unless a decision (or the timeout) has claimed it."""
        runs = self.runs
        async with engine.begin() as conn:
            await conn.execute(
                runs.update()
                .where(
                    self._id(runs) == run_id,
                    sa.or_(
                        runs.c.approval_claimed.is_(None),
                        runs.c.approval_claimed != approval_id,
                    ),
                )
                .values(approval_id=approval_id)
            )

    async def schedule(
        self, engine: AsyncEngine, now: datetime, running: Collection[str] = ()
    ) -> tuple[list[str], datetime | None]:
        """One scheduler pass: the open runs to start now (timer due or inbox not empty) that
        are not ``running``, and the earliest later timer of the others.

        Runs in flight are left out of both: their due time is usually past (a step that
        calls many peers takes a while), and counting it made the scheduler poll the database
        every few milliseconds until they finished. Their end wakes the scheduler instead.
        Both are indexed reads in the database, however many runs are parked.
        """
        runs = self.runs
        open_ = [runs.c.final.is_(False)]
        if running:
            open_.append(self._id(runs).not_in(sorted(running)))
        has_inbox = sa.exists().where(self._id(self.inbox) == self._id(runs))
        due = sa.select(self._id(runs)).where(*open_, sa.or_(runs.c.due_at <= now, has_inbox))
        later = sa.select(sa.func.min(runs.c.due_at)).where(*open_, runs.c.due_at > now)
        async with engine.connect() as conn:
            start = [r[0] for r in (await conn.execute(due)).all()]
            upcoming: datetime | None = await conn.scalar(later)
        if upcoming is not None and upcoming.tzinfo is None:
            upcoming = upcoming.replace(tzinfo=UTC)
        return start, upcoming

    async def push(self, engine: AsyncEngine, run_id: str, value: dict[str, Any]) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                self.inbox.insert().values(
                    {self.key: run_id, "value": value, "created_at": utcnow()}
                )
            )

    async def peek(self, engine: AsyncEngine, run_id: str) -> tuple[int, dict[str, Any]] | None:
        """The oldest inbox value of a run, left in place until the graph has taken it."""
        inbox = self.inbox
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(inbox.c.id, inbox.c.value)
                    .where(self._id(inbox) == run_id)
                    .order_by(inbox.c.id)
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        value: dict[str, Any] = row.value
        return int(row.id), value

    async def delete(self, engine: AsyncEngine, inbox_id: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(self.inbox.delete().where(self.inbox.c.id == inbox_id))

    async def drop_inbox(self, engine: AsyncEngine, run_id: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(self.inbox.delete().where(self._id(self.inbox) == run_id))

    async def claim_approval(
        self, engine: AsyncEngine, run_id: str, approval_id: str, resume: dict[str, Any] | None
    ) -> bool:
        """Atomically take a pending approval; queue ``resume`` for the graph when given."""
        runs = self.runs
        async with engine.begin() as conn:
            result = await conn.execute(
                runs.update()
                .where(
                    self._id(runs) == run_id,
                    runs.c.approval_id == approval_id,
                    runs.c.final.is_(False),
                )
                .values(approval_id=None, approval_claimed=approval_id, updated_at=utcnow())
            )
            if result.rowcount != 1:
                return False
            if resume is not None:
                await conn.execute(
                    self.inbox.insert().values(
                        {self.key: run_id, "value": resume, "created_at": utcnow()}
                    )
                )
        return True


INCIDENTS = RunStore(incidents, inbox, "incident_id")
"""The incidents' index; the module functions below are its methods."""
get = INCIDENTS.get
list_all = INCIDENTS.list_all
update = INCIDENTS.update
set_pending_approval = INCIDENTS.set_pending_approval
schedule = INCIDENTS.schedule
push = INCIDENTS.push
peek = INCIDENTS.peek
delete = INCIDENTS.delete
drop_inbox = INCIDENTS.drop_inbox
claim_approval = INCIDENTS.claim_approval

"""A durable outbox: tasks for other agents are written to the sender's database first.

``put`` commits the task in the sender's own database and wakes the deliverer, which sends
tasks to each peer in the order they were put, with their idempotency key, retrying with
backoff while the peer is down. A peer that is down therefore delays events but never loses
them, and a sender that restarts resumes delivery from its table. A task the peer refuses
(4xx) can never succeed; it is marked dead, logged, and skipped so it does not block the
rest.

``put(CONTRACT, request, key=...)`` queues a task of a contract (``shared.contracts``);
senders that write rows in their own transaction build them with :func:`outbox_row`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import CONTRACTS, Contract, Req
from shared.db import Migration, UtcDateTime, create_tables
from shared.errors import MeshUnavailable, PeerError
from shared.logs import get_logger
from shared.mesh import MeshClient, backoff_delay
from shared.models import utcnow

log = get_logger(__name__)

_BATCHES: dict[tuple[str, str], Contract[Any, Any]] = {
    (c.agent, c.task_type): c.batch for c in CONTRACTS if c.batch is not None
}
"""(peer, task type) -> the contract that takes a run of such rows in one request."""
REFUSED = "refused"

_meta = sa.MetaData()
outbox_table = sa.Table(
    "outbox",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent", sa.String(32), nullable=False),
    sa.Column("task_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("incident_id", sa.String(40), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Column("dead", sa.Boolean, nullable=False, default=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_outbox_pending", "delivered_at", "dead", "agent", "id"),
)
OUTBOX_MIGRATIONS = (Migration(1, "outbox", create_tables(_meta, "outbox")),)


def outbox_row(
    contract: Contract[Req, Any],
    request: Req,
    *,
    key: str | None = None,
    incident_id: str | None = None,
) -> dict[str, Any]:
    """An ``outbox_table`` row for ``contract``: for a sender that inserts it in its own
    transaction (then calls :meth:`Outbox.wake`), so the task and its cause commit together.
    Every row has every column, so a list of them is one ``executemany``."""
    _check(contract, request)
    return _row(contract.agent, contract.task_type, request, key, incident_id)


def _check(contract: Contract[Any, Any], request: BaseModel) -> None:
    if not isinstance(request, contract.request):
        raise TypeError(
            f"{contract!r} takes a {contract.request.__name__}, not a {type(request).__name__}"
        )


def _row(
    agent: str,
    task_type: str,
    payload: BaseModel | dict[str, Any],
    key: str | None,
    incident_id: str | None,
) -> dict[str, Any]:
    data = (
        payload.model_dump(mode="json", exclude_none=True)
        if isinstance(payload, BaseModel)
        else payload
    )
    now = utcnow()
    return {
        "agent": agent,
        "task_type": task_type,
        "payload": data,
        "incident_id": incident_id or data.get("incident_id"),
        "idempotency_key": key or uuid.uuid4().hex,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "delivered_at": None,
        "dead": False,
        "last_error": None,
    }


class Outbox:
    """Durable, ordered, at-least-once delivery of tasks to peers (idempotent on their side)."""

    def __init__(
        self, engine: AsyncEngine, mesh: MeshClient, *, batch: int = 50, max_backoff_s: float = 30.0
    ):
        self.engine = engine
        self.mesh = mesh
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unbatched: set[str] = set()
        """Peers that refused a batch task as unknown: their rows go one by one from then on."""

    async def start(self) -> None:
        await _migrate(self.engine)
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def put(
        self,
        contract: Contract[Req, Any],
        request: Req,
        *,
        key: str | None = None,
        incident_id: str | None = None,
    ) -> bool:
        """Queue ``request`` for ``contract``'s agent; False when ``key`` was already queued."""
        _check(contract, request)
        row = _row(contract.agent, contract.task_type, request, key, incident_id)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(outbox_table.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        self._wake.set()
        return True

    def wake(self) -> None:
        """Deliver now: for senders that insert outbox rows in their own transaction."""
        self._wake.set()

    async def pending(self) -> int:
        t = outbox_table
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(t)
                .where(t.c.delivered_at.is_(None), t.c.dead.is_(False))
            )
        return int(count or 0)

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is delivered (tests and shutdown use it)."""
        async with asyncio.timeout(timeout):
            while await self.pending():
                self._wake.set()
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        while True:
            # Cleared before the pass, not after: a put() during the pass must wake the next one.
            self._wake.clear()
            try:
                wait = await self._deliver_due()
            except Exception:  # the loop must survive a database hiccup; it is logged
                log.exception("outbox delivery pass failed")
                wait = 1.0
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wake-up fires, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _deliver_due(self) -> float:
        """Deliver what is due, oldest first per peer; return seconds until the next try.

        Each peer's oldest ``batch`` rows are read on their own: a peer that is down with a
        backlog must not hide the rows of the peers behind it (one batch over all peers,
        oldest first, once held nothing but a stopped audit agent's events, and IO heard
        nothing until audit came back).
        """
        t = outbox_table
        now = utcnow()
        pending = sa.and_(t.c.delivered_at.is_(None), t.c.dead.is_(False))
        async with self.engine.connect() as conn:
            agents = (await conn.execute(sa.select(t.c.agent).where(pending).distinct())).all()
            rows: list[sa.Row[Any]] = []
            for (agent,) in agents:
                rows += (
                    await conn.execute(
                        sa.select(*_ROW_COLUMNS)
                        .where(pending, t.c.agent == agent)
                        .order_by(t.c.id)
                        .limit(self.batch)
                    )
                ).all()
        rows.sort(key=lambda row: row.id)
        full = {agent for (agent,) in agents if sum(r.agent == agent for r in rows) == self.batch}
        blocked: set[str] = set()
        next_wait = 5.0
        progressed: set[str] = set()
        sent: set[int] = set()

        def settle(agent: str, wait: float | None) -> float:
            """Note a row's outcome: done with (None), or its peer waits ``wait`` seconds."""
            if wait is None:
                progressed.add(agent)
                return next_wait
            blocked.add(agent)
            return wait

        for row in rows:
            if row.agent in blocked or row.id in sent:
                continue
            if row.next_attempt_at > now:
                blocked.add(row.agent)
                next_wait = min(next_wait, (row.next_attempt_at - now).total_seconds())
                continue
            run = self._batchable(row, rows, now)
            if len(run) > 1:
                sent.update(r.id for r in run)
                outcome = await self._send_batch(run)
                if outcome is None:  # delivered, all of them
                    progressed.add(row.agent)
                    continue
                if outcome != REFUSED:  # the peer is down: the first row waits
                    blocked.add(row.agent)
                    next_wait = min(next_wait, float(outcome))
                    continue
                # refused as a batch: each row on its own, as if there were no batch task
                for single in run:
                    if row.agent in blocked:
                        break
                    next_wait = min(next_wait, settle(row.agent, await self._send_one(single)))
                continue
            next_wait = min(next_wait, settle(row.agent, await self._send_one(row)))
        if progressed & full:
            return 0.0  # a peer's full batch went out: there may be more right behind it
        return next_wait

    def _batchable(
        self, first: sa.Row[Any], rows: list[sa.Row[Any]], now: Any
    ) -> list[sa.Row[Any]]:
        """``first`` and the rows right behind it for the same peer that can go in one task:
        the same task type, with a batch contract, due, up to ``batch`` (order kept)."""
        batch = _BATCHES.get((first.agent, first.task_type))
        if batch is None or first.agent in self._unbatched:
            return [first]
        run = []
        for row in rows:
            if row.agent != first.agent or row.id < first.id:
                continue
            if row.task_type != first.task_type or row.next_attempt_at > now:
                break
            run.append(row)
            if len(run) == self.batch:
                break
        return run

    async def _send_one(self, row: sa.Row[Any]) -> float | None:
        """Deliver one row; None when it is done with (delivered, or refused and dead),
        else the seconds until its retry (the peer is down: its rows behind it wait)."""
        try:
            await self.mesh.send(
                row.agent,
                row.task_type,
                orjson.Fragment(row.payload),
                incident_id=row.incident_id,
                idempotency_key=row.idempotency_key,
                retries=0,
            )
        except PeerError as exc:
            log.error(
                "outbox task refused by peer; dropped",
                agent=row.agent,
                task_type=row.task_type,
                error=str(exc),
            )
            await self._mark(row.id, dead=True, error=str(exc))
            return None
        except MeshUnavailable as exc:
            return await self._retry_later(row, exc)
        await self._mark(row.id, delivered=True)
        return None

    async def _send_batch(self, run: list[sa.Row[Any]]) -> float | str | None:
        """Deliver ``run`` (one peer's rows of one task type, oldest first) as one task of the
        type's batch contract, each row with its own idempotency key, and mark them delivered
        in one transaction. None when delivered; the seconds until the retry of the first row
        when the peer is down; ``"refused"`` when the peer refused the batch (each row then
        goes on its own, so only a row the peer can never take is dropped)."""
        first = run[0]
        batch = _BATCHES[(first.agent, first.task_type)]
        items = [{"key": r.idempotency_key, "payload": orjson.Fragment(r.payload)} for r in run]
        try:
            await self.mesh.send(
                first.agent,
                batch.task_type,
                {"items": items},
                # the same rows again are the same task (their keys are unique across senders)
                idempotency_key=hashlib.sha256(
                    "\n".join(r.idempotency_key for r in run).encode()
                ).hexdigest(),
                retries=0,
            )
        except PeerError as exc:
            if exc.status in (400, 404):  # a peer without the batch task (an older version)
                self._unbatched.add(first.agent)
            log.warning(
                "outbox batch refused by peer; sending one by one",
                agent=first.agent,
                task_type=batch.task_type,
                rows=len(run),
                error=str(exc),
            )
            return REFUSED
        except MeshUnavailable as exc:
            return await self._retry_later(first, exc)
        delivered = utcnow()
        t = outbox_table
        async with self.engine.begin() as conn:
            await conn.execute(
                t.update().where(t.c.id.in_([r.id for r in run])).values(delivered_at=delivered)
            )
        return None

    async def _retry_later(self, row: sa.Row[Any], exc: MeshUnavailable) -> float:
        delay = max(0.05, backoff_delay(row.attempts, base=0.5, cap=self.max_backoff_s))
        await self._mark(row.id, error=str(exc), retry_in=delay, attempts=row.attempts + 1)
        return delay

    async def _mark(
        self,
        row_id: int,
        *,
        delivered: bool = False,
        dead: bool = False,
        error: str | None = None,
        retry_in: float | None = None,
        attempts: int | None = None,
    ) -> None:
        values: dict[str, Any] = {}
        if delivered:
            values["delivered_at"] = utcnow()
        if dead:
            values["dead"] = True
        if error is not None:
            values["last_error"] = error[:2000]
        if retry_in is not None:
            values["next_attempt_at"] = utcnow() + timedelta(seconds=retry_in)
        if attempts is not None:
            values["attempts"] = attempts
        async with self.engine.begin() as conn:
            await conn.execute(
                outbox_table.update().where(outbox_table.c.id == row_id).values(**values)
            )


_ROW_COLUMNS = [
    *(c for c in outbox_table.c if c.name != "payload"),
    sa.cast(outbox_table.c.payload, sa.Text).label("payload"),
]
"""An outbox row as the deliverer reads it: the payload as its stored JSON text, which goes
into the request body as it is (``orjson.Fragment``). Why: the payloads were decoded with the
stdlib only to be encoded again; the correlator's grouped audit events list every alert of a
write, and that round trip was ~5 % of its CPU under 100-alert batches. The peer parses the
same text the sender stored."""


async def _migrate(engine: AsyncEngine) -> None:
    from shared.db import migrate

    await migrate(engine, "outbox", OUTBOX_MIGRATIONS)

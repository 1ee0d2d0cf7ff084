"""Persistence of the correlation state: the group-commit writer and the reload that undoes it.

Requests decide in memory, then queue their write set and wait; one background task writes
everything queued since its last write in one transaction (a group commit), so the database
sees one transaction per burst of requests rather than per request. When a write fails,
every waiter gets :class:`WriteFailed` (the caller answers 503) and memory is rebuilt from
the database by :func:`load`, which holds exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.correlator import store
from services.correlator.dampening import LinkFlapState
from services.correlator.decide import Decision, Rules
from services.correlator.silences import Matcher, Silence
from services.correlator.state import AlertBrief, CorrelationState, DedupEntry, Incident
from shared.contracts import AUDIT_EVENT
from shared.logs import get_logger
from shared.models import NormalizedAlert
from shared.outbox import Outbox

log = get_logger(__name__)

AUDIT_WAKE_S = 0.25
"""Seconds: the outbox is woken at most this often for writes that only carry audit events."""


class WriteFailed(Exception):
    """The database refused a write; nothing of that step was acknowledged."""


class GroupWriter:
    """One writer task; :meth:`commit` returns once the write set is in the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        outbox: Outbox | None,
        prepare: Callable[[store.WriteSet], None],
        reload: Callable[[], Awaitable[None]],
    ):
        """``prepare`` completes a merged write set (its grouped audit events) just before it is
        written; ``reload`` rebuilds memory after a failed write."""
        self.engine = engine
        self.outbox = outbox
        self.prepare = prepare
        self.reload = reload
        self._queue: list[tuple[store.WriteSet, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._outbox_woken = 0.0
        self._outbox_wake: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        self._ready.set()
        self._held: AsyncConnection | None = None
        self._lane: store.SqliteLane | None = None
        self._direct = engine.dialect.name == "sqlite" and engine.url.database not in (
            None,
            "",
            ":memory:",
        )

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._run(), name="correlator-writer")

    async def abandon(self) -> None:
        """Fail what is still queued (the writer task is gone): nobody waits forever; give
        the connection the writer held back to the pool."""
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(WriteFailed("correlator stopping"))
        self._queue.clear()
        if self._outbox_wake is not None:
            self._outbox_wake.cancel()
        await self._release()

    async def commit(self, ws: store.WriteSet) -> None:
        if not ws:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((ws, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        """Group commit: everything queued since the last write goes in one transaction."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            batch, self._queue = self._queue, []
            try:
                # Inside the try: if this loop died, every later request would wait forever.
                ws = store.WriteSet.merge([ws for ws, _ in batch])
                self.prepare(ws)
                await self._write(ws)
            except Exception as exc:  # every waiter gets the error; memory is rebuilt below
                log.exception("correlator write failed; reloading state from the database")
                await self._recover(batch, exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            if ws.outbox and self.outbox is not None:
                # Rows were written in our own transaction; tell the deliverer they are there.
                self._wake_outbox(self.outbox, ws)

    async def settled(self) -> None:
        """Return once memory holds what the database holds (at once, unless a failed write
        is being undone): a decision must never be made on a state being rebuilt."""
        if not self._ready.is_set():
            await self._ready.wait()

    async def _recover(
        self, batch: list[tuple[store.WriteSet, asyncio.Future[None]]], exc: Exception
    ) -> None:
        """After a failed write: fail its waiters and every write set queued behind it (they
        were decided on memory that held the failed changes), then rebuild memory from the
        database while new decisions wait (:meth:`settled`)."""
        self._ready.clear()
        try:
            stale, self._queue = batch + self._queue, []
            for _, fut in stale:
                if not fut.done():
                    fut.set_exception(WriteFailed(f"{type(exc).__name__}: {exc}"))
            await self._release()  # the next write takes a fresh connection
            try:
                await self.reload()
            except Exception:  # the database may still be down; the next write retries
                log.exception("correlator reload failed")
        finally:
            self._ready.set()

    async def _write(self, ws: store.WriteSet) -> None:
        """One transaction. On a SQLite file, a write of the common rows only (alerts,
        incidents, links, outbox: nearly every write of a storm) is one call on the driver's
        thread over a connection this writer holds (:func:`store.commit_statements`: BEGIN,
        the statements, COMMIT); anything else goes through SQLAlchemy's transaction.

        Why: through ``engine.begin()`` a write was four round trips to aiosqlite's thread
        (the statements, the commit, the pool's reset of the returned connection, each
        waking the event loop) plus SQLAlchemy's transaction and pool work, and single-alert
        POSTs wait for their group's write: its length is their rate. The commit is the same
        SQLite commit, made before any waiter is answered.
        """
        if self._direct and store.only_common_rows(ws):
            lane = await self._hold()
            if lane is not None:
                statements = store.sqlite_statements(ws)
                if statements:
                    await lane.run(store.commit_statements, lane.db, statements)
                return
        async with self.engine.begin() as conn:
            await store.apply(conn, ws)

    async def _hold(self) -> store.SqliteLane | None:
        if self._held is None:
            self._held = await self.engine.connect()
            self._lane = await store.SqliteLane.of(self._held)
            self._direct = self._lane is not None  # not aiosqlite as known: SQLAlchemy's way
        return self._lane

    async def _release(self) -> None:
        held, self._held, self._lane = self._held, None, None
        if held is not None:
            try:
                await held.close()
            except Exception:  # a broken connection: the pool discards it
                log.exception("correlator writer connection did not close cleanly")

    def _wake_outbox(self, outbox: Outbox, ws: store.WriteSet) -> None:
        """Wake the deliverer at once for a task a peer acts on (a ticket, a signal); for
        writes of audit events only, at most every :data:`AUDIT_WAKE_S`.

        Why: under a stream of small writes (single-alert POSTs) each write woke a delivery
        pass of its own (two reads, one peer call, one update) for a few grouped audit
        events, which cost the event loop about as much as the ingest itself. Deferred by at most
        250 ms, the rows of several writes go in one pass and one batch call (at 50 ms the
        passes were still 12 % of the process's samples under single POSTs: each is two reads,
        an HTTP call and an update, whatever it carries). They are committed either way: a
        deferred wake delays an audit record's delivery, never its durability.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        urgent = any(row["task_type"] != AUDIT_EVENT.task_type for row in ws.outbox)
        if urgent or now - self._outbox_woken >= AUDIT_WAKE_S:
            if self._outbox_wake is not None:
                self._outbox_wake.cancel()
                self._outbox_wake = None
            self._outbox_woken = now
            outbox.wake()
        elif self._outbox_wake is None:
            self._outbox_wake = loop.call_at(
                self._outbox_woken + AUDIT_WAKE_S, self._late_wake, outbox
            )

    def _late_wake(self, outbox: Outbox) -> None:
        self._outbox_wake = None
        self._outbox_woken = asyncio.get_running_loop().time()
        outbox.wake()


async def load(engine: AsyncEngine, state: CorrelationState, rules: Rules, now: datetime) -> None:
    """Rebuild ``state`` from the database: what was acknowledged, nothing else.

    The state is reset first and filled in place: if the database fails half-way, the next
    write's failure reloads again, and nothing unacknowledged survives meanwhile.
    """
    state.reset()
    async with engine.connect() as conn:
        for row in (await conn.execute(sa.select(store.sequences))).all():
            state.sequence[row.year] = row.last
        await _load_incidents(conn, state, rules, now)
        await _load_flaps(conn, state, rules, now)
        for r in (await conn.execute(sa.select(store.silences))).mappings().all():
            state.silences[r["id"]] = Silence(
                id=r["id"],
                matchers=[Matcher.model_validate(m) for m in r["matchers"]],
                starts_at=r["starts_at"],
                ends_at=r["ends_at"],
                created_by=r["created_by"],
                comment=r["comment"],
                kind=r["kind"],
                created_at=r["created_at"],
            )
        await _load_dedup(conn, state, rules, now)


async def _load_incidents(
    conn: AsyncConnection, state: CorrelationState, rules: Rules, now: datetime
) -> None:
    """Open and pending incidents with their alerts; those closed within the window as recent."""
    inc_rows = (
        (
            await conn.execute(
                sa.select(store.incidents).where(
                    sa.or_(
                        store.incidents.c.status != "closed",
                        store.incidents.c.closed_at >= now - rules.window,
                    )
                )
            )
        )
        .mappings()
        .all()
    )
    for r in inc_rows:
        inc = Incident(
            id=r["incident_id"],
            status=r["status"],
            severity=r["severity"],
            links=list(r["links"]),
            nodes=list(r["nodes"]),
            created_at=r["created_at"],
            emit_at=r["emit_at"],
            last_alert_at=r["last_alert_at"],
            emitted_at=r["emitted_at"],
            closed_at=r["closed_at"],
            dampened_until=r["dampened_until"],
            proactive=bool(r["proactive"]),
            triage=r["triage"],
            resolution=r["resolution"],
            persisted=True,
        )
        if inc.status == "closed":
            state.remember_close(inc, inc.closed_at or now)
            continue
        state.incidents[inc.id] = inc
        state.index(inc)
    if not state.incidents:
        return
    a = store.alerts
    rows = (
        (
            await conn.execute(
                sa.select(a)
                .where(
                    a.c.incident_id.in_(list(state.incidents)),
                    a.c.disposition.in_(("new_incident", "correlated", "dampened")),
                )
                .order_by(a.c.received_at)
            )
        )
        .mappings()
        .all()
    )
    for r in rows:
        state.incidents[r["incident_id"]].alerts.append(_brief_row(r))


async def _load_flaps(
    conn: AsyncConnection, state: CorrelationState, rules: Rules, now: datetime
) -> None:
    """Links' flap state, and which alerts fire on each: the latest state of each recent alert."""
    for r in (await conn.execute(sa.select(store.link_states))).mappings().all():
        state.flaps[r["link"]] = LinkFlapState(
            link=r["link"],
            degraded=r["degraded"],
            seen=r["seen"],
            penalty=r["penalty"],
            updated_at=r["updated_at"],
            suppressed_since=r["suppressed_since"],
            changes=r["changes"],
        )
        state.flaps_persisted.add(r["link"])
    a = store.alerts
    firing_rows = await conn.execute(
        sa.select(a.c.link, a.c.fingerprint, a.c.status)
        .where(
            a.c.link.is_not(None),
            a.c.received_at >= now - rules.stale_after,
            a.c.disposition.in_(("new_incident", "correlated", "dampened")),
        )
        .order_by(a.c.received_at, a.c.id)
    )
    for link, fp, status in firing_rows:
        flap = state.flaps.setdefault(link, LinkFlapState(link=link))
        if status == "firing":
            flap.firing.add(fp)
        else:
            flap.firing.discard(fp)


async def _load_dedup(
    conn: AsyncConnection, state: CorrelationState, rules: Rules, now: datetime
) -> None:
    """Fingerprints seen within the dedup window, unless their incident is closed."""
    a, i = store.alerts, store.incidents
    dedup_rows = (
        await conn.execute(
            sa.select(a.c.fingerprint, a.c.status, a.c.received_at, a.c.incident_id)
            .select_from(a.outerjoin(i, a.c.incident_id == i.c.incident_id))
            .where(
                a.c.received_at >= now - rules.dedup_window,
                a.c.disposition.notin_(("discarded", "suppressed", "duplicate")),
                sa.or_(i.c.status.is_(None), i.c.status != "closed"),
            )
            .order_by(a.c.received_at)
        )
    ).all()
    for fp, status, seen, inc_id in dedup_rows:
        state.remember(fp, DedupEntry(status, seen, inc_id))


def record(
    ws: store.WriteSet, alert_id: str, alert: NormalizedAlert, decided: Decision, now: datetime
) -> None:
    """The alert's row with its disposition, and its line in the grouped disposition audit."""
    ws.alerts.append(
        {
            "id": alert_id,
            "received_at": now,
            "source": alert.source,
            "link": decided.link,
            "node": alert.node or alert.host,
            "status": alert.status,
            "severity": alert.severity,
            "metric": alert.metric,
            "value": alert.value,
            "threshold": alert.threshold,
            "summary": alert.summary,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "fingerprint": decided.fingerprint,
            "starts_at": alert.starts_at,
            "ends_at": alert.ends_at,
            "observed_at": alert.timestamp,
            "duration_s": alert.duration_s,
            "external_id": alert.external_id,
            "disposition": decided.disposition,
            "incident_id": decided.incident_id,
            "reason": decided.reason,
        }
    )
    ws.dispositions.append(
        (
            decided.incident_id,
            decided.disposition,
            {
                "alert_id": alert_id,
                "source": alert.source,
                "link": decided.link,
                "node": alert.node,
                "status": alert.status,
                "fingerprint": decided.fingerprint,
                "reason": decided.reason,
            },
        )
    )


def silence_row(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [m.model_dump() for m in s.matchers],
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "created_by": s.created_by,
        "comment": s.comment,
        "kind": s.kind,
        "created_at": s.created_at,
    }


def _brief_row(r: Any) -> AlertBrief:
    labels = {
        **(r["labels"] or {}),
        "source": r["source"],
        "link": r["link"] or "",
        "node": r["node"] or "",
        "severity": r["severity"],
        "status": r["status"],
        "metric": r["metric"] or "",
    }
    duration = r["duration_s"]
    if duration is None and r["starts_at"] and r["ends_at"] and r["ends_at"] > r["starts_at"]:
        duration = (r["ends_at"] - r["starts_at"]).total_seconds()
    return AlertBrief(
        r["fingerprint"],
        r["source"],
        r["link"],
        r["status"],
        r["severity"],
        r["value"],
        r["threshold"],
        duration,
        labels,
        r["summary"] or "",
        (r["annotations"] or {}).get("description", ""),
    )

"""Drives incident graphs: one runner per incident at a time, one scheduler for all timers.

- ``Runner.drive(incident_id)`` holds the incident's asyncio lock (and, on PostgreSQL, a
  session advisory lock, so replicas never run one incident twice), looks at the thread's
  checkpoint and feeds it what is due: the start state, ``None`` to finish a run a crash cut
  short, the oldest inbox value (a decision or a signal), or the timer's resume. After each run
  it writes the incident's row from the checkpoint (status, timer due time, pending approval).
- ``Runner.scheduler()`` is the only long-lived task: it sleeps until the earliest due time
  (or a wake-up) and starts ``drive`` for incidents that are due. No coroutine waits per
  incident, so ten thousand incidents on hold cost ten thousand rows, not tasks.

Runbook sessions are driven by a second ``Runner`` over their own index (``runs``, a
:class:`store.RunStore`), graph, initial state and row view: the same locks, scheduler,
crash recovery and failure reports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator import store
from services.orchestrator.flow import Deps, initial_state, parse
from services.orchestrator.flow.effects import PeerDown
from shared.contracts import AUDIT_EVENT, ERROR_NOTICE
from shared.logs import get_logger
from shared.models import AuditEvent, ErrorNotice, utcnow

log = get_logger(__name__)

MAX_STEPS_PER_DRIVE = 200
"""Bounds one drive; a flow that still has work is simply due again."""
REPLICA_BACKOFF_S = 0.25
"""How long a replica that lost the advisory lock waits before looking again."""


class Runner:
    def __init__(
        self,
        *,
        graph: CompiledStateGraph[Any],
        engine: AsyncEngine,
        deps: Deps,
        pg_pool: AsyncConnectionPool[Any] | None = None,
        runs: store.RunStore = store.INCIDENTS,
        initial: Callable[[dict[str, Any]], Any] = initial_state,
        view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.graph = graph
        self.engine = engine
        self.deps = deps
        self.pg_pool = pg_pool
        self.runs = runs
        self.initial = initial
        self.view = view or _view
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(deps.orch.max_concurrent_runs)
        self._scheduler: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every open incident (their rows are due now) and start the scheduler."""
        now = utcnow()
        for row in await self.runs.list_all(self.engine, open_only=True):
            if row["waiting"] not in ("timer", "approval") or row["due_at"] is None:
                await self.runs.update(self.engine, row[self.runs.key], due_at=now)
            self.spawn(row[self.runs.key])
        self._scheduler = asyncio.create_task(self.scheduler(), name="orchestrator-scheduler")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop scheduling, let runs in flight finish their step, then cancel what is left.

        Cancelling a run is safe (the checkpoint and idempotency keys make it resumable) but
        letting it finish avoids cutting database calls in half on a graceful shutdown.
        """
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        running = list(self._inflight.values())
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    def config(self, incident_id: str) -> Any:
        return {"configurable": {"thread_id": incident_id, "deps": self.deps}}

    # --- scheduling ------------------------------------------------------------------------

    def spawn(self, incident_id: str) -> None:
        if incident_id in self._inflight or self._stopping:
            return
        task = asyncio.create_task(self._drive_slot(incident_id), name=f"drive-{incident_id}")
        self._inflight[incident_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._inflight.pop(incident_id, None)
            self._wake.set()  # something may have arrived while it ran

        task.add_done_callback(done)

    async def scheduler(self) -> None:
        max_sleep = self.deps.orch.scheduler_max_sleep_s
        while not self._stopping:
            self._wake.clear()
            try:
                now = utcnow()
                start, upcoming = await self.runs.schedule(self.engine, now, set(self._inflight))
                for incident_id in start:
                    self.spawn(incident_id)
                # an incident running now re-wakes us when it is done (``spawn``)
                sleep = max_sleep
                if upcoming is not None:
                    sleep = min(max_sleep, max(0.005, (upcoming - utcnow()).total_seconds()))
            except Exception:  # keep scheduling through a database hiccup; it is logged
                log.exception("scheduler pass failed")
                sleep = max_sleep
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the wake-up fires, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()

    async def _drive_slot(self, incident_id: str) -> None:
        async with self._slots:
            await self.drive(incident_id)

    # --- driving one incident --------------------------------------------------------------

    async def drive(self, incident_id: str) -> None:
        """Run the incident's graph as far as it can go now; never concurrently with itself."""
        lock = self._locks.setdefault(incident_id, asyncio.Lock())
        async with lock, self._advisory(incident_id) as owned:
            if not owned:
                # Another replica runs it; come back later rather than spin on a due row.
                await asyncio.sleep(REPLICA_BACKOFF_S)
                return
            try:
                for _ in range(MAX_STEPS_PER_DRIVE):
                    if self._stopping or not await self._step(incident_id):
                        break
            except PeerDown as exc:
                # a peer restarting or stopped, within its grace: run the node again soon; not
                # a failure of the run (no ``incident_run_failing``), the node escalates itself
                # once the grace is spent
                log.warning(
                    "peer down; incident step retried",
                    incident_id=incident_id,
                    agent=exc.agent,
                    down_for_s=round(exc.down_for_s, 1),
                    retry_in_s=round(exc.retry_in, 2),
                )
                await self.runs.update(
                    self.engine,
                    incident_id,
                    last_error=str(exc)[:2000],
                    due_at=utcnow() + timedelta(seconds=exc.retry_in),
                )
            except Exception as exc:  # a bug or a dead database: retried with backoff, logged
                log.exception("incident run failed", incident_id=incident_id)
                row = await self.runs.get(self.engine, incident_id)
                failures = (row or {}).get("failures", 0) + 1
                delay = self.deps.settings.scaled(min(60.0, 0.5 * 2 ** min(failures, 7)))
                last_error = f"{type(exc).__name__}: {exc}"[:2000]
                await self.runs.update(
                    self.engine,
                    incident_id,
                    failures=failures,
                    last_error=last_error,
                    due_at=utcnow() + timedelta(seconds=delay),
                )
                if failures == self.deps.orch.report_failures_after:
                    # a session's row names its ticket; an incident's row is the ticket
                    ticket = (row or {}).get("incident_id") or incident_id
                    await self._report_failing(ticket, failures, last_error)

    async def _report_failing(self, incident_id: str, failures: int, last_error: str) -> None:
        """Tell people once that an incident's run keeps failing, so it is not silently stuck.

        Queued by key, not from inside the graph: the graph is what fails.
        """
        details = {"failures": failures, "last_error": last_error, "retrying": True}
        message = f"the incident's run failed {failures} times in a row; still retrying"
        outbox = self.deps.outbox
        if self.deps.settings.io_enabled:
            notice = ErrorNotice(
                incident_id=incident_id,
                error_code="incident_run_failing",
                message=message,
                details=details,
                source_agent="orchestrator",
            )
            await outbox.put(
                ERROR_NOTICE, notice, key=f"{incident_id}:run-failing:io", incident_id=incident_id
            )
        event = AuditEvent(
            event_type="error",
            incident_id=incident_id,
            source_agent="orchestrator",
            details={"error_code": "incident_run_failing", "message": message, **details},
        )
        await outbox.put(
            AUDIT_EVENT,
            event,
            key=f"{incident_id}:run-failing:audit",
            incident_id=incident_id,
        )

    async def _step(self, incident_id: str) -> bool:
        """Feed the graph one thing that is due; False when nothing is."""
        row = await self.runs.get(self.engine, incident_id)
        if row is None or row["final"]:
            if row is not None:
                await self.runs.drop_inbox(self.engine, incident_id)
                self._locks.pop(incident_id, None)  # only spawn() drives, one task at a time
            return False
        cfg = self.config(incident_id)
        snapshot = await self.graph.aget_state(cfg)
        feed: Any
        inbox_id: int | None = None
        if not snapshot.values:
            feed = self.initial(row["start"])
        elif _finished(snapshot):
            await self._sync(incident_id, snapshot)
            return False
        elif snapshot.interrupts:
            item = await self.runs.peek(self.engine, incident_id)
            if item is not None:
                inbox_id, resume = item
                feed = Command(resume=resume)
            else:
                value: dict[str, Any] = snapshot.interrupts[0].value
                due = parse(value["due"])
                if due > utcnow():
                    await self._sync(incident_id, snapshot)
                    return False
                if value["kind"] == "approval":
                    timeout = {
                        "kind": "approval",
                        "approval_id": value["approval_id"],
                        "decision": "timeout",
                        "decided_by": "system",
                        "decided_at": utcnow().isoformat(),
                    }
                    # Claimed like a decision, so an operator clicking now cannot also win.
                    if not await self.runs.claim_approval(
                        self.engine, incident_id, value["approval_id"], None
                    ):
                        await self._sync(incident_id, snapshot)
                        return await self.runs.peek(self.engine, incident_id) is not None
                    feed = Command(resume=timeout)
                else:
                    feed = Command(resume={"kind": "timer", "due": value["due"]})
        else:
            feed = None  # a run that a crash or a restart cut short: continue it
        shown = {k: row.get(k) for k in ("status", "phase", "tier", "view")}
        async for values in self.graph.astream(feed, cfg, durability="sync", stream_mode="values"):
            if isinstance(values, dict) and values.get("status"):
                # progress for REST while the run goes on; the full sync follows the run.
                # Only what changed is written: a poll's resume streams the same status at
                # each node, and each write is a commit.
                progress = {
                    "status": values["status"],
                    "phase": values.get("phase", "0"),
                    "tier": values.get("tier"),
                    "view": self.view(values),
                }
                if progress != shown:
                    await self.runs.update(self.engine, incident_id, **progress)
                    shown = progress
        if inbox_id is not None:
            # Deleted only once the graph has taken it: a crash before this line delivers it
            # again, and every interrupt site ignores a decision or signal it has seen.
            await self.runs.delete(self.engine, inbox_id)
        await self._sync(incident_id, await self.graph.aget_state(cfg))
        return True

    async def _sync(self, incident_id: str, snapshot: StateSnapshot) -> None:
        """Write the incident's row from its checkpoint: the index the scheduler and REST read."""
        values: dict[str, Any] = dict(snapshot.values or {})
        fields: dict[str, Any] = {
            "status": values.get("status", "new"),
            "phase": values.get("phase", "0"),
            "tier": values.get("tier"),
            "failures": 0,
            "last_error": None,
            "view": self.view(values),
            "approval_action": None,
            "approval_expires_at": None,
            "wait_reason": None,
        }
        if _finished(snapshot):
            fields.update(final=True, waiting=None, due_at=None, approval_id=None)
        elif snapshot.interrupts:
            value: dict[str, Any] = snapshot.interrupts[0].value
            fields.update(
                waiting=value["kind"], due_at=parse(value["due"]), wait_reason=value.get("reason")
            )
            if value["kind"] != "approval":
                fields["approval_id"] = None
            else:
                fields.update(
                    status="waiting_approval",
                    approval_action=value["action"],
                    approval_expires_at=parse(value["due"]),
                )
        else:
            fields.update(waiting="run", due_at=utcnow(), approval_id=None)
        await self.runs.update(self.engine, incident_id, **fields)
        if not _finished(snapshot) and snapshot.interrupts:
            value = snapshot.interrupts[0].value
            if value["kind"] == "approval":
                await self.runs.set_pending_approval(self.engine, incident_id, value["approval_id"])
        self._wake.set()

    @contextlib.asynccontextmanager
    async def _advisory(self, incident_id: str) -> AsyncIterator[bool]:
        """On PostgreSQL, a session advisory lock: one replica runs an incident at a time."""
        if self.pg_pool is None:
            yield True
            return
        async with self.pg_pool.connection() as conn:
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS owned",
                (f"cxm-orchestrator:{incident_id}",),
            )
            row = await cur.fetchone()
            owned = bool(row and row["owned"])
            try:
                yield owned
            finally:
                if owned:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                        (f"cxm-orchestrator:{incident_id}",),
                    )

    # --- views -----------------------------------------------------------------------------

    async def describe(self, incident_id: str) -> dict[str, Any] | None:
        """The incident for REST and ``get_incident``: its row plus the checkpointed state."""
        row = await self.runs.get(self.engine, incident_id)
        if row is None:
            return None
        snapshot = await self.graph.aget_state(self.config(incident_id))
        out = public_row(row)
        values = dict(snapshot.values or {})
        out["state"] = {k: v for k, v in values.items() if k not in ("signals",)}
        out["signals"] = values.get("signals", [])
        out["next"] = list(snapshot.next)
        return out


def _finished(snapshot: StateSnapshot) -> bool:
    """The graph reached its end. ``next`` alone is not enough: a run cut short right after a
    node finished leaves that node's writes pending with ``next`` empty, and must continue."""
    return bool(snapshot.values) and not snapshot.next and not snapshot.tasks


def _view(values: dict[str, Any]) -> dict[str, Any]:
    impact = values.get("impact") or {}
    return {
        "degraded_links": values.get("degraded_links", []),
        "nodes_executed": values.get("nodes_executed", []),
        "affected_services_count": impact.get("total_affected"),
        "tunnel_id": (values.get("tunnel") or {}).get("tunnel_id"),
        "path": (values.get("path") or {}).get("path"),
        # every policy of the incident (the two above are the first's, as the seed shows it)
        "tunnel_ids": [t["tunnel_id"] for t in values.get("tunnels") or [] if t.get("tunnel_id")],
        "unprotected_services": [
            sid for group in values.get("unprotected") or [] for sid in group["service_ids"]
        ],
        "close_reason": values.get("close_reason"),
        "resolution": values.get("resolution"),
        "escalation": values.get("escalation"),
        "approvals": values.get("approvals", {}),
    }


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """An incident row as the REST API shows it: timers and the pending approval spelled out."""

    def ts(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    pending = None
    if row["approval_id"]:
        pending = {
            "approval_id": row["approval_id"],
            "action": row["approval_action"],
            "expires_at": ts(row["approval_expires_at"]),
        }
    return {
        "incident_id": row["incident_id"],
        "severity": row["severity"],
        "status": row["status"],
        "phase": row["phase"],
        "tier": row["tier"],
        "final": row["final"],
        "pending_approvals": [pending] if pending else [],
        "timer": (
            {"kind": row["waiting"], "reason": row["wait_reason"], "due_at": ts(row["due_at"])}
            if row["waiting"] in ("timer", "approval")
            else None
        ),
        "last_error": row["last_error"],
        "created_at": ts(row["created_at"]),
        "updated_at": ts(row["updated_at"]),
        **row["view"],
    }

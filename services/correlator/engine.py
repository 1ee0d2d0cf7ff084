"""The correlator's core: every alert gets one disposition, and incidents are born and grown.

This module only wires the pipeline; each stage lives in its own module:

    ingest → decide (decide.py, synchronous) → apply (state.py) → write (writer.py)
           → emit (emit.py: signals now, incidents after their group wait)

The decisions of one request are made in one synchronous loop, each applied to the state
before the next is decided, so they are consistent without locks (``decide`` is a plain
function: an await cannot slip in). What they changed is then written in one transaction,
coalesced with whatever other requests decided meanwhile (a group commit), before the
caller is answered. If a write fails, the memory is rebuilt from the database, which holds
exactly what was acknowledged. A background ticker emits incidents whose group wait is over
and releases dampened links whose penalty has decayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.correlator import store, writer
from services.correlator.dampening import LinkFlapState
from services.correlator.decide import Decision, Rules, decide
from services.correlator.emit import Emitter
from services.correlator.settings import CorrelatorSettings
from services.correlator.silences import Silence
from services.correlator.state import CorrelationState, Incident
from services.correlator.topology import TopologyCache
from services.correlator.writer import GroupWriter, WriteFailed
from shared.logs import get_logger
from shared.models import NormalizedAlert
from shared.outbox import Outbox
from shared.settings import Settings

__all__ = ["Clock", "Correlator", "Outcome", "WriteFailed"]

log = get_logger(__name__)

Clock = Callable[[], datetime]


@dataclass
class Outcome:
    """One entry of the 202 answer (orjson writes it as it is)."""

    id: str
    disposition: str
    incident_id: str | None
    reason: str
    fingerprint: str
    link: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "disposition": self.disposition,
            "incident_id": self.incident_id,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "link": self.link,
        }


class Correlator:
    """Holds the live correlation state and runs the pipeline over it (module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        config: CorrelatorSettings,
        engine: AsyncEngine,
        outbox: Outbox | None,
        topology: TopologyCache,
        clock: Clock,
        llm_http: httpx.AsyncClient | None = None,
    ):
        self.settings = settings
        self.config = config
        self.engine = engine
        self.topology = topology
        self.clock = clock
        self.rules = Rules.of(settings, config)
        self.tick_s = max(0.005, config.tick_s * settings.time_scale)
        self.state = CorrelationState(self.rules.dampening)
        self.emitter = Emitter(
            io_enabled=settings.io_enabled, rules=self.rules, config=config, llm_http=llm_http
        )
        self.writer = GroupWriter(
            engine,
            outbox=outbox,
            prepare=lambda ws: self.emitter.audit_dispositions(ws, self.clock()),
            reload=self.load,
        )
        self._ticker_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._emitting: set[str] = set()

    @property
    def flaps(self) -> dict[str, LinkFlapState]:
        return self.state.flaps

    @property
    def silences(self) -> dict[str, Silence]:
        return self.state.silences

    @property
    def incidents(self) -> dict[str, Incident]:
        return self.state.incidents

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load()
        self._tasks = [
            self.writer.start(),
            asyncio.create_task(self._ticker(), name="correlator-ticker"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.abandon()

    async def load(self) -> None:
        """Rebuild memory from the database: what was acknowledged, nothing else."""
        await writer.load(self.engine, self.state, self.rules, self.clock())

    # --- ingestion ----------------------------------------------------------------------------

    async def ingest(
        self,
        batch: list[NormalizedAlert],
        *,
        proactive: bool = False,
        settled: Mapping[int, Decision] | None = None,
    ) -> list[Outcome]:
        """Decide each alert's fate, persist it all, then answer: the 202's entries.

        ``settled`` holds decisions the caller already made (by position in ``batch``: a
        ServiceNow record that is already a ticket is a ``duplicate``); they change nothing
        but are stored like any other, so every alert answered for has its row.
        """
        topo = await self.topology.get()
        await self.writer.settled()  # no await from here to the write: decisions are atomic
        now = self.clock()
        ws = store.WriteSet()
        state, rules, emitter = self.state, self.rules, self.emitter
        outcomes: list[Outcome] = []
        known = settled or {}
        # One synchronous loop: every call below is a plain function, so no other request
        # can decide between two of these alerts.
        for i, alert in enumerate(batch):
            alert_id = _alert_id()
            decided = known.get(i) or decide(alert, state, topo, rules, now, proactive=proactive)
            if decided.changes:
                effects = state.apply(decided.changes, now, ws, topo)
                if effects:
                    emitter.effects(ws, effects, now, cause=alert_id)
            writer.record(ws, alert_id, alert, decided, now)
            outcomes.append(
                Outcome(
                    alert_id,
                    decided.disposition,
                    decided.incident_id,
                    decided.reason,
                    decided.fingerprint,
                    decided.link,
                )
            )
        state.snapshot(ws)
        await self.writer.commit(ws)
        if any(o.disposition == "new_incident" for o in outcomes):
            self._ticker_wake.set()
        return outcomes

    # --- timers -------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Emit incidents whose group wait is over; release links whose penalty has decayed."""
        await self.writer.settled()
        now = self.clock()
        ws = store.WriteSet()
        self.emitter.effects(ws, self.state.release(now, ws), now)
        self.state.snapshot(ws)
        if ws:
            await self.writer.commit(ws)
        for inc in self.state.due(now, self._emitting):
            await self._emit(inc)
        self.state.prune(now, self.rules.dedup_window, self.rules.window)

    async def _ticker(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wake-up fires, and shutdown would then wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait()):
                    await self._ticker_wake.wait()
            self._ticker_wake.clear()
            try:
                await self.tick()
            except WriteFailed as exc:
                log.error("correlator timer step not written; state reloaded", error=str(exc))
            except Exception:  # the timers must survive one bad step; it is logged in full
                log.exception("correlator timer step failed")

    def _next_wait(self) -> float:
        now = self.clock()
        pending = [
            (i.emit_at - now).total_seconds()
            for i in self.state.incidents.values()
            if i.status == "pending"
        ]
        return max(0.001, min([self.tick_s, *pending]))

    async def _emit(self, inc: Incident) -> None:
        """Triage (which may await the LLM), then hand the incident over if still pending."""
        self._emitting.add(inc.id)
        try:
            verdict = await self.emitter.triage(self.state, inc, self.clock())
            if inc.status != "pending":
                return
            now = self.clock()
            ws = store.WriteSet()
            self.emitter.emission(self.state, inc, verdict, now, ws)
            self.state.snapshot(ws)
            await self.writer.commit(ws)
        finally:
            self._emitting.discard(inc.id)

    # --- closing and silences -----------------------------------------------------------------

    async def close_incident(self, incident_id: str, resolution: str) -> bool:
        """The orchestrator closed it: new alerts on its links open a new incident."""
        await self.writer.settled()
        inc = self.state.incidents.get(incident_id)
        if inc is None or inc.status == "closed":
            return False
        now = self.clock()
        ws = store.WriteSet()
        self.state.close(inc, resolution, now, ws)
        self.emitter.audit(
            ws,
            "incident_closed",
            inc.id,
            f"audit:incident_closed:{inc.id}",
            {"resolution": resolution, "by": "orchestrator"},
            now,
        )
        self.state.snapshot(ws)
        await self.writer.commit(ws)
        return True

    async def add_silence(self, silence: Silence) -> None:
        ws = store.WriteSet()
        ws.silences.append((True, writer.silence_row(silence)))
        self.emitter.audit(
            ws,
            "silence_created",
            None,
            f"audit:silence:{silence.id}",
            {
                "silence_id": silence.id,
                "kind": silence.kind,
                "created_by": silence.created_by,
                "matchers": [m.model_dump() for m in silence.matchers],
            },
            self.clock(),
        )
        await self.writer.commit(ws)
        self.state.silences[silence.id] = silence

    async def expire_silence(self, silence_id: str) -> Silence | None:
        silence = self.state.silences.get(silence_id)
        if silence is None:
            return None
        now = self.clock()
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at)
            ws = store.WriteSet()
            ws.silences.append((False, writer.silence_row(silence)))
            self.emitter.audit(
                ws,
                "silence_expired",
                None,
                f"audit:silence-expired:{silence.id}",
                {"silence_id": silence.id},
                now,
            )
            await self.writer.commit(ws)
        return silence


_ID_TAIL = secrets.randbits(32)
_id_counter = itertools.count(secrets.randbits(30))


def _alert_id() -> str:
    """Sortable by arrival (wall-clock nanoseconds first), unique by the tail: a random number
    drawn once per process and a counter. Same 32 hex characters as before (16 random) but
    without an ``os.urandom`` call per alert, which showed in the ingest profile; two
    processes (a restart) differ by their random half, and one process never repeats."""
    return f"{time.time_ns():016x}{_ID_TAIL:08x}{next(_id_counter) & 0xFFFFFFFF:08x}"

"""The frequency guard under a storm: many sessions of one runbook on one target started at
the same moment, on the real PostgreSQL server and on SQLite, let exactly the limit through.

Each start is its own transaction on its own pooled connection, as concurrent requests (or
orchestrator replicas) make them; without the guard's lock, READ COMMITTED lets every racer
count the same rows and insert.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks import sessions
from shared.errors import TaskFailed

LIMIT = 3
RACERS = 24


async def start(engine: AsyncEngine, n: int, *, runbook_id: str, host: str) -> str | TaskFailed:
    incident_id = f"INC-2026-{7000 + n:04d}"
    ticket = {"id": incident_id, "host": host}
    try:
        return await sessions.create(
            engine,
            incident_id=incident_id,
            runbook_id=runbook_id,
            version=1,
            severity="high",
            started_by="alice",
            ticket=ticket,
            start={"incident_id": incident_id, "ticket": ticket},
            limit=LIMIT,
            window=timedelta(minutes=10),
        )
    except TaskFailed as exc:
        return exc


async def test_concurrent_starts_let_exactly_the_limit_through(engine: AsyncEngine) -> None:
    await sessions.init(engine)
    storms = {("disk-full", "db-01"), ("disk-full", "db-02"), ("restart-nginx", "db-01")}
    racers = [
        start(engine, n, runbook_id=runbook_id, host=host)
        for n in range(RACERS)
        for runbook_id, host in sorted(storms)
    ]
    results = await asyncio.gather(*racers)

    started = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, TaskFailed)]
    assert len(started) == LIMIT * len(storms)
    assert len(refused) == len(results) - len(started)
    for exc in refused:
        assert exc.code == "session_limit" and exc.status == 409
        assert "frequency guard" in str(exc) and f"CXM_RUNBOOK_SESSION_LIMIT={LIMIT}" in str(exc)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    sessions.sessions.c.runbook_id, sessions.sessions.c.target, sa.func.count()
                ).group_by(sessions.sessions.c.runbook_id, sessions.sessions.c.target)
            )
        ).all()
    assert {(r[0], r[1]): r[2] for r in rows} == {pair: LIMIT for pair in storms}

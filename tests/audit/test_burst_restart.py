"""No audit event is lost when the audit agent dies mid-burst: the sender's outbox holds them.

A small sender agent with an outbox (in-process) pushes a burst of audit events to a real
audit process (``cxm agent audit``), which is killed part-way and started again. Afterwards
every event is in the audit database exactly once and the hash chain verifies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.agent import AgentSpec
from shared.contracts import AUDIT_EVENT
from shared.models import AuditEvent
from shared.settings import Settings
from tests.support import create_database, drop_database, mesh, running, wait_for

BURST = 150
STOP_AT = 50

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_no_event_lost_when_audit_restarts_mid_burst(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra: dict[str, str] = {}
    dsn = url = None
    if backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        url = await create_database(dsn, prefix="audit")
        extra["CXM_AUDIT__DATABASE_URL"] = url
    try:
        with mesh(tmp_path / "mesh", names=["audit"], extra_env=extra) as m:
            await _burst(m, tmp_path)
    finally:
        if dsn and url:
            await drop_database(dsn, url)


async def _burst(m: Any, tmp_path: Path) -> None:
    sender = AgentSpec("sender", "Sender", "emits audit events through its outbox", outbox=True)
    settings = Settings(
        data_dir=tmp_path / "sender", audit_url=m.url("audit"), mesh_token=m.token, port=8999
    )
    app = sender.create_app(settings)
    async with running(app):
        outbox = app.state.outbox
        outbox.max_backoff_s = 0.5  # keep the test short once audit is back
        for n in range(BURST):
            event = AuditEvent(
                event_type="state_change",
                incident_id=f"INC-2026-{n % 7:04d}",
                source_agent="sender",
                details={"n": n},
            )
            await outbox.put(AUDIT_EVENT, event, key=f"burst-{n}")
            if n == STOP_AT:
                await asyncio.to_thread(m.stop, "audit", kill=True)
            await asyncio.sleep(0)  # let the deliverer run between puts
        assert await outbox.pending() > 0  # the rest is waiting for audit
        m.start("audit")
        await asyncio.to_thread(m.wait_healthy, ["audit"])

        async def drained() -> bool:
            return await outbox.pending() == 0

        await wait_for(drained, timeout=60)

    headers = {"Authorization": f"Bearer {m.token}"}
    async with httpx.AsyncClient(base_url=m.url("audit"), headers=headers) as client:
        body = (await client.get("/api/v1/audit/events", params={"limit": 1000})).json()
        ns = [e["details"]["n"] for e in body["events"]]
        assert sorted(ns) == list(range(BURST))  # every event, exactly once
        assert len({e["event_key"] for e in body["events"]}) == BURST
        verdict = (await client.get("/api/v1/audit/verify")).json()
        assert verdict["ok"] is True and verdict["count"] == BURST

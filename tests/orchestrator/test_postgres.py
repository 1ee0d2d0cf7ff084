"""Checkpointing on a real PostgreSQL server: LangGraph's Postgres saver, restarts, replicas."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from shared.models import NODES
from shared.settings import Settings
from tests.orchestrator.conftest import Orch, OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_settings(settings: Settings, postgres_dsn: str) -> Settings:
    """A fresh database of its own on the session's PostgreSQL server."""
    name = f"orch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return settings.model_copy(update={"database_url": postgres_dsn.rsplit("/", 1)[0] + "/" + name})


async def test_postgres_checkpoints_survive_a_restart(
    orchestrator: OrchFactory, net: FakeNetwork, pg_settings: Settings
) -> None:
    inc = "INC-2026-0401"
    net.sla_default = False
    async with orchestrator(pg_settings, approval_required_for="steer") as orch:
        await orch.start(inc)
        [request] = await wait_for(lambda: net.events(inc, "approval_required"))
        await wait_for(lambda: _pending(orch, inc))
    async with orchestrator(pg_settings, approval_required_for="steer") as orch:
        response = await orch.task(
            "approval_decision",
            {
                "approval_id": request["approval_id"],
                "incident_id": inc,
                "decision": "approve",
                "decided_by": "alice",
            },
        )
        assert response.status_code == 200, response.text
        await wait_for(lambda: ("6", "monitoring") in net.statuses(inc))
    net.sla_default = True
    async with orchestrator(pg_settings, approval_required_for="steer") as orch:
        closed = await orch.closed(inc)
    assert closed["details"]["nodes_executed"] == list(NODES)
    assert net.tunnels_created == 1
    assert len(net.closed(inc)) == 1


async def test_two_replicas_run_an_incident_once(
    orchestrator: OrchFactory, net: FakeNetwork, pg_settings: Settings
) -> None:
    inc = "INC-2026-0402"
    async with orchestrator(pg_settings) as first, orchestrator(pg_settings) as second:
        await first.start(inc)
        await second.start(inc)
        closed = await first.closed(inc)
        await wait_for(lambda: _final(second, inc))
    assert closed["details"]["nodes_executed"] == list(NODES)
    assert net.calls["provision_tunnels"] == 1  # the advisory lock: one runner, one call
    assert net.tunnels_created == 1
    assert len(net.closed(inc)) == 1


async def _pending(orch: Orch, incident_id: str) -> bool:
    data = await orch.incident(incident_id)
    return bool(data["pending_approvals"])


async def _final(orch: Orch, incident_id: str) -> bool:
    data = await orch.incident(incident_id)
    return bool(data["final"])

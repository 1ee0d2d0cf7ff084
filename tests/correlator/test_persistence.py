"""Nothing acknowledged is lost across a restart; closed incidents stay closed; PostgreSQL too."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from tests.correlator.conftest import AUTH
from tests.correlator.payloads import skylight


async def test_restart_resumes_pending_emission_and_keeps_state(harness: Any) -> None:
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        incident = r.json()["alerts"][0]["incident_id"]
        await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe2-pe3"))
    assert h.peers.of("io", "new_ticket") == []  # stopped inside the group wait
    async with harness() as h:
        stored = (await h.client.get("/api/v1/alerts")).json()
        assert len(stored) == 2
        again = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        assert again.json()["alerts"][0]["disposition"] == "duplicate"
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["incident_id"] == incident
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        close = {
            "task_type": "incident_closed",
            "payload": {"incident_id": incident, "resolution": "resolved"},
        }
        assert (await h.client.post("/a2a/tasks", json=close, headers=AUTH)).status_code == 200
    async with harness() as h:
        await h.elapse(10)
        await h.flush()
        assert len(h.peers.of("io", "new_ticket")) == 1  # not emitted twice
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        entry = r.json()["alerts"][0]
        assert entry["disposition"] == "new_incident"  # the closed one is not reopened
        assert entry["incident_id"].endswith("-0002")  # the sequence survived


async def test_flap_state_and_silences_survive_restart(harness: Any) -> None:
    async with harness() as h:
        await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2", "cleared"))
        silence = {
            "matchers": [{"name": "link", "value": "p9-p10"}],
            "ends_at": (h.clock.now.replace(year=h.clock.now.year + 1)).isoformat(),
            "created_by": "ops",
        }
        assert (await h.post("/api/v1/silences", silence)).status_code == 201
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        assert r.json()["alerts"][0]["disposition"] == "dampened"
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "p9-p10"))
        assert r.json()["alerts"][0]["disposition"] == "suppressed"


@pytest.mark.postgres
async def test_postgresql_backend(harness: Any, base_settings: Settings, postgres_dsn: str) -> None:
    import uuid

    import asyncpg

    name = f"corr_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    settings = base_settings.model_copy(update={"database_url": dsn})
    async with harness(settings=settings) as h:
        r = await h.post("/api/v1/tickets/demo/ticket", {})
        assert r.status_code == 202, r.text
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        assert len((await h.client.get("/api/v1/alerts", params={"link": "pe1-pe2"})).json()) == 1
    async with harness(settings=settings) as h:
        r = await h.post("/api/v1/tickets/demo/ticket", {"links": ["p9-p10"]})
        assert r.json()["alerts"][0]["incident_id"].endswith("-0002")

"""Fixtures: the orchestrator in-process with its mesh routed to ``FakeNetwork``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.orchestrator.app import create_app
from services.orchestrator.settings import OrchestratorSettings
from shared.settings import Settings
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import running, wait_for

AUTH = {"Authorization": "Bearer test-mesh-token"}


@dataclass
class Orch:
    app: FastAPI
    client: httpx.AsyncClient
    net: FakeNetwork

    async def task(
        self, task_type: str, payload: dict[str, Any], key: str | None = None
    ) -> httpx.Response:
        headers = dict(AUTH)
        if key:
            headers["Idempotency-Key"] = key
        return await self.client.post(
            "/a2a/tasks", json={"task_type": task_type, "payload": payload}, headers=headers
        )

    async def start(self, incident_id: str, **extra: Any) -> dict[str, Any]:
        payload = {
            "incident_id": incident_id,
            "severity": "high",
            "summary": "SLA degradation detected on pe1-pe2, pe2-pe3",
            "degraded_links": ["pe1-pe2", "pe2-pe3"],
            **extra,
        }
        response = await self.task("start_incident", payload)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        return result

    async def closed(self, incident_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the incident's ticket_closed at IO and for its row to be final.

        The close node queues ticket_closed before the run ends; the row turns final when the
        runner syncs it from the checkpoint just after, so a test waits on both.
        """
        events = await wait_for(lambda: self.net.closed(incident_id), timeout=timeout)
        await wait_for(lambda: self._final(incident_id), timeout=timeout)
        first: dict[str, Any] = events[0]
        return first

    async def _final(self, incident_id: str) -> bool:
        return bool((await self.incident(incident_id))["final"])

    async def incident(self, incident_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/incidents/{incident_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


OrchFactory = Callable[..., AbstractAsyncContextManager[Orch]]


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def orchestrator(settings: Settings, net: FakeNetwork) -> OrchFactory:
    """``async with orchestrator(**policy) as orch``: the app running against ``net``."""

    @asynccontextmanager
    async def run(settings_: Settings | None = None, **policy: Any) -> AsyncIterator[Orch]:
        orch_settings = OrchestratorSettings(**policy)
        app = create_app(
            settings_ or settings,
            orchestrator_settings=orch_settings,
            mesh_transport=net.transport(),
        )
        async with running(app) as client:
            yield Orch(app, client, net)

    return run

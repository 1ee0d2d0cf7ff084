"""The orchestrator and IO in-process, talking to each other over the mesh, for session tests.

IO's mesh calls to the orchestrator's port reach the orchestrator app and the orchestrator's
outbox reaches the real IO app (so approvals and the ticket's events are IO's own); audit,
notify and the correlator are ``FakeNetwork``'s. The orchestrator can be stopped and started
again on the same database (``restart``) while IO keeps running, as after a crash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from services.io.app import create_app as create_io
from services.orchestrator.app import create_app as create_orchestrator
from services.orchestrator.runbooks.catalog import LibrarySettings
from services.orchestrator.settings import OrchestratorSettings
from shared.settings import Settings
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import running, wait_for

MESH_TOKEN = "test-mesh-token"
IO_PORT = 8009
ORCHESTRATOR_PORT = 8000


class Routes(httpx.AsyncBaseTransport):
    """Mesh calls by port: to the in-process apps present, else to the fake peers."""

    def __init__(self, net: FakeNetwork) -> None:
        self.apps: dict[int, FastAPI] = {}
        self.fake = net.transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        port = request.url.port or 0
        app = self.apps.get(port)
        if app is not None:
            return await httpx.ASGITransport(app=app).handle_async_request(request)
        if port in (IO_PORT, ORCHESTRATOR_PORT):
            raise httpx.ConnectError("down", request=request)
        return await self.fake.handle_async_request(request)


@dataclass
class Cxm:
    """IO's REST API as a person uses it, and the orchestrator behind it."""

    io: httpx.AsyncClient
    io_app: FastAPI
    settings: Settings
    routes: Routes
    net: FakeNetwork
    data_dir: Path
    orch_settings: OrchestratorSettings
    library: Path
    _orch: AsyncExitStack = field(default_factory=AsyncExitStack)
    orchestrator: FastAPI | None = None

    def admin(self) -> dict[str, str]:
        token = (self.data_dir / "io-admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    async def user(self, username: str, role: str = "operator") -> dict[str, str]:
        response = await self.io.post(
            "/api/v1/users", json={"username": username, "role": role}, headers=self.admin()
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def start_orchestrator(self) -> None:
        app = create_orchestrator(
            self.settings,
            orchestrator_settings=self.orch_settings,
            mesh_transport=self.routes,
            library=LibrarySettings(runbooks_dir=self.library),
        )
        self._orch = AsyncExitStack()
        await self._orch.enter_async_context(running(app))
        self.orchestrator = app
        self.routes.apps[ORCHESTRATOR_PORT] = app

    async def stop_orchestrator(self) -> None:
        self.routes.apps.pop(ORCHESTRATOR_PORT, None)
        await self._orch.aclose()
        self.orchestrator = None

    async def restart(self) -> None:
        await self.stop_orchestrator()
        await self.start_orchestrator()

    # --- tickets and sessions ----------------------------------------------------------

    async def ticket(self, incident_id: str, **fields: Any) -> None:
        """A ticket as the correlator opens one, with the values runbooks read."""
        payload = {
            "incident_id": incident_id,
            "severity": "high",
            "summary": fields.pop("title", "Disk almost full on web-03"),
            **fields,
        }
        response = await self.io.post(
            "/a2a/tasks",
            json={"task_type": "new_ticket", "payload": payload},
            headers={"Authorization": f"Bearer {MESH_TOKEN}"},
        )
        assert response.status_code == 200, response.text

    async def runbook(self, document: dict[str, Any], headers: dict[str, str]) -> None:
        response = await self.io.post("/api/v1/runbooks", json=document, headers=headers)
        assert response.status_code == 201, response.text

    async def start(self, incident_id: str, runbook_id: str, headers: dict[str, str]) -> str:
        response = await self.io.post(
            f"/api/v1/tickets/{incident_id}/runbook-sessions",
            json={"runbook_id": runbook_id},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
        return session_id

    async def session(self, session_id: str) -> dict[str, Any]:
        response = await self.io.get(f"/api/v1/runbook-sessions/{session_id}", headers=self.admin())
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def settled(self, session_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The session once it has ended (its row is final)."""

        async def final() -> dict[str, Any] | None:
            view = await self.session(session_id)
            return view if view["final"] else None

        result: dict[str, Any] = await wait_for(final, timeout=timeout)
        return result

    async def pending(self, incident_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The ticket's pending approval as IO lists it."""

        async def one() -> dict[str, Any] | None:
            response = await self.io.get(
                "/api/v1/approvals", params={"incident_id": incident_id}, headers=self.admin()
            )
            rows: list[dict[str, Any]] = response.json()
            return rows[0] if rows else None

        found: dict[str, Any] = await wait_for(one, timeout=timeout)
        return found

    async def closed_ticket(self, incident_id: str) -> dict[str, Any]:
        """The ticket once IO has its ``ticket_closed``."""

        async def closed() -> dict[str, Any] | None:
            ticket = await self.ticket_view(incident_id)
            kinds = [e["task_type"] for e in ticket["events"]]
            return ticket if "ticket_closed" in kinds else None

        found: dict[str, Any] = await wait_for(closed)
        return found

    async def ticket_view(self, incident_id: str) -> dict[str, Any]:
        response = await self.io.get(f"/api/v1/tickets/{incident_id}", headers=self.admin())
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


@asynccontextmanager
async def cxm_mesh(tmp_path: Path, **policy: Any) -> AsyncIterator[Cxm]:
    """IO and the orchestrator running in-process; ``policy`` sets OrchestratorSettings."""
    settings = Settings(
        data_dir=tmp_path, time_scale=0.01, mesh_token=MESH_TOKEN, port=8999, mesh_retries=0
    )
    net = FakeNetwork()
    routes = Routes(net)
    library = tmp_path / "library"
    library.mkdir(exist_ok=True)
    io_app = create_io(settings, mesh_transport=routes)
    async with running(io_app) as io:
        io.base_url = httpx.URL("http://127.0.0.1:8999")
        routes.apps[IO_PORT] = io_app
        cxm = Cxm(
            io=io,
            io_app=io_app,
            settings=settings,
            routes=routes,
            net=net,
            data_dir=tmp_path,
            orch_settings=OrchestratorSettings(**policy),
            library=library,
        )
        await cxm.start_orchestrator()
        try:
            yield cxm
        finally:
            await cxm.stop_orchestrator()


def local_step(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "connector": "local", "command": command, **extra}


def document(runbook_id: str, main: list[dict[str, Any]], **steps: Any) -> dict[str, Any]:
    """A runbook document with the given main steps (and prechecks/postchecks/rollback)."""
    rollback = steps.pop("rollback", [])
    return {
        "id": runbook_id,
        "title": f"Test runbook {runbook_id}",
        "description": "for the session tests",
        "keywords": ["test"],
        "steps": {"main": main, **steps},
        "rollback": rollback,
    }

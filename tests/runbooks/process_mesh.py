"""Runbook sessions on real processes: IO, the orchestrator and audit as ``cxm agent NAME``
runs them (``tests.support.Mesh``, with a longer start-up allowance than ``mesh()`` gives),
driven through IO's REST API like a person drives them.

``Console`` is the admin's async client on IO (plus the other agents' REST, with the mesh
token) that keeps every answer it received, so a test can search all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.settings import AGENT_PORTS
from tests.support import Mesh, free_port, mesh_env, wait_for

AGENTS = ("audit", "io", "orchestrator")
STARTUP_S = 180.0
"""How long an agent may take to become healthy: generous, the test machines are shared."""


@contextmanager
def session_mesh(data_dir: Path, names: tuple[str, ...] = AGENTS, **env: str) -> Iterator[Mesh]:
    """The agents as processes on SQLite under ``data_dir``, an empty runbook library, fast
    timers; ``env`` adds or overrides ``CXM_*`` settings. Stopped (SIGTERM) afterwards."""
    library = data_dir / "library"
    library.mkdir(parents=True, exist_ok=True)
    extra = {
        "CXM_RUNBOOKS_DIR": str(library),
        "CXM_TIME_SCALE": "0.02",
        "CXM_LAB_ENABLED": "false",
        "CXM_MESH_RETRIES": "1",
        **env,
    }
    ports = {name: free_port() for name in AGENT_PORTS}
    m = Mesh(data_dir, mesh_env(data_dir, ports, extra), ports)
    try:
        for name in names:
            m.start(name)
        m.wait_healthy(names, timeout=STARTUP_S)
        yield m
    finally:
        for name in list(m.procs):
            m.stop(name)


def restart_killed(m: Mesh, name: str = "orchestrator") -> None:
    """SIGKILL the agent (no shutdown, no flush) and start it again on the same data."""
    m.stop(name, kill=True)
    m.start(name)
    m.wait_healthy([name], timeout=STARTUP_S)


@dataclass
class Console:
    """IO's REST API with the admin's token; every answer is kept in ``answers``."""

    m: Mesh
    http: httpx.AsyncClient
    answers: list[str] = field(default_factory=list)

    async def call(
        self, method: str, url: str, *, expect: int | None = 200, **kwargs: Any
    ) -> httpx.Response:
        """A request to IO (a path) or to another agent (a full URL); the answer is kept."""
        if url.startswith("/"):
            url = f"{self.m.url('io')}{url}"
        response = await self.http.request(method, url, **kwargs)
        self.answers.append(f"{method} {url} -> {response.status_code}\n{response.text}")
        if expect is not None:
            assert response.status_code == expect, f"{method} {url}: {response.text}"
        return response

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        return (await self.call(method, url, **kwargs)).json()

    async def ticket(self, incident_id: str, **fields: Any) -> None:
        """A ticket as the correlator opens one (over the mesh, with the mesh token)."""
        payload = {
            "incident_id": incident_id,
            "severity": "high",
            "summary": "Disk almost full on web-03",
            **fields,
        }
        await self.call(
            "POST",
            "/a2a/tasks",
            json={"task_type": "new_ticket", "payload": payload},
            headers=self.mesh_auth(),
        )

    def mesh_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.m.token}"}

    async def start(self, incident_id: str, runbook_id: str) -> str:
        started = await self.json(
            "POST",
            f"/api/v1/tickets/{incident_id}/runbook-sessions",
            json={"runbook_id": runbook_id},
            expect=201,
        )
        session_id: str = started["session_id"]
        return session_id

    async def session(self, session_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.json("GET", f"/api/v1/runbook-sessions/{session_id}")
        return found

    async def settled(self, session_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def final() -> dict[str, Any] | None:
            view = await self.session(session_id)
            return view if view["final"] else None

        found: dict[str, Any] = await wait_for(final, timeout=timeout, interval=0.1)
        return found

    async def pending(self, incident_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The ticket's one pending approval as IO lists it."""

        async def one() -> dict[str, Any] | None:
            rows = await self.json("GET", "/api/v1/approvals", params={"incident_id": incident_id})
            return rows[0] if rows else None

        found: dict[str, Any] = await wait_for(one, timeout=timeout, interval=0.1)
        return found

    async def ticket_view(self, incident_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.json("GET", f"/api/v1/tickets/{incident_id}")
        return found

    async def closed_ticket(self, incident_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def closed() -> dict[str, Any] | None:
            ticket = await self.ticket_view(incident_id)
            kinds = [e["task_type"] for e in ticket["events"]]
            return ticket if "ticket_closed" in kinds else None

        found: dict[str, Any] = await wait_for(closed, timeout=timeout, interval=0.1)
        return found

    async def audit_events(self, **params: Any) -> list[dict[str, Any]]:
        body = await self.json(
            "GET",
            f"{self.m.url('audit')}/api/v1/audit/events",
            params={"limit": 5000, **params},
            headers=self.mesh_auth(),
        )
        events: list[dict[str, Any]] = body["events"]
        return events


def console(m: Mesh) -> httpx.AsyncClient:
    """An async client with IO's bootstrap admin token."""
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {m.io_token}"}, timeout=30)

"""Fixtures for the IO tests: the agent in-process with a fake orchestrator, CNC, lab and audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

from services.io.app import create_app
from services.io.settings import IoSettings
from shared.settings import Settings
from tests.io.browser import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM
from tests.io.fakes import MESH_TOKEN, Orchestrator, network_app
from tests.support import running


class IoClient:
    """An in-process client of IO: mesh tasks carry the mesh token, API calls a user token."""

    def __init__(self, http: httpx.AsyncClient, app: FastAPI, data_dir: Path) -> None:
        self.http = http
        self.app = app
        self.data_dir = data_dir

    async def task(self, envelope: dict[str, Any]) -> httpx.Response:
        response = await self.http.post(
            "/a2a/tasks", json=envelope, headers={"Authorization": f"Bearer {MESH_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return response

    def admin_token(self) -> str:
        return (self.data_dir / "io-admin-token").read_text().strip()

    async def user(self, username: str, role: str) -> dict[str, str]:
        """Create ``username`` with ``role``; return the headers that act as them."""
        response = await self.http.post(
            "/api/v1/users",
            json={"username": username, "role": role},
            headers={"Authorization": f"Bearer {self.admin_token()}"},
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}


IoFactory = Callable[..., AbstractAsyncContextManager[IoClient]]


@pytest.fixture
def orchestrator() -> Orchestrator:
    return Orchestrator()


@pytest.fixture
def network_calls() -> list[tuple[str, Any]]:
    return []


@pytest.fixture
def make_io(
    tmp_path: Path, orchestrator: Orchestrator, network_calls: list[tuple[str, Any]]
) -> IoFactory:
    """Start IO in-process; keyword arguments override Settings or IoSettings fields."""

    @asynccontextmanager
    async def start(
        *,
        cnc_up: bool = True,
        peers_up: bool = True,
        io: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[IoClient]:
        fields: dict[str, Any] = {
            "data_dir": tmp_path,
            "mesh_token": MESH_TOKEN,
            "port": 8999,
            "mesh_retries": 0,
            "cnc_url": "http://cnc.test",
            "lab_url": "http://lab.test",
            "audit_url": "http://audit.test",
        }
        settings = Settings(**{**fields, **overrides})
        network = httpx.ASGITransport(app=network_app(network_calls))
        down = httpx.MockTransport(_refuse)
        app = create_app(
            settings,
            mesh_transport=orchestrator.transport(),
            southbound_transport=network if cnc_up else down,
            peer_transport=network if peers_up else down,
            io_settings=IoSettings(**(io or {})),
        )
        async with running(app) as http:
            http.base_url = httpx.URL("http://127.0.0.1:8999")
            yield IoClient(http, app, tmp_path)

    return start


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for the console's browser tests."""
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()

"""Fixtures: the lab in-process, the real southbound clients against it, an alert receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.lab.app import create_app
from services.lab.settings import LabSettings
from shared.settings import Settings
from shared.southbound import CncClient, PcaClient
from tests.support import running


@dataclass
class Receiver:
    """A stand-in correlator: records every PCA webhook it receives."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/v1/tickets/webhook/pca")
        async def webhook(request: Request) -> Any:
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"detail": "busy"}, status_code=503)
            self.alerts.append(await request.json())
            self.headers.append(dict(request.headers))
            return {"accepted": 1}

        return app

    def states(self) -> list[tuple[str, str]]:
        return [(a["objectName"], a["alertState"]) for a in self.alerts]


@dataclass
class LabHarness:
    app: FastAPI
    client: httpx.AsyncClient
    cnc: CncClient
    pca: PcaClient
    receiver: Receiver


@asynccontextmanager
async def harness(
    settings: Settings, lab_settings: LabSettings, token: str | None = None
) -> AsyncIterator[LabHarness]:
    """The lab app with its lifespan, CNC/PCA clients on it, and an alert receiver."""
    receiver = Receiver()
    app = create_app(
        settings, lab_settings, alert_transport=httpx.ASGITransport(app=receiver.app())
    )
    async with running(app) as client:
        transport = httpx.ASGITransport(app=app)
        cnc = CncClient("http://lab", token, transport=transport)
        pca = PcaClient("http://lab", token, transport=transport)
        try:
            yield LabHarness(app, client, cnc, pca, receiver)
        finally:
            await cnc.aclose()
            await pca.aclose()


@pytest.fixture
def lab_settings() -> LabSettings:
    """The seed's topology; alert retries fast so failure tests stay quick."""
    return LabSettings(topology="default", push_backoff_s=0.01, push_retries=2)


@pytest.fixture
async def lab(settings: Settings, lab_settings: LabSettings) -> AsyncIterator[LabHarness]:
    """The default lab with alerts pushed to an in-process receiver."""
    async with harness(settings, lab_settings) as h:
        yield h


@pytest.fixture
def make_lab() -> Any:
    """``async with make_lab(settings, lab_settings, token) as h`` for custom labs."""
    return harness

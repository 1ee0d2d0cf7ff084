"""Fixtures for the correlator: a fake clock, a fake CNC, and fake peers that record tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.correlator.app import create_app
from services.correlator.engine import Correlator
from services.correlator.settings import CorrelatorSettings
from shared.settings import Settings
from tests.agents.fakes import TopologyCnc
from tests.support import running, unbatched, wait_for

TOKEN = "test-mesh-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# pe1-pe2 and pe3-pe4 share no node but share SRLG 100 (one conduit); p9-p10 is unrelated to
# the rest. Served as CNC documents it (ietf-network-state); pe1-pe2 ends on
# pe1:GigabitEthernet0/0/0/0 and pe2:GigabitEthernet0/0/0/1.
NODES = ["pe1", "pe2", "pe3", "pe4", "p9", "p10"]
LINKS = [
    ("pe1", "pe2", [100]),
    ("pe2", "pe3", [200]),
    ("pe3", "pe4", [100]),
    ("pe1", "pe4", []),
    ("p9", "p10", [900]),
]


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Peers:
    """Every task the correlator sent, by peer, in order."""

    ports: dict[int, str]
    tasks: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    def handler(self, request: httpx.Request) -> httpx.Response:
        agent = self.ports.get(request.url.port or 0, "unknown")
        body = json.loads(request.content)
        if agent in self.refuse:
            return httpx.Response(503, json={"detail": "down"})
        for task, _ in unbatched(body, None):
            self.tasks.append((agent, task["task_type"], task["payload"]))
        return httpx.Response(
            200, json={"task_id": "t", "task_type": body["task_type"], "result": {}}
        )

    def of(self, agent: str, task_type: str | None = None) -> list[dict[str, Any]]:
        return [p for a, t, p in self.tasks if a == agent and (task_type is None or t == task_type)]


class Cnc(TopologyCnc):
    """CNC with the correlator's topology; ``up = False`` answers 503 to everything."""

    def __init__(self) -> None:
        super().__init__(nodes=list(NODES), links=list(LINKS))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cnc() -> Cnc:
    return Cnc()


@pytest.fixture
def base_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, time_scale=1.0, mesh_token=TOKEN, port=8999)


@pytest.fixture
def peers(base_settings: Settings) -> Peers:
    ports = {}
    for agent in ("io", "orchestrator", "audit"):
        ports[httpx.URL(base_settings.url_of(agent)).port or 0] = agent
    return Peers(ports)


def make_config(**overrides: Any) -> CorrelatorSettings:
    """Timers long enough that only the fake clock moves them."""
    values: dict[str, Any] = {
        "group_wait_s": 3.0,
        "correlation_window_s": 300.0,
        "dedup_window_s": 300.0,
        "tick_s": 3600.0,
        "flap_half_life_s": 60.0,
        "flap_max_suppress_s": 240.0,
    }
    values.update(overrides)
    return CorrelatorSettings(**values)


@dataclass
class Harness:
    client: httpx.AsyncClient
    app: Any
    peers: Peers
    clock: FakeClock

    @property
    def corr(self) -> Correlator:
        correlator: Correlator = self.app.state.correlator
        return correlator

    async def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return await self.client.post(path, json=body, headers=headers, **kwargs)

    async def elapse(self, seconds: float) -> None:
        """Move the clock and run the timers as the ticker would."""
        self.clock.advance(seconds)
        await self.corr.tick()

    async def delivered(self, agent: str, task_type: str, count: int = 1) -> list[dict[str, Any]]:

        def arrived() -> bool:
            # shared.outbox clears its wake-up flag after a pass, so a put made during a pass
            # can wait for the idle timeout (5 s); nudging it keeps tests fast.
            self.app.state.outbox.wake()
            return len(self.peers.of(agent, task_type)) >= count

        await wait_for(arrived, timeout=10)
        return self.peers.of(agent, task_type)

    async def flush(self) -> None:
        await self.app.state.outbox.flush(timeout=10)


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def harness(
    base_settings: Settings, peers: Peers, clock: FakeClock, cnc: Cnc
) -> AsyncIterator[Callable[..., Any]]:
    """``async with harness(**config) as h`` runs the correlator in-process."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(
        settings: Settings | None = None,
        llm_transport: httpx.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Harness]:
        app = create_app(
            settings or base_settings,
            mesh_transport=httpx.MockTransport(peers.handler),
            config=make_config(**overrides),
            clock=clock,
            cnc_transport=httpx.MockTransport(cnc.handler),
            llm_transport=llm_transport,
        )
        async with running(app) as client:
            yield Harness(client, app, peers, clock)

    yield start

"""Service Impact's shared services read (issue 16): concurrent assessments take one read,
and nothing is kept after it, so an assessment always sees what CNC changed before it."""

from __future__ import annotations

import asyncio

import pytest

from services.impact.app import create_app
from shared.settings import Settings
from shared.southbound import CncClient, VpnService
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running

DEGRADED = {"incident_id": "INC-2026-0001", "degraded_links": ["pe1-pe2", "pe2-pe3"]}


async def test_assessments_during_a_read_share_it(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    reads = 0
    read = CncClient.services

    async def gated(self: CncClient) -> list[VpnService]:
        nonlocal reads
        reads += 1
        entered.set()
        await release.wait()
        return await read(self)

    monkeypatch.setattr(CncClient, "services", gated)
    app = create_app(agent_settings)
    async with running(app):
        callers = [asyncio.create_task(app.state.services()) for _ in range(3)]
        await entered.wait()  # every caller was scheduled before the read itself ran
        release.set()
        first, *others = await asyncio.gather(*callers)
        assert reads == 1 and all(other is first for other in others)
        await app.state.services()
    assert reads == 2  # the read answered: the next caller reads again


async def test_an_assessment_sees_a_change_made_after_the_last_read(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        burst = await asyncio.gather(
            *(run_task(client, "assess_impact", DEGRADED) for _ in range(4))
        )
        assert {r.json()["result"]["total_affected"] for r in burst} == {15}
        # vpn-x1 (pe1 -> pe4) moves onto pe1-pe2: CNC now lists it there
        moved = next(s for s in net.services if s["vpn-id"] == "vpn-x1")
        moved["path"] = ["pe1-pe2", "pe2-pe3", "pe3-pe4"]
        after = await run_task(client, "assess_impact", DEGRADED)
    result = after.json()["result"]
    assert result["total_affected"] == 16
    assert "vpn-x1" in {s["service_id"] for s in result["affected_services"]}

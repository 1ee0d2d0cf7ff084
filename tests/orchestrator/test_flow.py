"""The incident flow in-process against fake peers: the seed's phases, branches and errors."""

from __future__ import annotations

from shared.models import NODES
from tests.orchestrator.conftest import OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork
from tests.support import wait_for


async def test_happy_path_follows_the_seed(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    net.sla_script = [False, True]  # degraded once, then recovered for the hold time
    async with orchestrator() as orch:
        started = await orch.start("INC-2026-0001")
        assert started["created"] is True
        closed = await orch.closed("INC-2026-0001")
    print(net.statuses("INC-2026-0001"))
    assert closed["resolution"] == "resolved"
    assert closed["details"]["nodes_executed"] == list(NODES)

"""Path Computation: bandwidth promised to an incident's other policies (``reserved_mbps``).

An incident that protects several groups of services asks for one path per group. The
policies are not in CNC yet when the next group's path is computed, so the orchestrator
passes what the earlier groups' paths will carry; it must count as load, or two groups would
each fit a link alone and oversubscribe it together.
"""

from __future__ import annotations

from shared.settings import Settings
from tests.agents.test_path_bandwidth import (
    AROUND,
    BUSY,
    CORRIDOR,
    DEGRADED,
    _ask,
    _graph,
    _path,
    lab_path,
    lab_settings,
)

__all__ = ["lab_settings"]  # the fixture, shared with the bandwidth tests


def test_reserved_bandwidth_reduces_headroom() -> None:
    """a-b has 1,000 Mbps of headroom after BUSY; 600 promised elsewhere leaves 400."""
    free = _graph().reserve([BUSY], [], reservable_share=0.8)
    fits = free.shortest(_ask(500))
    graph = _graph().reserve([BUSY], [], reserved={"b-a": 600}, reservable_share=0.8)
    detour = graph.shortest(_ask(500))
    assert fits.path == ["a", "b", "d"]
    assert graph.headroom(graph.links["a-b"]) == 400  # named either way round
    assert detour.path == ["a", "c", "d"]


async def test_reserved_mbps_on_the_wire_counts_as_load(lab_settings: Settings) -> None:
    async with lab_path(lab_settings) as (path, _):
        ask = {"avoid_links": DEGRADED, "min_bandwidth_mbps": 4100, "carrying": CORRIDOR}
        alone = await _path(path, **ask)
        shared = await _path(path, **ask, reserved_mbps={"p2-pe4": 2000})
        crowded = await _path(path, **ask, reserved_mbps={"p2-pe4": 3000})
    assert alone["path"] == AROUND and alone["min_headroom_mbps"] == 6600
    assert shared["path"] == AROUND and shared["min_headroom_mbps"] == 4600
    assert crowded["path"] != AROUND  # 3,600 left on p2-pe4: the corridor no longer fits

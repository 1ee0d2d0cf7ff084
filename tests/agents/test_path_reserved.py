"""Path Computation: bandwidth promised to an incident's other policies (``reserved_mbps``).

An incident that protects several groups of services asks for one path per group. The
policies are not in CNC yet when the next group's path is computed, so the orchestrator
passes what the earlier groups' paths will carry; it must count as load, or two groups would
each fit a link alone and oversubscribe it together.
"""

from __future__ import annotations

from shared.settings import Settings
from tests.agents.fakes import run_task
from tests.agents.test_path_bandwidth import (
    AROUND,
    BUSY,
    CORRIDOR,
    DEGRADED,
    _ask,
    _graph,
    _path,
    _service,
    lab_path,
    lab_settings,
)

__all__ = ["lab_settings"]  # the fixture, shared with the bandwidth tests


def test_reserved_bandwidth_reduces_headroom() -> None:
    """a-b has 1,000 Mbps of headroom after BUSY; 600 promised elsewhere leaves 400."""
    free = _graph().reserve([BUSY], reservable_share=0.8)
    fits = free.shortest(_ask(500))
    graph = _graph().reserve([BUSY], reserved={"b-a": 600}, reservable_share=0.8)
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


MOVER = _service("mover", 900, ["a-b", "b-d"])


def test_a_plan_reserves_each_path_and_leaves_a_stuck_group_where_it_is() -> None:
    """``compute_paths``: the group that finds no path keeps its 900 Mbps on a-b, so the next
    group (500 Mbps) no longer fits there (100 left) and goes round by c."""
    stuck = _ask(900, avoid_links=["a-b", "a-c"], carrying=["mover"])
    after = _ask(500)
    first, second = _graph().plan([stuck, after], [BUSY, MOVER], reservable_share=0.8)
    assert not first.found
    assert second.path == ["a", "c", "d"]
    # had the stuck group moved, its load would have left a-b: 1,000 Mbps of room there
    [alone] = _graph().plan([after], [BUSY], reservable_share=0.8)
    assert alone.path == ["a", "b", "d"]


async def test_compute_paths_fits_an_incidents_groups_together(lab_settings: Settings) -> None:
    """Two groups that each fit the way round alone (6,600 Mbps of room) cannot both: the
    second is planned with the first's 4,100 Mbps already on it, and the thin way round
    (2,500 Mbps links) cannot carry it either."""
    ask = {
        "incident_id": "INC-1",
        "head_end": "pe1",
        "end_point": "pe4",
        "avoid_links": DEGRADED,
        "min_bandwidth_mbps": 4100,
    }
    body = {
        "incident_id": "INC-1",
        "requests": [{**ask, "carrying": CORRIDOR[:8]}, {**ask, "carrying": CORRIDOR[8:]}],
    }
    async with lab_path(lab_settings) as (path, _):
        response = await run_task(path, "compute_paths", body)
        empty = await run_task(path, "compute_paths", {"incident_id": "INC-1", "requests": []})
    assert response.status_code == 200, response.text
    first, second = response.json()["result"]["results"]
    assert first["path"] == AROUND and first["min_headroom_mbps"] == 6600
    assert not second["found"]
    assert "bandwidth is the constraint" in second["reason"] and "2500 Mbps" in second["reason"]
    assert empty.status_code == 422 and "requests" in empty.text

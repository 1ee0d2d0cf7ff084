"""Path Computation leaves out links PCA measures out of SLA, whichever incident has them.

Concurrent incidents each ask to avoid only their own degraded links; without this, one
incident's tunnel was routed over another's degraded link and had to be moved right away.
"""

from __future__ import annotations

import httpx

from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.path.app import create_app as path_app
from services.path.settings import PathSettings
from shared.settings import Settings
from tests.agents.test_path_bandwidth import _ask, _graph, _path
from tests.support import running


def test_a_link_out_of_sla_is_left_out_and_the_reason_says_so() -> None:
    graph = _graph().degraded(["b-a"])
    found = graph.shortest(_ask(100))
    assert found.path == ["a", "c", "d"]
    none = graph.degraded(["a-b", "c-d"]).shortest(_ask(100))
    assert none.found is False
    assert "nor over the 2 link(s) PCA measures out of SLA" in (none.reason or "")


async def test_another_incidents_degraded_link_is_avoided_on_the_lab(settings: Settings) -> None:
    lab_settings = settings.model_copy(update={"cnc_url": "http://lab", "pca_url": "http://lab"})
    lab = lab_app(lab_settings, LabSettings(push_alerts=False))
    transport = httpx.ASGITransport(app=lab)
    on = path_app(lab_settings, southbound_transport=transport)
    off = path_app(
        lab_settings,
        southbound_transport=transport,
        path_settings=PathSettings(avoid_out_of_sla=False),
    )
    avoid = {"avoid_links": ["pe1-pe2", "pe2-pe3"]}
    async with running(lab) as control, running(on) as path, running(off) as blind:
        assert (await _path(path, **avoid))["path"] == ["pe1", "p1", "p2", "pe4"]
        # p1-p2 degrades (another incident's link: this request does not name it)
        response = await control.post("/lab/links/p1-p2/degrade", json={})
        assert response.status_code < 300, response.text
        around = await _path(path, **avoid)
        assert "p1-p2" not in around["links"]
        assert around["path"][0] == "pe1" and around["path"][-1] == "pe4"
        assert (await _path(blind, **avoid))["path"] == ["pe1", "p1", "p2", "pe4"]
        assert on.state.graph.sla_reads >= 2

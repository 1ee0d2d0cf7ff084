"""Path Computation prices in links PCA measures out of SLA, whichever incident has them.

Concurrent incidents each ask to avoid only their own degraded links; without this, one
incident's tunnel was routed over another's degraded link and had to be moved right away. A link
out of SLA is a cost, not a ban: avoided when there is another way, crossed (the mildest) when
there is none, and the result names it; the request's own ``avoid_links`` stay a ban.
"""

from __future__ import annotations

import httpx

from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.path.app import create_app as path_app
from services.path.graph import SlaBreach
from services.path.settings import PathSettings
from shared.settings import Settings
from shared.southbound import LinkMetrics, Thresholds
from tests.agents.test_path_bandwidth import _ask, _graph, _path
from tests.support import running


def test_a_link_out_of_sla_is_left_out_when_there_is_another_way() -> None:
    graph = _graph().degraded(["b-a"])
    found = graph.shortest(_ask(100))
    assert found.path == ["a", "c", "d"]
    assert found.out_of_sla_links == [] and found.reason is None


def test_the_only_way_crosses_the_mildest_link_out_of_sla_and_says_so() -> None:
    """a → d has two ways, each now over a degraded link: no path is worse than a mild one."""
    mild = SlaBreach("c-d", 1.2, "delay 60 ms over 50 ms")
    bad = SlaBreach("a-b", 3.0, "loss 3 % over 1 %")
    crossed = _graph().degraded({"a-b": bad, "c-d": mild}).shortest(_ask(100))
    assert crossed.found and crossed.path == ["a", "c", "d"]  # slower, but milder
    assert crossed.out_of_sla_links == ["c-d"]
    assert "crosses 1 link(s) PCA measures out of SLA: c-d (delay 60 ms over 50 ms)" in (
        crossed.reason or ""
    )
    assert "no path from a to d under the request's constraints avoids" in (crossed.reason or "")
    # equally bad: the metric decides
    even = _graph().degraded(["a-b", "c-d"]).shortest(_ask(100))
    assert even.path == ["a", "b", "d"] and even.out_of_sla_links == ["a-b"]


def test_fewer_links_out_of_sla_win_over_a_shorter_path() -> None:
    detour = _graph().degraded(["a-b", "b-d"]).shortest(_ask(100))
    assert detour.path == ["a", "c", "d"] and detour.out_of_sla_links == []
    one = _graph().degraded(["a-b", "b-d", "c-d"]).shortest(_ask(100))
    assert one.path == ["a", "c", "d"] and one.out_of_sla_links == ["c-d"]


def test_the_requests_own_links_stay_a_ban() -> None:
    graph = _graph().degraded(["c-d"])
    around = graph.shortest(_ask(100, avoid_links=["a-b"]))
    assert around.path == ["a", "c", "d"] and around.out_of_sla_links == ["c-d"]
    none = graph.shortest(_ask(100, avoid_links=["a-b", "d-c"]))
    assert none.found is False
    assert "even across the 1 link(s) PCA measures out of SLA" in (none.reason or "")


def test_alternatives_name_the_links_out_of_sla_they_cross() -> None:
    paths = _graph().degraded(["a-b"]).k_shortest(_ask(100), 2)
    assert [(p.path, p.out_of_sla_links) for p in paths] == [
        (["a", "c", "d"], []),
        (["a", "b", "d"], ["a-b"]),
    ]


def test_a_breach_is_the_worst_metric_against_its_threshold() -> None:
    limits = Thresholds(delay_ms=50, jitter_ms=10, loss_pct=1)

    def measured(delay: float, jitter: float, loss: float) -> LinkMetrics:
        return LinkMetrics.model_validate(
            {
                "objectName": "x-y",
                "delay-avg": delay,
                "delay-var-avg": jitter,
                "packets-lost-pct": loss,
                "timestamp": "now",
            }
        )

    assert SlaBreach.of("x-y", measured(10, 1, 0), limits) is None
    breach = SlaBreach.of("x-y", measured(83, 15.2, 2), limits)
    assert breach == SlaBreach("x-y", 2.0, "loss 2 % over 1 %")
    assert SlaBreach.of("x-y", measured(50, 1, 0), limits) == SlaBreach(
        "x-y", 1.0, "delay 50 ms over 50 ms"
    )


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
        # p1-p2 loses packets (another incident's link: this request does not name it); no
        # delay is added, so only PCA's view, not CNC's measured delay, tells it apart
        degrade = {"delay_ms": 0, "jitter_ms": 0, "loss_pct": 3}
        response = await control.post("/lab/links/p1-p2/degrade", json=degrade)
        assert response.status_code < 300, response.text
        around = await _path(path, **avoid)
        assert "p1-p2" not in around["links"]
        assert around["path"][0] == "pe1" and around["path"][-1] == "pe4"
        assert (await _path(blind, **avoid))["path"] == ["pe1", "p1", "p2", "pe4"]
        assert on.state.graph.sla_reads >= 2


async def test_the_only_way_out_crosses_a_degraded_link_on_the_lab(settings: Settings) -> None:
    """pe1 has two links: with pe1-pe2 the incident's own, degraded pe1-p1 is the only way out."""
    lab_settings = settings.model_copy(update={"cnc_url": "http://lab", "pca_url": "http://lab"})
    lab = lab_app(lab_settings, LabSettings(push_alerts=False))
    on = path_app(lab_settings, southbound_transport=httpx.ASGITransport(app=lab))
    async with running(lab) as control, running(on) as path:
        response = await control.post("/lab/links/pe1-p1/degrade", json={})
        assert response.status_code < 300, response.text
        crossed = await _path(path, avoid_links=["pe1-pe2"])
        assert crossed["found"] is True and crossed["path"][:2] == ["pe1", "p1"]
        assert crossed["out_of_sla_links"] == ["pe1-p1"]
        assert "pe1-p1 (loss 2 % over 1 %)" in crossed["reason"]
        banned = await _path(path, avoid_links=["pe1-pe2", "pe1-p1"])
        assert banned["found"] is False

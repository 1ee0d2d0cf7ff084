"""Path Computation: Dijkstra with avoided links/nodes/SRLGs, metric choice, no path."""

from __future__ import annotations

from typing import Any

import httpx

from services.path.app import create_app
from services.path.settings import PathSettings
from services.traffic.app import create_app as create_traffic_app
from services.traffic.settings import TrafficSettings
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running

DEGRADED = ["pe1-pe2", "pe2-pe3"]


def _request(**overrides: Any) -> dict[str, Any]:
    return {
        "incident_id": "INC-2026-0001",
        "head_end": "pe1",
        "end_point": "pe4",
        "avoid_links": DEGRADED,
        **overrides,
    }


async def _compute(client: Any, **overrides: Any) -> dict[str, Any]:
    response = await run_task(client, "compute_path", _request(**overrides))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_avoids_degraded_links_on_delay(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings)) as client:
        direct = await _compute(client, avoid_links=[])
        result = await _compute(client)
    assert direct["path"] == ["pe1", "pe2", "pe3", "pe4"]
    assert result["found"] is True
    assert result["path"] == ["pe1", "p1", "p2", "pe4"]
    assert result["links"] == ["pe1-p1", "p1-p2", "p2-pe4"]
    assert result["hop_count"] == 4  # as in the seed's phase 3
    assert result["total_delay_ms"] == 9
    assert result["metric"] == "delay"
    assert result["path_type"] == "sr-mpls"


async def test_te_metric_chooses_a_different_path(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        te = await _compute(client, metric="te")
        hops = await _compute(client, metric="hops", avoid_nodes=["p3"])
    assert te["path"] == ["pe1", "p3", "pe4"]
    assert te["total_metric"] == 10
    assert te["total_delay_ms"] == 20
    assert te["path_type"] == "rsvp-te"
    # pe1-p4-pe4 has fewer hops, but p4 runs no TE at all: no tunnel can cross it
    assert hops["hop_count"] == 4 and hops["path"] == ["pe1", "p1", "p2", "pe4"]
    assert hops["path_type"] == "sr-mpls"


async def test_a_path_is_one_te_technology_end_to_end(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        srv6 = await _compute(client, metric="te", te_type="srv6")
        none = await _compute(client, avoid_nodes=["p1"], te_type="srv6")
    # te metric alone prefers rsvp-te via p3; srv6 must avoid p3 (rsvp-te only)
    assert srv6["path"] == ["pe1", "p1", "p2", "pe4"] and srv6["path_type"] == "srv6"
    assert "srv6" in srv6["te_types"]
    assert none["found"] is False and "srv6" in none["reason"]


async def test_avoided_nodes_srlgs_and_bandwidth(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        no_p1 = await _compute(client, avoid_nodes=["p1"])
        srlg = await _compute(client, srlg_disjoint=True)
        too_big = await _compute(client, min_bandwidth_mbps=20000)
    assert no_p1["path"] == ["pe1", "p3", "pe4"]
    # p1-p2 shares SRLG 100 with the avoided pe2-pe3: a common fate, so avoid it too.
    assert srlg["path"] == ["pe1", "p3", "pe4"]
    assert too_big["found"] is False
    assert "20000 Mbps" in too_big["reason"]


async def test_no_path_is_an_answer_not_an_error(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        result = await _compute(client, avoid_links=["pe1-pe2", "pe1-p1", "pe1-p3", "pe1-p4"])
        unknown = await _compute(client, end_point="pe9")
    assert result["found"] is False
    assert result["path"] == [] and result["hop_count"] == 0
    assert "no path from pe1 to pe4" in result["reason"]
    assert unknown["found"] is False and "pe9" in unknown["reason"]


async def test_down_links_are_not_used(agent_settings: Settings, net: FakeNetwork) -> None:
    net.topology["links"][4]["oper-status"] = "down"  # p1-p2
    async with running(create_app(agent_settings)) as client:
        result = await _compute(client)
    assert result["path"] == ["pe1", "p3", "pe4"]


async def test_graph_is_cached_and_rebuilt_on_change(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    app = create_app(agent_settings, path_settings=PathSettings(topology_ttl_s=3600))
    async with running(app) as client:
        await _compute(client)
        await _compute(client)
        assert net.topology_reads == 1
        net.topology["links"][4]["delay-ms"] = 100  # p1-p2 gets slow
        stale = await _compute(client)
        assert stale["path"] == ["pe1", "p1", "p2", "pe4"]
        topo = (await run_task(client, "get_topology", {"refresh": True})).json()["result"]
        fresh = await _compute(client)
    assert app.state.graph.builds == 2
    assert len(topo["nodes"]) == 8 and len(topo["links"]) == 10
    assert fresh["path"] == ["pe1", "p3", "pe4"]


def _pm_reads(net: FakeNetwork) -> int:
    return sum("igp-link-pm=" in path for _, path in net.requests)


async def test_measurements_are_read_on_their_own_clock(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """Each link's delay comes from one keyed performance read per direction: a request reads
    them once (even when the structure's TTL runs out within it), a structure refresh within
    ``measurement_ttl_s`` reads only a new link's, and the measurement TTL reads them all."""
    every_time = PathSettings(topology_ttl_s=1e-9, measurement_ttl_s=1e-9, measurement_min_ttl_s=0)
    async with running(create_app(agent_settings, path_settings=every_time)) as client:
        await _compute(client)
        assert _pm_reads(net) == 2 * len(net.topology["links"])

    net.requests.clear()
    kept = PathSettings(topology_ttl_s=1e-9, measurement_ttl_s=3600)
    app = create_app(agent_settings, path_settings=kept)
    async with running(app) as client:
        await _compute(client)
        assert _pm_reads(net) == 20
        net.topology["links"][4]["delay-ms"] = 100  # p1-p2 gets slow: not read yet
        assert (await _compute(client))["path"] == ["pe1", "p1", "p2", "pe4"]
        assert _pm_reads(net) == 20 and net.topology_reads >= 2
        net.topology["links"].append(
            {**net.topology["links"][0], "link-id": "p1-p3", "source": "p1", "destination": "p3"}
        )
        summary = (await run_task(client, "get_topology", {})).json()["result"]
        assert _pm_reads(net) == 22  # the new link's two directions only
        assert len(summary["links"]) == 11
        fresh = (await run_task(client, "get_topology", {"refresh": True})).json()["result"]
        assert _pm_reads(net) == 22 + 22
        assert (await _compute(client))["path"] == ["pe1", "p3", "pe4"]
    assert len(fresh["links"]) == 11


async def test_k_shortest_paths(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(client, "k_shortest_paths", {**_request(), "k": 5})
    paths = [p["path"] for p in response.json()["result"]["paths"]]
    assert paths == [["pe1", "p1", "p2", "pe4"], ["pe1", "p3", "pe4"], ["pe1", "p4", "pe4"]]


async def test_link_loads_and_delays_come_from_the_traffic_agents_sample(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """The traffic agent reads every link's metrics on its own clock: the path agent takes
    its sample (at most ``measurement_ttl_s`` old) instead of reading them again, and a
    refresh asks for one taken now. Without it (the other tests), CNC is read here."""
    traffic = create_traffic_app(
        agent_settings, traffic_settings=TrafficSettings(sampler_enabled=False)
    )
    kept = PathSettings(topology_ttl_s=1e-9, measurement_ttl_s=3600)
    async with running(traffic) as traffic_client:
        await run_task(traffic_client, "link_utilisation", {})  # the sampler's last sample
        sampled = _pm_reads(net)
        net.topology["links"][4]["delay-ms"] = 100  # p1-p2 gets slow after that sample
        path = create_app(
            agent_settings, path_settings=kept, mesh_transport=httpx.ASGITransport(app=traffic)
        )
        async with running(path) as client:
            # the sample's delays: p1-p2 still fast, and nothing read from CNC for it
            assert (await _compute(client))["path"] == ["pe1", "p1", "p2", "pe4"]
            assert (await _compute(client))["path"] == ["pe1", "p1", "p2", "pe4"]
            assert _pm_reads(net) == sampled
            assert path.state.graph.traffic_reads == 2 and net.topology_reads >= 2
            await run_task(client, "get_topology", {"refresh": True})  # a sample taken now
            assert _pm_reads(net) == 2 * sampled
            assert (await _compute(client))["path"] == ["pe1", "p3", "pe4"]

"""Traffic Analytics: utilisation from counter deltas, the demand matrix, congestion forecast."""

from __future__ import annotations

from services.traffic import store
from services.traffic.app import create_app
from services.traffic.settings import TrafficSettings
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running, wait_for

QUIET = TrafficSettings(sampler_enabled=False)
GBIT = 1e9 / 8  # octets per second at 1 Gbps


def _sample(net: FakeNetwork, t: float, octets: dict[str, tuple[float, float]]) -> None:
    net.counters = {
        link: {"in-octets": a, "out-octets": b, "capacity-mbps": 10000, "timestamp": t}
        for link, (a, b) in octets.items()
    }


async def test_utilisation_from_two_counter_samples(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        _sample(net, 1000.0, {"pe1-pe2": (0, 0), "pe2-pe3": (5e9, 0)})
        first = (await run_task(client, "link_utilisation", {})).json()["result"]
        # 10 s later: pe1-pe2 carried 4 Gbps in and 1 Gbps out; pe2-pe3 1 Gbps in.
        _sample(net, 1010.0, {"pe1-pe2": (40 * GBIT, 10 * GBIT), "pe2-pe3": (5e9 + 10 * GBIT, 0)})
        second = (await run_task(client, "link_utilisation", {"links": ["pe2-pe1"]})).json()
    assert first["links"]["pe1-pe2"]["utilisation_pct"] is None
    links = second["result"]["links"]
    assert list(links) == ["pe1-pe2"]
    load = links["pe1-pe2"]
    assert load["utilisation_pct"] == 40.0
    assert load["directions"] == {"in-octets": 40.0, "out-octets": 10.0}
    assert load["interval_s"] == 10.0


async def test_counter_reset_gives_no_rate(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        _sample(net, 0.0, {"pe1-pe2": (9e9, 9e9)})
        await run_task(client, "link_utilisation", {})
        _sample(net, 10.0, {"pe1-pe2": (1e3, 1e3)})
        result = (await run_task(client, "link_utilisation", {})).json()["result"]
    assert result["links"]["pe1-pe2"]["utilisation_pct"] is None


async def test_demand_matrix_from_services(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        everything = (await run_task(client, "demand_matrix", {})).json()["result"]
        platinum = (await run_task(client, "demand_matrix", {"tiers": ["platinum"]})).json()
    # 8 services pe1→pe3 and 7 pe3→pe2 at 100 Mbps, 3 pe1→pe4 at 250 Mbps.
    assert everything["matrix"] == {
        "pe1": {"pe3": 800.0, "pe4": 750.0},
        "pe3": {"pe2": 700.0},
    }
    assert everything["total_mbps"] == 2250.0
    assert everything["nodes"] == ["pe1", "pe2", "pe3", "pe4"]
    assert platinum["result"]["matrix"] == {
        "pe1": {"pe3": 100.0, "pe4": 250.0},
        "pe3": {"pe2": 100.0},
    }


async def test_predicts_congestion_from_a_rising_trend(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        rising = 0.0
        flat = 0.0
        for step in range(6):
            _sample(net, 60.0 * step, {"pe1-pe2": (rising, 0), "p1-p2": (flat, 0)})
            await run_task(client, "link_utilisation", {})
            rising += 60 * (1 + step) * GBIT  # 10 %, 20 %, 30 % ... of 10 Gbps
            flat += 60 * 2 * GBIT  # a steady 20 %
        response = await run_task(client, "predict_congestion", {"horizon_s": 180})
    result = response.json()["result"]
    assert result["threshold_pct"] == 70
    assert result["congested_links"] == ["pe1-pe2"]
    hot = result["links"]["pe1-pe2"]
    assert hot["samples"] == 5 and hot["current_pct"] == 50.0
    assert hot["trend_pct_per_s"] > 0 and hot["predicted_pct"] >= 70
    calm = result["links"]["p1-p2"]
    assert calm["predicted_pct"] == 20.0 and calm["congested"] is False


async def test_sampler_runs_in_the_lifespan(agent_settings: Settings, net: FakeNetwork) -> None:
    """With the sampler on (1 s x time scale 0.01), counters are sampled without any task."""
    _sample(net, 0.0, {"pe1-pe2": (0, 0)})
    app = create_app(agent_settings, traffic_settings=TrafficSettings(sample_interval_s=1))
    async with running(app):
        latest = await wait_for(lambda: store.latest(app.state.engine), timeout=10)
    assert set(latest) == {"pe1-pe2"}

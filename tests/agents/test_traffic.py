"""Traffic Analytics: utilisation from CNC's link rates, the demand matrix, congestion forecast."""

from __future__ import annotations

import asyncio

from services.traffic import store
from services.traffic.app import create_app
from services.traffic.settings import TrafficSettings
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running, wait_for

QUIET = TrafficSettings(sampler_enabled=False)


async def test_utilisation_is_cncs_rate_over_capacity(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """One read is enough: CNC reports a rate per direction, not a counter."""
    net.utilisation["pe1-pe2"] = 4000.0
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        every = (await run_task(client, "link_utilisation", {})).json()["result"]
        one = (await run_task(client, "link_utilisation", {"links": ["pe2-pe1"]})).json()
    assert set(every["links"]) == {link["link-id"] for link in net.topology["links"]}
    links = one["result"]["links"]
    assert list(links) == ["pe1-pe2"]
    load = links["pe1-pe2"]
    assert load["utilisation_pct"] == 40.0
    assert load["rate_mbps"] == 4000.0 and load["capacity_mbps"] == 10000.0
    # with no figure of the test's, a link carries what the services riding it put on it
    assert every["links"]["pe2-pe3"]["rate_mbps"] == 1500.0  # 15 services x 100 Mbps
    assert every["links"]["p4-pe4"]["utilisation_pct"] == 0.0


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
    """A minute between samples (stored as the sampler stores them): pe1-pe2 climbs 10 % a
    minute, p1-p2 holds at 20 %."""
    app = create_app(agent_settings, traffic_settings=QUIET)
    async with running(app) as client:
        for step in range(5):
            rows = [
                _row("pe1-pe2", 60.0 * step, 10.0 * (1 + step)),
                _row("p1-p2", 60.0 * step, 20.0),
            ]
            await store.add(app.state.engine, rows, keep=QUIET.history)
        response = await run_task(client, "predict_congestion", {"horizon_s": 180})
    result = response.json()["result"]
    assert result["threshold_pct"] == 70
    assert result["congested_links"] == ["pe1-pe2"]
    hot = result["links"]["pe1-pe2"]
    assert hot["samples"] == 5 and hot["current_pct"] == 50.0
    assert hot["trend_pct_per_s"] > 0 and hot["predicted_pct"] >= 70
    calm = result["links"]["p1-p2"]
    assert calm["predicted_pct"] == 20.0 and calm["congested"] is False


def _row(link: str, ts: float, pct: float) -> dict[str, object]:
    return {
        "link_id": link,
        "ts": ts,
        "octets": {},
        "capacity_mbps": 10000.0,
        "utilisation_pct": pct,
        "rate_mbps": pct * 100,
        "directions": None,
    }


async def test_sampler_runs_in_the_lifespan(agent_settings: Settings, net: FakeNetwork) -> None:
    """With the sampler on (1 s x time scale 0.01), loads are sampled without any task."""
    app = create_app(agent_settings, traffic_settings=TrafficSettings(sample_interval_s=1))
    async with running(app):
        latest = await wait_for(lambda: store.latest(app.state.engine), timeout=10)
    assert set(latest) == {link["link-id"] for link in net.topology["links"]}


def _pm_reads(net: FakeNetwork) -> int:
    return sum("igp-link-pm=" in path for _, path in net.requests)


async def test_a_young_enough_sample_is_answered_without_reading_cnc(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """``max_age_s`` takes the last sample when it is young enough (the path agent's way of
    reading every link's load), and callers that find it too old share one new read."""
    per_sample = 2 * len(net.topology["links"])
    async with running(create_app(agent_settings, traffic_settings=QUIET)) as client:
        first = (await run_task(client, "link_utilisation", {})).json()["result"]
        assert _pm_reads(net) == per_sample
        net.utilisation["pe1-pe2"] = 4000.0  # CNC's rate moves; the kept sample does not
        kept = (await run_task(client, "link_utilisation", {"max_age_s": 3600})).json()
        assert _pm_reads(net) == per_sample
        assert kept["result"] == first  # the same sample, with the time it was taken
        assert kept["result"]["links"]["pe1-pe2"]["rate_mbps"] != 4000.0

        burst = await asyncio.gather(
            *(run_task(client, "link_utilisation", {"max_age_s": 0}) for _ in range(5))
        )
        assert _pm_reads(net) <= 3 * per_sample  # not one read per caller
        loads = [r.json()["result"]["links"]["pe1-pe2"] for r in burst]
        assert all(load["rate_mbps"] == 4000.0 for load in loads)
        pe1_pe2 = next(link for link in net.topology["links"] if link["link-id"] == "pe1-pe2")
        assert loads[0]["delay_ms"] == float(pe1_pe2["delay-ms"])  # typed, for the path agent

        reads = _pm_reads(net)
        now = (await run_task(client, "link_utilisation", {})).json()["result"]
        assert _pm_reads(net) == reads + per_sample  # no max_age_s: sampled now, as before
        assert now["sampled_at"] > first["sampled_at"]

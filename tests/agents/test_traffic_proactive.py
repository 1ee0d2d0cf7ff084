"""Traffic Analytics' proactive side (issue 14): the watcher that raises a proactive alert
through the correlator before a link congests, and ``link_forecast`` (native load).

The agent runs against the respx CNC (``tests/agents/fakes.py``) with its sampler in the
lifespan; the correlator is a respx route on its ``/a2a/tasks`` that records what it accepts
(once per idempotency key, as the real one does) and can be taken down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from services.traffic import store
from services.traffic.analytics import forecast, forecast_points, load_forecast, native_series
from services.traffic.app import create_app
from services.traffic.settings import TrafficSettings, link_class
from services.traffic.watcher import AlertState, Rules, proactive_alert, step
from shared.models import IngestAlerts, LinkLoadForecast
from shared.outbox import Outbox
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running, wait_for

CORRELATOR = "http://correlator.test"
CAPACITY = 10000.0  # Mbps of every link of the fake network
LINK = "pe1-pe2"


@dataclass
class FakeCorrelator:
    """The correlator's ``/a2a/tasks``: accepts ``ingest_alerts`` once per idempotency key."""

    down: bool = False
    refused: int = 0
    accepted: list[IngestAlerts] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            return httpx.Response(503, json={"detail": "correlator starting"})
        body = json.loads(request.content)
        assert body["task_type"] == "ingest_alerts"
        assert request.headers["authorization"] == "Bearer test-mesh-token"
        payload = IngestAlerts.model_validate(body["payload"])  # the contract, exactly
        key = request.headers["idempotency-key"]
        if key not in self.keys:
            self.keys.add(key)
            self.accepted.append(payload)
        result = {"accepted": len(payload.alerts), "alerts": []}
        return httpx.Response(
            200, json={"task_id": key, "task_type": "ingest_alerts", "result": result}
        )

    def alerts(self, status: str) -> list[Any]:
        return [a for p in self.accepted for a in p.alerts if a.status == status]


@pytest.fixture
def peers() -> Iterator[tuple[FakeNetwork, FakeCorrelator]]:
    network, correlator = FakeNetwork(), FakeCorrelator()
    with respx.mock(assert_all_called=False) as router:
        network.install(router)
        router.route(host="correlator.test").mock(side_effect=correlator.handle)
        yield network, correlator


def watching(settings: Settings, **overrides: Any) -> FastAPI:
    """The agent sampling every 0.05 s (5 s x time scale 0.01), horizon 3 s, resolve hold
    0.1 s, and no repeat within the test."""
    cfg = {
        "sample_interval_s": 5,
        "sample_min_interval_s": 0,
        "alert_repeat_s": 1e6,
        "resolve_hold_s": 10,
        **overrides,
    }
    app_settings = settings.model_copy(update={"correlator_url": CORRELATOR})
    return create_app(app_settings, traffic_settings=TrafficSettings(**cfg))


async def samples(app: FastAPI, n: int) -> None:
    """Wait until the sampler has stored ``n`` more samples of LINK.

    Three are enough for a change of the network to be sampled *and* watched: the first may
    have read CNC before the change, the second read after it, and its watch pass ends
    before the third is taken.
    """
    for _ in range(n):
        before = (await store.latest(app.state.engine)).get(LINK, {}).get("id", 0)

        async def newer(before: int = before) -> bool:
            return (await store.latest(app.state.engine)).get(LINK, {}).get("id", 0) > before

        await wait_for(newer, timeout=30)


def load(network: FakeNetwork, pct: float) -> None:
    network.utilisation[LINK] = pct / 100 * CAPACITY


# --- the watcher, on the agent --------------------------------------------------------------


async def test_a_rising_link_raises_one_proactive_alert_before_it_congests_and_one_resolved(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    network, correlator = peers
    load(network, 30)
    app = watching(agent_settings)
    async with running(app):
        await samples(app, 4)  # a flat history: nothing predicted
        assert correlator.accepted == []
        # a steady ramp, 5 points every two samples (the first sample after a change may have
        # read CNC before it). A staircase of long flat steps is no trend: the forecast of a
        # step levels off and its alert resolves before the next step.
        fired_at = None
        for pct in range(35, 70, 5):
            load(network, pct)
            await samples(app, 2)
            if correlator.alerts("firing"):
                fired_at = pct
                break
        if fired_at is None:  # the last step's watch pass may end after its samples
            await samples(app, 2)
            fired_at = pct if correlator.alerts("firing") else None
        assert fired_at is not None, "no proactive alert while the link climbed to 65 %"
        # on past the threshold and staying there: the alert is not sent again
        for pct in [*range(fired_at + 5, 90, 5), 85, 85]:
            load(network, pct)
            await samples(app, 2)
        await samples(app, 3)
        assert len(correlator.alerts("firing")) == 1
        assert correlator.alerts("resolved") == []
        # the load falls under the release threshold (60 %) for the hold: one resolved
        load(network, 20)
        await wait_for(lambda: correlator.alerts("resolved"), timeout=30)
        await samples(app, 5)
    assert len(correlator.alerts("firing")) == 1
    assert len(correlator.alerts("resolved")) == 1
    assert all(p.proactive for p in correlator.accepted)

    alert = correlator.alerts("firing")[0]
    assert alert.source == "traffic" and alert.link == LINK
    assert alert.fingerprint == f"traffic:{LINK}"
    assert alert.metric == "utilisation_forecast"
    assert alert.threshold == 70 and alert.value is not None and alert.value >= 70
    assert alert.severity == "medium"
    assert alert.labels == {"proactive": "true"}
    assert alert.summary.startswith(f"Congestion forecast on {LINK}: ")
    assert alert.summary.endswith("% in 3s (threshold 70%)")
    chart = LinkLoadForecast.model_validate_json(alert.annotations["forecast"])
    assert chart.link_id == LINK and chart.threshold_pct == 70
    assert chart.measured_pct is not None and chart.measured_pct <= fired_at < 70
    assert chart.predicted_pct == alert.value and chart.capacity_mbps == CAPACITY
    assert chart.samples and chart.forecast[0][0] == chart.samples[-1][0]

    resolved = correlator.alerts("resolved")[0]
    assert resolved.fingerprint == alert.fingerprint
    assert resolved.starts_at == alert.starts_at and resolved.ends_at is not None


async def test_a_correlator_that_is_down_gets_the_alert_when_it_is_back(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    network, correlator = peers
    correlator.down = True
    load(network, 30)
    app = watching(agent_settings)
    async with running(app):
        outbox: Outbox = app.state.outbox
        await samples(app, 4)
        load(network, 65)
        await wait_for(lambda: correlator.refused >= 1, timeout=30)
        assert await outbox.pending() == 1
        await samples(app, 3)  # still predicted: nothing more is queued
        assert await outbox.pending() == 1
        correlator.down = False
        await outbox.flush(timeout=30)
        await samples(app, 3)
    assert len(correlator.alerts("firing")) == 1
    assert correlator.accepted[0].alerts[0].fingerprint == f"traffic:{LINK}"


async def test_the_watcher_can_be_switched_off(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    network, correlator = peers
    load(network, 30)
    app = watching(agent_settings, proactive_enabled=False)
    async with running(app):
        await samples(app, 3)
        load(network, 95)
        await samples(app, 5)
        assert await app.state.outbox.pending() == 0
    assert correlator.accepted == []


async def test_a_restarted_agent_still_resolves_the_alert_it_raised(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    network, correlator = peers
    load(network, 30)
    app = watching(agent_settings)
    async with running(app):
        await samples(app, 3)
        load(network, 80)
        await wait_for(lambda: correlator.alerts("firing"), timeout=30)
    load(network, 10)
    again = watching(agent_settings)
    async with running(again):
        await wait_for(lambda: correlator.alerts("resolved"), timeout=30)
    assert len(correlator.alerts("firing")) == 1
    assert len(correlator.alerts("resolved")) == 1


async def test_a_link_the_proactive_flow_handles_is_left_to_it(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    """The orchestrator asks for the native load with a moved share: its traffic coming back
    must not read as a new congestion (horizon 3000 s scaled: managed for 30 s)."""
    network, correlator = peers
    load(network, 20)
    app = watching(agent_settings, forecast_horizon_s=3000)
    async with running(app) as client:
        await samples(app, 3)
        asked = await run_task(client, "link_forecast", {"moved_share": {LINK: 0.5}})
        assert asked.status_code == 200
        for pct in (35, 50, 65):  # the moved traffic returning step by step
            load(network, pct)
            await samples(app, 3)
        assert await app.state.outbox.pending() == 0
    assert correlator.accepted == []


# --- link_forecast ----------------------------------------------------------------------------


def _row(link: str, ts: float, pct: float) -> dict[str, object]:
    return {
        "link_id": link,
        "ts": ts,
        "octets": {},
        "capacity_mbps": CAPACITY,
        "utilisation_pct": pct,
        "rate_mbps": pct / 100 * CAPACITY,
        "directions": None,
    }


async def test_link_forecast_adds_the_moved_traffic_back(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    """80 % until t=300, when CXM moved half of it away: 40 % measured, 80 % native."""
    quiet = TrafficSettings(sampler_enabled=False, chart_samples=4, chart_points=3)
    app = create_app(agent_settings, traffic_settings=quiet)
    measured = [(60.0 * i, 80.0 if i < 5 else 40.0) for i in range(8)]
    async with running(app) as client:
        rows = [_row(LINK, t, pct) for t, pct in measured] + [_row("p1-p2", 0.0, 10.0)]
        await store.add(app.state.engine, rows, keep=quiet.history)
        answer = await run_task(
            client,
            "link_forecast",
            {
                "links": ["pe2-pe1"],
                "moved_share": {"pe2-pe1": 0.5},
                "moved_since": {LINK: 300},
            },
        )
        whole = await run_task(
            client, "link_forecast", {"links": [LINK], "moved_share": {LINK: 1.0}}
        )
        every = await run_task(client, "link_forecast", {})
        unknown = await run_task(client, "link_forecast", {"links": ["x1-x2"]})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["horizon_s"] == 3.0  # 300 s x time scale 0.01
    got = LinkLoadForecast.model_validate(result["links"]["pe2-pe1"])
    assert got.link_id == LINK and got.threshold_pct == 70 and got.capacity_mbps == CAPACITY
    assert got.measured_pct == 40.0 and got.native_pct == 80.0 and got.moved_share == 0.5
    native = native_series(measured, 0.5, since=300)
    assert [p for _, p in native] == [80.0] * 8
    line = forecast(LINK, native, horizon_s=3.0, threshold_pct=70, window=10)
    assert got.predicted_pct == line.predicted_pct == 80.0  # flat native: no false drop
    assert got.samples == [(t, p) for t, p in measured[-4:]]
    assert got.native == [(t, 80.0) for t, _ in measured[-4:]]
    assert len(got.forecast) == 4 and got.forecast[0][0] == 420.0 and got.forecast[-1][0] == 423.0

    # the share is capped at 0.95 and, with no time, applies to every sample
    capped = LinkLoadForecast.model_validate(whole.json()["result"]["links"][LINK])
    assert capped.moved_share == 0.95 and capped.native_pct == pytest.approx(800.0)
    assert capped.native[0][1] == pytest.approx(1600.0)

    assert set(every.json()["result"]["links"]) == {LINK, "p1-p2"}
    nothing = LinkLoadForecast.model_validate(unknown.json()["result"]["links"]["x1-x2"])
    assert nothing.measured_pct is None and nothing.samples == [] and nothing.forecast == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"links": ["not a link"]}, "payload.links.0"),
    ({"moved_share": {LINK: 1.5}}, f"payload.moved_share.{LINK}"),
    ({"moved_share": {LINK: -5000}}, f"payload.moved_share.{LINK}"),  # absurd, not negative
    ({"moved_share": {LINK: "half"}}, f"payload.moved_share.{LINK}"),
    ({"moved_since": {LINK: "yesterday"}}, f"payload.moved_since.{LINK}"),
    ({"links": [LINK], "share": 0.5}, "payload.share"),
]


async def test_link_forecast_refuses_bad_input_naming_the_field(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    app = create_app(agent_settings, traffic_settings=TrafficSettings(sampler_enabled=False))
    async with running(app) as client:
        for payload, field_name in BAD:
            answer = await run_task(client, "link_forecast", payload)
            assert answer.status_code == 422, payload
            assert field_name in {problem["field"] for problem in answer.json()["detail"]}


async def test_the_agent_card_offers_link_forecast(
    agent_settings: Settings, peers: tuple[FakeNetwork, FakeCorrelator]
) -> None:
    app = create_app(agent_settings, traffic_settings=TrafficSettings(sampler_enabled=False))
    async with running(app) as client:
        card = (await client.get("/.well-known/agent-card.json")).json()
    assert "link_forecast" in {skill["id"] for skill in card["skills"]}


# --- pure: the alert state machine and the arithmetic ---------------------------------------

RULES = Rules(
    threshold_pct=70, release_pct=60, horizon_s=300, min_samples=3, repeat_s=600, hold_s=120
)


def run(
    series: Sequence[tuple[float, float, float]], rules: Rules = RULES
) -> list[tuple[float, str]]:
    """(time, measured, predicted) samples through :func:`step`: what is sent, when."""
    state: AlertState | None = None
    sent: list[tuple[float, str]] = []
    for n, (now, measured, predicted) in enumerate(series, start=1):
        state, action = step(
            state,
            LINK,
            samples=n,
            measured_pct=measured,
            predicted_pct=predicted,
            now=now,
            rules=rules,
        )
        if action:
            sent.append((now, action))
    return sent


def test_a_forecast_over_the_threshold_fires_once_min_samples_exist() -> None:
    assert run([(0, 50, 90), (30, 55, 90), (60, 60, 90), (90, 62, 90)]) == [(60, "firing")]


def test_the_measured_load_alone_fires_too() -> None:
    assert run([(0, 75, 60), (30, 75, 60), (60, 75, 60)]) == [(60, "firing")]


def test_a_still_predicted_alert_is_repeated_only_after_the_repeat_interval() -> None:
    series = [(t, 65.0, 80.0) for t in range(0, 1300, 30)]
    assert run(series) == [(60, "firing"), (660, "firing"), (1260, "firing")]


def test_hovering_between_release_and_threshold_neither_clears_nor_refires() -> None:
    series = [(0, 60, 90), (30, 65, 90), (60, 68, 90)] + [
        (t, 62.0 + (t % 60) / 30, 66.0) for t in range(90, 3000, 30)
    ]
    assert run(series) == [(60, "firing")]


def test_it_resolves_only_after_the_measured_load_stays_under_release_for_the_hold() -> None:
    dip = [(0, 60, 90), (30, 65, 90), (60, 68, 90), (90, 50, 40), (120, 65, 66), (150, 66, 66)]
    assert run(dip) == [(60, "firing")]  # a dip shorter than the hold
    calm = dip + [(t, 40.0, 45.0) for t in range(180, 330, 30)]
    assert run(calm) == [(60, "firing"), (300, "resolved")]  # 180 + 120 s of hold
    # under release but still forecast over the threshold: not resolved
    rising = dip + [(t, 40.0, 80.0) for t in range(180, 600, 30)]
    assert [a for _, a in run(rising)].count("resolved") == 0


def test_native_series_adds_the_share_back_from_when_it_moved() -> None:
    points = [(0.0, 80.0), (60.0, 40.0), (120.0, 40.0)]
    assert native_series(points, 0.5, since=60) == [(0.0, 80.0), (60.0, 80.0), (120.0, 80.0)]
    assert native_series(points, 0.5) == [(0.0, 160.0), (60.0, 80.0), (120.0, 80.0)]
    assert native_series(points, 0.0) == points
    assert native_series([(0.0, 5.0)], 1.0) == [(0.0, pytest.approx(100.0))]  # capped at 0.95
    # negative: more moved onto the link (tunnels) than off it, native under measured
    assert native_series([(0.0, 80.0)], -3.0) == [(0.0, 20.0)]
    assert native_series([(0.0, 80.0)], -100.0) == [(0.0, pytest.approx(4.0))]  # clamped at -19


def test_forecast_points_follow_the_trend_to_the_horizon_never_below_zero() -> None:
    assert forecast_points(100.0, 50.0, 0.1, horizon_s=300, steps=3) == [
        (100.0, 50.0),
        (200.0, 60.0),
        (300.0, 70.0),
        (400.0, 80.0),
    ]
    assert forecast_points(0.0, 10.0, -1.0, horizon_s=20, steps=2)[-1] == (20.0, 0.0)


def test_thresholds_per_link_then_per_class_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_TRAFFIC_THRESHOLDS", '{"pe2-pe1": 80, "100G": 85}')
    monkeypatch.setenv("CXM_TRAFFIC_PROACTIVE_ENABLED", "false")
    cfg = TrafficSettings()
    assert cfg.proactive_enabled is False
    assert cfg.threshold_for("pe1-pe2", 100000) == 80  # the link, either direction
    assert cfg.threshold_for("p1-p2", 100000) == 85  # its class
    assert cfg.threshold_for("p1-p2", 10000) == 70
    assert cfg.threshold_for("p1-p2", None) == 70
    assert cfg.release_for(80) == 70
    assert TrafficSettings(release_pct=60).release_for(50) == 50  # never above the threshold
    assert link_class(10000) == "10G" and link_class(1500) == "1.5G" and link_class(None) is None


def test_the_alert_is_high_when_the_link_already_runs_at_90() -> None:
    chart = LinkLoadForecast(
        link_id="pe1-pe2#2",
        threshold_pct=70,
        measured_pct=91.0,
        predicted_pct=120.0,
        horizon_s=300,
    )
    alert = proactive_alert(chart, "firing", AlertState("pe1-pe2#2", 10.0, 10.0), 10.0)
    assert alert.severity == "high" and alert.value == 120.0
    assert alert.link == "pe1-pe2" and alert.fingerprint == "traffic:pe1-pe2#2"
    assert alert.summary == "Congestion forecast on pe1-pe2#2: 120.0% in 300s (threshold 70%)"
    assert json.loads(alert.annotations["forecast"])["measured_pct"] == 91.0


# --- the forecast line (pure) ----------------------------------------------------------------


def _line(values: Sequence[float], times: Sequence[float] | None = None) -> LinkLoadForecast:
    ts = list(times) if times is not None else [30.0 * i for i in range(len(values))]
    return load_forecast(
        LINK, list(zip(ts, values, strict=True)), threshold_pct=70, horizon_s=300, window=10
    )


def test_a_steady_ramp_is_projected_exactly() -> None:
    got = _line([30 + 2 * i for i in range(12)])  # 2 % per 30 s sample: 20 % in 300 s
    assert got.predicted_pct == pytest.approx(52 + 20)
    down = _line([80 - 2 * i for i in range(12)])  # and a steady fall
    assert down.predicted_pct == pytest.approx(58 - 20)


def test_a_step_of_load_is_not_a_trend() -> None:
    """A tunnel moved onto the link adds load at once: never forecast as a ramp."""
    for after in range(1, 12):
        got = _line([41.0] * 10 + [60.0] * after)
        assert got.predicted_pct is not None and got.predicted_pct <= 60.0, after


def test_the_recovery_after_a_drop_is_not_a_rise() -> None:
    """85 % dropping to 20 % and staying: forecast neither below 20 (a fall is a step too)
    nor above 85 on the way, then 20, never a rebound toward the threshold (Holt's smoothing
    forecast 102 % here, CI 2026-11-30)."""
    values = [85.0] * 10
    for n in range(15):
        values.append(20.0)
        got = _line(values)
        assert got.predicted_pct is not None and 20.0 <= got.predicted_pct <= 85.0, n
        if n >= 5:
            assert got.predicted_pct == 20.0, n


def test_two_samples_a_moment_apart_do_not_swing_the_trend() -> None:
    times = [30.0 * i for i in range(10)] + [270.001]  # the sampler raced itself
    got = _line([50.0] * 9 + [50.0, 52.0], times)
    assert got.predicted_pct is not None and got.predicted_pct < 60.0


def test_a_noisy_ramp_is_projected_at_its_slope() -> None:
    """±1 % of noise on a 2 %-per-sample ramp: the newest half's slope wobbles, the forecast
    still runs at the window's slope (within the noise), neither capped by the wobble nor
    read as a step."""
    values = [30 + 2 * i + (1 if i % 2 else -1) for i in range(12)]
    got = _line(values)
    assert got.predicted_pct is not None and abs(got.predicted_pct - (52 + 20)) <= 3

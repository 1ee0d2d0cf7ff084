"""Traffic Analytics agent: link utilisation, the demand matrix and congestion forecasts.

Utilisation is CNC's own rate per link (``CncClient.link_utilisation()``: the busier
direction's ``bandwidth-utilization-kbps`` from the performance metrics), so one read gives it.
Each read is kept per link in the agent's table; a small sampler in the lifespan takes one every
``CXM_TRAFFIC_SAMPLE_INTERVAL_S`` (scaled by ``CXM_TIME_SCALE``, never below
``CXM_TRAFFIC_SAMPLE_MIN_INTERVAL_S``: a sample is two keyed reads per link) so forecasts have
a history. The last sample is also kept in memory: ``link_utilisation`` with ``max_age_s``
answers from it, which is how the path agent takes every link's load and delay without reading
the same thousands of keyed metrics again.

The sampler is also the proactive watcher (``watcher.py``, issue 14): after each sample it
forecasts every link and raises a proactive alert through the correlator, by the agent's
durable outbox, when one is predicted to cross its threshold (70 % by default).
``link_forecast`` answers the proactive flow's question: the link's native load (the traffic
CXM moved away added back) and its forecast.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from services.traffic import store
from services.traffic.analytics import demand_matrix as build_demand_matrix
from services.traffic.analytics import forecast, link_load, load_forecast, sample_time
from services.traffic.settings import TrafficSettings
from services.traffic.watcher import watch
from shared.agent import AgentSpec, TaskContext
from shared.contracts import DEMAND_MATRIX, LINK_FORECAST, LINK_UTILISATION, PREDICT_CONGESTION
from shared.errors import SouthboundError
from shared.logs import get_logger
from shared.models import (
    CongestionResult,
    DemandMatrix,
    DemandResult,
    LinkForecastRequest,
    LinkForecastResult,
    LinkLoad,
    LinkLoadForecast,
    LinkUtilisation,
    PredictCongestion,
    UtilisationResult,
)
from shared.settings import Settings
from shared.southbound import CncClient, link_key, southbound_clients

log = get_logger(__name__)


@dataclass(frozen=True)
class Sample:
    """One read of every link's load: when its read began (monotonic, for its age) and when
    (wall clock, for its answer)."""

    loads: dict[str, LinkLoad]
    taken: float
    at: datetime


def _young(sample: Sample | None, max_age_s: float | None, asked: float) -> Sample | None:
    """The sample, if it will do: at most ``max_age_s`` old, or begun after the caller asked
    (as fresh as a read of its own would be)."""
    if sample is None or max_age_s is None:
        return None
    if sample.taken >= asked or asked - sample.taken <= max_age_s:
        return sample
    return None


async def take_sample(app: FastAPI, *, max_age_s: float | None = None) -> Sample:
    """Every link's load: the last sample when it is at most ``max_age_s`` old, else a new
    read of CNC, stored and kept. Callers that wait for a read begun after they asked take
    its sample, so a burst of them reads CNC once; without ``max_age_s``, always a new read."""
    asked = time.monotonic()
    if kept := _young(app.state.last_sample, max_age_s, asked):
        return kept
    cnc: CncClient = app.state.cnc
    cfg: TrafficSettings = app.state.traffic_settings
    async with app.state.sample_lock:
        if kept := _young(app.state.last_sample, max_age_s, asked):
            return kept  # taken while this caller waited
        taken = time.monotonic()
        rates = await cnc.link_utilisation()
        now = time.time()
        loads: dict[str, LinkLoad] = {}
        rows = []
        for link_id, rate in rates.items():
            load = link_load(
                link_id,
                rate_mbps=rate.rate_mbps,
                capacity_mbps=rate.capacity_mbps,
                utilisation_pct=rate.utilisation_pct,
                delay_ms=rate.delay_ms,
                directions=rate.directions,
            )
            loads[link_id] = load
            rows.append(
                {
                    "link_id": link_id,
                    "ts": sample_time(rate.timestamp, now),
                    "octets": {},
                    "capacity_mbps": load.capacity_mbps,
                    "utilisation_pct": load.utilisation_pct,
                    "rate_mbps": rate.rate_mbps,
                    "directions": load.directions or None,
                }
            )
        await store.add(app.state.engine, rows, keep=cfg.history)
        sample = Sample(loads, taken, datetime.fromtimestamp(now, UTC))
        app.state.last_sample = sample
    return sample


async def _sampler(app: FastAPI, interval_s: float) -> None:
    """Sample forever, and watch each sample when the proactive flow is on; a CNC outage is
    logged and retried on the next tick, never fatal.

    Reads begin every ``interval_s`` (not ``interval_s`` after the last one ended), so the
    kept sample is never much older than that and a caller asking for that age (the path
    agent) takes it rather than reading again; a read longer than the interval still leaves
    half an interval of rest before the next."""
    cfg: TrafficSettings = app.state.traffic_settings
    while True:
        began = time.monotonic()
        try:
            loads = (await take_sample(app)).loads
        except SouthboundError as exc:
            log.warning("load sample failed", error=str(exc))
        else:
            if cfg.proactive_enabled:
                try:
                    await watch(app, loads)
                except Exception:  # a database hiccup must not stop sampling; it is logged
                    log.exception("proactive watch failed")
        await asyncio.sleep(max(interval_s / 2, began + interval_s - time.monotonic()))


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """Open the CNC client and start the sampler; stop and close both on exit."""
    settings: Settings = app.state.settings
    cfg: TrafficSettings = app.state.traffic_settings
    app.state.sample_lock = asyncio.Lock()
    app.state.last_sample = None
    sampler = None
    async with southbound_clients(app):
        if cfg.sampler_enabled:
            sampler = asyncio.create_task(
                _sampler(
                    app, max(settings.scaled(cfg.sample_interval_s), cfg.sample_min_interval_s)
                ),
                name="traffic-sampler",
            )
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler


spec = AgentSpec(
    name="traffic",
    title="Traffic Analytics",
    description="Demand matrix, utilisation forecast, congestion prediction",
    migrations=store.MIGRATIONS,
    resources=_southbound,
    outbox=True,  # proactive alerts reach the correlator even when it is down for a while
)


def _selected(names: list[str], wanted: list[str]) -> list[str]:
    if not wanted:
        return sorted(names)
    keys = {link_key(w) for w in wanted}
    return sorted(n for n in names if link_key(n) in keys)


@spec.serve(LINK_UTILISATION)
async def link_utilisation(payload: LinkUtilisation, ctx: TaskContext) -> UtilisationResult:
    sample = await take_sample(ctx.app, max_age_s=payload.max_age_s)
    return UtilisationResult(
        links={name: sample.loads[name] for name in _selected(list(sample.loads), payload.links)},
        sampled_at=sample.at,
    )


@spec.serve(DEMAND_MATRIX)
async def demand_matrix(payload: DemandMatrix, ctx: TaskContext) -> DemandResult:
    cnc: CncClient = ctx.state.cnc
    return build_demand_matrix(await cnc.services(), list(payload.tiers))


@spec.serve(PREDICT_CONGESTION)
async def predict_congestion(payload: PredictCongestion, ctx: TaskContext) -> CongestionResult:
    cfg: TrafficSettings = ctx.state.traffic_settings
    points = await store.history(ctx.engine, limit=cfg.history)
    forecasts = {
        name: forecast(
            name,
            points[name],
            horizon_s=payload.horizon_s,
            threshold_pct=payload.threshold_pct,
            window=cfg.trend_window,
        )
        for name in _selected(list(points), payload.links)
    }
    congested = [name for name, f in forecasts.items() if f.congested]
    if congested:
        log.info("congestion predicted", links=congested, threshold=payload.threshold_pct)
    return CongestionResult(
        horizon_s=payload.horizon_s,
        threshold_pct=payload.threshold_pct,
        links=forecasts,
        congested_links=congested,
    )


@spec.serve(LINK_FORECAST)
async def link_forecast(payload: LinkForecastRequest, ctx: TaskContext) -> LinkForecastResult:
    """Measured, native and forecast load per link from the stored samples (no CNC read).

    ``moved_share`` may be negative (more traffic moved onto the link than off it): native is
    then under the measured load (``analytics.native_series``)."""
    cfg: TrafficSettings = ctx.state.traffic_settings
    horizon = ctx.settings.scaled(cfg.forecast_horizon_s)
    points = await store.history(ctx.engine, limit=cfg.history)
    latest = await store.latest(ctx.engine)
    known = {link_key(name): name for name in [*points, *latest]}
    shares = {link_key(link): share for link, share in payload.moved_share.items()}
    since = {link_key(link): when.timestamp() for link, when in payload.moved_since.items()}
    # the proactive flow is handling a link it passes a share for (negative: traffic moved
    # onto it): the watcher leaves it be
    managed: dict[str, float] = ctx.state.managed
    for key, share in shares.items():
        if share != 0:
            managed[key] = time.time() + horizon
    links: dict[str, LinkLoadForecast] = {}
    for asked in payload.links or sorted(known.values()):
        key = link_key(asked)
        name = known.get(key, asked)
        capacity = latest.get(name, {}).get("capacity_mbps")
        links[asked] = load_forecast(
            name,
            points.get(name, []),
            threshold_pct=cfg.threshold_for(name, capacity),
            horizon_s=horizon,
            window=cfg.trend_window,
            capacity_mbps=capacity,
            moved_share=shares.get(key, 0.0),
            since=since.get(key),
            keep=cfg.chart_samples,
            steps=cfg.chart_points,
        )
    return LinkForecastResult(links=links, horizon_s=horizon)


def create_app(
    settings: Settings,
    *,
    traffic_settings: TrafficSettings | None = None,
    southbound_transport: httpx.AsyncBaseTransport | None = None,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC and
    ``mesh_transport`` to reach in-process peers (the correlator the watcher alerts)."""
    app = spec.create_app(settings, mesh_transport=mesh_transport)
    app.state.traffic_settings = traffic_settings or TrafficSettings()
    app.state.managed = {}  # link key -> until when the proactive flow handles it (epoch s)
    app.state.southbound_transport = southbound_transport
    return app

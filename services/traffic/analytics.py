"""Pure traffic arithmetic: link loads from CNC's rates, demand sums, trend forecasts, and a
link's native load (what it would carry if the traffic CXM moved away came back)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from statistics import median
from typing import Any

from shared.models import Demand, DemandResult, LinkForecast, LinkLoad, LinkLoadForecast
from shared.southbound import VpnService


def sample_time(value: Any, fallback_ts: float) -> float:
    """CNC's sample time (epoch seconds, or ISO 8601) as epoch seconds; ours when it has none."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return fallback_ts
    return fallback_ts


def link_load(
    link_id: str,
    *,
    rate_mbps: float | None,
    capacity_mbps: float | None,
    utilisation_pct: float | None = None,
    delay_ms: float | None = None,
    directions: Mapping[str, float] | None = None,
) -> LinkLoad:
    """One link's load as CNC's performance metrics give it: the busier direction's rate.

    CNC reports a rate (``bandwidth-utilization-kbps``), not a counter, so one read is enough.
    The percentage is CNC's when it gives one, else the rate over the capacity;
    ``directions`` (Mbps per ``source-destination``) become percentages of the capacity too.
    """
    if utilisation_pct is None and rate_mbps is not None and capacity_mbps:
        utilisation_pct = rate_mbps / capacity_mbps * 100
    per_direction = {
        name: round(mbps / capacity_mbps * 100, 3)
        for name, mbps in (directions or {}).items()
        if capacity_mbps
    }
    return LinkLoad(
        link_id=link_id,
        utilisation_pct=round(utilisation_pct, 3) if utilisation_pct is not None else None,
        directions=per_direction,
        capacity_mbps=capacity_mbps,
        rate_mbps=rate_mbps,
        delay_ms=delay_ms,
        reason=None if utilisation_pct is not None else "no rate from CNC",
    )


def demand_matrix(services: list[VpnService], tiers: list[str]) -> DemandResult:
    """Sum the services' committed bandwidth per (head-end, end-point)."""
    wanted = {t.lower() for t in tiers}
    pairs: dict[tuple[str, str], tuple[float, int]] = {}
    for service in services:
        if wanted and service.sla_tier.lower() not in wanted:
            continue
        mbps, count = pairs.get((service.head_end, service.end_point), (0.0, 0))
        pairs[(service.head_end, service.end_point)] = (mbps + service.bandwidth_mbps, count + 1)
    matrix: dict[str, dict[str, float]] = {}
    demands: list[Demand] = []
    for (head, end), (mbps, count) in sorted(pairs.items()):
        matrix.setdefault(head, {})[end] = mbps
        demands.append(Demand(head_end=head, end_point=end, demand_mbps=mbps, services=count))
    nodes = sorted({n for pair in pairs for n in pair})
    return DemandResult(
        nodes=nodes,
        matrix=matrix,
        demands=demands,
        total_mbps=sum(d.demand_mbps for d in demands),
    )


def trend_slope(points: list[tuple[float, float]]) -> float:
    """The Theil-Sen slope (% per second): the median of the slopes between every two samples.

    Robust where a least-squares or smoothed trend is not: one spike, or two samples taken a
    millisecond apart (their slope is huge), move the median by one place, not the estimate.
    """
    slopes = sorted(
        (p2 - p1) / (t2 - t1)
        for i, (t1, p1) in enumerate(points)
        for t2, p2 in points[i + 1 :]
        if t2 > t1
    )
    return median(slopes) if slopes else 0.0


def forecast(
    link_id: str,
    points: list[tuple[float, float]],
    *,
    horizon_s: float,
    threshold_pct: float,
    window: int,
) -> LinkForecast:
    """The load ``horizon_s`` ahead on the robust line through the newest ``window`` samples.

    The trend is the window's Theil-Sen slope while the window's newest half carries it on
    (the same direction, at least half as steep); otherwise the newest half's own slope, and
    only as far as it goes the same way. So a steady ramp is projected at its full slope (a
    noisy newest half does not bias it down), and a step of load (a tunnel moved onto the
    link, or traffic moved off it) is never projected as a ramp: the line is flat once the
    newest half is past the step. And the recovery after
    a drop is never read as a rise. Holt's smoothing, used before, did both: its level
    overshoots a step and its trend then rebounds, and two samples close together in time
    swing it (a link dropped from 85 % to 20 % was forecast at 102 %, CI of 2026-11-30). A
    forecast too low matters as much: the proactive flow brings traffic back on it.

    The level is where that line stands at the newest sample: the median over the newest half
    of each sample moved along the trend to that time, so one outlier does not carry it.
    """
    if not points:
        return LinkForecast(link_id=link_id, samples=0)
    recent = points[-window:]
    newest = recent[len(recent) // 2 :]
    trend, lately = trend_slope(recent), trend_slope(newest)
    if trend * lately < 0 or abs(lately) < abs(trend) / 2:
        # the newest half does not carry the window's trend on (a step, or a turn): go by
        # the newest half, and only as far as it agrees in direction
        trend = max(0.0, lately) if trend > 0 else min(0.0, lately)
    last = recent[-1][0]
    level = median(pct + trend * (last - t) for t, pct in newest)
    predicted = max(0.0, level + trend * horizon_s)
    current = points[-1][1]
    return LinkForecast(
        link_id=link_id,
        samples=len(points),
        current_pct=round(current, 3),
        level_pct=round(level, 3),
        trend_pct_per_s=round(trend, 6),
        predicted_pct=round(predicted, 3),
        congested=predicted >= threshold_pct or current >= threshold_pct,
    )


MAX_MOVED_SHARE = 0.95
"""A share of 1 would make the native load infinite; 0.95 already means 20x what is measured."""
MIN_MOVED_SHARE = -19.0
"""A negative share is traffic moved *onto* the link (tunnels of other links' shifts): native
= measured / (1 - share) is then under what is measured. -19 reads native as 1/20 of the
measured load, the mirror of the 0.95 cap; a link none of whose services ride it natively
(all tunnel traffic) has a share of minus infinity and reads native as about nothing."""


def clamp_share(moved_share: float) -> float:
    """The share applied: [-19, 0.95] (see the two bounds)."""
    return min(max(moved_share, MIN_MOVED_SHARE), MAX_MOVED_SHARE)


def native_series(
    points: list[tuple[float, float]], moved_share: float, since: float | None = None
) -> list[tuple[float, float]]:
    """(time, native %) for (time, measured %): measured / (1 - share), for the samples taken
    at or after ``since`` (all when None); earlier samples carried all their traffic.

    The share is 1 - W_now / W_native (committed bandwidth riding the link now, and whose
    base path crosses it), so native = measured x W_native / W_now: positive when traffic
    moved off the link (native over measured), negative when more moved onto it than off
    (native under measured, a link carrying tunnel traffic), clamped by ``clamp_share``.

    The share is the one moved now: applied to the whole window, samples from before the move
    would look inflated and the forecast of that falling series would fall too early, which
    is what ``since`` is for.
    """
    share = clamp_share(moved_share)
    return [(t, pct / (1 - share) if since is None or t >= since else pct) for t, pct in points]


def forecast_points(
    last_ts: float, level: float, trend_per_s: float, *, horizon_s: float, steps: int
) -> list[tuple[float, float]]:
    """``steps + 1`` points of the forecast line from the newest sample to the horizon (never
    below zero): what the console draws after the samples."""
    return [
        (
            round(last_ts + horizon_s * k / steps, 3),
            round(max(0.0, level + trend_per_s * horizon_s * k / steps), 3),
        )
        for k in range(steps + 1)
    ]


def load_forecast(
    link_id: str,
    points: list[tuple[float, float]],
    *,
    threshold_pct: float,
    horizon_s: float,
    window: int,
    capacity_mbps: float | None = None,
    moved_share: float = 0.0,
    since: float | None = None,
    keep: int = 30,
    steps: int = 5,
) -> LinkLoadForecast:
    """One link's measured and native load, and the forecast of the native load.

    The forecast is of the native series: the proactive flow decides when to bring traffic
    back on what the link would carry then, not on the load it measures with the traffic away.
    """
    share = clamp_share(moved_share)
    native = native_series(points, share, since)
    if not points:
        return LinkLoadForecast(
            link_id=link_id,
            threshold_pct=threshold_pct,
            capacity_mbps=capacity_mbps,
            horizon_s=horizon_s,
            moved_share=share,
        )
    line = forecast(
        link_id, native, horizon_s=horizon_s, threshold_pct=threshold_pct, window=window
    )
    level = line.level_pct if line.level_pct is not None else native[-1][1]
    return LinkLoadForecast(
        link_id=link_id,
        threshold_pct=threshold_pct,
        measured_pct=round(points[-1][1], 3),
        native_pct=round(native[-1][1], 3),
        predicted_pct=line.predicted_pct,
        samples=[(round(t, 3), round(p, 3)) for t, p in points[-keep:]],
        native=[(round(t, 3), round(p, 3)) for t, p in native[-keep:]],
        forecast=forecast_points(
            points[-1][0], level, line.trend_pct_per_s, horizon_s=horizon_s, steps=steps
        ),
        capacity_mbps=capacity_mbps,
        horizon_s=horizon_s,
        moved_share=share,
    )

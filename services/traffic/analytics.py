"""Pure traffic arithmetic: link loads from CNC's rates, demand sums, trend forecasts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

from shared.models import Demand, DemandResult, LinkForecast, LinkLoad
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


def forecast(
    link_id: str,
    points: list[tuple[float, float]],
    *,
    horizon_s: float,
    threshold_pct: float,
    alpha: float,
    beta: float,
) -> LinkForecast:
    """Holt's linear smoothing (an EWMA of the level and of the trend), ``horizon_s`` ahead.

    A plain EWMA lags a rising load and would flag congestion late; smoothing the trend too
    projects a steady ramp exactly while still damping noise. Samples may be unevenly spaced,
    so the trend is kept per second.
    """
    if not points:
        return LinkForecast(link_id=link_id, samples=0)
    level = points[0][1]
    trend = 0.0
    if len(points) >= 2 and points[1][0] > points[0][0]:
        trend = (points[1][1] - points[0][1]) / (points[1][0] - points[0][0])
    for (t_prev, _), (t, pct) in pairwise(points):
        dt = t - t_prev
        if dt <= 0:
            continue
        previous = level
        level = alpha * pct + (1 - alpha) * (level + trend * dt)
        trend = beta * (level - previous) / dt + (1 - beta) * trend
    predicted = max(0.0, level + trend * horizon_s)
    current = points[-1][1]
    return LinkForecast(
        link_id=link_id,
        samples=len(points),
        current_pct=round(current, 3),
        ewma_pct=round(level, 3),
        trend_pct_per_s=round(trend, 6),
        predicted_pct=round(predicted, 3),
        congested=predicted >= threshold_pct or current >= threshold_pct,
    )

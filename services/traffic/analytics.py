"""Pure traffic arithmetic: utilisation from counter deltas, demand sums, trend forecasts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

from shared.models import Demand, DemandResult, LinkForecast, LinkLoad
from shared.southbound import VpnService

TIME_KEYS = ("timestamp", "sample-time", "time")


def parse_counter(raw: Mapping[str, Any], fallback_ts: float) -> dict[str, Any]:
    """One CNC counter record as (time, octets per direction, capacity).

    Every numeric ``*octets*`` field is a direction (``in-octets``/``out-octets`` and the
    like); the time is epoch seconds or ISO 8601, or the moment we sampled if CNC gives none.
    """
    octets = {
        k: float(v)
        for k, v in raw.items()
        if "octets" in k and isinstance(v, int | float) and not isinstance(v, bool)
    }
    ts = fallback_ts
    for key in TIME_KEYS:
        value = raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            ts = float(value)
            break
        if isinstance(value, str):
            try:
                ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                break
            except ValueError:
                continue
    capacity = raw.get("capacity-mbps")
    return {
        "ts": ts,
        "octets": octets,
        "capacity_mbps": float(capacity) if isinstance(capacity, int | float) else None,
    }


def utilisation(
    link_id: str, previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> LinkLoad:
    """Per-direction load between two samples; the link's figure is its busier direction."""
    capacity = current.get("capacity_mbps")
    if previous is None or not capacity:
        return LinkLoad(link_id=link_id, capacity_mbps=capacity, reason="first sample")
    interval = float(current["ts"]) - float(previous["ts"])
    if interval <= 0:
        return LinkLoad(link_id=link_id, capacity_mbps=capacity, reason="no time elapsed")
    directions: dict[str, float] = {}
    for direction, octets in current["octets"].items():
        before = previous["octets"].get(direction)
        if before is None or octets < before:  # a counter reset: no rate this interval
            continue
        mbps = (octets - before) * 8 / interval / 1e6
        directions[direction] = round(mbps / capacity * 100, 3)
    return LinkLoad(
        link_id=link_id,
        utilisation_pct=max(directions.values()) if directions else None,
        directions=directions,
        capacity_mbps=capacity,
        interval_s=round(interval, 3),
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

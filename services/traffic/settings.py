"""Traffic Analytics settings (``CXM_TRAFFIC_*``).

Durations marked "scaled" are multiplied by ``CXM_TIME_SCALE`` where they are used.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.southbound import link_key

Pct = Annotated[float, Field(gt=0, le=100)]


def link_class(capacity_mbps: float | None) -> str | None:
    """A link's class for per-class thresholds: its speed, ``10G``, ``100G``, ``400G``, ``1.5G``.

    CNC has no link class of its own; the speed is what operators set thresholds by (a 100G
    link's 70 % is a lot more headroom in Mbps than a 1G link's).
    """
    if not capacity_mbps:
        return None
    return f"{capacity_mbps / 1000:g}G"


class TrafficSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_TRAFFIC_", extra="ignore")

    sampler_enabled: bool = Field(default=True, description="sample CNC's link loads periodically")
    sample_interval_s: float = Field(
        default=30.0, gt=0, description="seconds between load samples (scaled)"
    )
    sample_min_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="floor of the scaled interval: CNC serves link loads as keyed reads only "
        "(two per link per sample), so a small time scale must not turn sampling into a flood",
    )
    history: int = Field(default=120, ge=2, description="samples kept per link for forecasts")
    trend_window: int = Field(
        default=10,
        ge=4,
        description="newest samples the forecast's trend is drawn through (analytics.forecast)",
    )

    # --- the proactive watcher (issue 14) ---------------------------------------------------
    proactive_enabled: bool = Field(
        default=True,
        description="after each sample, forecast every link and raise a proactive alert "
        "through the correlator when one is predicted to cross its threshold",
    )
    forecast_horizon_s: float = Field(
        default=300.0, gt=0, description="how far ahead the watcher forecasts (scaled)"
    )
    congestion_threshold_pct: Pct = Field(
        default=70.0, description="seed 003: predicted utilisation that starts the proactive flow"
    )
    thresholds: dict[str, Pct] = Field(
        default_factory=dict,
        description='per link (either direction) or link class (its speed: "10G", "100G") '
        'threshold, JSON: {"pe1-pe2": 80, "100G": 85}; a link beats its class',
    )
    min_samples: int = Field(
        default=3, ge=2, description="samples a link needs before its forecast may alert"
    )
    alert_repeat_s: float = Field(
        default=300.0,
        gt=0,
        description="re-send a still-predicted alert at most this often (scaled); the "
        "correlator dedups it, the repeat only keeps it fresh",
    )
    release_pct: Pct | None = Field(
        default=None,
        description="measured load under which the alert may resolve; default the link's "
        "threshold minus release_margin_pct (never above the threshold)",
    )
    release_margin_pct: float = Field(default=10.0, ge=0, lt=100)
    resolve_hold_s: float = Field(
        default=120.0,
        ge=0,
        description="how long the measured load must stay under the release threshold (and "
        "the forecast under the threshold) before the alert resolves (scaled)",
    )
    chart_samples: int = Field(
        default=30, ge=1, le=1000, description="recent samples link_forecast returns"
    )
    chart_points: int = Field(
        default=5, ge=1, le=100, description="forecast points to the horizon link_forecast returns"
    )

    def threshold_for(self, link_id: str, capacity_mbps: float | None) -> float:
        """The link's own threshold, else its class's, else the default."""
        by_link = {link_key(name): pct for name, pct in self.thresholds.items() if "-" in name}
        if (pct := by_link.get(link_key(link_id))) is not None:
            return pct
        cls = link_class(capacity_mbps)
        if cls is not None and cls in self.thresholds:
            return self.thresholds[cls]
        return self.congestion_threshold_pct

    def release_for(self, threshold_pct: float) -> float:
        """The release threshold that goes with ``threshold_pct`` (hysteresis)."""
        if self.release_pct is not None:
            return min(self.release_pct, threshold_pct)
        return max(0.0, threshold_pct - self.release_margin_pct)

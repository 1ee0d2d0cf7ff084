"""Traffic Analytics settings (``CXM_TRAFFIC_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    ewma_alpha: float = Field(default=0.5, gt=0, le=1, description="weight of the newest sample")
    trend_beta: float = Field(default=0.3, gt=0, le=1, description="weight of the newest trend")

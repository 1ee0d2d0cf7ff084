"""Traffic Analytics settings (``CXM_TRAFFIC_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrafficSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_TRAFFIC_", extra="ignore")

    sampler_enabled: bool = Field(default=True, description="sample CNC counters periodically")
    sample_interval_s: float = Field(
        default=30.0, gt=0, description="seconds between counter samples (scaled)"
    )
    history: int = Field(default=120, ge=2, description="samples kept per link for forecasts")
    ewma_alpha: float = Field(default=0.5, gt=0, le=1, description="weight of the newest sample")
    trend_beta: float = Field(default=0.3, gt=0, le=1, description="weight of the newest trend")

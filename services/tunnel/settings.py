"""Tunnel Provisioning settings (``CXM_TUNNEL_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TunnelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_TUNNEL_", extra="ignore")

    binding_sid_base: int = Field(
        default=24000, ge=16, description="binding SIDs are allocated above this label"
    )
    color_base: int = Field(default=1000, ge=1, description="policy colors start above this")
    attempts: int = Field(default=3, ge=1, description="CNC attempts before giving up (seed: 3)")
    ends_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="seconds (scaled) a read of the services' ends serves steering; a service "
        "not seen yet forces a new read",
    )
    topology_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="seconds (scaled) a read of CNC's topology structure serves the checks of a "
        "path; a path the kept read refuses is checked again on a fresh one",
    )
    backoff_s: float = Field(
        default=1.0, ge=0, description="first retry delay, doubled each time (scaled)"
    )

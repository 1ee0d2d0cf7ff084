"""Settings of the network lab (``CXM_LAB_*``): which topology, sessions, alert pushing.

The mesh-wide settings (correlator URL, mesh token, time scale, and the CNC/PCA logins the lab
accepts: ``CXM_CNC_USERNAME``/``CXM_CNC_PASSWORD``, ``CXM_PCA_USERNAME``/``CXM_PCA_PASSWORD``)
come from :class:`shared.settings.Settings`; these are the knobs only the lab has.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabSettings(BaseSettings):
    """What the lab emulates and how loudly: ``CXM_LAB_TOPOLOGY=sndlib/abilene`` and so on."""

    model_config = SettingsConfigDict(env_prefix="CXM_LAB_", extra="ignore")

    topology: str = Field(
        default="default",
        description="'default' (the seed's network) or a topohub key such as 'sndlib/abilene'",
    )
    seed: int = Field(default=0, description="makes TE regions, tiers and SRLGs reproducible")
    max_sessions: int = Field(
        default=20, ge=1, description="live CNC ticket-granting tickets per user"
    )
    jwt_ttl_s: float = Field(default=28800.0, gt=0, description="lifetime of a CNC JWT (8 h)")
    tgt_ttl_s: float = Field(
        default=28800.0, gt=0, description="lifetime of a CNC ticket-granting ticket"
    )
    pca_token_ttl_s: float = Field(default=3600.0, gt=0, description="lifetime of a PCA token")
    push_alerts: bool = Field(default=True, description="POST PCA alerts to the correlator")
    push_retries: int = Field(default=4, ge=0, description="extra delivery attempts per alert")
    push_backoff_s: float = Field(default=0.5, gt=0, description="first retry delay, doubling")
    tenant_id: str = "cxm-lab"
    threshold_delay_ms: float = Field(default=50.0, gt=0)
    threshold_jitter_ms: float = Field(default=10.0, gt=0)
    threshold_loss_pct: float = Field(default=1.0, gt=0)
    scenario_duration_s: float = Field(
        default=60.0,
        gt=0,
        description="how long scenario faults last before the lab recovers them (x time scale)",
    )
    scenario_step_s: float = Field(
        default=2.0, ge=0, description="gap between the steps of a scenario (x time scale)"
    )
    load_tick_s: float = Field(
        default=1.0,
        gt=0,
        description="while a load ramp or busy hour moves traffic, re-check PCA alerts this "
        "often (real seconds)",
    )

"""Path Computation settings (``CXM_PATH_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PathSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_PATH_", extra="ignore")

    topology_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="seconds the knowledge graph is trusted before CNC is asked again (scaled)",
    )
    avoid_out_of_sla: bool = Field(
        default=True,
        description="price in every link PCA measures out of SLA now (avoided when possible)",
    )
    reservable_share: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="share of a link's capacity paths may reserve (queues build above it)",
    )
    measured_load: bool = Field(
        default=True,
        description="count what links carry now (CNC's rates), not only the bandwidth their "
        "services committed, and size a moving group by what it sends: in a busy hour "
        "services send more than they committed, and a detour sized by commitments overloads",
    )

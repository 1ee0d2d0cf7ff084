"""Path Computation settings (``CXM_PATH_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PathSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_PATH_", extra="ignore")

    topology_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="seconds the knowledge graph is trusted before CNC is asked again (scaled)",
    )
    measurement_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds each link's delay and load (CNC's performance metrics) are "
        "trusted before they are read again (scaled); the structure is read every "
        "topology_ttl_s, and a link new to it has its measurements read at once",
    )
    measurement_min_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="floor of the scaled measurement_ttl_s: CNC serves performance metrics "
        "as keyed reads only (two per link), so a small time scale must not turn every "
        "topology refresh into thousands of reads",
    )
    loads_from: Literal["traffic", "cnc"] = Field(
        default="traffic",
        description="where each link's load and delay come from: the traffic agent's last "
        "sample (at most measurement_ttl_s old; it reads them on its own clock anyway), or "
        "CNC's performance metrics read here; 'traffic' falls back to CNC while the traffic "
        "agent does not answer",
    )
    traffic_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="how long to wait for the traffic agent's sample: when its last one is too "
        "old it reads a new one (two keyed reads per link), as long as reading here would take; "
        "CNC is read here only when it does not answer in that time",
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

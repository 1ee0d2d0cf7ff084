"""IO Agent settings (``CXM_IO_*``): console auth, caches and timeouts."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_IO_", extra="ignore")

    loopback_trust: bool = Field(
        default=True,
        description=(
            "treat token-less requests from loopback (127.0.0.1/::1, addressed to a loopback "
            "host name, not proxied, not cross-site) as the local operator; "
            "CXM_IO_LOOPBACK_TRUST=false turns this off"
        ),
    )
    local_operator: str = Field(
        default="local-operator", description="who a trusted loopback request is recorded as"
    )
    bootstrap_admin: str = Field(
        default="admin", description="the admin created with a token when no user exists yet"
    )
    topology_ttl_s: float = Field(default=30.0, gt=0, description="how long topology is cached")
    expiry_sweep_s: float = Field(
        default=5.0, gt=0, description="how often pending approvals are checked for expiry"
    )
    peer_timeout_s: float = Field(
        default=5.0, gt=0, description="timeout for audit, lab and orchestrator calls"
    )
    decision_retries: int = Field(
        default=1, ge=0, description="retries of approval_decision before answering 503"
    )
    stream_history: int = Field(
        default=500, ge=0, description="events kept so a reconnecting console misses none"
    )

"""Audit settings (``CXM_*``): the optional Elasticsearch sink and the SLA targets of reports.

The audit database itself is the mesh-wide ``database_url`` (or ``CXM_AUDIT__DATABASE_URL``),
read through ``shared.settings.Settings.db_url("audit")``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import CxmSettings

DEFAULT_RESTORE_TARGETS_S: dict[str, float] = {
    "platinum": 900.0,
    "gold": 1800.0,
    "silver": 3600.0,
    "bronze": 14400.0,
}
"""Time-to-restore objective per tier used by the SLA report (15 min, 30 min, 1 h, 4 h)."""


class AuditSettings(CxmSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_", extra="ignore")

    elasticsearch_url: str | None = Field(
        default=None, description="enables the async search sink, e.g. http://es:9200"
    )
    elasticsearch_index: str = "cxm-audit"
    elasticsearch_api_key: SecretStr | None = None
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_batch: int = Field(default=500, ge=1, le=10_000)
    elasticsearch_timeout_s: float = Field(default=10.0, gt=0)
    elasticsearch_retry_max_s: float = Field(
        default=30.0, gt=0, description="longest wait between replays while ES is down"
    )
    audit_restore_targets_s: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RESTORE_TARGETS_S),
        description="tier → time-to-restore objective in seconds (JSON)",
    )

"""Notification settings (``CXM_*``): routing matrix, retries, and one block per channel.

A channel whose connection settings are missing is *unconfigured*: deliveries to it are
logged as ``skipped``, never as failures, so a lab or a test mesh runs without any of them.
Secrets are ``SecretStr`` so that a repr, a log line or an error message never shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import CxmSettings

Channel = Literal["webex", "servicenow", "email"]
CHANNELS: tuple[Channel, ...] = ("webex", "servicenow", "email")
LEVELS: tuple[str, ...] = ("critical", "high", "medium", "low")
"""Routing levels, highest first; tier platinum/gold/silver/bronze map onto them in order."""

DEFAULT_ROUTING: dict[str, list[Channel]] = {
    "critical": ["webex", "servicenow", "email"],
    "high": ["webex", "servicenow", "email"],
    "medium": ["webex", "email"],
    "low": ["email"],
}
"""Seed 003, "Notification Channels": critical/platinum and high/gold get all three,
medium/silver Webex and Email, low/bronze Email only."""


class NotifySettings(CxmSettings):
    """Everything the notify agent needs besides the mesh-wide ``shared.settings.Settings``."""

    model_config = SettingsConfigDict(env_prefix="CXM_", extra="ignore")

    notify_routing: dict[str, list[Channel]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROUTING.items()},
        description="level → channels (JSON in CXM_NOTIFY_ROUTING); levels critical..low",
    )
    notify_retries: int = Field(
        default=3, ge=0, description="retries per channel after the first try"
    )
    notify_backoff_s: float = Field(
        default=0.5, ge=0, description="first retry delay, doubled each time"
    )
    notify_backoff_max_s: float = Field(default=10.0, ge=0)
    notify_redelivery_backoff_s: float = Field(
        default=5.0, gt=0, description="first redelivery delay of a channel still failing"
    )
    notify_redelivery_backoff_max_s: float = Field(default=300.0, gt=0)
    notify_redelivery_max_age_s: float = Field(
        default=86400.0, gt=0, description="a delivery still failing after this is abandoned"
    )
    notify_timeout_s: float = Field(default=10.0, gt=0, description="per HTTP/SMTP request")
    console_url: str | None = Field(
        default=None, description="the IO console's public URL for links (defaults to io_url)"
    )

    webex_access_token: SecretStr | None = None
    webex_room_id: str | None = None
    webex_base_url: str = "https://webexapis.com/v1/"

    servicenow_url: str | None = Field(
        default=None, description="https://<instance>.service-now.com"
    )
    servicenow_username: str | None = None
    servicenow_password: SecretStr | None = None
    servicenow_token: SecretStr | None = Field(default=None, description="OAuth bearer token")
    servicenow_assignment_group: str | None = None
    servicenow_caller_id: str | None = None
    servicenow_category: str = "network"
    servicenow_close_code: str = "Solved (Permanently)"
    servicenow_hold_reason: str | None = Field(
        default=None,
        description="the incident's hold_reason choice value set with On Hold (manual review); "
        "unset sends none: no stock choice (Awaiting Caller/Change/Problem/Vendor) means "
        "'awaiting an engineer's review', so an instance that wants one adds its own",
    )
    servicenow_webhook_secret: SecretStr | None = Field(
        default=None, description="shared secret of the inbound webhook; unset refuses it"
    )
    servicenow_webhook_auth: Literal["bearer", "hmac"] = "bearer"
    servicenow_webhook_signature_header: str = "X-ServiceNow-Signature"

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "cxm@localhost"
    smtp_to: list[str] = Field(default_factory=list)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None

    @field_validator("notify_routing")
    @classmethod
    def _known_levels(cls, value: dict[str, list[Channel]]) -> dict[str, list[Channel]]:
        unknown = set(value) - set(LEVELS) - {"info"}
        if unknown:
            raise ValueError(f"unknown routing levels {sorted(unknown)}; use {list(LEVELS)}")
        return value

    @property
    def webex_configured(self) -> bool:
        return bool(self.webex_access_token and self.webex_room_id)

    @property
    def servicenow_configured(self) -> bool:
        has_auth = bool(
            self.servicenow_token or (self.servicenow_username and self.servicenow_password)
        )
        return bool(self.servicenow_url and has_auth)

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host and self.smtp_to)

    def configured(self, channel: Channel) -> bool:
        return bool(getattr(self, f"{channel}_configured"))

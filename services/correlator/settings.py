"""Event Correlator settings (``CXM_CORRELATOR_*``).

Durations are in seconds as a person would configure them for a real network; the correlator
multiplies the timer-like ones (group wait, windows, dampening) by ``CXM_TIME_SCALE`` so tests
and demos run the same logic in milliseconds.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CxmSettings

SOURCES: tuple[str, ...] = ("pca", "cnc", "alertmanager", "datadog", "generic", "servicenow")


class WebhookAuth(BaseModel):
    """How one webhook source proves itself: a bearer token, an HMAC-SHA256 signature, or both."""

    bearer_token: str | None = None
    hmac_secret: str | None = None
    hmac_header: str = "X-CXM-Signature"
    """Header carrying ``sha256=<hex>`` (or bare hex) of HMAC-SHA256(secret, raw body)."""


class CorrelatorSettings(CxmSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_CORRELATOR_", extra="ignore")

    group_wait_s: float = Field(
        default=3.0, ge=0, description="wait before emitting a new incident, to gather its links"
    )
    correlation_window_s: float = Field(
        default=300.0, gt=0, description="alerts this close to an incident's last alert may join it"
    )
    dedup_window_s: float = Field(
        default=300.0, gt=0, description="the same alert in the same state within it is a duplicate"
    )
    stale_after_s: float = Field(
        default=3600.0, gt=0, description="alerts observed longer ago are discarded (not scaled)"
    )
    topology_ttl_s: float = Field(default=60.0, gt=0, description="CNC topology cache lifetime")

    # RFC 2439-style flap dampening, per link. Penalties are unitless; times are scaled.
    flap_penalty: float = Field(default=1000.0, gt=0, description="added per link state change")
    flap_half_life_s: float = Field(default=60.0, gt=0)
    flap_suppress: float = Field(
        default=1500.0,
        gt=0,
        description="RFC 2439 uses 2000 with one penalty per withdrawal; a link alert counts both "
        "edges of a flap, so degrade → clear → degrade (≈2000 less decay) must cross it",
    )
    flap_reuse: float = Field(default=750.0, gt=0)
    flap_max_suppress_s: float = Field(default=240.0, gt=0)

    tick_s: float = Field(default=1.0, gt=0, description="how often timers are checked (scaled)")

    # False-positive triage.
    auto_close_confidence: float = Field(default=0.8, ge=0, le=1)
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL; the classifier alone when unset"
    )
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=10.0, gt=0)

    # Webhook authentication, per source (pca, cnc, alertmanager, datadog, generic, servicenow,
    # rest, csv, demo, silences).
    webhook_auth: dict[str, WebhookAuth] = Field(default_factory=dict)

    # Generic JSON: normalized field -> dotted path in the posted object.
    generic_items_path: str | None = Field(
        default=None, description="dotted path of the list of alerts inside the body, if any"
    )
    generic_mapping: dict[str, str] = Field(
        default_factory=lambda: {
            "link": "link",
            "node": "node",
            "status": "status",
            "severity": "severity",
            "metric": "metric",
            "value": "value",
            "threshold": "threshold",
            "summary": "summary",
            "fingerprint": "fingerprint",
            "timestamp": "timestamp",
            "labels": "labels",
        }
    )
    interface_links: dict[str, str] = Field(
        default_factory=dict,
        description="'node:interface' -> link, for alerts that name an interface, not a link",
    )

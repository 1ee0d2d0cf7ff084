"""Orchestrator settings (``CXM_*``): approval policy, timers and polling intervals.

Every duration here is in the seed's seconds and is multiplied by ``CXM_TIME_SCALE`` where it
is used, so tests and demos run the whole flow in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.models import Severity, TeType, Tier

Action = Literal["provision", "steer", "cutover", "cleanup", "runbook"]
ACTIONS: tuple[str, ...] = ("provision", "steer", "cutover", "cleanup", "runbook")


class ApprovalRule(BaseModel):
    """One rule of ``CXM_APPROVAL_POLICY``; the first rule that matches decides.

    An empty ``severities``/``tiers`` list matches any; ``action`` ``"*"`` matches every action.
    """

    model_config = ConfigDict(extra="forbid")

    action: Action | Literal["*"] = "*"
    severities: list[Severity] = Field(default_factory=list)
    tiers: list[Tier] = Field(default_factory=list)
    require: bool = True


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_", extra="ignore")

    approval_required_for: str = Field(
        default="",
        description="comma-separated actions that always need a human: "
        "provision, steer, cutover, cleanup, runbook (empty: none)",
    )
    approval_policy: list[ApprovalRule] = Field(
        default_factory=list,
        description='JSON rules, e.g. [{"action": "provision", "severities": ["critical"]}]; '
        "the first match decides, otherwise approval_required_for does",
    )
    approval_timeout_s: float = Field(
        default=900.0, gt=0, description="then the incident escalates"
    )
    sla_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="SLA recovery check interval: the first poll after steering (or after the "
        "SLA changed), doubled at each poll that finds it still degraded, up to sla_poll_max_s",
    )
    sla_poll_max_s: float = Field(
        default=60.0,
        gt=0,
        description="longest SLA poll interval while the SLA stays degraded (scaled; at most "
        "PCA's 60 s measurement window, so no change is read later than one window after it "
        "shows). PCA's clear alert, through the correlator's `cleared` signal, cuts a poll "
        "short, so recovery is seen at once; equal to sla_poll_s (or lower): a fixed interval",
    )
    cutover_step_s: float = Field(default=10.0, gt=0, description="pause between cutover steps")
    monitor_timeout_s: float = Field(
        default=3600.0, gt=0, description="escalate when the SLA has not recovered by then"
    )
    dampen_base_s: float = Field(default=30.0, gt=0, description="first dampening backoff")
    dampen_max_s: float = Field(default=600.0, gt=0, description="longest dampening backoff")
    te_type: TeType | None = Field(
        default=None, description="TE type to ask the tunnel agent for (None: it auto-detects)"
    )
    checkpoint_path: Path | None = Field(
        default=None,
        description="SQLite checkpoint file (default: <data_dir>/orchestrator-graph.db)",
    )
    max_concurrent_runs: int = Field(default=8, ge=1)
    peer_down_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="how long (real seconds, NOT scaled by CXM_TIME_SCALE: a process takes as "
        "long to restart in a demo) a peer may be unreachable before the incident that needs it "
        "escalates with an `agent_unavailable` error; meanwhile the step is retried with capped "
        "backoff and no coroutine waits (0: escalate after the mesh's retries, as before)",
    )
    reserve_bandwidth: bool = Field(
        default=True,
        description="ask path computation for headroom for the services a tunnel will carry",
    )
    report_failures_after: int = Field(
        default=5,
        ge=1,
        description="consecutive failed runs (a bug, a dead database) after which IO and audit "
        "hear an `incident_run_failing` error; the run keeps retrying with capped backoff",
    )
    scheduler_max_sleep_s: float = Field(
        default=1.0, gt=0, description="longest scheduler nap (unscaled): bounds replica lag"
    )
    proactive_target_pct: float = Field(
        default=60.0,
        gt=0,
        lt=100,
        description="a proactive shift moves the fewest services that bring the congested "
        "link's predicted native load down to this share of capacity (10 points under the "
        "traffic agent's 70 % trigger, so the relieved link does not re-alert on noise)",
    )
    proactive_release_pct: float = Field(
        default=50.0,
        gt=0,
        lt=100,
        description="traffic comes back only once the link's native load (and its forecast) "
        "stayed under this for proactive_hold_s: with everything back the link then carries "
        "less than this, 20 points under the trigger (hysteresis; docs/orchestrator.md)",
    )
    proactive_hold_s: float = Field(
        default=300.0,
        gt=0,
        description="how long native load must stay under the release threshold before the "
        "return starts (scaled): one forecast horizon, so the calm the forecast promised has "
        "been seen for its whole horizon",
    )
    proactive_min_shift_interval_s: float = Field(
        default=900.0,
        ge=0,
        description="minimum time between two shifts of traffic off one link (scaled): a return "
        "never starts sooner than this after the last shift, so at most 4 shifts an hour",
    )
    proactive_max_shifts: int = Field(
        default=3,
        ge=1,
        description="shifts off one link an incident may make; one more (the load came back "
        "during every return) escalates to a person with a `proactive_flapping` error",
    )
    proactive_replan_margin_pct: float = Field(
        default=5.0,
        ge=0,
        lt=100,
        description="while traffic is moved, the link's native load (or forecast) less the "
        "moved share climbing more than this over the target moves more services (part of "
        "the same shift); the margin keeps a forecast's noise around the target from "
        "re-planning every poll",
    )
    runbook_session_limit: int = Field(
        default=3,
        ge=1,
        description="frequency guard: at most this many sessions of one runbook on one target "
        "(the ticket's host, else the ticket) start within runbook_session_window_s",
    )
    runbook_session_window_s: float = Field(
        default=3600.0, gt=0, description="the frequency guard's window (scaled)"
    )
    runbook_four_eyes: bool = Field(
        default=False,
        description="the person who started a runbook session may not approve its steps",
    )
    runbook_retry_attempts: int = Field(
        default=3,
        ge=1,
        description="tries of an idempotent step whose failure is transient (a non-idempotent "
        "step is never run twice)",
    )
    runbook_retry_backoff_s: float = Field(
        default=1.0, gt=0, description="first pause between those tries, doubled each time (scaled)"
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> OrchestratorSettings:
        if self.proactive_release_pct >= self.proactive_target_pct:
            raise ValueError(
                "proactive_release_pct must be under proactive_target_pct (hysteresis): "
                f"{self.proactive_release_pct:g} >= {self.proactive_target_pct:g}"
            )
        return self

    def always_required(self) -> set[str]:
        return {a.strip() for a in self.approval_required_for.split(",") if a.strip()}

    def requires_approval(self, action: str, *, severity: str, tier: str | None) -> bool:
        """Whether ``action`` needs a human for an incident of this severity and tier."""
        for rule in self.approval_policy:
            if rule.action not in ("*", action):
                continue
            if rule.severities and severity not in rule.severities:
                continue
            if rule.tiers and tier not in rule.tiers:
                continue
            return rule.require
        return action in self.always_required()

"""The checkpointed incident state, and pure views of it that several nodes share.

Plain JSON types only (times are ISO strings), so the state stays readable under
``LANGGRAPH_STRICT_MSGPACK=true`` and by anything that reads a checkpoint. The reducers make
loops and replays harmless: a node that runs again (monitor ⇄ wait, a replay after a crash)
never lists itself, a link or a signal twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypedDict

from services.orchestrator.flow.phases import PHASE, Status
from shared.southbound import link_key

SEVERITY_TIER: dict[str, str] = {
    "critical": "platinum",
    "high": "gold",
    "medium": "silver",
    "low": "bronze",
    "info": "bronze",
}
"""Seed 003's notification matrix pairs severities with tiers; used before impact is known."""


def merge_unique(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append what is new, keep first-seen order: a replayed or looping node appears once."""
    out = list(left or [])
    for item in right or []:
        if item not in out:
            out.append(item)
    return out


def merge_dict(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Approvals accumulate by key: a decision is never forgotten by a later update."""
    return {**(left or {}), **(right or {})}


class IncidentState(TypedDict, total=False):
    """Checkpointed state: plain JSON types only (times are ISO strings)."""

    incident_id: str
    severity: str
    summary: str
    created_at: str
    proactive: bool
    degraded_links: Annotated[list[str], merge_unique]
    nodes_executed: Annotated[list[str], merge_unique]
    approvals: Annotated[dict[str, Any], merge_dict]
    signals: Annotated[list[dict[str, Any]], merge_unique]
    step: int
    status: str
    phase: str
    tier: str
    dampened_until: str | None
    dampen_count: int
    impact: dict[str, Any] | None
    path: dict[str, Any] | None
    tunnel: dict[str, Any] | None
    steered: bool
    reroutes: int
    tunnel_degraded: Annotated[list[str], merge_unique]
    """Links of a protection path that went out of SLA: avoided by every later re-route."""
    monitor: dict[str, Any] | None
    restore: dict[str, Any]
    cleaned: bool
    gate: dict[str, Any] | None
    wait: dict[str, Any] | None
    escalation: dict[str, Any] | None
    close_reason: str | None
    resolution: str | None


def initial_state(start: dict[str, Any]) -> IncidentState:
    """The state a new thread starts from, built from a validated ``StartIncident`` dump."""
    return IncidentState(
        incident_id=start["incident_id"],
        severity=start["severity"],
        summary=start["summary"],
        created_at=start["created_at"],
        proactive=bool(start.get("proactive", False)),
        degraded_links=list(start["degraded_links"]),
        dampened_until=start.get("dampened_until"),
        dampen_count=0,
        tier=SEVERITY_TIER.get(start["severity"], "bronze"),
        nodes_executed=[],
        approvals={},
        signals=[],
        step=0,
        status=Status.NEW.value,
        phase=PHASE[Status.NEW],
        restore={"attempt": 0, "step": 0},
        cleaned=False,
        steered=False,
    )


def iso(dt: datetime) -> str:
    """Times live in the state as ISO strings (JSON-safe checkpoints)."""
    return dt.isoformat()


def parse(value: str) -> datetime:
    """The inverse of ``iso``."""
    return datetime.fromisoformat(value)


def steered_ids(state: IncidentState) -> list[str]:
    """The services on the tunnel: what steering carried, else every affected one."""
    tunnel = state.get("tunnel") or {}
    ids: list[str] = tunnel.get("service_ids") or (state.get("impact") or {}).get("service_ids", [])
    return ids


def avoid(state: IncidentState) -> list[str]:
    """Every link a protection path must avoid: the incident's and the tunnel's bad ones."""
    return merge_unique(state["degraded_links"], state.get("tunnel_degraded"))


def crossed(path: dict[str, Any] | None, links: list[str]) -> list[str]:
    """The links of ``links`` that the protection path uses (names compared undirected)."""
    used = {link_key(link) for link in (path or {}).get("links") or []}
    return [link for link in links if link_key(link) in used]


def approval_context(state: IncidentState) -> dict[str, Any]:
    """What an approver needs to see: services, path, tunnel, tier and severity."""
    impact = state.get("impact") or {}
    return {
        "severity": state["severity"],
        "tier": state.get("tier"),
        "degraded_links": state.get("degraded_links", []),
        "affected_services": impact.get("service_ids", []),
        "total_affected": impact.get("total_affected", 0),
        "path": (state.get("path") or {}).get("path"),
        "tunnel": state.get("tunnel"),
    }

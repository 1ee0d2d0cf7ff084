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
    """The first policy's path (the seed's one path); ``paths`` has every group's."""
    paths: list[dict[str, Any]]
    tunnel: dict[str, Any] | None
    """The first policy (the seed's ``tunnel_id``); ``tunnels`` has every one."""
    tunnels: list[dict[str, Any]]
    """Every policy of the incident, each with its group's ``service_ids`` (and ``steered``)."""
    unprotected: list[dict[str, Any]]
    """Groups no policy protects: ends, ``service_ids``, ``reason`` and ``why``."""
    steered: bool
    reroutes: int
    tunnel_degraded: Annotated[list[str], merge_unique]
    """Links of a protection path that went out of SLA: avoided by every later re-route."""
    tolerated: Annotated[list[str], merge_unique]
    """Degraded links a policy keeps crossing because no path avoids them (only the
    incident's own links are a ban): re-routing is not tried again for them."""
    monitor: dict[str, Any] | None
    restore: dict[str, Any]
    cleaned: bool
    gate: dict[str, Any] | None
    wait: dict[str, Any] | None
    escalation: dict[str, Any] | None
    close_reason: str | None
    resolution: str | None
    shift: dict[str, Any] | None
    """A proactive incident's load shift (``flow.proactive``): the links, the services riding
    them and their committed bandwidth, what moved, the shifts made and when, the calm timer."""


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


TUNNEL_FIELDS = (
    "tunnel_id",
    "binding_sid",
    "te_type",
    "path",
    "head_end",
    "end_point",
    "color",
    "service_ids",
)
"""What IO is shown of each policy (``tunnels`` in phases 4-5, the cleanup and the ticket)."""


def groups(state: IncidentState) -> list[dict[str, Any]]:
    """The groups of affected services to protect, first the one the seed calls the tunnel's.

    A checkpoint from before groups existed has one: the ends and services it protected.
    """
    impact = state.get("impact") or {}
    if impact.get("groups"):
        return list(impact["groups"])
    if not impact.get("head_end"):
        return []
    return [
        {
            "head_end": impact["head_end"],
            "end_point": impact["end_point"],
            "tier": impact.get("highest_tier"),
            "service_ids": impact.get("carried_ids") or impact.get("service_ids", []),
            "mbps": impact.get("carried_mbps"),
        }
    ]


def group_of(state: IncidentState, ends: dict[str, Any]) -> dict[str, Any]:
    """The group between the same two ends as ``ends`` (a path or a tunnel): ends are unique."""
    key = (ends.get("head_end"), ends.get("end_point"))
    for group in groups(state):
        if (group["head_end"], group["end_point"]) == key:
            return group
    return {"head_end": key[0], "end_point": key[1], "service_ids": [], "mbps": None}


def paths(state: IncidentState) -> list[dict[str, Any]]:
    """Every group's computed path (older checkpoints: the one ``path``)."""
    if state.get("paths"):
        return list(state["paths"])
    path = state.get("path")
    return [path] if path else []


def tunnels(state: IncidentState) -> list[dict[str, Any]]:
    """Every policy with the services it carries (older checkpoints: the one ``tunnel``)."""
    if state.get("tunnels"):
        return list(state["tunnels"])
    tunnel = state.get("tunnel")
    if not tunnel:
        return []
    return [{**tunnel, "service_ids": steered_ids(state), "steered": bool(state.get("steered"))}]


def path_of(state: IncidentState, tunnel: dict[str, Any]) -> dict[str, Any]:
    """The computed path a policy follows (same ends)."""
    key = (tunnel.get("head_end"), tunnel.get("end_point"))
    for path in paths(state):
        if (path.get("head_end"), path.get("end_point")) == key:
            return path
    return state.get("path") or {}


def tunnel_ids(state: IncidentState) -> list[str]:
    """Every policy's id, the first one first."""
    return [t["tunnel_id"] for t in tunnels(state)]


def wire(tunnel: dict[str, Any]) -> dict[str, Any]:
    """A policy as IO is shown it (``TUNNEL_FIELDS``)."""
    return {name: tunnel.get(name) for name in TUNNEL_FIELDS}


def unprotected_ids(unprotected: list[dict[str, Any]]) -> list[str]:
    """The services of the groups no policy protects, flat."""
    return [sid for group in unprotected for sid in group["service_ids"]]


def crossed_any(state: IncidentState, links: list[str]) -> list[str]:
    """The links of ``links`` that any of the incident's protection paths uses."""
    return merge_unique([], [link for path in paths(state) for link in crossed(path, links)])


def avoid(state: IncidentState) -> list[str]:
    """Every link a protection path should avoid: the incident's and the tunnel's bad ones,
    less those a policy crosses because nothing avoids them (``tolerated``)."""
    tolerated = {link_key(link) for link in state.get("tolerated") or []}
    extra = [n for n in state.get("tunnel_degraded") or [] if link_key(n) not in tolerated]
    return merge_unique(state["degraded_links"], extra)


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

"""Phase 7 and the close: cut traffic back step by step, remove the tunnel, close the ticket.

restore ─┬─ [approval] → restore          (policy: each cutover step, the cleanup)
         ├─ wait (cutover) → restore      (between steps 75/25 → 50/50 → 25/75)
         ├─ restore                       (last step applied: clean up now)
         ├─ monitor                       (SLA degraded at a step: back on the tunnel)
         ├─ close                         (tunnel removed, or there never was one)
         └─ escalate                      (a cutover step or the cleanup failed)
close → END
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import (
    Effects,
    cleanup_policies,
    cutover_policies,
    gate,
    peer_failed,
    remove_tunnels,
    wait_for,
)
from services.orchestrator.flow.phases import PHASE, TO_END, End, Status, entered
from services.orchestrator.flow.state import (
    IncidentState,
    approval_context,
    merge_unique,
    parse,
    steered_ids,
    tunnel_ids,
    tunnels,
    wire,
)
from shared.contracts import INCIDENT_CLOSED, TICKET_CLOSED
from shared.errors import MeshError
from shared.models import (
    CUTOVER_STEPS,
    CutoverResult,
    IncidentClosed,
    TicketClosed,
    utcnow,
)

# --- restore -------------------------------------------------------------------------------

RestoreGoto = Literal["approval", "wait", "restore", "monitor", "close", "escalate"]


async def restore(state: IncidentState, config: RunnableConfig) -> Command[RestoreGoto]:
    """One cutover step (SLA checked by restore), then the tunnel's cleanup."""
    fx = Effects(state, config)
    r = dict(state.get("restore") or {"attempt": 0, "step": 0})
    update = fx.done(nodes_executed=["restore"], **entered(Status.RESTORING))
    tunnel = state.get("tunnel")
    if not tunnel:
        await fx.status(Status.RESTORING, "SLA recovered; no protection tunnel to remove", {})
        await fx.audit("restoration_complete", {"tunnel_id": None})
        return Command(goto="close", update={**update, "close_reason": "sla_recovered"})
    if int(r["step"]) < len(CUTOVER_STEPS):
        return await _cutover(fx, state, update, r)
    return await _clean_up(fx, state, update, int(r["attempt"]), tunnel)


async def _cutover(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    r: dict[str, Any],
) -> Command[RestoreGoto]:
    """Apply cutover step ``r["step"]`` (after its approval, if policy wants one)."""
    attempt, index = int(r["attempt"]), int(r["step"])
    protection, original = CUTOVER_STEPS[index]
    ask = cutover_gate(fx, state, attempt, index, then="restore")
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    every = tunnels(state)
    outcomes = await cutover_policies(
        fx,
        every,
        links=state["degraded_links"],
        protection=protection,
        original=original,
        service_ids=steered_ids(state),
    )
    if failed := cutover_failures(every, outcomes, index):
        return Command(goto="escalate", update={**update, **failed})
    return await _stepped(fx, update, r, tunnel_ids(state), _first_suffered(outcomes))


def cutover_gate(
    fx: Effects, state: IncidentState, attempt: int, index: int, *, then: str, **context: Any
) -> dict[str, Any] | None:
    """The approval cutover step ``index`` of return ``attempt`` may need (policy decides).

    The SLA flow and the proactive flow (which adds ``proactive``) both bring traffic back in
    ``CUTOVER_STEPS``: one gate, so an approver sees the same request from either."""
    protection, original = CUTOVER_STEPS[index]
    return gate(
        fx,
        action="cutover",
        key=f"cutover:{attempt}:{index}",
        then=then,
        phase=PHASE[Status.RESTORING],
        details={
            **approval_context(state),
            **context,
            "protection_pct": protection,
            "original_pct": original,
            "step": index + 1,
        },
    )


def cutover_failures(
    every: list[dict[str, Any]],
    outcomes: Sequence[CutoverResult | MeshError],
    index: int,
    *,
    what: str | None = None,
) -> dict[str, Any] | None:
    """The escalation when restore failed cutover step ``index`` on some policy: named after
    the first that failed, in policy order, with every failed policy listed (the others were
    applied). None when every policy was answered. ``what`` replaces the step's wording."""
    failed = [
        (tunnel["tunnel_id"], outcome)
        for tunnel, outcome in zip(every, outcomes, strict=True)
        if isinstance(outcome, MeshError)
    ]
    if not failed:
        return None
    protection, original = CUTOVER_STEPS[index]
    tunnel_id, exc = failed[0]
    return peer_failed(
        exc,
        "cutover_failed",
        what or f"Cutover step {protection}/{original} failed on {tunnel_id}",
        agent="restore",
        tunnel_id=tunnel_id,
        failed_tunnels={tid: str(e) for tid, e in failed},
    )


def _first_suffered(outcomes: Sequence[CutoverResult | MeshError]) -> CutoverResult:
    """The first policy, in order, whose step the SLA reverted; else the last one's answer."""
    results = [o for o in outcomes if isinstance(o, CutoverResult)]
    return next((r for r in results if not r.within_sla or r.reverted), results[-1])


async def _stepped(
    fx: Effects,
    update: dict[str, Any],
    r: dict[str, Any],
    ids: list[str],
    result: CutoverResult,
) -> Command[RestoreGoto]:
    """After a step: back to monitoring if the SLA suffered, else wait for the next step."""
    attempt, index = int(r["attempt"]), int(r["step"])
    protection, original = CUTOVER_STEPS[index]
    details = {
        "step": index + 1,
        "steps": len(CUTOVER_STEPS),
        "protection_pct": protection,
        "original_pct": original,
        "within_sla": result.within_sla,
        "applied": result.applied,
        "reverted": result.reverted,
        "tunnel_id": ids[0],
        "tunnel_ids": ids,
    }
    if not result.within_sla or result.reverted:
        await fx.status(
            Status.RESTORING,
            f"SLA degraded at cutover {protection}/{original}; back on the tunnel, monitoring",
            details,
        )
        # cutover starts over (a new attempt, so new approval keys) after the next hold
        again = {"restore": {"attempt": attempt + 1, "step": 0}, "monitor": None}
        return Command(goto="monitor", update={**update, **again})
    await fx.status(
        Status.RESTORING, f"Cutover {protection}/{original} (protection/original)", details
    )
    r["step"] = index + 1
    if index + 1 < len(CUTOVER_STEPS):
        pause = wait_for(fx, seconds=fx.orch.cutover_step_s, then="restore", reason="cutover")
        return Command(goto="wait", update={**update, "restore": r, "wait": pause})
    return Command(goto="restore", update={**update, "restore": r})


async def _clean_up(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    attempt: int,
    tunnel: dict[str, Any],
) -> Command[RestoreGoto]:
    """All traffic is back: remove the policies (after approval, if policy wants one), close."""
    ids = tunnel_ids(state)
    details = {"tunnel_id": tunnel["tunnel_id"], "tunnel_ids": ids}
    not_yet = await remove_policies(fx, state, update, attempt, then="restore", details=details)
    if not_yet:
        return not_yet
    await fx.status(
        Status.RESTORING,
        f"Traffic back on the original path; tunnel{'s' if len(ids) > 1 else ''} "
        f"{', '.join(ids)} removed",
        {
            "tunnel_id": tunnel["tunnel_id"],
            "tunnel_ids": ids,
            "cleanup": True,
            "protection_pct": 0,
            "original_pct": 100,
        },
    )
    await fx.audit("restoration_complete", {"tunnel_id": tunnel["tunnel_id"]})
    done = {"cleaned": True, "close_reason": "sla_recovered"}
    return Command(goto="close", update={**update, **done})


async def remove_policies(
    fx: Effects,
    state: IncidentState,
    update: dict[str, Any],
    attempt: int,
    *,
    then: Literal["restore", "release"],
    details: dict[str, Any],
) -> Command[Any] | None:
    """Remove every policy of the incident once all traffic is home, after the cleanup
    approval when policy wants one. None when done (or already done); else where to go:
    the approval gate (back to ``then``), or escalation when a removal failed. Shared by the
    reactive return (``restore``) and the proactive one (``release``)."""
    if state.get("cleaned"):
        return None
    ask = gate(
        fx,
        action="cleanup",
        key=f"cleanup:{attempt}",
        then=then,
        phase=PHASE[Status.RESTORING],
        details={**approval_context(state), **details},
    )
    if ask:
        return Command(goto="approval", update={**update, "gate": ask})
    if failed := await _clean_each(fx, state):
        return Command(goto="escalate", update={**update, **failed})
    return None


async def _clean_each(fx: Effects, state: IncidentState) -> dict[str, Any] | None:
    """Remove every policy in one task (one key, so a replay removes none twice); a failure
    escalates, naming the first policy that failed."""
    every = tunnels(state)
    outcomes = await cleanup_policies(fx, every)
    for tunnel, outcome in zip(every, outcomes, strict=True):
        if isinstance(outcome, MeshError):
            return peer_failed(
                outcome,
                "cleanup_failed",
                f"Removing tunnel {tunnel['tunnel_id']} failed",
                agent="restore",
                tunnel_id=tunnel["tunnel_id"],
            )
    return None


# --- close ---------------------------------------------------------------------------------

SUMMARIES = {
    "sla_recovered": "Incident resolved: SLA recovered on original path",
    "no_impact": "Incident closed: no customer service affected",
    "operator_resolved": "Incident resolved by an operator",
    "cleared": "Incident closed: the degradation cleared",
    "congestion_subsided": "Incident resolved: congestion subsided, traffic back on its own path",
}
"""The ticket's summary by close reason (seed 003's ``ticket_closed``)."""


async def close(state: IncidentState, config: RunnableConfig) -> Command[End]:
    """Resolve the ticket: IO, audit, notify and the correlator all hear of it."""
    fx = Effects(state, config)
    reason = state.get("close_reason") or "sla_recovered"
    tunnel = state.get("tunnel") or {}
    if tunnel and not state.get("cleaned") and reason == "operator_resolved":
        await remove_tunnels(fx, list(enumerate(tunnels(state))))
    impact = state.get("impact") or {}
    duration = (utcnow() - parse(state["created_at"])).total_seconds()
    summary = SUMMARIES.get(reason, f"Incident closed: {reason}")
    details = {
        "final_status": "resolved",
        "close_reason": reason,
        "degraded_links": state["degraded_links"],
        "affected_services_count": impact.get("total_affected", 0),
        "tunnel_id": tunnel.get("tunnel_id"),
        "nodes_executed": merge_unique(state.get("nodes_executed"), ["close"]),
        "tunnel_ids": tunnel_ids(state),
        "tunnels": [wire(t) for t in tunnels(state)],
    }
    await fx.io(
        TICKET_CLOSED,
        TicketClosed(
            incident_id=fx.iid,
            resolution="resolved",
            duration_seconds=round(duration, 3),
            summary=summary,
            details=details,
        ),
    )
    await fx.audit(
        "state_change", {"from": state.get("status"), "to": Status.CLOSED.value, **details}
    )
    await fx.notify("incident_closed", f"{fx.iid} resolved", summary, details)
    await fx.put(
        INCIDENT_CLOSED,
        IncidentClosed(
            incident_id=fx.iid, resolution="resolved", degraded_links=state["degraded_links"]
        ),
    )
    update = fx.done(
        nodes_executed=["close"],
        **entered(Status.CLOSED),
        resolution="resolved",
        close_reason=reason,
    )
    return Command(goto=TO_END, update=update)

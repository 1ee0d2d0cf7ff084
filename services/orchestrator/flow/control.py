"""Where a run stops or hands over: escalation, timers, approvals, and signals while waiting.

    escalate → END                          (a human takes over; the ticket closes escalated)
    wait ─┬─ the node that asked            (timer due: monitor or restore)
          └─ a signal's route               (reroute, close, dampen, assess, monitor)
    approval ─┬─ the gated step             (approved: provision, steer, reroute, restore)
              ├─ escalate                   (rejected, or no decision before it expired)
              └─ close                      (an operator resolved the incident meanwhile)

Nothing sleeps per incident: ``wait`` and ``approval`` end the run with a LangGraph
``interrupt`` whose value carries the due time; the runner's scheduler resumes the thread with
``Command(resume=...)`` when the timer fires, an operator decides, or a signal arrives. A
resumed node runs again from its start, so everything before its ``interrupt`` is replay-safe
(keys made from ``step``, see ``effects``).
"""

from __future__ import annotations

from typing import Any, Literal, cast, get_args

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt

from services.orchestrator.flow.effects import Effects, escalation, remove_tunnels
from services.orchestrator.flow.phases import TO_END, End, Status, entered
from services.orchestrator.flow.state import (
    IncidentState,
    crossed_any,
    merge_unique,
    parse,
    tunnels,
    wire,
)
from shared.contracts import APPROVAL_REQUIRED, INCIDENT_CLOSED, TICKET_CLOSED
from shared.models import ApprovalRequired, IncidentClosed, TicketClosed, utcnow

# --- escalate ------------------------------------------------------------------------------


async def escalate(state: IncidentState, config: RunnableConfig) -> Command[End]:
    """Hand the incident to a human: IO, audit, notify and the correlator all hear of it."""
    fx = Effects(state, config)
    esc = state.get("escalation") or {"reason": "unknown", "message": "escalated"}
    resolution = esc.get("resolution") or "escalated"
    details = {
        "reason": esc["reason"],
        "degraded_links": state["degraded_links"],
        "tunnel_id": (state.get("tunnel") or {}).get("tunnel_id"),
        **(esc.get("details") or {}),
    }
    fates = await _tunnel_fates(fx, state)
    if fates:
        details["tunnel"] = fates[0]
    all_tunnels = tunnels(state)
    details["tunnel_ids"] = [t["tunnel_id"] for t in all_tunnels]
    details["tunnels"] = [
        {**wire(t), "fate": fates[i] if i < len(fates) else None} for i, t in enumerate(all_tunnels)
    ]
    await fx.status(Status.ESCALATED, esc["message"], details)
    if esc.get("error_code"):
        await fx.error(esc["error_code"], esc["message"], details)
    await fx.audit("escalation", {"message": esc["message"], **details})
    await fx.notify(
        "escalation",
        f"{fx.iid} escalated: {esc['reason']}",
        esc["message"],
        {**details, "error_code": esc.get("error_code"), "resolution": resolution},
    )
    await fx.put(
        INCIDENT_CLOSED,
        IncidentClosed(
            incident_id=fx.iid, resolution=resolution, degraded_links=state["degraded_links"]
        ),
    )
    await _ticket_escalated(fx, state, esc, resolution, details)
    update = fx.done(**entered(Status.ESCALATED), resolution=resolution)
    return Command(goto=TO_END, update=update)


async def _tunnel_fates(fx: Effects, state: IncidentState) -> list[str]:
    """What escalation does with each policy still up, as the ticket should say it: one that
    carries protected traffic stays up (taking it away is the operator's call); one built
    but never used (steering failed or was rejected) leaves nothing behind."""
    if not state.get("tunnel") or state.get("cleaned"):
        return []
    every = tunnels(state)
    unused = [
        (i, t) for i, t in enumerate(every) if not t.get("steered", bool(state.get("steered")))
    ]
    removed = dict(zip((i for i, _ in unused), await remove_tunnels(fx, unused), strict=True))
    return [
        "left up: it carries the protected services"
        if i not in removed
        else "removed: never carried traffic"
        if removed[i]
        else "removal failed"
        for i in range(len(every))
    ]


async def _ticket_escalated(
    fx: Effects,
    state: IncidentState,
    esc: dict[str, Any],
    resolution: str,
    details: dict[str, Any],
) -> None:
    """``ticket_closed`` with the seed's ``escalated`` resolution (or the rejection's)."""
    duration = (utcnow() - parse(state["created_at"])).total_seconds()
    await fx.io(
        TICKET_CLOSED,
        TicketClosed(
            incident_id=fx.iid,
            resolution=resolution,
            duration_seconds=round(duration, 3),
            summary=f"Incident escalated to an operator: {esc['message']}",
            details={
                "final_status": Status.ESCALATED.value,
                "close_reason": esc["reason"],
                "affected_services_count": (state.get("impact") or {}).get("total_affected", 0),
                "nodes_executed": state.get("nodes_executed", []),
                **details,
            },
        ),
    )


# --- wait ----------------------------------------------------------------------------------

WaitGoto = Literal["monitor", "restore", "reroute", "close", "dampen", "assess", "watch", "release"]
"""Where a wait can end: the node that asked (``then``) or a signal's route."""


async def wait(state: IncidentState, config: RunnableConfig) -> Command[WaitGoto]:
    """Pause until the timer is due; signals arriving meanwhile may cut the wait short."""
    fx = Effects(state, config)
    w = dict(state.get("wait") or {})
    then: WaitGoto = _exit(w.get("then", "monitor"), WaitGoto)
    update: dict[str, Any] = {}
    while True:
        value = interrupt({"kind": "timer", **w})
        if not isinstance(value, dict) or value.get("kind") == "timer":
            break
        if value.get("kind") != "signal":
            continue  # a stale approval decision: nothing waits for it here
        route, changes = await on_signal(fx, state, value, waiting_for=w.get("reason"))
        _merge(update, changes)
        if route:
            then = route
            break
    return Command(goto=then, update=fx.done(wait=None, **update))


# --- approval ------------------------------------------------------------------------------

ApprovalGoto = Literal["provision", "steer", "reroute", "restore", "close", "escalate", "release"]
"""Where an approval can end: the gated step, ``escalate``, or ``close`` (a signal)."""


async def approval(state: IncidentState, config: RunnableConfig) -> Command[ApprovalGoto]:
    """Ask a human (IO ``approval_required``) and interrupt until they decide or time runs out."""
    fx = Effects(state, config)
    g = dict(state.get("gate") or {})
    await _ask(fx, g)
    update: dict[str, Any] = {}
    while True:
        value = interrupt(
            {
                "kind": "approval",
                "approval_id": g["approval_id"],
                "action": g["action"],
                "due": g["expires_at"],
                "reason": f"approval:{g['action']}",
            }
        )
        if not isinstance(value, dict):
            continue
        if value.get("kind") == "signal":
            route, changes = await on_signal(fx, state, value, waiting_for="approval")
            _merge(update, changes)
            if route:
                return Command(goto=_exit(route, ApprovalGoto), update=fx.done(gate=None, **update))
            continue
        if value.get("kind") == "approval" and value.get("approval_id") == g["approval_id"]:
            return await _decided(fx, g, value, update)


async def _ask(fx: Effects, g: dict[str, Any]) -> None:
    """Mark the approval pending, then tell IO (``approval_required`` and the status)."""
    approval_id = g["approval_id"]
    # Pending before anyone hears of it: an operator who approves the moment the request
    # shows up must not get "not pending" because the run has not reached its interrupt yet.
    await fx.mark_approval_pending(approval_id)
    await fx.io(
        APPROVAL_REQUIRED,
        ApprovalRequired(
            approval_id=approval_id,
            incident_id=fx.iid,
            action=g["action"],
            details={**g.get("details", {}), "step_key": g["key"], "phase": g["phase"]},
            expires_at=parse(g["expires_at"]),
            requested_at=parse(g["requested_at"]),
        ),
    )
    await fx.status(
        Status.WAITING_APPROVAL,
        f"Waiting for an operator to approve {g['action']}",
        {"approval_id": approval_id, "action": g["action"], "expires_at": g["expires_at"]},
        phase=g["phase"],
    )


async def _decided(
    fx: Effects, g: dict[str, Any], value: dict[str, Any], update: dict[str, Any]
) -> Command[ApprovalGoto]:
    """Approve → the gated step; reject → escalate to a human; timeout → escalate + error."""
    decision = value.get("decision")
    record = {
        "approval_id": g["approval_id"],
        "action": g["action"],
        "decision": decision,
        "decided_by": value.get("decided_by"),
        "notes": value.get("notes", ""),
        "decided_at": value.get("decided_at"),
    }
    await fx.audit("state_change", {"approval": record, "from": Status.WAITING_APPROVAL.value})
    if decision == "approve":
        approved = fx.done(gate=None, approvals={g["key"]: record}, **update)
        return Command(goto=_exit(g["then"], ApprovalGoto), update=approved)
    if decision == "reject":
        by = value.get("decided_by")
        notes = value.get("notes") or ""
        rejected = escalation(
            "approval_rejected",
            f"{g['action']} rejected by {by}" + (f": {notes}" if notes else ""),
            rejected=True,
            approval_id=g["approval_id"],
            action=g["action"],
            decided_by=by,
            notes=notes,
        )
        update = fx.done(gate=None, approvals={g["key"]: record}, **update, **rejected)
        return Command(goto="escalate", update=update)
    expired = escalation(
        "approval_timeout",
        f"No decision on {g['action']} before {g['expires_at']}",
        error_code="approval_timeout",
        approval_id=g["approval_id"],
        action=g["action"],
    )
    return Command(goto="escalate", update=fx.done(gate=None, **update, **expired))


# --- signals -------------------------------------------------------------------------------

SignalRoute = Literal["reroute", "close", "dampen", "assess", "monitor"]
"""Where a signal can send a waiting incident (see ``on_signal``)."""


async def on_signal(
    fx: Effects, state: IncidentState, value: dict[str, Any], *, waiting_for: str | None
) -> tuple[SignalRoute | None, dict[str, Any]]:
    """Apply an ``IncidentSignal`` received while waiting; return (route or None, changes).

    What a signal means depends on what the incident waits for: ``links_added`` moves a
    tunnel carrying traffic off a new bad link at once, ``dampen``/``resume``/``cleared`` steer
    dampening, ``cleared`` cuts an SLA poll short, ``operator_resolved`` always closes.
    """
    signal = value.get("signal")
    record = {k: value.get(k) for k in ("id", "signal", "links", "until", "received_at")}
    if record["id"] and any(s.get("id") == record["id"] for s in state.get("signals") or []):
        return None, {}  # delivered again after a crash: already applied
    changes: dict[str, Any] = {"signals": [record]}
    await fx.audit("state_change", {"signal": record, "waiting_for": waiting_for})
    if signal == "links_added":
        added = list(value.get("links") or [])
        changes["degraded_links"] = added
        if waiting_for in ("sla_poll", "hold_timer") and crossed_any(state, added):
            return "reroute", changes  # traffic is on the tunnel: move it off at once
        return None, changes
    if signal == "operator_resolved":
        changes["close_reason"] = "operator_resolved"
        return "close", changes
    if waiting_for == "dampening":
        if signal == "dampen":
            if value.get("until"):
                changes["dampened_until"] = value["until"]
            return "dampen", changes
        if signal == "resume":
            return "assess", changes
        if signal == "cleared":
            return "monitor", changes
    if waiting_for == "sla_poll" and signal == "cleared":
        return "monitor", changes
    return None, changes


def _merge(update: dict[str, Any], changes: dict[str, Any]) -> None:
    """Fold one signal's changes into the waiting node's update (lists merge, as reducers do)."""
    for key, value in changes.items():
        if key in ("degraded_links", "signals"):
            update[key] = merge_unique(update.get(key), value)
        else:
            update[key] = value


def _exit(name: str, allowed: Any) -> Any:
    """``name`` checked against a node's ``Literal`` of exits.

    ``then`` comes from the state (the node that asked for the wait or the approval), so
    mypy cannot see it; checking here keeps a bad value from taking an edge the drawing lacks.
    The caller annotates the result with the node's exit type.
    """
    if name not in get_args(allowed):
        raise ValueError(f"no edge to {name!r}: expected one of {get_args(allowed)}")
    return cast(Any, name)

"""A runbook execution session as a LangGraph state machine, checkpointed like an incident.

    prepare ─┬─ run                      (every value and connection is there)
             └─ finish                   (say what is missing: the ticket escalates)
    run ─┬─ approval                     (the step needs a human and has no decision yet)
         ├─ execute                      (the step is checkpointed as ``running`` first)
         ├─ run                          (a step that cannot even render fails: rollback)
         └─ finish                       (no step left)
    execute ─┬─ run                      (judged: the next step, or rollback in reverse)
             └─ approval                 (a non-idempotent step was cut short by a crash:
                                          its outcome is unknown, a person decides)
    approval ─┬─ run                     (approved / retry / skip / abort → rollback)
              └─ finish                  (rejected, or expired: escalate)
    finish → END                         (verify, then the ticket follows)

Durability is the incident graph's: every node's writes are checkpointed (``durability=
"sync"``) before the next node starts, and approvals are interrupts the runner resumes
from the session's inbox, so no process waits for a human. The one thing a checkpoint cannot
say is whether a step that was executing when the process died took effect; ``execute``
asks the session row (``sessions.claim_attempt``) before it runs a non-idempotent step, and
a step found already started is ``unknown``, never run again without a decision. Idempotent
steps are simply run again (and retried with backoff on a transient failure).

Every node does its talking through :class:`SessionEffects`, whose outbox keys are made of
the session id and the node-execution counter, so a replayed node queues nothing twice.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from services.orchestrator.flow.effects import Effects
from services.orchestrator.flow.phases import TO_END, End
from services.orchestrator.flow.state import iso, parse
from services.orchestrator.runbooks import notes, sessions
from services.orchestrator.runbooks.actions import Action, StepOutput
from services.orchestrator.runbooks.documents import RunbookDocument, Step, judge, step_path
from services.orchestrator.runbooks.render import (
    RenderError,
    missing_values,
    render,
    render_connection,
)
from services.orchestrator.runbooks.sessions import APPROVAL_PREFIX, SessionDeps
from shared.contracts import (
    APPROVAL_REQUIRED,
    ERROR_NOTICE,
    INCIDENT_CLOSED,
    NOTIFY,
    STATUS_UPDATE,
    TICKET_CLOSED,
)
from shared.models import (
    ApprovalRequired,
    ErrorNotice,
    IncidentClosed,
    Notify,
    NotifyChannel,
    StatusUpdate,
    TicketClosed,
    utcnow,
)

OUTPUT_KEPT = 8192
"""Characters of a step's output the session keeps (the connector already caps what it reads)."""


class SessionState(TypedDict, total=False):
    """A session's checkpointed state; plain JSON values only (times are ISO strings)."""

    session_id: str
    incident_id: str
    runbook_id: str
    version: int
    severity: str
    started_by: str
    ticket: dict[str, Any]
    document: dict[str, Any]
    created_at: str
    status: str
    """running | waiting_approval | completed | failed | rejected"""
    phase: str
    step: int
    steps: list[dict[str, Any]]
    """One record per step in the order they run (rollback steps appended on failure)."""
    cursor: int
    attempt: int
    approvals: dict[str, Any]
    gate: dict[str, Any] | None
    failure: dict[str, Any] | None
    rejected: dict[str, Any] | None
    verification: dict[str, Any] | None
    reason: str | None


def initial_state(start: dict[str, Any]) -> SessionState:
    """The state a session's thread starts from (the session row's ``start``)."""
    return SessionState(
        session_id=start["session_id"],
        incident_id=start["incident_id"],
        runbook_id=start["runbook_id"],
        version=start["version"],
        severity=start["severity"],
        started_by=start["started_by"],
        ticket=start["ticket"],
        document=start["document"],
        created_at=start["created_at"],
        status="running",
        phase="prechecks",
        step=0,
        steps=[],
        cursor=0,
        attempt=1,
        approvals={},
        gate=None,
        failure=None,
        rejected=None,
        verification=None,
        reason=None,
    )


class SessionEffects(Effects):
    """The incident ``Effects`` keyed by the session (a ticket may run several sessions)."""

    def __init__(self, state: SessionState, config: RunnableConfig):
        super().__init__(cast(Any, state), config)
        self.sdeps: SessionDeps = config["configurable"]["deps"]
        self.session = state
        self.sid = state["session_id"]

    def key(self, what: str) -> str:
        return f"{self.sid}:{self.step}:{what}"

    def about(self) -> dict[str, Any]:
        return {
            "session_id": self.sid,
            "runbook_id": self.session["runbook_id"],
            "version": self.session["version"],
        }

    async def ticket_status(
        self, status: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        """``status_update`` to IO (seed 000's statuses) and its ``state_change`` audit."""
        await self.io(
            STATUS_UPDATE,
            StatusUpdate(
                incident_id=self.iid,
                status=status,
                phase="runbook",
                message=message,
                details={**self.about(), **(details or {})},
            ),
        )
        await self.audit(
            "state_change", {**self.about(), "to": status, "message": message, **(details or {})}
        )

    async def step_event(self, event: str, record: dict[str, Any]) -> None:
        """Audit a step's start or finish (who started the session, what ran where); a step
        that ended also becomes a work note on the ticket's ServiceNow record."""
        await self.audit(
            "runbook_step",
            {
                **self.about(),
                "event": event,
                "started_by": self.session["started_by"],
                **{k: record.get(k) for k in ("name", "phase", "status", "connection", "command")},
                **({"reason": record.get("reason")} if event == "finished" else {}),
            },
        )
        if event == "finished":
            await self.step_note(record)

    async def step_note(self, record: dict[str, Any]) -> None:
        """One work note per step, for ServiceNow alone (Webex and Email hear of the session's
        start, approvals and end, not of every step). It goes through the outbox like every
        notification, so it is not lost while notify is down and lands in order."""
        steps = self.session.get("steps") or []
        position = next(
            (i + 1 for i, s in enumerate(steps) if s.get("key") == record.get("key")),
            self.session.get("cursor", 0) + 1,
        )
        await self.notify(
            "runbook_step",
            f"{self.iid}: runbook {self.session['runbook_id']} step {record['name']!r} "
            f"{record.get('status')}",
            notes.step_note(record, position=position, total=max(len(steps), position)),
            {
                **self.about(),
                "step": record["name"],
                "step_phase": record["phase"],
                "step_status": record.get("status"),
                "exit_code": record.get("exit_code"),
            },
            channels=["servicenow"],
        )

    async def notify(
        self,
        event: str,
        subject: str,
        body: str,
        details: dict[str, Any],
        *,
        channels: list[NotifyChannel] | None = None,
    ) -> None:
        """The incident's ``notify``, naming the ServiceNow record the ticket came from (if it
        did: notify then updates that record instead of creating one) and, for a note meant
        for some channels only, those channels."""
        ref = notes.servicenow_ref(self.session["ticket"])
        await self.put(
            NOTIFY,
            Notify(
                incident_id=self.iid,
                event=event,
                severity=cast(Any, self.session["severity"]),
                subject=subject,
                body=body,
                details={**details, "servicenow": ref} if ref else details,
                channels=channels,
            ),
        )


# --- helpers -------------------------------------------------------------------------------


def _document(state: SessionState) -> RunbookDocument:
    return RunbookDocument.model_validate(state["document"])


def _step(doc: RunbookDocument, record: dict[str, Any]) -> Step:
    phase, index = record["phase"], record["index"]
    steps: list[Step] = doc.rollback if phase == "rollback" else getattr(doc.steps, phase)
    return steps[index]


def _record(phase: str, index: int, step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "phase": phase,
        "index": index,
        "key": f"{phase}-{index}",
        "status": "pending",
        "exit_code": None,
        "output": "",
        "started_at": None,
        "finished_at": None,
    }


def _replace(steps: list[dict[str, Any]], at: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(steps)
    out[at] = record
    return out


def _render(step: Step, ticket: dict[str, Any]) -> tuple[Action, str | None]:
    return render(step, ticket), render_connection(step, ticket)


def _failed(
    fx: SessionEffects,
    steps: list[dict[str, Any]],
    cursor: int,
    reason: str,
    **update: Any,
) -> Command[Any]:
    """A step failed: skip the rest and run the rollback steps in reverse order."""
    doc = _document(fx.session)
    failed = steps[cursor]
    out = [
        {**s, "status": "skipped"} if i > cursor and s["status"] == "pending" else s
        for i, s in enumerate(steps)
    ]
    rollback = [_record("rollback", i, s) for i, s in reversed(list(enumerate(doc.rollback)))]
    failure = {"step": failed["name"], "phase": failed["phase"], "reason": reason}
    return Command(
        goto="run",
        update=fx.done(steps=out + rollback, cursor=len(out), attempt=1, failure=failure, **update),
    )


# --- nodes ---------------------------------------------------------------------------------


async def prepare(state: SessionState, config: RunnableConfig) -> Command[Literal["run", "finish"]]:
    """Lay out the steps and check, before anything runs, that every value and connection the
    runbook names is there; a runbook that cannot run says what is missing."""
    fx = SessionEffects(state, config)
    doc = _document(state)
    ticket = state["ticket"]
    problems = [f"the ticket has no value for {name}" for name in missing_values(doc, ticket)]
    for phase, index, step in doc.iter_steps():
        try:
            name = render_connection(step, ticket)
        except RenderError as exc:
            if not problems:
                problems.append(f"{step_path(phase, index, step.name)}: {exc}")
            continue
        if name is not None and await fx.sdeps.inventory.get(name) is None:
            problems.append(
                f"{step_path(phase, index, step.name)}: connection {name!r} is not in the "
                "inventory (POST /api/v1/connections)"
            )
    steps = [_record(p, i, s) for p, i, s in doc.iter_steps() if p != "rollback"]
    if problems:
        reason = "cannot run: " + "; ".join(dict.fromkeys(problems))
        failure = {"step": None, "phase": "prepare", "reason": reason, "missing": problems}
        return Command(goto="finish", update=fx.done(steps=steps, failure=failure, reason=reason))
    started = (
        f"Runbook {doc.id} (v{state['version']}) started by {state['started_by']}: "
        f"{len(steps)} step(s)"
    )
    await fx.ticket_status(
        "in_progress",
        started,
        {"started_by": state["started_by"], "steps": [s["name"] for s in steps]},
    )
    await fx.notify(
        "status_update",
        f"{fx.iid}: runbook {doc.id} started",
        started + "\n" + "\n".join(f"- {s['phase']}: {s['name']}" for s in steps),
        {**fx.about(), "status": "in_progress", "phase": "runbook"},
    )
    return Command(goto="run", update=fx.done(steps=steps, status="running"))


RunGoto = Literal["approval", "execute", "run", "finish"]


async def run(state: SessionState, config: RunnableConfig) -> Command[RunGoto]:
    """Take the next step: ask for approval first when it needs one, else mark it running
    (checkpointed before ``execute`` touches the target)."""
    fx = SessionEffects(state, config)
    steps, cursor = list(state["steps"]), state["cursor"]
    if cursor >= len(steps):
        return Command(goto="finish", update=fx.done())
    record = dict(steps[cursor])
    step = _step(_document(state), record)
    try:
        action, connection = _render(step, state["ticket"])
    except RenderError as exc:
        record.update(status="failed", reason=str(exc), finished_at=iso(utcnow()))
        return cast(
            Command[RunGoto], _failed(fx, _replace(steps, cursor, record), cursor, str(exc))
        )
    record.update(command=action.display, connection=connection)
    policy = fx.orch.requires_approval("runbook", severity=state["severity"], tier=None)
    # the approval policy gates forward steps; a rollback step asks only when its runbook
    # says so (undoing must not wait on a blanket rule, but a risky undo is the author's call)
    needs = step.requires_approval or (policy and record["phase"] != "rollback")
    if needs and record["key"] not in (state.get("approvals") or {}):
        gate = _gate(fx, record, kind="step", key=record["key"], step=step)
        record.update(status="waiting_approval", approval_id=gate["approval_id"])
        return Command(
            goto="approval",
            update=fx.done(
                gate=gate,
                steps=_replace(steps, cursor, record),
                status="waiting_approval",
                phase=record["phase"],
            ),
        )
    record.update(status="running", started_at=iso(utcnow()), finished_at=None)
    await fx.step_event("started", record)
    return Command(
        goto="execute",
        update=fx.done(
            steps=_replace(steps, cursor, record), status="running", phase=record["phase"]
        ),
    )


async def execute(
    state: SessionState, config: RunnableConfig
) -> Command[Literal["run", "approval"]]:
    """Run the step marked ``running`` and judge it; a failure starts the rollback."""
    fx = SessionEffects(state, config)
    steps, cursor = list(state["steps"]), state["cursor"]
    record = dict(steps[cursor])
    step = _step(_document(state), record)
    action, connection = _render(step, state["ticket"])
    attempt = state.get("attempt", 1)
    context = {
        "session_id": fx.sid,
        "incident_id": fx.iid,
        "runbook_id": state["runbook_id"],
        "step": record["name"],
        "phase": record["phase"],
        "started_by": state["started_by"],
    }
    decided = (state.get("approvals") or {}).get(record["key"])
    if decided:
        context["approved_by"] = str(decided.get("decided_by"))
    if not step.idempotent:
        claimed = await sessions.claim_attempt(fx.deps.engine, fx.sid, f"{record['key']}#{attempt}")
        if not claimed:
            record.update(
                status="unknown",
                reason="the orchestrator stopped while this non-idempotent step ran: it may or "
                "may not have taken effect, so it is not run again without a decision",
            )
            await fx.step_event("finished", record)
            gate = _gate(
                fx, record, kind="unknown", key=f"{record['key']}-unknown-{attempt}", step=step
            )
            record["approval_id"] = gate["approval_id"]
            return Command(
                goto="approval",
                update=fx.done(
                    gate=gate, steps=_replace(steps, cursor, record), status="waiting_approval"
                ),
            )
        output = await fx.sdeps.pool.run(
            connection, action, timeout_s=step.timeout_s, context=context
        )
        tries = 1
    else:
        output, tries = await _with_retries(fx, step, connection, action, context)
    ok, why = judge(step.expect, output)
    text = output.output if output.output else (output.error or "")
    record.update(
        status="completed" if ok else "failed",
        exit_code=output.exit_code if output.exit_code is not None else output.status,
        output=text[-OUTPUT_KEPT:],
        finished_at=iso(utcnow()),
        reason=why,
        attempts=tries,
    )
    await fx.step_event("finished", record)
    steps = _replace(steps, cursor, record)
    if record["phase"] == "rollback":
        await fx.ticket_status(
            "in_progress", f"Rollback step {record['name']!r} {record['status']}: {why}"
        )
    if ok or record["phase"] == "rollback":
        return Command(goto="run", update=fx.done(steps=steps, cursor=cursor + 1, attempt=1))
    return cast(
        Command[Literal["run", "approval"]],
        _failed(fx, steps, cursor, f"step {record['name']!r} failed: {why}"),
    )


async def _with_retries(
    fx: SessionEffects,
    step: Step,
    connection: str | None,
    action: Action,
    context: dict[str, str],
) -> tuple[StepOutput, int]:
    """An idempotent step, tried again with doubling pauses while it fails transiently."""
    attempts = fx.orch.runbook_retry_attempts
    output = StepOutput()
    for attempt in range(attempts):
        output = await fx.sdeps.pool.run(
            connection,
            action,
            timeout_s=step.timeout_s,
            context={**context, "try": str(attempt + 1)},
        )
        if not output.transient or attempt == attempts - 1:
            return output, attempt + 1
        await asyncio.sleep(fx.settings.scaled(fx.orch.runbook_retry_backoff_s * 2**attempt))
    return output, attempts


def _gate(
    fx: SessionEffects, record: dict[str, Any], *, kind: str, key: str, step: Step
) -> dict[str, Any]:
    """The approval record: what IO shows (the exact command, never a secret) and its id."""
    now = utcnow()
    details: dict[str, Any] = {
        **fx.about(),
        "kind": kind,
        "severity": fx.session["severity"],
        "started_by": fx.session["started_by"],
        "step": record["name"],
        "step_phase": record["phase"],
        "connector": step.connector,
        "connection": record.get("connection"),
        "command": record.get("command"),
        "idempotent": step.idempotent,
    }
    if kind == "unknown":
        details["question"] = (
            f"the orchestrator stopped while {record['name']!r} ran; did it take effect?"
        )
        details["options"] = {
            "approve": "retry the step",
            "approve with option skip": "go on without it",
            "reject": "abort: run the rollback steps and escalate",
        }
    return {
        "kind": kind,
        "key": key,
        "approval_id": f"{APPROVAL_PREFIX}{fx.sid.removeprefix('RBS-')}-{key}",
        "requested_at": iso(now),
        "expires_at": iso(now + fx.scaled(fx.orch.approval_timeout_s)),
        "details": details,
    }


async def approval(
    state: SessionState, config: RunnableConfig
) -> Command[Literal["run", "finish"]]:
    """Ask IO for a decision on the gated step and interrupt until one arrives or it expires."""
    fx = SessionEffects(state, config)
    g = dict(state.get("gate") or {})
    approval_id = g["approval_id"]
    # Pending before anyone hears of it, as for an incident's approval.
    await sessions.SESSIONS.set_pending_approval(fx.deps.engine, fx.sid, approval_id)
    await fx.io(
        APPROVAL_REQUIRED,
        ApprovalRequired(
            approval_id=approval_id,
            incident_id=fx.iid,
            action="runbook_step",
            details=g["details"],
            expires_at=parse(g["expires_at"]),
            requested_at=parse(g["requested_at"]),
        ),
    )
    waiting = f"Waiting for an operator to decide on step {g['details']['step']!r}"
    await fx.ticket_status(
        "waiting_approval",
        waiting,
        {"approval_id": approval_id, "action": "runbook_step", "expires_at": g["expires_at"]},
    )
    await fx.notify(
        "approval_required",
        f"{fx.iid}: runbook {state['runbook_id']} waits for an approval",
        f"{_steps_note(state.get('steps') or [])}\n{waiting} ({approval_id}) on "
        f"{g['details'].get('connection') or 'the orchestrator'}:\n{g['details'].get('command')}",
        {**fx.about(), "status": "waiting_approval", "phase": "runbook"},
    )
    while True:
        value = interrupt(
            {
                "kind": "approval",
                "approval_id": approval_id,
                "action": "runbook_step",
                "due": g["expires_at"],
                "reason": "approval:runbook_step",
            }
        )
        if (
            isinstance(value, dict)
            and value.get("kind") == "approval"
            and value.get("approval_id") == approval_id
        ):
            break
    return await _decided(fx, g, value)


async def _decided(
    fx: SessionEffects, g: dict[str, Any], value: dict[str, Any]
) -> Command[Literal["run", "finish"]]:
    state = fx.session
    steps, cursor = list(state["steps"]), state["cursor"]
    record = dict(steps[cursor])
    decision, by = value.get("decision"), value.get("decided_by")
    notes = value.get("notes") or ""
    entry = {
        "approval_id": g["approval_id"],
        "decision": decision,
        "option": value.get("option"),
        "decided_by": by,
        "notes": notes,
        "decided_at": value.get("decided_at"),
    }
    await fx.audit("state_change", {**fx.about(), "approval": entry, "step": record["name"]})
    approvals = {g["key"]: entry}
    if decision == "timeout":
        reason = f"no decision on step {record['name']!r} before {g['expires_at']}"
        record.update(status="failed" if g["kind"] == "unknown" else "rejected", reason=reason)
        return Command(
            goto="finish",
            update=fx.done(
                gate=None,
                approvals=approvals,
                steps=_replace(steps, cursor, record),
                failure={
                    "step": record["name"],
                    "reason": reason,
                    "error_code": "approval_timeout",
                },
            ),
        )
    if g["kind"] == "step":
        if decision == "approve":
            record.update(status="pending", approved_by=by)
            return Command(
                goto="run",
                update=fx.done(
                    gate=None,
                    approvals={**(state.get("approvals") or {}), **approvals},
                    steps=_replace(steps, cursor, record),
                    status="running",
                ),
            )
        reason = f"step {record['name']!r} rejected by {by}" + (f": {notes}" if notes else "")
        if record["phase"] == "rollback":
            # the session already failed: a refused undo is left out, the others still run
            record.update(status="skipped", reason=reason, finished_at=iso(utcnow()))
            await fx.step_event("finished", record)
            return Command(
                goto="run",
                update=fx.done(
                    gate=None,
                    approvals={**(state.get("approvals") or {}), **approvals},
                    steps=_replace(steps, cursor, record),
                    cursor=cursor + 1,
                    attempt=1,
                ),
            )
        record.update(status="rejected", reason=reason, finished_at=iso(utcnow()))
        rest = [
            {**s, "status": "skipped"} if i > cursor and s["status"] == "pending" else s
            for i, s in enumerate(_replace(steps, cursor, record))
        ]
        return Command(
            goto="finish",
            update=fx.done(
                gate=None,
                approvals=approvals,
                steps=rest,
                rejected={"step": record["name"], "decided_by": by, "notes": notes},
                reason=reason,
            ),
        )
    # the outcome of a non-idempotent step is unknown: retry, skip or abort
    if decision == "approve" and value.get("option") == "skip":
        record.update(status="skipped", reason=f"outcome unknown; skipped by {by}")
        await fx.step_event("finished", record)
        return Command(
            goto="run",
            update=fx.done(
                gate=None, steps=_replace(steps, cursor, record), cursor=cursor + 1, attempt=1
            ),
        )
    if decision == "approve":
        record.update(status="pending", reason=f"outcome unknown; retried by {by}")
        return Command(
            goto="run",
            update=fx.done(
                gate=None,
                steps=_replace(steps, cursor, record),
                attempt=state.get("attempt", 1) + 1,
                status="running",
            ),
        )
    reason = f"outcome of step {record['name']!r} unknown; aborted by {by}" + (
        f": {notes}" if notes else ""
    )
    record.update(status="failed", reason=reason, finished_at=iso(utcnow()))
    return cast(
        Command[Literal["run", "finish"]],
        _failed(fx, _replace(steps, cursor, record), cursor, reason, gate=None),
    )


async def finish(state: SessionState, config: RunnableConfig) -> Command[End]:
    """Verify the result, then the ticket follows: resolved closes it, in_progress leaves it
    to a person, escalated escalates it (with an ``error`` when something failed)."""
    fx = SessionEffects(state, config)
    verification = verify(state)
    failure, rejected = state.get("failure"), state.get("rejected")
    status = "rejected" if rejected else "failed" if failure else "completed"
    outcome = verification["outcome"]
    summary = f"Runbook {state['runbook_id']}: {'; '.join(verification['reasons'])}"
    details = {"session_status": status, "verification": verification}
    await fx.audit("runbook_session", {**fx.about(), "status": status, **verification})
    duration = round((utcnow() - parse(state["created_at"])).total_seconds(), 3)
    # The external ticket (ServiceNow) follows, with one line per step in its work note.
    note = f"{summary}\n{_steps_note(state.get('steps') or [])}"
    if outcome == "in_progress":
        await fx.ticket_status("in_progress", f"Manual review needed. {summary}", details)
        # ServiceNow puts the record On Hold with this note: a person reviews before it closes
        await fx.notify(
            "manual_review",
            f"{fx.iid}: manual review needed after runbook {state['runbook_id']}",
            f"Manual review needed before this is resolved: {note}",
            {**details, "status": "in_progress", "phase": "verification"},
        )
    else:
        await fx.ticket_status(outcome, summary, details)
        if outcome == "escalated" and failure:
            await fx.io(
                ERROR_NOTICE,
                ErrorNotice(
                    incident_id=fx.iid,
                    error_code=failure.get("error_code") or "runbook_failed",
                    message=failure["reason"],
                    details={**fx.about(), **failure},
                    source_agent="orchestrator",
                ),
            )
            await fx.audit("error", {**fx.about(), **failure})
        if outcome == "escalated":
            await fx.notify(
                "escalation",
                f"{fx.iid} escalated: runbook {state['runbook_id']}",
                note,
                {**details, "status": "escalated", "resolution": "escalated"},
            )
        else:
            await fx.notify(
                "ticket_closed",
                f"{fx.iid} resolved: runbook {state['runbook_id']}",
                note,
                {
                    **details,
                    "status": "resolved",
                    "resolution": "resolved",
                    "close_reason": "runbook_verified",
                    "duration_seconds": duration,
                },
            )
        await fx.io(
            TICKET_CLOSED,
            TicketClosed(
                incident_id=fx.iid,
                resolution=outcome,
                duration_seconds=duration,
                summary=summary,
                details={
                    **fx.about(),
                    "final_status": outcome,
                    "close_reason": "runbook_verified" if outcome == "resolved" else status,
                    **details,
                    **({"rejected": True, **rejected} if rejected else {}),
                },
            ),
        )
        if state["ticket"].get("kind") == "host":
            # the correlator frees the host: its next alert opens a new ticket
            await fx.put(INCIDENT_CLOSED, IncidentClosed(incident_id=fx.iid, resolution=outcome))
    return Command(
        goto=TO_END,
        update=fx.done(status=status, verification=verification, phase="verification"),
    )


def _steps_note(steps: list[dict[str, Any]]) -> str:
    """One line per step for an external ticket's closing note: phase, name, status, exit code
    and why (never the output: only each step's own note carries a masked tail of it,
    ``notes.step_note``; the whole output stays in CXM, where its access is controlled)."""
    lines = []
    for s in steps:
        line = f"- {s['phase']} · {s['name']}: {s['status']}"
        if s.get("exit_code") is not None:
            line += f" (exit {s['exit_code']})"
        if s.get("reason") and s["status"] not in ("completed", "pending"):
            line += f": {s['reason']}"
        lines.append(line)
    return "\n".join(lines)


def verify(state: SessionState) -> dict[str, Any]:
    """``{outcome, confidence, reasons}`` from the steps, the postchecks and the signal.

    Steps that all ran give 0.5; passing postchecks add 0.3 (they check the symptom, not
    just that commands exited 0); the alert cleared at its source adds 0.2, still firing
    caps the result at manual review; a skipped step takes 0.2 off. ≥ 0.8 is resolved,
    ≥ 0.5 in_progress (a person looks), below is escalated.
    """
    steps = state.get("steps") or []
    failure, rejected = state.get("failure"), state.get("rejected")
    reasons: list[str] = []
    if rejected:
        reasons.append(
            f"step {rejected['step']!r} rejected by {rejected['decided_by']}"
            + (f": {rejected['notes']}" if rejected.get("notes") else "")
        )
        return {"outcome": "escalated", "confidence": 0.0, "reasons": reasons}
    if failure:
        reasons.append(failure["reason"])
        rolled = [s for s in steps if s["phase"] == "rollback"]
        if rolled:
            reasons.append("rollback: " + ", ".join(f"{s['name']} {s['status']}" for s in rolled))
        elif failure.get("phase") != "prepare":
            reasons.append("the runbook has no rollback steps")
        return {"outcome": "escalated", "confidence": 0.0, "reasons": reasons}
    done = [s for s in steps if s["status"] == "completed"]
    skipped = [s for s in steps if s["status"] == "skipped"]
    post = [s for s in steps if s["phase"] == "postchecks"]
    confidence = 0.5
    reasons.append(f"{len(done)} of {len(steps)} step(s) completed")
    if skipped:
        confidence -= 0.2
        reasons.append("skipped: " + ", ".join(s["name"] for s in skipped))
    if post and all(s["status"] == "completed" for s in post):
        confidence += 0.3
        reasons.append(f"{len(post)} postcheck(s) passed")
    elif not post:
        reasons.append("the runbook has no postchecks to confirm the fix")
    signal = str(state["ticket"].get("alert_status") or "").lower()
    if signal in ("resolved", "cleared"):
        confidence += 0.2
        reasons.append("the alert that raised the ticket has cleared at its source")
    elif signal == "firing":
        confidence = min(confidence, 0.5)
        reasons.append("the alert that raised the ticket is still firing at its source")
    else:
        reasons.append(
            "the alert that raised the ticket could not be asked at its source (the ticket "
            "carries no alert state); judged on the steps alone"
        )
    confidence = round(max(0.0, min(1.0, confidence)), 2)
    outcome = (
        "resolved" if confidence >= 0.8 else "in_progress" if confidence >= 0.5 else "escalated"
    )
    return {"outcome": outcome, "confidence": confidence, "reasons": reasons}


def build_session_graph(checkpointer: BaseCheckpointSaver[Any] | None) -> CompiledStateGraph[Any]:
    """Compile the session graph; the app passes the incidents' saver (threads are distinct:
    a session's thread id is its session id)."""
    builder = StateGraph(SessionState)
    for name, func in (
        ("prepare", prepare),
        ("run", run),
        ("execute", execute),
        ("approval", approval),
        ("finish", finish),
    ):
        builder.add_node(name, cast(Any, func))
    builder.add_edge(START, "prepare")
    return builder.compile(checkpointer=checkpointer)

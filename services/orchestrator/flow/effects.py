"""Side effects of one node execution, and the records nodes hand to ``approval``/``wait``.

Every node builds one ``Effects`` from its config and does all its talking through it:
``call`` (a task on a peer, answered) and ``put`` (a task queued in the outbox) are the only
two ways out to the mesh, so keys, retries and the step counter live in one place.

Replays are safe because keys are made from the incident id and the graph ``step``, which
every node execution advances by one (``done``):
- a replayed ``call`` sends the same idempotency key, so the peer answers from its record
  (one tunnel, ever);
- a replayed ``put`` reuses the same outbox key, so nothing is queued twice.

A peer that cannot be reached (killed and restarting, or stopped) is not a reason to escalate
at once: ``call`` raises :class:`PeerDown` instead, which no node catches, so the run stops
before its step is checkpointed and the runner drives the node again a little later (the same
keys, so nothing is done twice). Only once the peer has been unreachable for
``CXM_PEER_DOWN_GRACE_S`` does ``call`` raise the ``MeshUnavailable`` the node escalates on
(``agent_unavailable`` to IO). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator import store
from services.orchestrator.flow.phases import PHASE, Status, WaitReason
from services.orchestrator.flow.state import IncidentState, iso
from services.orchestrator.settings import OrchestratorSettings
from shared.contracts import (
    AUDIT_EVENT,
    CLEANUP_POLICIES,
    CUTOVER_POLICIES,
    ERROR_NOTICE,
    NOTIFY,
    STATUS_UPDATE,
    Contract,
    Req,
    Resp,
)
from shared.errors import CxmError, MeshError, MeshUnavailable, PeerError
from shared.mesh import MeshClient, backoff_delay
from shared.models import (
    AuditEvent,
    CleanupPolicies,
    CutoverPolicies,
    CutoverResult,
    ErrorNotice,
    Notify,
    PolicyCleaned,
    PolicyCutover,
    PolicyFailure,
    PolicyRef,
    StatusUpdate,
    TunnelDeleted,
    utcnow,
)
from shared.outbox import Outbox
from shared.settings import Settings

SOURCE = "orchestrator"
FINAL_PEER_CODES = ("tunnel_provision_failed",)
"""5xx codes a peer sends after its own retries: retrying the call again cannot help."""
PEER_DOWN_RETRY_MAX_S = 5.0
"""Longest pause (real seconds) between two tries of a node whose peer is down."""


class PeerDown(CxmError):
    """A peer is unreachable but still within its grace: run the node again in ``retry_in`` s.

    Deliberately not a ``MeshError``: nodes escalate on those, and this must reach the runner.
    """

    def __init__(self, cause: MeshUnavailable, *, down_for_s: float, retry_in: float):
        super().__init__(f"{cause} (down for {down_for_s:.1f} s; retrying in {retry_in:.1f} s)")
        self.cause = cause
        self.agent = cause.agent
        self.down_for_s = down_for_s
        self.retry_in = retry_in


def unreachable(exc: MeshUnavailable) -> bool:
    """No answer at all (refused, reset, timed out) or 503: the peer is down, not broken.

    A peer that keeps answering 500 is broken, and waiting will not mend it: that escalates
    after the mesh's retries, as before.
    """
    return exc.status in (None, 503) and exc.code not in FINAL_PEER_CODES


@dataclass
class PeerOutages:
    """When each incident first found each peer unreachable, and how often it tried since.

    Held in memory by the process (``Deps``): an orchestrator that restarts forgets, so an
    outage is at worst judged afresh (escalated later), never early.
    """

    grace_s: float
    since: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def failed(self, incident_id: str, exc: MeshUnavailable) -> PeerDown | None:
        """The ``PeerDown`` to raise while within the grace; None once it is spent."""
        now = time.monotonic()
        first, tries = self.since.get((incident_id, exc.agent), (now, 0))
        down_for = now - first
        if down_for >= self.grace_s:
            self.since.pop((incident_id, exc.agent), None)
            return None
        self.since[(incident_id, exc.agent)] = (first, tries + 1)
        retry_in = min(PEER_DOWN_RETRY_MAX_S, 0.25 * 2**tries, self.grace_s - down_for)
        return PeerDown(exc, down_for_s=down_for, retry_in=max(0.05, retry_in))

    def answered(self, incident_id: str, agent: str) -> None:
        self.since.pop((incident_id, agent), None)


@dataclass
class Deps:
    """What nodes need besides state; passed as ``config["configurable"]["deps"]``.

    Only primitives of ``configurable`` reach checkpoint metadata, so this object is never
    serialized.
    """

    settings: Settings
    orch: OrchestratorSettings
    mesh: MeshClient
    outbox: Outbox
    engine: AsyncEngine
    outages: PeerOutages | None = field(default=None, kw_only=True)
    """Peers found unreachable per incident (built from ``orch.peer_down_grace_s``)."""

    def __post_init__(self) -> None:
        if self.outages is None:
            self.outages = PeerOutages(self.orch.peer_down_grace_s)


class Effects:
    """One node execution's side effects, keyed so that a replay repeats none of them."""

    def __init__(self, state: IncidentState, config: RunnableConfig):
        self.deps: Deps = config["configurable"]["deps"]
        self.state = state
        self.iid = state["incident_id"]
        self.step = state.get("step", 0)
        self._n = 0

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def orch(self) -> OrchestratorSettings:
        return self.deps.orch

    def key(self, what: str) -> str:
        return f"{self.iid}:{self.step}:{what}"

    def scaled(self, seconds: float) -> timedelta:
        """The seed's seconds, scaled by ``CXM_TIME_SCALE`` (tests and demos run fast)."""
        return timedelta(seconds=self.settings.scaled(seconds))

    async def put(self, contract: Contract[Req, Any], request: Req) -> None:
        """Queue a task for a peer through the outbox (ordered, durable, once per key)."""
        self._n += 1
        await self.deps.outbox.put(
            contract,
            request,
            key=self.key(f"{self._n}:{contract.task_type}"),
            incident_id=self.iid,
        )

    async def io(self, contract: Contract[Req, Any], request: Req) -> None:
        if self.settings.io_enabled:
            await self.put(contract, request)
        else:
            self._n += 1  # keep later keys stable whether IO is enabled or not

    async def audit(self, event_type: str, details: dict[str, Any]) -> None:
        await self.put(
            AUDIT_EVENT,
            AuditEvent(
                event_type=event_type, incident_id=self.iid, source_agent=SOURCE, details=details
            ),
        )

    async def status(
        self,
        status: Status,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        phase: str | None = None,
    ) -> None:
        """``status_update`` to IO and the matching ``state_change`` audit event.

        The phase comes from ``PHASE``; statuses without one of their own (escalated, waiting
        for an approval) keep the incident's phase unless the caller names the gated step's.
        """
        if phase is None:
            phase = PHASE.get(status) or self.state.get("phase") or PHASE[Status.NEW]
        await self.io(
            STATUS_UPDATE,
            StatusUpdate(
                incident_id=self.iid,
                status=status.value,
                phase=phase,
                message=message,
                details=details or {},
            ),
        )
        await self.audit(
            "state_change",
            {
                "from": self.state.get("status"),
                "to": status.value,
                "phase": phase,
                "message": message,
            },
        )

    async def notify(self, event: str, subject: str, body: str, details: dict[str, Any]) -> None:
        await self.put(
            NOTIFY,
            Notify(
                incident_id=self.iid,
                event=event,
                severity=cast(Any, self.state["severity"]),
                tier=cast(Any, self.state.get("tier")),
                subject=subject,
                body=body,
                details=details,
            ),
        )

    async def error(self, code: str, message: str, details: dict[str, Any]) -> None:
        await self.io(
            ERROR_NOTICE,
            ErrorNotice(
                incident_id=self.iid,
                error_code=code,
                message=message,
                details=details,
                source_agent=SOURCE,
            ),
        )
        await self.audit("error", {"error_code": code, "message": message, **details})

    async def call(
        self, contract: Contract[Req, Resp], request: Req, *, key: str | None = None
    ) -> Resp:
        """Run a task on a peer with a replay-stable idempotency key.

        ``key`` tells apart several calls of one task in one node execution (one per policy
        of the incident): each needs its own key, and a replay sends the same ones again.
        Transient failures are retried with backoff, except a 5xx that says the peer already
        gave up after its own retries (a tunnel that failed three times). A peer still
        unreachable after them raises :class:`PeerDown` (the node runs again later) until it
        has been down for ``CXM_PEER_DOWN_GRACE_S``; then ``MeshUnavailable``.
        """
        what = f"{contract.task_type}:{key}" if key else contract.task_type
        attempts = 1 + self.settings.mesh_retries
        outages = self.deps.outages
        assert outages is not None  # Deps.__post_init__
        for attempt in range(attempts):
            try:
                answer = await self.deps.mesh.call(
                    contract,
                    request,
                    incident_id=self.iid,
                    idempotency_key=self.key(what),
                    retries=0,
                )
            except MeshUnavailable as exc:
                if exc.code in FINAL_PEER_CODES:
                    raise
                if attempt == attempts - 1:
                    if unreachable(exc) and (down := outages.failed(self.iid, exc)):
                        raise down from exc
                    raise
                await asyncio.sleep(backoff_delay(attempt, self.deps.mesh.backoff_base))
                continue
            outages.answered(self.iid, contract.agent)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def mark_approval_pending(self, approval_id: str) -> None:
        """Record the approval as pending on the incident's row (before anyone hears of it)."""
        await store.set_pending_approval(self.deps.engine, self.iid, approval_id)

    def done(self, **update: Any) -> dict[str, Any]:
        """The node's state update; every node execution advances ``step`` by one."""
        return {"step": self.step + 1, **update}


# --- escalation ----------------------------------------------------------------------------


def failure_code(exc: MeshError, default: str) -> str:
    """The code IO's ``error`` carries: the peer's own final code, else unreachable or ours."""
    if exc.code is not None and exc.code in FINAL_PEER_CODES:
        return exc.code
    if isinstance(exc, MeshUnavailable):
        return "agent_unavailable"
    return default


def escalation(
    reason: str,
    message: str,
    *,
    error_code: str | None = None,
    resolution: str = "escalated",
    **details: Any,
) -> dict[str, Any]:
    """The update that tells ``escalate`` why; ``error_code`` also sends IO an ``error``."""
    return {
        "escalation": {
            "reason": reason,
            "message": message,
            "error_code": error_code,
            "resolution": resolution,
            "details": details,
        },
    }


def peer_failed(exc: MeshError, code: str, what: str, **details: Any) -> dict[str, Any]:
    """Escalate because a peer call failed; the error names the peer's own code when it gave one."""
    return escalation(code, f"{what}: {exc}", error_code=failure_code(exc, code), **details)


# --- approvals and waits -------------------------------------------------------------------


def gate(
    fx: Effects,
    *,
    action: str,
    key: str,
    then: str,
    phase: str,
    details: dict[str, Any],
) -> dict[str, Any] | None:
    """The ``gate`` record when policy wants a human for ``action`` first, else None.

    A node goes to ``approval`` with this record, and ``approval`` goes on to ``then`` once
    approved; an action already approved under ``key`` is not asked again (a replay, a loop).
    """
    state = fx.state
    needed = fx.orch.requires_approval(action, severity=state["severity"], tier=state.get("tier"))
    if not needed or key in (state.get("approvals") or {}):
        return None
    now = utcnow()
    return {
        "action": action,
        "key": key,
        "then": then,
        "phase": phase,
        "approval_id": f"APR-{fx.iid}-{key.replace(':', '-')}",
        "requested_at": iso(now),
        "expires_at": iso(now + fx.scaled(fx.orch.approval_timeout_s)),
        "details": details,
    }


def wait_for(fx: Effects, *, seconds: float, then: str, reason: WaitReason) -> dict[str, Any]:
    """The ``wait`` record for pausing ``seconds`` of the seed's time (scaled)."""
    return wait_until(utcnow() + fx.scaled(seconds), then=then, reason=reason)


def wait_until(due: datetime | str, *, then: str, reason: WaitReason) -> dict[str, Any]:
    """The ``wait`` record for pausing until ``due``; ``wait`` then goes on to ``then``."""
    return {"reason": reason, "due": due if isinstance(due, str) else iso(due), "then": then}


# --- the tunnels' removal -----------------------------------------------------------------


def policy_ref(tunnel: dict[str, Any], service_ids: list[str] | None = None) -> PolicyRef:
    """A policy as restore's batches name it (``service_ids`` when the state's lack them)."""
    return PolicyRef(
        tunnel_id=tunnel["tunnel_id"],
        head_end=tunnel.get("head_end"),
        end_point=tunnel.get("end_point"),
        color=tunnel.get("color"),
        service_ids=tunnel.get("service_ids") or service_ids or [],
    )


def policy_failed(contract: Contract[Any, Any], failure: PolicyFailure) -> PeerError:
    """One policy's failure in a batch's answer, as the error its own task would have raised
    (``PeerError`` with restore's code): callers escalate on it exactly as they did."""
    detail = {"code": failure.code, "message": failure.message}
    return PeerError(contract.agent, contract.task_type, failure.status, detail)


async def cutover_policies(
    fx: Effects,
    every: Sequence[dict[str, Any]],
    *,
    links: list[str],
    protection: int,
    original: int,
    service_ids: list[str] | None = None,
    key: str | None = None,
) -> list[CutoverResult | MeshError]:
    """One cutover step on every policy in one ``cutover_policies`` task: restore reads what
    they share once and checks the SLA on ``links`` once. An answer per policy, in order: its
    result, or its own failure (a failure of the whole task stands for each). ``PeerDown``
    propagates (the node runs again, the same key). A replay sends the same key; a step that
    restore did not finish is applied again, which moves nothing twice (a step is a split)."""
    request = CutoverPolicies(
        incident_id=fx.iid,
        links=links,
        protection_pct=protection,
        original_pct=original,
        policies=[policy_ref(t, service_ids) for t in every],
    )
    return await call_batch(
        fx, CUTOVER_POLICIES, request, _ids(every), lambda a: _by_id(a.policies), key=key
    )


async def cleanup_policies(
    fx: Effects, every: Sequence[dict[str, Any]], *, key: str | None = None
) -> list[TunnelDeleted | MeshError]:
    """Every policy's traffic back and the policy deleted, in one ``cleanup_policies`` task;
    answered per policy as :func:`cutover_policies` is (a replay deletes none twice: an absent
    policy is already deleted)."""
    if not every:
        return []
    request = CleanupPolicies(incident_id=fx.iid, policies=[policy_ref(t) for t in every])
    return await call_batch(
        fx, CLEANUP_POLICIES, request, _ids(every), lambda a: _by_id(a.policies), key=key
    )


Answers = Mapping[Hashable, tuple[Any, PolicyFailure | None]]
"""A batch's answer by policy key: (result, error), one of them set."""


def _ids(every: Sequence[dict[str, Any]]) -> list[str]:
    return [tunnel["tunnel_id"] for tunnel in every]


def _by_id(answers: Sequence[PolicyCutover] | Sequence[PolicyCleaned]) -> Answers:
    return {a.tunnel_id: (a.result, a.error) for a in answers}


async def call_batch(
    fx: Effects,
    contract: Contract[Req, Resp],
    request: Req,
    wanted: Sequence[Hashable],
    answers: Callable[[Resp], Answers],
    *,
    key: str | None = None,
) -> list[Any]:
    """One batch task for the policies ``wanted`` (their keys, in order): each one's result
    or its own failure (:func:`per_policy`), a failure of the whole task standing for each.
    ``PeerDown`` propagates (the node runs again, with the same key)."""
    try:
        answer = await fx.call(contract, request, key=key)
    except MeshError as exc:
        return [exc for _ in wanted]
    return per_policy(contract, wanted, answers(answer))


def per_policy(
    contract: Contract[Any, Any],
    wanted: Sequence[Hashable],
    answers: Answers,
) -> list[Any]:
    """Each wanted policy's result or error from a batch's answers (``key`` → (result,
    error)): a policy the answer lacks, or answers with neither, is a failure of its own,
    never taken as done."""
    out: list[Any] = []
    for key in wanted:
        result, error = answers.get(key, (None, None))
        if error is not None:
            out.append(policy_failed(contract, error))
        elif result is None:
            missing = PolicyFailure(
                code="no_answer",
                message=f"{contract.agent} did not answer for this policy",
                status=502,
            )
            out.append(policy_failed(contract, missing))
        else:
            out.append(result)
    return out


async def remove_tunnels(fx: Effects, chosen: Sequence[tuple[int, dict[str, Any]]]) -> list[bool]:
    """Best-effort removal on the way out, ``(index, policy)`` each, in one task: a failure is
    reported (after every policy, in order), never blocks the close."""
    outcomes = await cleanup_policies(fx, [tunnel for _, tunnel in chosen])
    for (_, tunnel), outcome in zip(chosen, outcomes, strict=True):
        if isinstance(outcome, MeshError):
            await fx.error(
                failure_code(outcome, "cleanup_failed"),
                f"Tunnel {tunnel.get('tunnel_id')} could not be removed: {outcome}",
                {"tunnel_id": tunnel.get("tunnel_id")},
            )
    return [not isinstance(outcome, MeshError) for outcome in outcomes]


def bandwidth(
    fx: Effects,
    mbps: float | None,
    carrying: list[str],
    reserved: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Ask for a path with room for the carried services' traffic (none: any path will do),
    less what the incident's other policies will put on the same links (``reserved``)."""
    if not fx.orch.reserve_bandwidth or not mbps:
        return {}
    extra = {"reserved_mbps": reserved} if reserved else {}
    return {"min_bandwidth_mbps": mbps, "carrying": carrying, **extra}

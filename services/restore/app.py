"""Restoration Monitor agent: SLA checks from PCA, gradual cutover and tunnel cleanup.

Hold timers live in the orchestrator, which persists them; every handler here does one
bounded piece of work and returns, so nothing sleeps while an incident waits.

A policy carries whole services (they are steered onto it by color), not a share of one, so
the gradual cutover moves whole services: at each step ``steering_share`` picks the group's
services that stay on the protection policy (the smallest set carrying at least
``protection_pct`` % of the group's bandwidth, the highest tiers last to go home); those are
mapped to its color and the others' mappings deleted. A step says the same thing however
often it is applied. A service that a fresh read shows mapped to another policy's color
(another incident moved it since) is left where it is.

An incident has one policy per group of services, all cut back and removed together, so
``cutover_policies`` and ``cleanup_policies`` take every policy of a step in one task: what
the policies share (CNC's mappings or policies, the SLA check of the incident's links) is read
once, and each policy is answered, or failed, in its place. ``cutover_step`` and ``cleanup``
(one policy, as outside A2A clients may still send them) are the same code on a batch of one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from shared.agent import AgentSpec, TaskContext
from shared.batch import each, failure, retry_transient
from shared.contracts import CHECK_SLA, CLEANUP, CLEANUP_POLICIES, CUTOVER_POLICIES, CUTOVER_STEP
from shared.errors import SouthboundError, TaskFailed
from shared.logs import get_logger
from shared.models import (
    CheckSla,
    Cleanup,
    CleanupPolicies,
    CleanupPoliciesResult,
    CutoverPolicies,
    CutoverPoliciesResult,
    CutoverResult,
    CutoverStep,
    PolicyCleaned,
    PolicyCutover,
    PolicyRef,
    SlaResult,
    TunnelDeleted,
    utcnow,
)
from shared.settings import Settings
from shared.southbound import (
    CncClient,
    LinkMetrics,
    PcaClient,
    ServiceMapping,
    SharedRead,
    SrPolicy,
    Thresholds,
    VpnService,
    link_key,
    southbound_clients,
    steering_share,
)

log = get_logger(__name__)


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """The clients for the app's lifetime, and shared reads of CNC's services and policies.

    An incident on a busy link cuts back hundreds of policies at once, each step needing its
    group's services; every step reading CNC's whole service list for itself made that
    quadratic, so steps that arrive while a read is under way share it (never cached beyond:
    each step still sees the mappings as they are once its read started).
    """
    async with southbound_clients(app):
        app.state.services = SharedRead(app.state.cnc.services)
        app.state.mappings = SharedRead(app.state.cnc.service_mappings)
        app.state.sr_policies = SharedRead(app.state.cnc.sr_policies)
        yield


spec = AgentSpec(
    name="restore",
    title="Restoration Monitor",
    description="SLA recovery checks, gradual cutover and cleanup",
    resources=_southbound,
)


def evaluate(
    links: list[str], metrics: dict[str, LinkMetrics], thresholds: Thresholds
) -> SlaResult:
    """Within SLA only if every link was measured and is below every threshold."""
    measured = {link_key(name): m for name, m in metrics.items()}
    report: dict[str, dict[str, Any]] = {}
    for link in links:
        m = measured.get(link_key(link))
        if m is None:
            report[link] = {"within_sla": False, "violations": [], "reason": "no PCA measurement"}
            continue
        violations = [
            {"metric": metric, "value": value, "threshold": limit}
            for metric, value, limit in (
                ("delay_ms", m.delay_ms, thresholds.delay_ms),
                ("jitter_ms", m.jitter_ms, thresholds.jitter_ms),
                ("loss_pct", m.loss_pct, thresholds.loss_pct),
            )
            if value >= limit
        ]
        report[link] = {
            "within_sla": not violations,
            "delay_ms": m.delay_ms,
            "jitter_ms": m.jitter_ms,
            "loss_pct": m.loss_pct,
            "timestamp": m.timestamp,
            "violations": violations,
        }
    return SlaResult(
        within_sla=all(r["within_sla"] for r in report.values()),
        links=report,
        thresholds=thresholds.model_dump(),
        violated_links=[link for link, r in report.items() if not r["within_sla"]],
        checked_at=utcnow().isoformat(),
    )


async def _check(ctx: TaskContext, links: list[str]) -> SlaResult:
    pca: PcaClient = ctx.state.pca
    metrics = await pca.link_metrics(links)
    thresholds = await pca.thresholds()
    return evaluate(links, metrics, thresholds)


Key = tuple[str, str, int]
Group = list[VpnService] | list[ServiceMapping]


@dataclass
class _Part:
    """One policy of a batch as it is worked on: its key, its group, and what became of it.

    ``error`` is the exception its own single-policy task would have failed with; the batch
    reports it for that policy alone (``PolicyFailure``), the single form raises it."""

    ref: PolicyRef
    key: Key | None = None
    group: Group = field(default_factory=list)
    on: list[str] = field(default_factory=list)
    home: list[str] = field(default_factory=list)
    error: TaskFailed | SouthboundError | None = None


def _ref(payload: CutoverStep | Cleanup) -> PolicyRef:
    """The single-policy request's policy, as a batch names it."""
    return PolicyRef(**payload.model_dump(include=set(PolicyRef.model_fields)))


async def _keys(ctx: TaskContext, parts: list[_Part]) -> None:
    """Each policy's (head-end, end-point, color): as the orchestrator passed it, else from
    CNC by name (one read of the policies for the whole batch, only if some lack it)."""
    by_name: dict[str, SrPolicy] | None = None
    for part in parts:
        ref = part.ref
        if ref.head_end and ref.end_point and ref.color is not None:
            part.key = (ref.head_end, ref.end_point, ref.color)
            continue
        if by_name is None:
            by_name = {p.path_name: p for p in await ctx.state.sr_policies() if p.path_name}
        policy = by_name.get(ref.tunnel_id)
        if policy is None:
            part.error = TaskFailed(
                f"no SR policy named {ref.tunnel_id} in CNC", code="unknown_tunnel", status=404
            )
        else:
            part.key = (policy.head_end, policy.end_point, policy.color)


async def _groups(ctx: TaskContext, parts: list[_Part]) -> None:
    """The services of each policy (every one between its ends when none is named) that it
    may move: mapped to its color or to none, not to another incident's policy.

    Named services need only their mappings (one read of the intent, the inventory); the
    services between two ends need CNC's whole folded view (``services``) to tell the ends.
    Each is read at most once for the whole batch: a policy's services are its own, so one
    read before any write sees each of them as a read of its own would.
    """
    keyed = [p for p in parts if p.key is not None]
    named = [p for p in keyed if p.ref.service_ids]
    if named:
        mappings: list[ServiceMapping] = await ctx.state.mappings()
        where = {s.vpn_id: s for s in mappings}
        order = {s.vpn_id: i for i, s in enumerate(mappings)}
        for part in named:
            assert part.key is not None
            color = part.key[2]
            ids = sorted(
                (i for i in set(part.ref.service_ids) if i in where), key=order.__getitem__
            )
            part.group = [
                s for s in (where[i] for i in ids) if not s.steered or s.mapped_color == color
            ]
    if unnamed := [p for p in keyed if not p.ref.service_ids]:
        services: list[VpnService] = await ctx.state.services()
        for part in unnamed:
            assert part.key is not None
            head_end, end_point, color = part.key
            part.group = [
                s
                for s in services
                if (s.head_end, s.end_point) == (head_end, end_point)
                and (not s.steered or s.mapped_color == color)
            ]


async def _steer_share(cnc: CncClient, part: _Part, pct: int) -> None:
    """Map the share of the group that stays on the policy to its color, unmap the rest."""
    assert part.key is not None
    keep = set(steering_share(part.group, pct))
    on = [s for s in part.group if s.vpn_id in keep]
    home = [s for s in part.group if s.vpn_id not in keep]
    if on:
        await cnc.map_services(on, part.key[2])
    if leaving := [s for s in home if s.steered]:
        await cnc.unmap_services(leaving)
    part.on, part.home = [s.vpn_id for s in on], [s.vpn_id for s in home]


async def _cutover(
    ctx: TaskContext, parts: list[_Part], links: list[str], protection: int, original: int
) -> SlaResult:
    """One step on every policy, then one SLA check of ``links``; when it fails, every
    policy's group goes back onto its policy (the original path cannot take the traffic)."""
    if protection + original != 100:
        raise TaskFailed(
            "protection_pct and original_pct must add up to 100", code="bad_cutover_step"
        )
    cnc: CncClient = ctx.state.cnc
    await _keys(ctx, parts)
    await _groups(ctx, parts)
    await each(parts, lambda part: _steer_share(cnc, part, protection))
    retry_transient(parts)
    sla = await _check(ctx, links)
    if not sla.within_sla:

        async def revert(part: _Part) -> None:
            assert part.key is not None
            if part.group:
                await cnc.map_services(part.group, part.key[2])

        await each(parts, revert)
        retry_transient(parts)
    moved = [p for p in parts if p.error is None]
    log.info(
        "cutover step applied" if sla.within_sla else "cutover reverted: SLA violated",
        incident_id=ctx.incident_id,
        step=protection,
        policies=len(moved),
        failed=[p.ref.tunnel_id for p in parts if p.error is not None],
        on_protection=sum(len(p.on) for p in moved),
        violated=None if sla.within_sla else sla.model_dump().get("violated_links"),
    )
    return sla


def _cutover_result(
    part: _Part, check: SlaResult, protection: int, original: int, **extra: Any
) -> CutoverResult:
    """One policy's answer, as ``cutover_step`` gives it; the SLA report is the caller's to
    add (``extra``): a batch gives it once, not once per policy."""
    if check.within_sla:
        return CutoverResult(
            applied=True,
            within_sla=True,
            protection_pct=protection,
            original_pct=original,
            on_protection=part.on,
            on_original=part.home,
            **extra,
        )
    return CutoverResult(
        applied=True,
        within_sla=False,
        protection_pct=100,
        original_pct=0,
        reverted=True,
        attempted_protection_pct=protection,
        on_protection=[s.vpn_id for s in part.group],
        on_original=[],
        **extra,
    )


@spec.serve(CHECK_SLA)
async def check_sla(payload: CheckSla, ctx: TaskContext) -> SlaResult:
    result = await _check(ctx, payload.links)
    log.info(
        "SLA checked",
        incident_id=payload.incident_id,
        within_sla=result.within_sla,
        tier=payload.tier,
    )
    return result


@spec.serve(CUTOVER_STEP)
async def cutover_step(payload: CutoverStep, ctx: TaskContext) -> CutoverResult:
    """One policy's step: a batch of one, its failure the task's."""
    part = _Part(_ref(payload))
    pcts = payload.protection_pct, payload.original_pct
    sla = await _cutover(ctx, [part], payload.links, *pcts)
    if part.error is not None:
        raise part.error
    return _cutover_result(part, sla, *pcts, sla=sla.model_dump())


@spec.serve(CUTOVER_POLICIES)
async def cutover_policies(payload: CutoverPolicies, ctx: TaskContext) -> CutoverPoliciesResult:
    """The step on every policy of the request, what they share read once, the SLA checked
    once after all moved; a policy that failed is reported in its place, the others apply."""
    parts = [_Part(ref) for ref in payload.policies]
    pcts = payload.protection_pct, payload.original_pct
    sla = await _cutover(ctx, parts, payload.links, *pcts)
    return CutoverPoliciesResult(
        within_sla=sla.within_sla,
        sla=sla.model_dump(),
        policies=[
            PolicyCutover(tunnel_id=p.ref.tunnel_id, error=failure(p.error))
            if p.error is not None
            else PolicyCutover(tunnel_id=p.ref.tunnel_id, result=_cutover_result(p, sla, *pcts))
            for p in parts
        ],
    )


def _named(policies: list[SrPolicy], ref: PolicyRef) -> SrPolicy | None:
    key = (ref.head_end, ref.end_point, ref.color)
    return next(
        (
            p
            for p in policies
            if p.path_name == ref.tunnel_id or (p.head_end, p.end_point, p.color) == key
        ),
        None,
    )


async def _clean(ctx: TaskContext, parts: list[_Part]) -> list[TunnelDeleted | None]:
    """Every service back on its own policy (mappings deleted), then the policy deleted; one
    read of CNC's policies (and of the mappings) for the whole batch. None for a failure."""
    cnc: CncClient = ctx.state.cnc
    policies = await ctx.state.sr_policies()
    found: dict[str, SrPolicy] = {}
    for part in parts:
        if (policy := _named(policies, part.ref)) is not None:
            part.key = (policy.head_end, policy.end_point, policy.color)
            found[part.ref.tunnel_id] = policy
    await _groups(ctx, parts)

    async def remove(part: _Part) -> None:
        if part.key is None:
            return
        policy = found[part.ref.tunnel_id]
        if steered := [s for s in part.group if s.steered]:
            await cnc.unmap_services(steered)
        await cnc.delete_sr_policy(
            head_end=policy.head_end,
            end_point=policy.end_point,
            color=policy.color,
            te_type=policy.te_type or "sr-mpls",
            path_name=policy.path_name,
        )
        part.on = [s.vpn_id for s in steered]  # unmapped: reported in the log line

    await each(parts, remove)
    retry_transient(parts)
    log.info(
        "cleanup: policies deleted",
        incident_id=ctx.incident_id,
        deleted=[p.ref.tunnel_id for p in parts if p.key is not None and p.error is None],
        already_absent=[p.ref.tunnel_id for p in parts if p.key is None],
        failed=[p.ref.tunnel_id for p in parts if p.error is not None],
        unmapped=sum(len(p.on) for p in parts),
    )
    return [
        None
        if p.error is not None
        else TunnelDeleted(deleted=True, tunnel_id=p.ref.tunnel_id, already_absent=p.key is None)
        for p in parts
    ]


@spec.serve(CLEANUP)
async def cleanup(payload: Cleanup, ctx: TaskContext) -> TunnelDeleted:
    """One policy's cleanup: a batch of one, its failure the task's."""
    part = _Part(_ref(payload))
    [result] = await _clean(ctx, [part])
    if part.error is not None:
        raise part.error
    assert result is not None
    return result


@spec.serve(CLEANUP_POLICIES)
async def cleanup_policies(payload: CleanupPolicies, ctx: TaskContext) -> CleanupPoliciesResult:
    """Every policy of the request cleaned up; a policy that failed is reported in its place."""
    parts = [_Part(ref) for ref in payload.policies]
    results = await _clean(ctx, parts)
    return CleanupPoliciesResult(
        policies=[
            PolicyCleaned(tunnel_id=p.ref.tunnel_id, error=failure(p.error))
            if p.error is not None
            else PolicyCleaned(tunnel_id=p.ref.tunnel_id, result=result)
            for p, result in zip(parts, results, strict=True)
        ]
    )


def create_app(
    settings: Settings, *, southbound_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC/PCA."""
    app = spec.create_app(settings)
    app.state.southbound_transport = southbound_transport
    return app

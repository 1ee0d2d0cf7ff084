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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from shared.agent import AgentSpec, TaskContext
from shared.contracts import CHECK_SLA, CLEANUP, CUTOVER_STEP
from shared.errors import TaskFailed
from shared.logs import get_logger
from shared.models import (
    CheckSla,
    Cleanup,
    CutoverResult,
    CutoverStep,
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


async def _policy_key(
    ctx: TaskContext, payload: CutoverStep | Cleanup
) -> tuple[str, str, int] | None:
    """(head-end, end-point, color): as the orchestrator passed it, else from CNC by name."""
    if payload.head_end and payload.end_point and payload.color is not None:
        return payload.head_end, payload.end_point, payload.color
    for policy in await ctx.state.sr_policies():
        if policy.path_name == payload.tunnel_id:
            return policy.head_end, policy.end_point, policy.color
    return None


Group = list[VpnService] | list[ServiceMapping]


async def _group(ctx: TaskContext, ids: list[str], key: tuple[str, str, int]) -> Group:
    """The services of ``ids`` (every one between the policy's ends when none is named) that
    this policy may move: mapped to its color or to none, not to another incident's policy.

    Named services need only their mappings (one read of the intent, the inventory); the
    services between two ends need CNC's whole folded view (``services``) to tell the ends.
    """
    head_end, end_point, color = key
    if ids:
        wanted = set(ids)
        mappings: list[ServiceMapping] = await ctx.state.mappings()
        return [
            s for s in mappings if s.vpn_id in wanted and (not s.steered or s.mapped_color == color)
        ]
    services: list[VpnService] = await ctx.state.services()
    return [
        s
        for s in services
        if (s.head_end, s.end_point) == (head_end, end_point)
        and (not s.steered or s.mapped_color == color)
    ]


async def _steer_share(
    cnc: CncClient, group: Group, color: int, pct: int
) -> tuple[list[str], list[str]]:
    """Map the share of ``group`` that stays on the policy to its color, unmap the rest.

    Returns (vpn-ids on the policy, vpn-ids back on their own policy)."""
    keep = set(steering_share(group, pct))
    on = [s for s in group if s.vpn_id in keep]
    home = [s for s in group if s.vpn_id not in keep]
    if on:
        await cnc.map_services(on, color)
    if leaving := [s for s in home if s.steered]:
        await cnc.unmap_services(leaving)
    return [s.vpn_id for s in on], [s.vpn_id for s in home]


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
    if payload.protection_pct + payload.original_pct != 100:
        raise TaskFailed(
            "protection_pct and original_pct must add up to 100", code="bad_cutover_step"
        )
    key = await _policy_key(ctx, payload)
    if key is None:
        raise TaskFailed(
            f"no SR policy named {payload.tunnel_id} in CNC", code="unknown_tunnel", status=404
        )
    color = key[2]
    cnc: CncClient = ctx.state.cnc
    group = await _group(ctx, payload.service_ids, key)
    on, home = await _steer_share(cnc, group, color, payload.protection_pct)
    sla = await _check(ctx, payload.links)
    if sla.within_sla:
        log.info(
            "cutover step applied",
            tunnel_id=payload.tunnel_id,
            step=payload.protection_pct,
            on_protection=len(on),
            home=len(home),
        )
        return CutoverResult(
            applied=True,
            within_sla=True,
            protection_pct=payload.protection_pct,
            original_pct=payload.original_pct,
            sla=sla.model_dump(),
            on_protection=on,
            on_original=home,
        )
    # The original path cannot take the traffic yet: put everything back on protection.
    if group:
        await cnc.map_services(group, color)
    log.warning(
        "cutover reverted: SLA violated",
        tunnel_id=payload.tunnel_id,
        violated=sla.model_dump().get("violated_links"),
    )
    return CutoverResult(
        applied=True,
        within_sla=False,
        protection_pct=100,
        original_pct=0,
        reverted=True,
        attempted_protection_pct=payload.protection_pct,
        sla=sla.model_dump(),
        on_protection=[s.vpn_id for s in group],
        on_original=[],
    )


def _named(policies: list[SrPolicy], payload: Cleanup) -> SrPolicy | None:
    key = (payload.head_end, payload.end_point, payload.color)
    return next(
        (
            p
            for p in policies
            if p.path_name == payload.tunnel_id or (p.head_end, p.end_point, p.color) == key
        ),
        None,
    )


@spec.serve(CLEANUP)
async def cleanup(payload: Cleanup, ctx: TaskContext) -> TunnelDeleted:
    """Every service back on its own policy (mappings deleted), then the policy deleted."""
    cnc: CncClient = ctx.state.cnc
    policy = _named(await ctx.state.sr_policies(), payload)
    if policy is None:
        log.info("cleanup: policy already absent", tunnel_id=payload.tunnel_id)
        return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=True)
    key = (policy.head_end, policy.end_point, policy.color)
    group = await _group(ctx, payload.service_ids, key)
    if steered := [s for s in group if s.steered]:
        await cnc.unmap_services(steered)
    await cnc.delete_sr_policy(
        head_end=policy.head_end,
        end_point=policy.end_point,
        color=policy.color,
        te_type=policy.te_type or "sr-mpls",
        path_name=policy.path_name,
    )
    log.info("cleanup: policy deleted", tunnel_id=payload.tunnel_id, unmapped=len(steered))
    return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=False)


def create_app(
    settings: Settings, *, southbound_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC/PCA."""
    app = spec.create_app(settings)
    app.state.southbound_transport = southbound_transport
    return app

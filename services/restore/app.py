"""Restoration Monitor agent: SLA checks from PCA, gradual cutover and tunnel cleanup.

Hold timers live in the orchestrator, which persists them; every handler here does one
bounded piece of work and returns, so nothing sleeps while an incident waits.
"""

from __future__ import annotations

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
    Thresholds,
    link_key,
    southbound_clients,
)

log = get_logger(__name__)


spec = AgentSpec(
    name="restore",
    title="Restoration Monitor",
    description="SLA recovery checks, gradual cutover and cleanup",
    resources=southbound_clients,
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
    cnc: CncClient = ctx.state.cnc
    for policy in await cnc.sr_policies():
        if policy.path_name == payload.tunnel_id:
            return policy.head_end, policy.end_point, policy.color
    return None


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
    head_end, end_point, color = key
    cnc: CncClient = ctx.state.cnc
    await cnc.steer(
        head_end=head_end,
        end_point=end_point,
        color=color,
        services=payload.service_ids,
        protection_pct=payload.protection_pct,
    )
    sla = await _check(ctx, payload.links)
    if sla.within_sla:
        log.info("cutover step applied", tunnel_id=payload.tunnel_id, step=payload.protection_pct)
        return CutoverResult(
            applied=True,
            within_sla=True,
            protection_pct=payload.protection_pct,
            original_pct=payload.original_pct,
            sla=sla.model_dump(),
        )
    # The original path cannot take the traffic yet: put everything back on protection.
    await cnc.steer(
        head_end=head_end,
        end_point=end_point,
        color=color,
        services=payload.service_ids,
        protection_pct=100,
    )
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
    )


@spec.serve(CLEANUP)
async def cleanup(payload: Cleanup, ctx: TaskContext) -> TunnelDeleted:
    cnc: CncClient = ctx.state.cnc
    policy = None
    for candidate in await cnc.sr_policies():
        if candidate.path_name == payload.tunnel_id or (
            (candidate.head_end, candidate.end_point, candidate.color)
            == (payload.head_end, payload.end_point, payload.color)
        ):
            policy = candidate
            break
    if policy is None:
        log.info("cleanup: policy already absent", tunnel_id=payload.tunnel_id)
        return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=True)
    await cnc.steer(
        head_end=policy.head_end,
        end_point=policy.end_point,
        color=policy.color,
        services=payload.service_ids,
        protection_pct=0,
    )
    await cnc.delete_sr_policy(
        head_end=policy.head_end, end_point=policy.end_point, color=policy.color
    )
    log.info("cleanup: policy deleted", tunnel_id=payload.tunnel_id)
    return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=False)


def create_app(
    settings: Settings, *, southbound_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC/PCA."""
    app = spec.create_app(settings)
    app.state.southbound_transport = southbound_transport
    return app

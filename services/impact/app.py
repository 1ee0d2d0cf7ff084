"""Service Impact agent: which L2/L3 VPN services cross the degraded links, and their SLA tiers.

Each service, the path it rides now and its base path (the one it rides with no steering) come
from CNC (its L2NM/L3NM services and the SR policies they ride); its SLA tier and committed
bandwidth from the operators' inventory (the OSS export the CNC client reads). A CNC failure
is not swallowed: it propagates as a ``SouthboundError`` (503 when transient, 502 otherwise)
so the orchestrator escalates as the seed's error table asks ("Service Impact API failed →
escalate").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from shared.agent import AgentSpec, TaskContext
from shared.contracts import ASSESS_IMPACT
from shared.logs import get_logger
from shared.models import TIERS, AffectedService, AssessImpact, ImpactResult
from shared.settings import Settings
from shared.southbound import CncClient, SharedRead, VpnService, link_key, southbound_clients

log = get_logger(__name__)


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """Open the CNC client for the app's lifetime, its services read shared.

    A burst of incidents asks for its assessments together, and each read of CNC's services
    is seven lists decoded and every service's path folded (most of this agent's CPU): the
    assessments that arrive while a read is under way take that read rather than start their
    own. Nothing is kept once it has answered, so an assessment never sees services older
    than the read in flight when it arrived.
    """
    async with southbound_clients(app):
        cnc: CncClient = app.state.cnc
        app.state.services = SharedRead(cnc.services)
        yield


spec = AgentSpec(
    name="impact",
    title="Service Impact",
    description="Affected services and SLA tiers from CNC service health",
    resources=_southbound,
)


def _tier(service: VpnService) -> str:
    """The inventory's tier as one of the seed's tiers; an unknown one counts as the lowest."""
    tier = service.sla_tier.strip().lower()
    if tier not in TIERS:
        log.warning("unknown SLA tier, counted as bronze", service=service.vpn_id, tier=tier)
        return "bronze"
    return tier


def assess(
    services: list[VpnService], degraded_links: list[str], *, native: bool = False
) -> ImpactResult:
    """The services whose path crosses a degraded link, most valuable tier first.

    ``native`` (the proactive flow): also the services whose base path crosses one (their
    native riders, wherever they ride now), ``degraded_links`` naming the links crossed by
    either path; the orchestrator tells the two apart from ``path`` and ``base_path``.
    """
    degraded = {link_key(link) for link in degraded_links}
    affected: list[AffectedService] = []
    for service in services:
        crossed = [link for link in service.path if link_key(link) in degraded]
        if native:
            based = [link for link in service.base_path if link_key(link) in degraded]
            crossed = list(dict.fromkeys([*crossed, *based]))
        if not crossed:
            continue
        affected.append(
            AffectedService(
                service_id=service.vpn_id,
                name=service.name,
                service_type=service.service_type,
                tier=_tier(service),  # checked against TIERS
                head_end=service.head_end,
                end_point=service.end_point,
                path=list(service.path),
                base_path=list(service.base_path or service.path),
                degraded_links=crossed,
                bandwidth_mbps=service.bandwidth_mbps,
                oper_status=service.oper_status,
                steered=service.steered,
            )
        )
    affected.sort(key=lambda s: (TIERS.index(s.tier), s.service_id))
    by_tier: dict[str, int] = {}
    for service_ in affected:
        by_tier[service_.tier] = by_tier.get(service_.tier, 0) + 1
    ordered = {tier: by_tier[tier] for tier in TIERS if tier in by_tier}
    return ImpactResult(
        total_affected=len(affected),
        services_by_tier=ordered,
        affected_services=affected,
        highest_tier=affected[0].tier if affected else None,
        degraded_links=sorted(degraded),
    )


@spec.serve(ASSESS_IMPACT)
async def assess_impact(payload: AssessImpact, ctx: TaskContext) -> ImpactResult:
    services: list[VpnService] = await ctx.state.services()
    result = assess(services, payload.degraded_links, native=payload.native)
    log.info(
        "impact assessed",
        incident_id=payload.incident_id,
        total=result.total_affected,
        by_tier=result.services_by_tier,
    )
    return result


def create_app(
    settings: Settings, *, southbound_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC."""
    app = spec.create_app(settings)
    app.state.southbound_transport = southbound_transport
    return app

"""The lab's own control API (``/lab/*``): drive the network, look at it, export the OSS view.

Nothing under ``/lab`` is something a controller has; agents never call it (except through the
operators' OSS export, ``/lab/oss/service-inventory``, which stands in for the operators' own
inventory). The CNC and PCA northbound live in :mod:`services.lab.cnc` and
:mod:`services.lab.pca`.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from services.lab.common import LabDep
from services.lab.controller import (
    DEFAULT_DELAY_MS,
    DEFAULT_JITTER_MS,
    DEFAULT_LOSS_PCT,
    Degradation,
    Lab,
)
from services.lab.network import (
    OPERATIONS,
    BusyHour,
    BusyHourProfile,
    LabNetwork,
    LoadRamp,
    Operation,
    PolicyRecord,
    TunnelRecord,
    utcnow,
)
from services.lab.topology import LabService

# --- control API ---------------------------------------------------------------------------

control = APIRouter(prefix="/lab", tags=["lab"])


class DegradeRequest(BaseModel):
    """Defaults exceed the default thresholds (50 ms, 10 ms jitter, 1 % loss)."""

    model_config = ConfigDict(extra="forbid")
    delay_ms: float = Field(default=DEFAULT_DELAY_MS, ge=0, le=10_000)
    loss_pct: float = Field(default=DEFAULT_LOSS_PCT, ge=0, le=100)
    jitter_ms: float = Field(default=DEFAULT_JITTER_MS, ge=0, le=10_000)
    duration_s: float | None = Field(default=None, gt=0, description="then recover (x time scale)")
    down: bool = Field(default=False, description="oper-status down: 100 % loss")

    def spec(self) -> Degradation:
        return Degradation(
            delay_ms=self.delay_ms,
            jitter_ms=self.jitter_ms,
            loss_pct=self.loss_pct,
            duration_s=self.duration_s,
            down=self.down,
        )


class FlapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=3, ge=1, le=1000)
    interval_s: float = Field(default=2.0, gt=0, le=3600)
    delay_ms: float = Field(default=DEFAULT_DELAY_MS, ge=0)
    loss_pct: float = Field(default=DEFAULT_LOSS_PCT, ge=0, le=100)
    jitter_ms: float = Field(default=DEFAULT_JITTER_MS, ge=0)


DAY_S = 86_400.0


class ScenarioRequest(BaseModel):
    """``duration_s``/``step_s`` for the fault scenarios; the rest for ``busy-hour`` only."""

    model_config = ConfigDict(extra="forbid")
    duration_s: float | None = Field(default=None, gt=0, description="fault lifetime override")
    step_s: float | None = Field(default=None, ge=0, description="gap between steps override")
    peak: float | None = Field(
        default=None, gt=0, le=20, description="busy hour: traffic x peak at the top (1.5)"
    )
    peak_pct: float | None = Field(
        default=None,
        gt=0,
        le=400,
        description="busy hour: instead of peak, the busiest link's native load at the top (%)",
    )
    base: float | None = Field(
        default=None, gt=0, le=20, description="busy hour: traffic x base outside it (1.0)"
    )
    up_s: float | None = Field(default=None, ge=0, le=DAY_S, description="busy hour: ramp up (60)")
    hold_s: float | None = Field(default=None, ge=0, le=DAY_S, description="busy hour: hold (60)")
    down_s: float | None = Field(
        default=None, ge=0, le=DAY_S, description="busy hour: ramp down (60)"
    )
    gap_s: float | None = Field(
        default=None, ge=0, le=DAY_S, description="busy hour: at base before each cycle (30)"
    )
    repeat: int | None = Field(default=None, ge=1, le=1000, description="busy hours in a row (1)")

    def busy_hour_fields(self) -> dict[str, Any]:
        return {
            name: value
            for name in ("peak", "peak_pct", "base", "up_s", "hold_s", "down_s", "gap_s", "repeat")
            if (value := getattr(self, name)) is not None
        }


class LoadRequest(BaseModel):
    """The link's native offered load moves to ``target_pct`` of its capacity in ``ramp_s``."""

    model_config = ConfigDict(extra="forbid")
    target_pct: float = Field(ge=0, le=200, description="% of the link's capacity")
    ramp_s: float = Field(ge=0, le=7 * DAY_S, description="real seconds (not time-scaled)")


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Operation
    count: int = Field(default=1, ge=1, le=10_000)
    status: int = Field(
        default=503,
        ge=200,
        le=599,
        description="HTTP status of the failed calls; below 400, sr-policy-create/-modify/"
        "-delete and rsvp-te answer 200 with state failure instead",
    )
    transient: bool = Field(
        default=True,
        description="false with status 500 on an operation: CNC's empty-body 500 (bad input)",
    )
    message: str | None = None


class TrafficRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(gt=0, le=100, description="offered load x factor (1 = nominal)")
    services: list[str] = Field(default_factory=list)
    link: str | None = Field(default=None, description="every service crossing this link")


def _link_or_404(network: LabNetwork, link_id: str) -> str:
    try:
        return network.link(link_id).link_id
    except KeyError:
        raise HTTPException(
            404, f"unknown link {link_id!r}; the lab has {len(network.topology.links)} links"
        ) from None


def _wall(network: LabNetwork, at: float) -> str:
    """A load-clock instant as an ISO timestamp."""
    return (utcnow() + timedelta(seconds=at - network.now())).isoformat()


def _ramp_view(network: LabNetwork, ramp: LoadRamp) -> dict[str, Any]:
    return {
        "from_pct": round(ramp.from_pct, 3),
        "target_pct": ramp.target_pct,
        "ramp_s": ramp.ramp_s,
        "started_at": _wall(network, ramp.started),
        "ends_at": _wall(network, ramp.ends),
        "services": len(ramp.services),
    }


def _busy_hour_view(network: LabNetwork, profile: BusyHourProfile) -> dict[str, Any]:
    spec = profile.spec
    cycle, phase = profile.phase(network.now())
    return {
        "peak": round(spec.peak, 4),
        "base": spec.base,
        "up_s": spec.up_s,
        "hold_s": spec.hold_s,
        "down_s": spec.down_s,
        "gap_s": spec.gap_s,
        "repeat": spec.repeat,
        "period_s": spec.period_s,
        "started_at": _wall(network, profile.started),
        "ends_at": _wall(network, profile.ends),
        "cycle": cycle,
        "phase": phase,
        "level": round(profile.multiplier(network.now()), 4),
    }


def _link_view(network: LabNetwork, link_id: str) -> dict[str, Any]:
    link = network.topology.links[link_id]
    m = network.metrics(link_id)
    cond = network.conditions.get(link_id)
    ramp = network.ramps.get(link_id)
    return {
        "link_id": link_id,
        "source": link.source,
        "destination": link.destination,
        "delay_ms": link.delay_ms,
        "capacity_mbps": link.capacity_mbps,
        "igp_metric": link.igp_metric,
        "te_metric": link.te_metric,
        "srlgs": list(link.srlgs),
        "oper_status": network.oper_status(link_id),
        "degraded": cond is not None,
        "alerting": link_id in network.alerting,
        "condition": _condition_view(cond) if cond else None,
        "metrics": {
            "delay_ms": m.delay_ms,
            "jitter_ms": m.jitter_ms,
            "loss_pct": m.loss_pct,
            "utilization_pct": round(m.utilization * 100, 2),
        },
        "services": len(network.services_on(link_id)),
        "load_mbps": round(network.rates()[link_id], 3),
        "load_pct": round(network.load_pct(link_id), 3),
        "native_mbps": round(network.native_rates()[link_id], 3),
        "native_pct": round(network.native_pct(link_id), 3),
        "ramp": _ramp_view(network, ramp) if ramp is not None else None,
    }


def _condition_view(cond: Any) -> dict[str, Any]:
    return {
        "delay_ms": cond.delay_ms,
        "jitter_ms": cond.jitter_ms,
        "loss_pct": cond.loss_pct,
        "down": cond.down,
        "since": cond.since.isoformat(),
        "until": cond.until.isoformat() if cond.until else None,
    }


def _service_health(network: LabNetwork, service: LabService) -> str:
    """The lab's own view: ``down``, ``degraded`` (a link it rides alerts) or ``up``."""
    rides = network.rides(service)
    if not network.policy_up(rides):
        return "down"
    if any(link in network.alerting for link in rides.links):
        return "degraded"
    return "up"


def _policy_view(network: LabNetwork, p: PolicyRecord) -> dict[str, Any]:
    return {
        "head-end": p.head_end,
        "end-point": p.end_point,
        "color": p.color,
        "path-name": p.path_name,
        "description": p.description,
        "binding-sid": p.binding_sid,
        "te-type": p.te_type,
        "sr-policy-type": p.policy_type,
        "hops": list(p.nodes),
        "links": list(p.links),
        "state": "up" if network.policy_up(p) else "down",
    }


def _tunnel_view(network: LabNetwork, t: TunnelRecord) -> dict[str, Any]:
    return {
        "head-end": t.head_end,
        "end-point": t.end_point,
        "path-name": t.path_name,
        "tunnel-id": t.tunnel_id,
        "te-type": "rsvp-te",
        "hops": list(t.nodes),
        "links": list(t.links),
        "state": "up" if network.path_up(t.links) else "down",
    }


def _steering_view(network: LabNetwork) -> dict[str, Any]:
    out = {}
    for vpn_id, color in sorted(network.mapping.items()):
        service = network.topology.services[vpn_id]
        riding = network.rides(service).color == color
        out[vpn_id] = {
            "head_end": service.head_end,
            "end_point": service.end_point,
            "color": color,
            "weight": 100 if riding else 0,
        }
    return out


@control.get("/topology")
async def lab_topology(lab: LabDep) -> dict[str, Any]:
    """Everything the console draws: nodes, links with live state, services, policies."""
    with lab.network.pinned():
        return _topology_view(lab.network)


def _topology_view(network: LabNetwork) -> dict[str, Any]:
    topo = network.topology
    return {
        "name": topo.name,
        "nodes": [
            {
                "node_id": n.node_id,
                "name": n.name or n.node_id,
                "role": n.role,
                "loopback": n.loopback,
                "prefix_sid": n.prefix_sid,
                "te_capabilities": list(n.te_capabilities),
            }
            for n in topo.nodes.values()
        ],
        "links": [_link_view(network, link_id) for link_id in topo.links],
        "services": [
            {
                "vpn_id": s.vpn_id,
                "name": s.name,
                "service_type": s.service_type,
                "sla_tier": s.sla_tier,
                "head_end": s.head_end,
                "end_point": s.end_point,
                "path": list(s.path),
                "bandwidth_mbps": s.bandwidth_mbps,
                "offered_mbps": round(network.offered_mbps(s), 3),
                "oper_status": _service_health(network, s),
                "color": network.rides(s).color,
                "riding": list(network.rides(s).nodes),
            }
            for s in topo.services.values()
        ],
        "sr_policies": [_policy_view(network, p) for p in network.created_policies()],
        "rsvp_te_tunnels": [_tunnel_view(network, t) for t in network.tunnels.values()],
        "scenarios": sorted(topo.scenarios),
    }


@control.get("/state")
async def lab_state(lab: LabDep) -> dict[str, Any]:
    """What the lab changed: degraded links, policies, steering weights, faults, alerts."""
    with lab.network.pinned():
        return _state_view(lab)


def _state_view(lab: Lab) -> dict[str, Any]:
    network = lab.network
    stats = lab.pusher.stats
    return {
        "topology": network.topology.name,
        "degraded_links": {
            link: _condition_view(cond) for link, cond in sorted(network.conditions.items())
        },
        "alerting_links": sorted(network.alerting),
        "sr_policies": [_policy_view(network, p) for p in network.created_policies()],
        "rsvp_te_tunnels": [_tunnel_view(network, t) for t in network.tunnels.values()],
        "odn_policies": sum(1 for p in network.policies.values() if p.origin == "odn"),
        "steering": _steering_view(network),
        "traffic_factor": dict(network.traffic_factor),
        "load": {
            "ramps": {link: _ramp_view(network, r) for link, r in sorted(network.ramps.items())},
            "busy_hour": _busy_hour_view(network, network.profile) if network.profile else None,
        },
        "faults": [
            {"operation": f.operation, "remaining": f.remaining, "status": f.status}
            for f in network.faults.values()
        ],
        "alerts": {
            "push_enabled": lab.pusher.enabled,
            "url": lab.pusher.url,
            "queued": stats.queued,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "last_error": stats.last_error,
        },
        "sessions": {
            "tgts": len(lab.sessions.tickets),
            "pca_tokens": len(lab.sessions.pca_tokens),
            "logins": dict(lab.sessions.logins),
        },
        "tasks": sorted(lab.tasks),
    }


@control.get("/alerts")
async def lab_alerts(lab: LabDep) -> list[dict[str, Any]]:
    """The last alerts the lab generated, oldest first (delivered or not)."""
    return list(lab.pusher.stats.recent)


@control.post("/links/{link_id}/degrade")
async def degrade(link_id: str, lab: LabDep, body: DegradeRequest | None = None) -> dict[str, Any]:
    link = _link_or_404(lab.network, link_id)
    lab.degrade(link, (body or DegradeRequest()).spec())
    return _link_view(lab.network, link)


@control.post("/links/{link_id}/recover")
async def recover(link_id: str, lab: LabDep) -> dict[str, Any]:
    link = _link_or_404(lab.network, link_id)
    was_degraded = lab.recover(link)
    return {**_link_view(lab.network, link), "was_degraded": was_degraded}


@control.post("/links/{link_id}/flap", status_code=202)
async def flap(link_id: str, lab: LabDep, body: FlapRequest | None = None) -> dict[str, Any]:
    link = _link_or_404(lab.network, link_id)
    req = body or FlapRequest()
    spec = Degradation(delay_ms=req.delay_ms, jitter_ms=req.jitter_ms, loss_pct=req.loss_pct)
    lab.flap(link, count=req.count, interval_s=req.interval_s, spec=spec)
    return {
        "link_id": link,
        "count": req.count,
        "interval_s": req.interval_s,
        "effective_interval_s": lab.scaled(req.interval_s),
    }


@control.get("/links/{link_id}")
async def link_state(link_id: str, lab: LabDep) -> dict[str, Any]:
    """One link's live view (as in ``/lab/topology``) plus which services ride it now and
    which cross it natively (their base path)."""
    network = lab.network
    link = _link_or_404(network, link_id)
    with network.pinned():
        return {
            **_link_view(network, link),
            "riding": sorted(s.vpn_id for s in network.services_on(link)),
            "native_services": sorted(network.native_services(link)),
        }


@control.post("/links/{link_id}/load", status_code=202)
async def load(link_id: str, body: LoadRequest, lab: LabDep) -> dict[str, Any]:
    """Ramp the link's offered native load to ``target_pct`` of capacity over ``ramp_s``."""
    network = lab.network
    link = _link_or_404(network, link_id)
    try:
        ramp = lab.load(link, target_pct=body.target_pct, ramp_s=body.ramp_s)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {
        "link": link,
        "from_pct": round(ramp.from_pct, 3),
        "target_pct": body.target_pct,
        "ramp_s": body.ramp_s,
        "services": sorted(ramp.services) or sorted(network.native_services(link)),
    }


@control.get("/scenarios")
async def scenarios(lab: LabDep) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "description": p.description, "links": p.links}
        for p in lab.network.topology.scenarios.values()
    ]


@control.post("/scenarios/{name}", status_code=202)
async def play(name: str, lab: LabDep, body: ScenarioRequest | None = None) -> dict[str, Any]:
    """Start a scenario: its first steps happen before this answers, later ones on a timer."""
    plan = lab.network.topology.scenarios.get(name)
    if plan is None:
        known = ", ".join(sorted(lab.network.topology.scenarios))
        raise HTTPException(404, f"unknown scenario {name!r}; this lab has: {known}")
    req = body or ScenarioRequest()
    busy = any(s.action == "busy-hour" for s in plan.steps)
    fields = req.busy_hour_fields()
    if busy and (req.duration_s is not None or req.step_s is not None):
        raise HTTPException(422, f"{name} takes no duration_s or step_s (busy-hour parameters)")
    if not busy and fields:
        raise HTTPException(422, f"{', '.join(sorted(fields))}: busy-hour parameters, not {name}'s")
    spec = None
    if busy:
        try:
            spec = lab.busy_hour_spec(**fields)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    steps = lab.play(plan, duration_s=req.duration_s, step_s=req.step_s, busy_hour=spec)
    out: dict[str, Any] = {
        "scenario": plan.name,
        "description": plan.description,
        "links": plan.links,
        "steps": [{"action": s.action, "link": s.link, "after": s.after} for s in steps],
        "started_at": utcnow().isoformat(),
    }
    if spec is not None and lab.network.profile is not None:
        with lab.network.pinned():
            peak = _peak_native(lab.network, spec)
            out["links"] = [link for link, pct in peak.items() if pct > OVERLOAD_PCT]
            out["busy_hour"] = {
                **_busy_hour_view(lab.network, lab.network.profile),
                "peak_native_pct": peak,
            }
    return out


OVERLOAD_PCT = 90.0
"""A busy hour's ``links`` are those its peak pushes over this native load (overload)."""
WATCH_PCT = 70.0
"""``peak_native_pct`` lists links at or above this at the peak (congestion threshold)."""


def _peak_native(network: LabNetwork, spec: BusyHour) -> dict[str, float]:
    """Link → native load (%) at the busy hour's peak, for links at or above WATCH_PCT,
    busiest first."""
    profile = network.profile
    level = profile.multiplier(network.now()) if profile is not None else 1.0
    scale = spec.peak / level
    peak = {link: network.native_pct(link) * scale for link in network.topology.links}
    return {
        link: round(pct, 2)
        for link, pct in sorted(peak.items(), key=lambda kv: (-kv[1], kv[0]))
        if pct >= WATCH_PCT
    }


@control.post("/reset")
async def reset(lab: LabDep) -> dict[str, Any]:
    lab.reset()
    return {"reset": True}


@control.get("/faults")
async def faults(lab: LabDep) -> list[dict[str, Any]]:
    return [
        {"operation": f.operation, "remaining": f.remaining, "status": f.status}
        for f in lab.network.faults.values()
    ]


@control.post("/faults", status_code=201)
async def add_fault(body: FaultRequest, lab: LabDep) -> dict[str, Any]:
    """Make the next ``count`` calls of ``operation`` fail with ``status``."""
    assert body.operation in OPERATIONS
    fault = lab.network.add_fault(
        body.operation,
        count=body.count,
        status=body.status,
        transient=body.transient,
        message=body.message or f"injected fault on {body.operation} (lab)",
    )
    return {"operation": fault.operation, "remaining": fault.remaining, "status": fault.status}


@control.delete("/faults")
async def clear_faults(lab: LabDep) -> dict[str, Any]:
    count = len(lab.network.faults)
    lab.network.faults.clear()
    return {"cleared": count}


@control.post("/traffic")
async def traffic(body: TrafficRequest, lab: LabDep) -> dict[str, Any]:
    """Scale the offered load of services (all of them when none are named)."""
    network = lab.network
    services = list(body.services)
    unknown = [s for s in services if s not in network.topology.services]
    if unknown:
        raise HTTPException(404, f"unknown services: {', '.join(unknown)}")
    if body.link is not None:
        link = _link_or_404(network, body.link)
        services += [s.vpn_id for s in network.services_on(link)]
    if not services:
        services = list(network.topology.services)
    lab.set_traffic(body.factor, services)
    return {"factor": body.factor, "services": len(set(services))}


INVENTORY_COLUMNS = ("vpn-id", "name", "sla-tier", "bandwidth-mbps", "customer")


def _customer(service: LabService) -> str:
    """The customer an operator's OSS would name: the service name without tier and number."""
    parts = service.name.split("-")
    while parts and (parts[-1].isdigit() or parts[-1] in ("platinum", "gold", "silver", "bronze")):
        parts.pop()
    return "-".join(parts) or service.vpn_id


@control.get("/oss/service-inventory", response_model=None)
async def service_inventory(
    lab: LabDep, format: Literal["json", "csv"] = "json"
) -> dict[str, Any] | Response:
    """The operators' OSS export: what a controller does not know (tier, committed bandwidth)."""
    rows = [
        {
            "vpn-id": s.vpn_id,
            "name": s.name,
            "sla-tier": s.sla_tier,
            "bandwidth-mbps": int(s.bandwidth_mbps)
            if float(s.bandwidth_mbps).is_integer()
            else s.bandwidth_mbps,
            "customer": _customer(s),
        }
        for s in sorted(lab.network.topology.services.values(), key=lambda s: s.vpn_id)
    ]
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=INVENTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return PlainTextResponse(out.getvalue(), media_type="text/csv")
    return {"services": rows}

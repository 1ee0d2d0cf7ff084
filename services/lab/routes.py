"""HTTP surface of the lab: CNC northbound, PCA northbound, and the ``/lab`` control API.

The CNC and PCA paths are exactly those :mod:`shared.southbound` calls (see
docs/southbound.md for which shapes are Cisco's and which are the lab's ``cisco-crosswork-cxm:``
additions). They need ``Authorization: Bearer <CXM_LAB_TOKEN>`` when a token is configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.lab.alerts import alerting_policies
from services.lab.controller import (
    DEFAULT_DELAY_MS,
    DEFAULT_JITTER_MS,
    DEFAULT_LOSS_PCT,
    Degradation,
    Lab,
)
from services.lab.network import (
    OPERATIONS,
    LabNetwork,
    Operation,
    PolicyError,
    SrPolicyRecord,
    SteerError,
    utcnow,
)
from services.lab.topology import LabService

YANG_JSON = "application/yang-data+json"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
OPTIMIZATION = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS = f"{OPTIMIZATION}/cisco-crosswork-optimization-engine-sr-policy-operations"
INVENTORY = "/crosswork/nbi/cat-inventory/v1/restconf/data"


def get_lab(request: Request) -> Lab:
    lab: Lab = request.app.state.lab
    return lab


LabDep = Annotated[Lab, Depends(get_lab)]


async def require_token(request: Request) -> None:
    """CNC/PCA calls carry the lab's bearer token when one is configured."""
    lab: Lab = request.app.state.lab
    token = lab.lab_settings.token
    if not token:
        return
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise HTTPException(
            401,
            "missing or wrong bearer token (CXM_LAB_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class LabError(Exception):
    """An answer other than 2xx, in the body format of the API it belongs to."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(str(body))
        self.status = status
        self.body = body


def restconf_error(status: int, message: str, tag: str = "operation-failed") -> LabError:
    """RFC 8040 ``ietf-restconf:errors``, which is what CNC answers with."""
    return LabError(
        status,
        {
            "ietf-restconf:errors": {
                "error": [{"error-type": "application", "error-tag": tag, "error-message": message}]
            }
        },
    )


def injected(network: LabNetwork, operation: str, *, pca: bool = False) -> None:
    """Fail this call if a fault was injected for ``operation`` (HTTP status ≥ 400 only)."""
    fault = network.faults.get(operation)
    if fault is None or fault.status < 400:
        return
    network.take_fault(operation)
    if pca:
        raise LabError(
            fault.status, {"errors": [{"status": fault.status, "detail": fault.message}]}
        )
    raise restconf_error(fault.status, fault.message)


def yang(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=YANG_JSON)


# --- CNC -----------------------------------------------------------------------------------

cnc = APIRouter(tags=["cnc"], dependencies=[Depends(require_token)])


def _service_health(network: LabNetwork, service: LabService) -> str:
    """``down``/``degraded``/``up`` from the links that carry the service's traffic now."""
    carrying: list[str] = []
    steered = network.steering.get(service.vpn_id)
    share = 0
    if steered is not None and steered[0] in network.policies:
        share = steered[1]
        carrying += network.policies[steered[0]].links
    if share < 100:
        carrying += service.path
    if any(network.oper_status(link) == "down" for link in carrying):
        return "down"
    if any(link in network.alerting for link in carrying):
        return "degraded"
    return "up"


def _policy_view(network: LabNetwork, p: SrPolicyRecord) -> dict[str, Any]:
    return {
        "head-end": p.head_end,
        "end-point": p.end_point,
        "color": p.color,
        "path-name": p.path_name,
        "description": p.description,
        "binding-sid": p.binding_sid,
        "te-type": p.te_type,
        "hops": p.nodes,
        "links": p.links,
        "state": network.policy_state(p),
    }


@cnc.get(f"{TOPOLOGY}/cisco-crosswork-cxm:topology")
async def cnc_topology(lab: LabDep) -> JSONResponse:
    """Nodes with TE capabilities and links with TE attributes (lab-specific module)."""
    network = lab.network
    injected(network, "topology")
    topo = network.topology
    return yang(
        {
            "cisco-crosswork-cxm:topology": {
                "nodes": [
                    {
                        "node-id": n.node_id,
                        "loopback": n.loopback,
                        "prefix-sid": n.prefix_sid,
                        "te-capabilities": list(n.te_capabilities),
                        "role": n.role,
                    }
                    for n in topo.nodes.values()
                ],
                "links": [
                    {
                        "link-id": link.link_id,
                        "source": link.source,
                        "destination": link.destination,
                        "igp-metric": link.igp_metric,
                        "te-metric": link.te_metric,
                        "delay-ms": link.delay_ms,
                        "capacity-mbps": link.capacity_mbps,
                        "srlgs": list(link.srlgs),
                        "oper-status": network.oper_status(link.link_id),
                    }
                    for link in topo.links.values()
                ],
            }
        }
    )


def _vpn_services(network: LabNetwork, kind: str) -> JSONResponse:
    injected(network, "services")
    items = []
    for svc in network.topology.services.values():
        if svc.service_type != kind:
            continue
        steered = network.steering.get(svc.vpn_id)
        item: dict[str, Any] = {
            "vpn-id": svc.vpn_id,
            "name": svc.name,
            "sla-tier": svc.sla_tier,
            "head-end": svc.head_end,
            "end-point": svc.end_point,
            "path": list(svc.path),
            "bandwidth-mbps": svc.bandwidth_mbps,
            "oper-status": _service_health(network, svc),
        }
        if steered is not None:
            item["cisco-crosswork-cxm:steering"] = {
                "color": steered[0][2],
                "weight": steered[1],
            }
        items.append(item)
    return yang({"vpn-services": {"vpn-service": items}})


@cnc.get(f"{INVENTORY}/ietf-l2vpn-ntw:l2vpn-ntw/vpn-services")
async def l2vpn_services(lab: LabDep) -> JSONResponse:
    return _vpn_services(lab.network, "l2vpn")


@cnc.get(f"{INVENTORY}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services")
async def l3vpn_services(lab: LabDep) -> JSONResponse:
    return _vpn_services(lab.network, "l3vpn")


@cnc.get(f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies")
async def sr_policies(
    lab: LabDep, limit: Annotated[int, Query(ge=1)] = 1000, offset: Annotated[int, Query(ge=0)] = 0
) -> JSONResponse:
    network = lab.network
    injected(network, "sr-policies")
    policies = sorted(network.policies.values(), key=lambda p: p.key)[offset : offset + limit]
    return yang({"sr-policies": {"sr-policy": [_policy_view(network, p) for p in policies]}})


async def _input(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise restconf_error(400, "the body is not JSON", "malformed-message") from None
    data = body.get("input") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise restconf_error(400, 'the body must be {"input": {...}}', "malformed-message")
    return data


def _policy_items(data: dict[str, Any]) -> list[Any]:
    items = data.get("sr-policies")
    if not isinstance(items, list) or not items:
        raise restconf_error(400, "input.sr-policies must be a non-empty list", "missing-element")
    return items


def _result(item: Any, state: str, message: str, **extra: Any) -> dict[str, Any]:
    src = item if isinstance(item, dict) else {}
    return {
        "head-end": src.get("head-end"),
        "end-point": src.get("end-point"),
        "color": src.get("color"),
        "state": state,
        "message": message,
        **extra,
    }


def _soft_fault(network: LabNetwork, operation: str, item: Any) -> dict[str, Any] | None:
    """An injected fault with status < 400: HTTP 200 with ``state: failure`` for this item."""
    fault = network.faults.get(operation)
    if fault is None or fault.status >= 400:
        return None
    network.take_fault(operation)
    return _result(
        item, "failure", fault.message, **{"cisco-crosswork-cxm:transient": fault.transient}
    )


async def _policy_operation(
    request: Request,
    lab: Lab,
    operation: str,
    apply: Callable[[dict[str, Any]], dict[str, Any]],
) -> JSONResponse:
    """Run a COE SR-policy operation item by item: one result per policy, as COE answers."""
    network = lab.network
    injected(network, operation)
    results = []
    for item in _policy_items(await _input(request)):
        if (soft := _soft_fault(network, operation, item)) is not None:
            results.append(soft)
        elif not isinstance(item, dict):
            results.append(_result(item, "failure", "each sr-policy must be an object"))
        else:
            try:
                results.append(apply(item))
            except PolicyError as exc:
                results.append(_result(item, "failure", str(exc)))
    lab.evaluate()  # steered traffic follows a modified path or goes home from a deleted one
    return yang({"output": {"results": results}})


def _installing(
    install: Callable[[dict[str, Any]], tuple[SrPolicyRecord, str]],
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Create and modify succeed alike: the result says which binding SID and nodes CNC holds."""

    def apply(item: dict[str, Any]) -> dict[str, Any]:
        record, message = install(item)
        extra = {"binding-sid": record.binding_sid, "hops": record.nodes}
        return _result(item, "success", message, **extra)

    return apply


@cnc.post(f"{SR_OPS}:sr-policy-create")
async def sr_policy_create(request: Request, lab: LabDep) -> JSONResponse:
    """COE ``sr-policy-create`` with explicit hops, validated as a PCE would."""
    return await _policy_operation(
        request, lab, "sr-policy-create", _installing(lab.network.create_policy)
    )


@cnc.post(f"{SR_OPS}:sr-policy-modify")
async def sr_policy_modify(request: Request, lab: LabDep) -> JSONResponse:
    """COE ``sr-policy-modify``: a new explicit path under the same key and binding SID."""
    return await _policy_operation(
        request, lab, "sr-policy-modify", _installing(lab.network.modify_policy)
    )


@cnc.post(f"{SR_OPS}:sr-policy-delete")
async def sr_policy_delete(request: Request, lab: LabDep) -> JSONResponse:
    def delete(item: dict[str, Any]) -> dict[str, Any]:
        _, message = lab.network.delete_policy(item)
        return _result(item, "success", message)

    return await _policy_operation(request, lab, "sr-policy-delete", delete)


@cnc.post(f"{OPTIMIZATION}/cisco-crosswork-cxm:traffic-steer")
async def traffic_steer(request: Request, lab: LabDep) -> JSONResponse:
    """Lab-specific: put ``weight`` % of the services' traffic on the policy."""
    injected(lab.network, "traffic-steer")
    data = await _input(request)
    try:
        head, end = str(data["head-end"]), str(data["end-point"])
        color, weight = data["color"], data["weight"]
        services = data.get("services") or []
        if not isinstance(color, int) or not isinstance(weight, int):
            raise TypeError
        if not isinstance(services, list):
            raise TypeError
    except (KeyError, TypeError):
        raise restconf_error(
            400,
            "input needs head-end, end-point, integer color and weight, and a services list",
            "invalid-value",
        ) from None
    try:
        steered = lab.steer(
            head_end=head,
            end_point=end,
            color=color,
            services=[str(s) for s in services],
            weight=weight,
        )
    except SteerError as exc:
        status = 404 if str(exc).startswith(("no SR policy", "unknown")) else 400
        raise restconf_error(status, str(exc), "invalid-value") from None
    return yang(
        {
            "output": {
                "status": "success",
                "head-end": head,
                "end-point": end,
                "color": color,
                "weight": weight,
                "services": steered,
            }
        }
    )


@cnc.get(f"{TOPOLOGY}/cisco-crosswork-cxm:link-counters")
async def link_counters(lab: LabDep) -> JSONResponse:
    """Lab-specific: cumulative octets per link, integrated from the traffic it carries."""
    network = lab.network
    injected(network, "link-counters")
    octets = network.counters()
    rates = network.rates()
    stamp = utcnow().isoformat()
    return yang(
        {
            "link-counters": [
                {
                    "link-id": link.link_id,
                    "octets": int(octets[link.link_id]),
                    "capacity-mbps": link.capacity_mbps,
                    "rate-mbps": round(rates[link.link_id], 3),
                    "timestamp": stamp,
                }
                for link in network.topology.links.values()
            ]
        }
    )


# --- PCA -----------------------------------------------------------------------------------

pca = APIRouter(prefix="/api/v2", tags=["pca"], dependencies=[Depends(require_token)])


@pca.get("/metrics/links")
async def link_metrics(lab: LabDep, objects: str | None = None) -> JSONResponse:
    """Current delay, jitter and loss of the named links (all links when none are named)."""
    network = lab.network
    injected(network, "metrics", pca=True)
    names = [o.strip() for o in objects.split(",") if o.strip()] if objects else []
    if not names:
        names = list(network.topology.links)
    resolved: list[tuple[str, str]] = []
    unknown = []
    for name in names:
        try:
            resolved.append((name, network.link(name).link_id))
        except KeyError:
            unknown.append(name)
    if unknown:
        raise LabError(
            404,
            {"errors": [{"status": 404, "detail": f"unknown link(s): {', '.join(unknown)}"}]},
        )
    stamp = utcnow().isoformat()
    data = []
    for name, link_id in resolved:
        m = network.metrics(link_id)
        data.append(
            {
                "objectName": name,
                "delay-avg": m.delay_ms,
                "delay-var-avg": m.jitter_ms,
                "packets-lost-pct": m.loss_pct,
                "utilization-pct": round(m.utilization * 100, 2),
                "timestamp": stamp,
            }
        )
    return JSONResponse({"data": data})


@pca.get("/policies/alerting")
async def policies(lab: LabDep) -> JSONResponse:
    injected(lab.network, "policies", pca=True)
    return JSONResponse(alerting_policies(lab.network.thresholds, lab.lab_settings.tenant_id))


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


class ScenarioRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_s: float | None = Field(default=None, gt=0, description="fault lifetime override")
    step_s: float | None = Field(default=None, ge=0, description="gap between steps override")


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Operation
    count: int = Field(default=1, ge=1, le=10_000)
    status: int = Field(
        default=503,
        ge=200,
        le=599,
        description="HTTP status of the failed calls; below 400, sr-policy-create/-modify/"
        "-delete answer 200 with state failure instead",
    )
    transient: bool = True
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


def _link_view(network: LabNetwork, link_id: str) -> dict[str, Any]:
    link = network.topology.links[link_id]
    m = network.metrics(link_id)
    cond = network.conditions.get(link_id)
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
        "services": len(network.topology.services_on(link_id)),
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


@control.get("/topology")
async def lab_topology(lab: LabDep) -> dict[str, Any]:
    """Everything the console draws: nodes, links with live state, services, policies."""
    network = lab.network
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
                "oper_status": _service_health(network, s),
            }
            for s in topo.services.values()
        ],
        "sr_policies": [_policy_view(network, p) for p in network.policies.values()],
        "scenarios": sorted(topo.scenarios),
    }


@control.get("/state")
async def lab_state(lab: LabDep) -> dict[str, Any]:
    """What the lab changed: degraded links, policies, steering weights, faults, alerts."""
    network = lab.network
    stats = lab.pusher.stats
    return {
        "topology": network.topology.name,
        "degraded_links": {
            link: _condition_view(cond) for link, cond in sorted(network.conditions.items())
        },
        "alerting_links": sorted(network.alerting),
        "sr_policies": [_policy_view(network, p) for p in network.policies.values()],
        "steering": {
            service: {
                "head_end": key[0],
                "end_point": key[1],
                "color": key[2],
                "weight": weight,
            }
            for service, (key, weight) in sorted(network.steering.items())
        },
        "traffic_factor": dict(network.traffic_factor),
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
    steps = lab.play(plan, duration_s=req.duration_s, step_s=req.step_s)
    return {
        "scenario": plan.name,
        "description": plan.description,
        "links": plan.links,
        "steps": [{"action": s.action, "link": s.link, "after": s.after} for s in steps],
        "started_at": utcnow().isoformat(),
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
        services += [s.vpn_id for s in network.topology.services_on(link)]
    if not services:
        services = list(network.topology.services)
    lab.set_traffic(body.factor, services)
    return {"factor": body.factor, "services": len(set(services))}

"""Crosswork Network Controller 7.x northbound, as Cisco documents it (docs/southbound.md).

SSO (TGT → JWT), the topology (``ietf-network-state:networks``), keyed link performance
metrics, the COE SR-policy and RSVP-TE operations, the operational SR-policy and RSVP-TE lists,
the CAT service inventory, and the NSO proxy (L3NM/L2NM config, te-service-mapping, SRv6
policies). Nothing here is the lab's own: an agent that works against these routes works
against a real CNC.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from services.lab.auth import BadToken, LoginRefused, MalformedToken
from services.lab.common import (
    LabDep,
    LabError,
    cat_data_missing,
    data_missing,
    injected,
    restconf_error,
    yang,
)
from services.lab.controller import Lab
from services.lab.network import (
    OBJECTIVES,
    SRGB,
    Hop,
    LabNetwork,
    PolicyError,
    PolicyRecord,
    SrRequest,
    TunnelRecord,
    TunnelRequest,
)
from services.lab.topology import IGP_NETWORK, LabService

SSO = "/crosswork/sso/v1/tickets"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
OPERATIONS = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_MODULE = "cisco-crosswork-optimization-engine-sr-policy-operations"
RSVP_MODULE = "cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations"
INVENTORY = "/crosswork/nbi/cat-inventory/v1/restconf/data"
NSO = "/crosswork/proxy/nso/restconf/data"
SRV6_POLICIES = f"{NSO}/cisco-sr-te-cfp:sr-te/cisco-sr-te-cfp-sr-policies:policies"
PM = "cisco-crosswork-performance-metrics"
SR_LIST = "cisco-crosswork-segment-routing-policy"
RSVP_LIST = "cisco-crosswork-rsvp-te-tunnel"
VPN_MODELS = {"l3vpn": "ietf-l3vpn-ntw", "l2vpn": "ietf-l2vpn-ntw"}
TE_MAPPING = "ietf-te-service-mapping:te-service-mapping"
UNAUTHORIZED = "Unauthorized request"


class BadInput(Exception):
    """Operation input CNC cannot parse: 500 with an empty body."""


async def require_jwt(request: Request) -> None:
    """Every CNC call carries ``Authorization: Bearer <JWT>`` from the SSO."""
    lab: Lab = request.app.state.lab
    try:
        lab.sessions.check_jwt(request.headers.get("authorization"))
    except MalformedToken:
        raise LabError(500, None) from None
    except BadToken:
        raise LabError(403, UNAUTHORIZED) from None


sso = APIRouter(tags=["cnc-sso"])
cnc = APIRouter(tags=["cnc"], dependencies=[Depends(require_jwt)])


# --- SSO -----------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


@sso.post(SSO)
async def grant_tgt(request: Request, lab: LabDep) -> Response:
    """Form ``username``, ``password`` → 201 with the ticket-granting ticket as plain text."""
    injected(lab.network, "login", kind="text")
    form = await _form(request)
    try:
        tgt = lab.sessions.grant_tgt(form.get("username", ""), form.get("password", ""))
    except LoginRefused as exc:
        raise LabError(401, str(exc)) from None
    return PlainTextResponse(tgt, status_code=201, headers={"Location": f"{SSO}/{tgt}"})


@sso.post(SSO + "/{tgt}")
async def grant_jwt(tgt: str, request: Request, lab: LabDep) -> Response:
    """Form ``service`` → 200 with a JWT for that service as plain text."""
    injected(lab.network, "login", kind="text")
    form = await _form(request)
    if not form.get("service"):
        raise LabError(400, "service is required")
    try:
        return PlainTextResponse(lab.sessions.grant_jwt(tgt, form["service"]))
    except LoginRefused as exc:
        raise LabError(401, str(exc)) from None


@sso.delete(SSO + "/{tgt}")
async def delete_tgt(tgt: str, lab: LabDep) -> Response:
    """Log out: the TGT and the JWTs it granted stop working."""
    lab.sessions.delete_tgt(tgt)
    return PlainTextResponse(tgt)


# --- topology ------------------------------------------------------------------------------


def _window(request: Request) -> tuple[int, int | None]:
    """``offset`` and ``limit`` query parameters (400 ``invalid-value`` when not numbers)."""
    values: dict[str, int | None] = {"offset": 0, "limit": None}
    for name in values:
        raw = request.query_params.get(name)
        if raw is None:
            continue
        if not raw.isdigit() or (name == "limit" and int(raw) < 1):
            raise restconf_error(400, f"{name} must be a non-negative integer", "invalid-value")
        values[name] = int(raw)
    return values["offset"] or 0, values["limit"]


def _page(items: list[Any], offset: int, limit: int | None) -> list[Any]:
    return items[offset:] if limit is None else items[offset : offset + limit]


def _node_view(network: LabNetwork, node_id: str) -> dict[str, Any]:
    topo = network.topology
    node = topo.nodes[node_id]
    prefix: dict[str, Any] = {"prefix": f"{node.loopback}/32"}
    view: dict[str, Any] = {"node-id": node_id}
    attributes: dict[str, Any] = {"name": node_id, "router-id": [node.loopback], "prefix": [prefix]}
    view["ietf-l3-unicast-topology-state:l3-node-attributes"] = attributes
    if "sr-mpls" in node.te_capabilities:
        prefix["ietf-sr-mpls-topology-state:prefix-sid"] = {
            "value-type": "index",
            "start-sid": node.prefix_sid - SRGB[0],
            "algorithm": 0,
        }
        view["ietf-sr-mpls-topology-state:sr-mpls"] = {
            "srgb": [{"lower-bound": SRGB[0], "upper-bound": SRGB[1]}]
        }
    if "srv6" in node.te_capabilities:
        view["cisco-crosswork-l3-te-topology:ipv6-router-id"] = [topo.ipv6_router_id(node_id)]
        view["cisco-crosswork-srv6-topology-state:srv6-node-sid"] = [
            {
                "sid": topo.srv6_node_sid(node_id),
                "endpoint-behavior": "end",
                "algorithm": 0,
                "srv6-sid-structure": {
                    "lb-length": 32,
                    "ln-length": 16,
                    "func-length": 0,
                    "arg-length": 0,
                },
            }
        ]
    if "rsvp-te" in node.te_capabilities:
        view["cisco-crosswork-l3-te-topology:rsvp-te"] = {"enabled": True}
    return view


def _link_views(network: LabNetwork, link_id: str) -> list[dict[str, Any]]:
    """The link's two directions, its own (source → destination) first."""
    topo = network.topology
    link = topo.links[link_id]
    ports = topo.ports[link_id]
    sids = topo.adjacency_sids[link_id]
    status = network.oper_status(link_id)
    views = []
    for cnc_id, (src, src_tp, dst, dst_tp, sid) in zip(
        topo.cnc_link_ids(link_id),
        (
            (link.source, ports[0], link.destination, ports[1], sids[0]),
            (link.destination, ports[1], link.source, ports[0], sids[1]),
        ),
        strict=True,
    ):
        attributes: dict[str, Any] = {
            "metric1": int(link.igp_metric),
            "metric2": int(link.te_metric),
        }
        if "sr-mpls" in topo.nodes[src].te_capabilities:
            attributes["ietf-sr-mpls-topology-state:sr-mpls"] = {
                "sids": [{"sid": sid, "type": "adjacency"}]
            }
        attributes["cisco-crosswork-l3-te-topology:l3-link-attributes"] = {
            "max-bandwidth-kbps": int(link.capacity_mbps * 1000),
            "srlg": list(link.srlgs),
        }
        attributes["cisco-crosswork-l3-te-topology:oper-status"] = status
        views.append(
            {
                "link-id": cnc_id,
                "source": {"source-node": src, "source-tp": src_tp},
                "destination": {"dest-node": dst, "dest-tp": dst_tp},
                "ietf-l3-unicast-topology-state:l3-link-attributes": attributes,
            }
        )
    return views


@cnc.get(f"{TOPOLOGY}/ietf-network-state:networks")
async def networks(request: Request, lab: LabDep) -> Response:
    """Nodes and directional links; ``limit``/``offset`` window both lists at once."""
    network = lab.network
    injected(network, "topology")
    offset, limit = _window(request)
    topo = network.topology
    nodes = _page(list(topo.nodes), offset, limit)
    links = _page([v for link in topo.links for v in _link_views(network, link)], offset, limit)
    return yang(
        {
            "ietf-network-state:networks": {
                "network": [
                    {
                        "network-id": IGP_NETWORK,
                        "node": [_node_view(network, n) for n in nodes],
                        "ietf-network-topology-state:link": links,
                    }
                ]
            }
        }
    )


@cnc.get(f"{TOPOLOGY}/{PM}:igp-links-performance-metrics/igp-link-pm={{link_id:path}}")
async def link_performance(link_id: str, lab: LabDep) -> Response:
    """One direction of a link: its rate, capacity and delay (numbers as strings)."""
    network = lab.network
    injected(network, "performance-metrics")
    topo = network.topology
    found = topo.directed.get(urllib.parse.unquote(link_id))
    if found is None:
        raise data_missing(f"igp-link-pm {link_id!r}")
    lab_link, forward = found
    link = topo.links[lab_link]
    ports = topo.ports[lab_link]
    src, dst = (link.source, link.destination) if forward else (link.destination, link.source)
    src_tp, dst_tp = ports if forward else (ports[1], ports[0])
    rate_kbps = network.rates()[lab_link] * 1000
    delay_us = network.metrics(lab_link).delay_ms * 1000
    return yang(
        {
            f"{PM}:igp-link-pm": [
                {
                    "link-id": topo.cnc_link_ids(lab_link)[0 if forward else 1],
                    "source": src,
                    "destination": dst,
                    "max-bandwidth-kbps": str(int(link.capacity_mbps * 1000)),
                    "bandwidth-utilization-kbps": str(round(rate_kbps)),
                    "delay": str(round(delay_us)),
                    "interfaces": {"source-interface": src_tp, "destination-interface": dst_tp},
                }
            ]
        }
    )


# --- operation input (malformed → empty 500) -------------------------------------------------


def _items(raw: bytes, list_name: str) -> list[dict[str, Any]]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadInput from None
    data = body.get("input") if isinstance(body, dict) else None
    items = data.get(list_name) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadInput
    return items


def _leaf(item: dict[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    if name not in item or item[name] is None:
        if required:
            raise BadInput
        return None
    value = item[name]
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadInput
    if kind is str and not isinstance(value, str):
        raise BadInput
    return value


def _only(item: dict[str, Any], allowed: set[str]) -> None:
    if set(item) - allowed:
        raise BadInput


def _hops(path: Any, *, sids: bool) -> tuple[Hop, ...]:
    hops = path.get("hops") if isinstance(path, dict) else None
    if not isinstance(hops, list):
        raise BadInput
    out = []
    for entry in hops:
        if not isinstance(entry, dict) or not isinstance(entry.get("hop"), dict):
            raise BadInput
        step = _leaf(entry, "step", int, required=True)
        address = _leaf(entry["hop"], "node-ipv4-address", str, required=True)
        sid = _leaf(entry["hop"], "node-ipv4-sid", int, required=sids)
        out.append(Hop(step=step, address=address, sid=sid))
    return tuple(out)


SR_LEAVES = {
    "head-end",
    "end-point",
    "color",
    "path-name",
    "description",
    "binding-sid",
    "profile-id",
    "sr-policy-path",
}


def _sr_request(item: dict[str, Any], *, full: bool) -> SrRequest:
    """An ``sr-policies[]`` entry; ``full`` for create/modify/dry-run (path-name, path)."""
    _only(item, SR_LEAVES)
    head = _leaf(item, "head-end", str, required=True)
    end = _leaf(item, "end-point", str, required=True)
    color = _leaf(item, "color", int, required=True)
    if not full:
        return SrRequest(head_end=head, end_point=end, color=color)
    path = item.get("sr-policy-path")
    if not isinstance(path, dict):
        raise BadInput
    hops: tuple[Hop, ...] | None = None
    objective = None
    if "hops" in path:
        hops = _hops(path, sids=True)
    elif "path-optimization-objective" in path:
        objective = path["path-optimization-objective"]
        if objective not in OBJECTIVES:
            raise BadInput
    else:
        raise BadInput
    return SrRequest(
        head_end=head,
        end_point=end,
        color=color,
        path_name=_leaf(item, "path-name", str, required=True),
        description=_leaf(item, "description", str) or "",
        binding_sid=_leaf(item, "binding-sid", int),
        profile_id=_leaf(item, "profile-id", int) or 0,
        hops=hops,
        objective=objective,
    )


TUNNEL_LEAVES = {
    "head-end",
    "end-point",
    "path-name",
    "description",
    "signaled-bandwidth",
    "setup-priority",
    "hold-priority",
    "rsvp-te-tunnel-path",
}


def _tunnel_request(item: dict[str, Any], *, full: bool) -> TunnelRequest:
    _only(item, TUNNEL_LEAVES)
    head = _leaf(item, "head-end", str, required=True)
    end = _leaf(item, "end-point", str, required=True)
    name = _leaf(item, "path-name", str, required=True)
    if not full:
        return TunnelRequest(head_end=head, end_point=end, path_name=name)
    path = item.get("rsvp-te-tunnel-path")
    hops = _hops(path, sids=False) if path is not None else None
    setup, hold = _leaf(item, "setup-priority", int), _leaf(item, "hold-priority", int)
    return TunnelRequest(
        head_end=head,
        end_point=end,
        path_name=name,
        description=_leaf(item, "description", str) or "",
        signaled_bandwidth=_leaf(item, "signaled-bandwidth", int) or 0,
        setup_priority=7 if setup is None else setup,
        hold_priority=7 if hold is None else hold,
        hops=hops,
    )


# --- SR-MPLS policy operations ---------------------------------------------------------------


def _sr_result(item: dict[str, Any], state: str, message: str) -> dict[str, Any]:
    return {
        "head-end": item.get("head-end"),
        "end-point": item.get("end-point"),
        "color": item.get("color"),
        "state": state,
        "message": message,
    }


def _dry_run_extra(network: LabNetwork, record: PolicyRecord) -> dict[str, Any]:
    topo = network.topology
    route: list[dict[str, Any]] = []
    for a, link_id in zip(record.nodes, record.links, strict=False):
        link = topo.links[link_id]
        ports = topo.ports[link_id]
        route.append({"node": a, "interface": ports[0] if a == link.source else ports[1]})
    route.append({"node": record.end_point, "interface": None})
    hops = [
        {
            "step": i,
            "sid": network.prefix_sid(node),
            "ip-address": network.address(node),
            "type": "node-sid",
        }
        for i, node in enumerate(record.nodes[1:], start=1)
    ]
    return {"igp-route": route, "segment-list-hops": hops}


async def _operation(
    request: Request,
    lab: Lab,
    *,
    operation: str | None,
    module: str,
    list_name: str,
    parse: Callable[[dict[str, Any]], Any],
    apply: Callable[[dict[str, Any], Any], dict[str, Any]],
    failure: Callable[[dict[str, Any], str], dict[str, Any]],
) -> Response:
    """Run a COE operation entry by entry: one result each, failures inside HTTP 200.

    The whole input is parsed first: one malformed entry is an empty 500 and nothing applies.
    """
    network = lab.network
    if operation is not None:
        injected(network, operation, empty_500=True)
    try:
        parsed = [(item, parse(item)) for item in _items(await request.body(), list_name)]
    except BadInput:
        return Response(status_code=500)
    results = []
    for item, req in parsed:
        fault = network.faults.get(operation) if operation is not None else None
        if operation is not None and fault is not None and fault.status < 400:
            network.take_fault(operation)
            results.append(failure(item, fault.message))
            continue
        try:
            results.append(apply(item, req))
        except PolicyError as exc:
            results.append(failure(item, str(exc)))
    lab.evaluate()  # traffic riding a modified or deleted policy moved
    return yang({f"{module}:output": {"results": results}})


@cnc.post(f"{OPERATIONS}/{SR_MODULE}:{{operation}}")
async def sr_policy_operation(operation: str, request: Request, lab: LabDep) -> Response:
    """``sr-policy-create | -modify | -delete | -dryrun``."""
    network = lab.network

    def create(item: dict[str, Any], req: SrRequest) -> dict[str, Any]:
        return _sr_result(item, "success", network.create_sr(req)[1])

    def modify(item: dict[str, Any], req: SrRequest) -> dict[str, Any]:
        return _sr_result(item, "success", network.modify_sr(req)[1])

    def delete(item: dict[str, Any], req: SrRequest) -> dict[str, Any]:
        message = network.delete_sr(req.head_end, req.end_point, req.color)
        return _sr_result(item, "success", message)

    def dry_run(item: dict[str, Any], req: SrRequest) -> dict[str, Any]:
        record = network.resolve_sr(req)
        return {**_sr_result(item, "success", "dry run"), **_dry_run_extra(network, record)}

    actions = {
        "sr-policy-create": create,
        "sr-policy-modify": modify,
        "sr-policy-delete": delete,
        "sr-policy-dryrun": dry_run,
    }
    apply = actions.get(operation)
    if apply is None:
        raise restconf_error(404, f"unknown operation {SR_MODULE}:{operation}", "unknown-element")
    full = operation != "sr-policy-delete"
    return await _operation(
        request,
        lab,
        operation=None if operation == "sr-policy-dryrun" else operation,
        module=SR_MODULE,
        list_name="sr-policies",
        parse=lambda item: _sr_request(item, full=full),
        apply=apply,
        failure=lambda item, message: _sr_result(item, "failure", message),
    )


# --- RSVP-TE tunnel operations ---------------------------------------------------------------


def _tunnel_result(
    item: dict[str, Any], state: str, message: str, tunnel: TunnelRecord | None = None
) -> dict[str, Any]:
    return {
        "head-end": item.get("head-end"),
        "end-point": item.get("end-point"),
        "path-name": item.get("path-name"),
        "tunnel-id": tunnel.tunnel_id if tunnel is not None else None,
        "state": state,
        "message": message,
    }


@cnc.post(f"{OPERATIONS}/{RSVP_MODULE}:{{operation}}")
async def rsvp_te_operation(operation: str, request: Request, lab: LabDep) -> Response:
    """``rsvp-te-tunnel-create | -modify | -delete | -dryrun``."""
    network = lab.network

    def create(item: dict[str, Any], req: TunnelRequest) -> dict[str, Any]:
        tunnel, message = network.create_tunnel(req)
        return _tunnel_result(item, "success", message, tunnel)

    def modify(item: dict[str, Any], req: TunnelRequest) -> dict[str, Any]:
        tunnel, message = network.modify_tunnel(req)
        return _tunnel_result(item, "success", message, tunnel)

    def delete(item: dict[str, Any], req: TunnelRequest) -> dict[str, Any]:
        tunnel = network.delete_tunnel(req.head_end, req.end_point, req.path_name)
        return _tunnel_result(item, "success", "RSVP-TE tunnel deleted", tunnel)

    def dry_run(item: dict[str, Any], req: TunnelRequest) -> dict[str, Any]:
        record = network.resolve_tunnel(req)
        route = [{"node": n, "ip-address": network.address(n)} for n in record.nodes]
        return {**_tunnel_result(item, "success", "dry run"), "ero": route}

    actions = {
        "rsvp-te-tunnel-create": create,
        "rsvp-te-tunnel-modify": modify,
        "rsvp-te-tunnel-delete": delete,
        "rsvp-te-tunnel-dryrun": dry_run,
    }
    apply = actions.get(operation)
    if apply is None:
        raise restconf_error(404, f"unknown operation {RSVP_MODULE}:{operation}", "unknown-element")
    full = operation != "rsvp-te-tunnel-delete"
    return await _operation(
        request,
        lab,
        operation=None if operation == "rsvp-te-tunnel-dryrun" else "rsvp-te",
        module=RSVP_MODULE,
        list_name="rsvp-te-tunnels",
        parse=lambda item: _tunnel_request(item, full=full),
        apply=apply,
        failure=lambda item, message: _tunnel_result(item, "failure", message),
    )


# --- operational SR policies and RSVP-TE tunnels ----------------------------------------------


def policy_view(network: LabNetwork, p: PolicyRecord) -> dict[str, Any]:
    """One ``sr-policies/policy`` entry; hops are the segments after the head-end."""
    topo = network.topology
    hops: list[dict[str, Any]]
    if p.te_type == "srv6":
        hops = [
            {
                "type": "srv6-node",
                "label": None,
                "local-ip-addr": topo.ipv6_router_id(node),
                "remote-ip-addr": None,
            }
            for node in p.nodes[1:]
        ]
    else:
        hops = [
            {
                "type": "node",
                "label": network.prefix_sid(node),
                "local-ip-addr": network.address(node),
                "remote-ip-addr": None,
            }
            for node in p.nodes[1:]
        ]
    return {
        "headend": network.address(p.head_end),
        "endpoint": network.address(p.end_point),
        "color": p.color,
        "admin-state": "UP",
        "oper-state": "UP" if network.policy_up(p) else "DOWN",
        "sr-policy-type": p.policy_type,
        "policy-details": {
            "binding-sid": p.binding_sid,
            "srv6-binding-sid": p.srv6_binding_sid,
            "pce-controlled": p.origin != "odn",
            "path": [
                {
                    "path-name": p.path_name,
                    "path-type": "explicit" if p.policy_type == "explicit" else "dynamic",
                    "preference": 100,
                    "hop": hops,
                }
            ],
        },
    }


def _sorted_policies(network: LabNetwork) -> list[PolicyRecord]:
    return sorted(
        network.policies.values(),
        key=lambda p: (network.address(p.head_end), network.address(p.end_point), p.color),
    )


@cnc.get(f"{TOPOLOGY}/{SR_LIST}:sr-policies")
async def sr_policies(request: Request, lab: LabDep) -> Response:
    network = lab.network
    injected(network, "sr-policies")
    offset, limit = _window(request)
    policies = _page(_sorted_policies(network), offset, limit)
    return yang({f"{SR_LIST}:sr-policies": {"policy": [policy_view(network, p) for p in policies]}})


@cnc.get(f"{TOPOLOGY}/{SR_LIST}:sr-policies/policy={{key}}")
async def sr_policy(key: str, lab: LabDep) -> Response:
    """Keyed read: ``policy={headend},{endpoint},{color}`` (409 data-missing when absent)."""
    network = lab.network
    injected(network, "sr-policies")
    parts = urllib.parse.unquote(key).split(",")
    if len(parts) != 3 or not parts[2].isdigit():
        raise restconf_error(
            400, f"policy key {key!r} is not headend,endpoint,color", "invalid-value"
        )
    head, end = network.node_at(parts[0]), network.node_at(parts[1])
    policy = network.policies.get((head or "", end or "", int(parts[2])))
    if policy is None:
        raise data_missing(f"policy {key}")
    return yang({f"{SR_LIST}:policy": [policy_view(network, policy)]})


def tunnel_view(network: LabNetwork, t: TunnelRecord) -> dict[str, Any]:
    return {
        "headend": network.address(t.head_end),
        "endpoint": network.address(t.end_point),
        "tunnel-id": t.tunnel_id,
        "path-name": t.path_name,
        "description": t.description,
        "admin-state": "UP",
        "oper-state": "UP" if network.path_up(t.links) else "DOWN",
        "signaled-bandwidth": t.signaled_bandwidth,
        "setup-priority": t.setup_priority,
        "hold-priority": t.hold_priority,
        "path-type": "explicit" if t.explicit else "dynamic",
        "hop": [
            {"step": i, "type": "node", "local-ip-addr": network.address(node)}
            for i, node in enumerate(t.nodes[1:], start=1)
        ],
    }


@cnc.get(f"{TOPOLOGY}/{RSVP_LIST}:rsvp-te-tunnels")
async def rsvp_te_tunnels(lab: LabDep) -> Response:
    network = lab.network
    injected(network, "sr-policies")
    if not network.tunnels:
        raise data_missing("rsvp-te-tunnels")
    tunnels = sorted(network.tunnels.values(), key=lambda t: t.tunnel_id)
    return yang(
        {f"{RSVP_LIST}:rsvp-te-tunnels": {"tunnel": [tunnel_view(network, t) for t in tunnels]}}
    )


# --- services: CAT inventory (operational) ---------------------------------------------------


def _vpn_nodes(service: LabService) -> dict[str, Any]:
    return {
        "vpn-node": [
            {"vpn-node-id": service.head_end, "ne-id": service.head_end},
            {"vpn-node-id": service.end_point, "ne-id": service.end_point},
        ]
    }


def _cat_view(network: LabNetwork, service: LabService, *, config: bool) -> dict[str, Any]:
    kind = "l3vpn" if service.service_type == "l3vpn" else "l2vpn"
    rides = network.rides(service)
    up = network.policy_up(rides)
    changed = max(
        (
            c.since
            for link, c in network.conditions.items()
            if c.down and link in rides.links and not up
        ),
        default=network.started,
    )
    view: dict[str, Any] = {"vpn-id": service.vpn_id}
    if config:
        view["vpn-description"] = service.name
        view["vpn-nodes"] = _vpn_nodes(service)
    view["status"] = {
        "oper-status": {
            "status": "ietf-vpn-common:op-up" if up else "ietf-vpn-common:op-down",
            "last-change": changed.isoformat(),
        }
    }
    view["underlay-transport"] = {
        f"cisco-{kind}-ntw:discovered-underlay-transport": {
            "sr-policy-ref": [
                {
                    "headend": rides.head_end,
                    "color": rides.color,
                    "endpoint": network.address(rides.end_point),
                }
            ]
        }
    }
    return view


def _services_of(network: LabNetwork, kind: str) -> list[LabService]:
    return sorted(
        (s for s in network.topology.services.values() if s.service_type == kind),
        key=lambda s: s.vpn_id,
    )


def _cat_routes(kind: str) -> None:
    model = VPN_MODELS[kind]
    base = f"{INVENTORY}/{model}:{kind}-ntw/vpn-services"

    def listing(request: Request, lab: Lab) -> list[dict[str, Any]]:
        network = lab.network
        injected(network, "services", kind="cat")
        services = _services_of(network, kind)
        if not services:
            raise cat_data_missing(f"{model}:vpn-service")
        config = request.query_params.get("content") != "nonconfig"
        return [_cat_view(network, s, config=config) for s in services]

    @cnc.get(f"{base}/vpn-service", name=f"cat-{kind}-services")
    async def vpn_service_list(request: Request, lab: LabDep) -> Response:
        return yang({f"{model}:vpn-service": listing(request, lab)})

    @cnc.get(base, name=f"cat-{kind}-vpn-services")
    async def vpn_services(request: Request, lab: LabDep) -> Response:
        return yang({f"{model}:vpn-services": {"vpn-service": listing(request, lab)}})

    @cnc.get(f"{base}/vpn-service={{vpn_id}}", name=f"cat-{kind}-service")
    async def vpn_service(vpn_id: str, request: Request, lab: LabDep) -> Response:
        network = lab.network
        injected(network, "services", kind="cat")
        service = network.topology.services.get(vpn_id)
        if service is None or service.service_type != kind:
            raise cat_data_missing(f"vpn-service {vpn_id}")
        config = request.query_params.get("content") != "nonconfig"
        return yang({f"{model}:vpn-service": [_cat_view(network, service, config=config)]})


# --- services through the NSO proxy: config intent and te-service-mapping ---------------------


def _config_view(network: LabNetwork, service: LabService) -> dict[str, Any]:
    view: dict[str, Any] = {
        "vpn-id": service.vpn_id,
        "vpn-description": service.name,
        "vpn-nodes": _vpn_nodes(service),
    }
    color = network.mapping.get(service.vpn_id)
    if color is not None:
        view[TE_MAPPING] = {"te-mapping": {"sr-policy": {"color": color}}}
    return view


def _mapping_colors(body: Any, model: str, kind: str, network: LabNetwork) -> dict[str, int]:
    """The PATCH body's vpn-id → color; a 400 RESTCONF error (nothing applied) otherwise."""
    services = body.get(f"{model}:vpn-services") if isinstance(body, dict) else None
    entries = services.get("vpn-service") if isinstance(services, dict) else None
    if not isinstance(entries, list):
        raise restconf_error(
            400,
            f'the body must be {{"{model}:vpn-services": {{"vpn-service": [...]}}}}',
            "malformed-message",
        )
    colors: dict[str, int] = {}
    for entry in entries:
        vpn_id = entry.get("vpn-id") if isinstance(entry, dict) else None
        if not isinstance(vpn_id, str):
            raise restconf_error(400, "every vpn-service needs a vpn-id", "missing-element")
        service = network.topology.services.get(vpn_id)
        if service is None or service.service_type != kind:
            raise restconf_error(
                400, f"{model}:vpn-service {vpn_id!r} does not exist", "invalid-value"
            )
        mapping = entry.get(TE_MAPPING)
        if mapping is None:
            continue
        try:
            color = mapping["te-mapping"]["sr-policy"]["color"]
        except (KeyError, TypeError):
            raise restconf_error(
                400, f"{vpn_id}: {TE_MAPPING} needs te-mapping.sr-policy.color", "missing-element"
            ) from None
        if not isinstance(color, int) or isinstance(color, bool) or not 1 <= color < 2**32:
            raise restconf_error(400, f"{vpn_id}: color {color!r} is not a uint32", "invalid-value")
        colors[vpn_id] = color
    return colors


def _nso_routes(kind: str) -> None:
    model = VPN_MODELS[kind]
    base = f"{NSO}/{model}:{kind}-ntw/vpn-services"

    @cnc.get(f"{base}/vpn-service", name=f"nso-{kind}-services")
    async def config_list(lab: LabDep) -> Response:
        network = lab.network
        injected(network, "service-config")
        services = _services_of(network, kind)
        if not services:
            raise data_missing(f"{model}:vpn-service")
        return yang({f"{model}:vpn-service": [_config_view(network, s) for s in services]})

    @cnc.patch(base, name=f"nso-{kind}-patch")
    async def patch_services(request: Request, lab: LabDep) -> Response:
        """Merge te-service-mappings: the services ride (head, end, color) while it is up."""
        network = lab.network
        injected(network, "steering")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise restconf_error(400, "the body is not JSON", "malformed-message") from None
        colors = _mapping_colors(body, model, kind, network)
        network.map_services(colors)
        lab.evaluate()  # moving traffic can congest (or relieve) a link
        return Response(status_code=204)

    @cnc.delete(f"{base}/vpn-service={{vpn_id}}/{TE_MAPPING}", name=f"nso-{kind}-unmap")
    async def delete_mapping(vpn_id: str, lab: LabDep) -> Response:
        network = lab.network
        injected(network, "steering")
        service = network.topology.services.get(vpn_id)
        if service is None or service.service_type != kind or not network.unmap(vpn_id):
            raise restconf_error(404, f"{vpn_id}: no {TE_MAPPING}", "invalid-value")
        lab.evaluate()
        return Response(status_code=204)


for _kind in VPN_MODELS:
    _cat_routes(_kind)
    _nso_routes(_kind)


# --- SRv6 policies through the NSO proxy ------------------------------------------------------


def _srv6_config(network: LabNetwork, p: PolicyRecord) -> dict[str, Any]:
    return {
        "name": p.path_name,
        "head-end": [{"name": p.head_end}],
        "tail-end": network.address(p.end_point),
        "color": p.color,
        "description": p.description,
        "path": [
            {
                "preference": 100,
                "dynamic": {
                    "metric-type": "te",
                    "pce": {},
                    "constraints": {"segments": {"sid-algorithm": 128}},
                },
            }
        ],
        "srv6": {"locator": {"locator-name": "ALGO0"}},
    }


def _srv6_body(body: Any, name: str) -> dict[str, Any]:
    """The one policy of a PUT body, checked as NSO would (400 RESTCONF error otherwise)."""
    policies = body.get("cisco-sr-te-cfp-sr-policies:policy") if isinstance(body, dict) else None
    if not isinstance(policies, list) or len(policies) != 1 or not isinstance(policies[0], dict):
        raise restconf_error(
            400,
            'the body must be {"cisco-sr-te-cfp-sr-policies:policy": [{...}]}',
            "malformed-message",
        )
    policy: dict[str, Any] = policies[0]
    if policy.get("name") != name:
        raise restconf_error(
            400, f"the policy's name must be the key in the URL ({name})", "invalid-value"
        )
    if "srv6" not in policy:
        raise restconf_error(
            400, "the lab's NSO proxy takes SRv6 policies only (srv6 missing)", "missing-element"
        )
    for leaf in ("binding-sid", "bandwidth"):
        if leaf in policy:
            raise restconf_error(400, f"{leaf} is not supported with srv6", "invalid-value")
    heads = policy.get("head-end")
    if (
        not isinstance(heads, list)
        or len(heads) != 1
        or not isinstance(heads[0], dict)
        or not isinstance(heads[0].get("name"), str)
    ):
        raise restconf_error(400, 'head-end must be one [{"name": <device>}]', "invalid-value")
    if not isinstance(policy.get("tail-end"), str):
        raise restconf_error(400, "tail-end (an address) is required", "missing-element")
    color = policy.get("color")
    if not isinstance(color, int) or isinstance(color, bool):
        raise restconf_error(400, "color (a uint32) is required", "missing-element")
    paths = policy.get("path")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, dict) for p in paths):
        raise restconf_error(400, "path is required", "missing-element")
    for path in paths:
        if "explicit" in path:
            raise restconf_error(400, "explicit paths are not supported with srv6", "invalid-value")
        if not isinstance(path.get("dynamic"), dict):
            raise restconf_error(400, "each path needs dynamic {...}", "missing-element")
        if "bandwidth" in path["dynamic"]:
            raise restconf_error(400, "bandwidth is not supported with srv6", "invalid-value")
    return policy


def _native_config(network: LabNetwork, p: PolicyRecord) -> str:
    return (
        "segment-routing\n traffic-eng\n"
        f"  policy {p.path_name}\n"
        "   srv6\n    locator ALGO0 binding-sid dynamic behavior ub6-insert-reduced\n"
        f"   color {p.color} end-point ipv6 {network.topology.ipv6_router_id(p.end_point)}\n"
        "   candidate-paths\n    preference 100\n     dynamic\n      pcep\n"
        "      metric\n       type te\n"
    )


@cnc.put(f"{SRV6_POLICIES}/policy={{name}}")
async def put_srv6_policy(name: str, request: Request, lab: LabDep) -> Response:
    """Create (201) or replace (204) an SRv6 policy on a PCE path; ``?dry-run=native``."""
    network = lab.network
    injected(network, "srv6-policy")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise restconf_error(400, "the body is not JSON", "malformed-message") from None
    policy = _srv6_body(body, name)
    head = policy["head-end"][0]["name"]
    description = policy.get("description")
    dry_run = request.query_params.get("dry-run")
    if dry_run is not None:
        if dry_run != "native":
            raise restconf_error(
                400, f"dry-run={dry_run} is not supported (native)", "invalid-value"
            )
        saved = dict(network.policies)
        try:
            record, _ = network.put_srv6(
                name=name,
                head=head,
                tail_addr=policy["tail-end"],
                color=policy["color"],
                description=description if isinstance(description, str) else "",
            )
            native = _native_config(network, record)
        except PolicyError as exc:
            raise restconf_error(400, str(exc), "invalid-value") from None
        finally:
            network.policies = saved
            network.changed()
        return yang({"dry-run-result": {"native": {"device": [{"name": head, "data": native}]}}})
    try:
        _, created = network.put_srv6(
            name=name,
            head=head,
            tail_addr=policy["tail-end"],
            color=policy["color"],
            description=description if isinstance(description, str) else "",
        )
    except PolicyError as exc:
        raise restconf_error(400, str(exc), "invalid-value") from None
    lab.evaluate()
    return Response(status_code=201 if created else 204)


@cnc.get(f"{SRV6_POLICIES}/policy={{name}}")
async def get_srv6_policy(name: str, lab: LabDep) -> Response:
    network = lab.network
    policy = network.srv6_named(name)
    if policy is None:
        raise restconf_error(404, f"policy {name} does not exist", "invalid-value")
    return yang({"cisco-sr-te-cfp-sr-policies:policy": [_srv6_config(network, policy)]})


@cnc.delete(f"{SRV6_POLICIES}/policy={{name}}")
async def delete_srv6_policy(name: str, lab: LabDep) -> Response:
    network = lab.network
    injected(network, "srv6-policy")
    if not network.delete_srv6(name):
        raise restconf_error(404, f"policy {name} does not exist", "invalid-value")
    lab.evaluate()
    return Response(status_code=204)

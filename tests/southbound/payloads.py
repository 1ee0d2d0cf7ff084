"""Payloads in the shapes Cisco documents for CNC 7.x and PCA (docs/southbound.md), for respx.

The test network::

    pe1 ── p1 ── pe4        pe1-p1 twice (Gi0/0/0/0 and a parallel Gi0/0/0/1)
      └─── p2 ───┘          p2-pe4 is listed pe4 → p2 first
"""

from __future__ import annotations

import base64
import json
from typing import Any

CNC = "https://cnc.example:30603"
PCA = "https://pca.example"
SERVICE_URL = "https://cnc.example:30603/app-dashboard"


def jwt(exp: float, sub: str = "cxm") -> str:
    """A real JWT shape (header.payload.signature, base64url) with ``sub`` and ``exp``."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': sub, 'exp': exp})}.c2ln"


def node(
    node_id: str,
    router_id: str,
    *,
    sid: int | None,
    value_type: str = "index",
    srgb: int | None = 16000,
    srv6: str | None = None,
    ipv6: str | None = None,
    rsvp: bool = False,
) -> dict[str, Any]:
    prefix: dict[str, Any] = {"prefix": f"{router_id}/32"}
    if sid is not None:
        prefix["ietf-sr-mpls-topology-state:prefix-sid"] = {
            "value-type": value_type,
            "start-sid": sid,
            "algorithm": 0,
        }
    out: dict[str, Any] = {
        "node-id": node_id,
        "ietf-l3-unicast-topology-state:l3-node-attributes": {
            "name": node_id,
            "router-id": [router_id],
            # A loopback-unrelated prefix first: the node SID comes from the router-id's.
            "prefix": [{"prefix": "192.168.99.0/24"}, prefix],
        },
        "cisco-crosswork-l3-te-topology:rsvp-te": {"enabled": rsvp},
    }
    if srgb is not None:
        out["ietf-sr-mpls-topology-state:sr-mpls"] = {
            "srgb": [{"lower-bound": srgb, "upper-bound": srgb + 7999}]
        }
    if ipv6:
        out["cisco-crosswork-l3-te-topology:ipv6-router-id"] = [ipv6]
    if srv6:
        out["cisco-crosswork-srv6-topology-state:srv6-node-sid"] = [
            {
                "sid": srv6,
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
    return out


def link_id(src: str, stp: str, dst: str, dtp: str) -> str:
    return f"{src} : {stp} : {dst} : {dtp} : ISIS_IPV4_L2"


def link(
    src: str,
    dst: str,
    *,
    tp: str = "GigabitEthernet0/0/0/0",
    metric1: int = 10,
    metric2: int | None = None,
    kbps: int = 10_000_000,
    srlg: list[int] | None = None,
    status: str = "up",
    adj_sid: int = 24001,
) -> dict[str, Any]:
    return {
        "link-id": link_id(src, tp, dst, tp),
        "source": {"source-node": src, "source-tp": tp},
        "destination": {"dest-node": dst, "dest-tp": tp},
        "ietf-l3-unicast-topology-state:l3-link-attributes": {
            "metric1": metric1,
            "metric2": metric1 if metric2 is None else metric2,
            "ietf-sr-mpls-topology-state:sr-mpls": {
                "sids": [{"sid": adj_sid, "type": "adjacency"}]
            },
            "cisco-crosswork-l3-te-topology:l3-link-attributes": {
                "max-bandwidth-kbps": kbps,
                "srlg": srlg or [],
            },
            "cisco-crosswork-l3-te-topology:oper-status": status,
        },
    }


def both(src: str, dst: str, **kwargs: Any) -> list[dict[str, Any]]:
    """A link's two directions, its own direction first (as the lab lists them)."""
    return [link(src, dst, **kwargs), link(dst, src, **kwargs)]


NODES = [
    node(
        "pe1",
        "10.0.0.1",
        sid=1,
        srv6="fc00:0:1::",
        ipv6="fc00::1",
        rsvp=True,
    ),
    node("p1", "10.0.0.11", sid=16011, value_type="absolute", ipv6="fc00::11", srv6="fc00:0:11::"),
    node("p2", "10.0.0.12", sid=12, srgb=17000, rsvp=True),
    node("pe4", "10.0.0.4", sid=4, srv6="fc00:0:4::", ipv6="fc00::4", rsvp=True),
]

LINKS = [
    *both("pe1", "p1", metric1=10, srlg=[100]),
    *both("p1", "pe4", metric1=10),
    *both("pe1", "p2", metric1=10),
    *both("pe4", "p2", metric1=10),
    *both("pe1", "p1", tp="GigabitEthernet0/0/0/1", metric1=30),
]


def networks(nodes: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ietf-network-state:networks": {
            "network": [
                {
                    "network-id": "ISIS_IPV4_L2",
                    "node": nodes,
                    "ietf-network-topology-state:link": links,
                }
            ]
        }
    }


def pm(
    cnc_link_id: str, src: str, dst: str, *, delay_us: int = 2000, util_kbps: int = 4_100_000
) -> dict[str, Any]:
    return {
        "cisco-crosswork-performance-metrics:igp-link-pm": [
            {
                "link-id": cnc_link_id,
                "source": src,
                "destination": dst,
                "max-bandwidth-kbps": "10000000",
                "bandwidth-utilization-kbps": str(util_kbps),
                "delay": str(delay_us),
                "interfaces": {
                    "source-interface": "GigabitEthernet0/0/0/0",
                    "destination-interface": "GigabitEthernet0/0/0/0",
                },
            }
        ]
    }


def data_missing(message: str = "Data does not exist") -> dict[str, Any]:
    return {
        "ietf-restconf:errors": {
            "error": [
                {
                    "error-type": "application",
                    "error-tag": "data-missing",
                    "error-message": message,
                }
            ]
        }
    }


def restconf_error(message: str, tag: str = "invalid-value") -> dict[str, Any]:
    return {
        "ietf-restconf:errors": {
            "error": [{"error-type": "application", "error-tag": tag, "error-message": message}]
        }
    }


def sr_output(
    state: str = "success", message: str = "", *, module: str = "sr-policy", **extra: Any
) -> dict[str, Any]:
    result = {
        "head-end": "10.0.0.1",
        "end-point": "10.0.0.4",
        "color": 1001,
        "state": state,
        "message": message,
    }
    return {
        f"cisco-crosswork-optimization-engine-{module}-operations:output": {
            "results": [result],
            **extra,
        }
    }


def sr_policy_oper(
    headend: str,
    endpoint: str,
    color: int,
    path_name: str,
    hops: list[dict[str, Any]],
    *,
    oper: str = "UP",
    kind: str = "explicit",
    binding_sid: int | None = 24001,
    srv6_binding_sid: str | None = None,
) -> dict[str, Any]:
    return {
        "headend": headend,
        "endpoint": endpoint,
        "color": color,
        "admin-state": "UP",
        "oper-state": oper,
        "sr-policy-type": kind,
        "policy-details": {
            "binding-sid": binding_sid,
            "srv6-binding-sid": srv6_binding_sid,
            "pce-controlled": True,
            "path": [
                {
                    "path-name": path_name,
                    "path-type": kind,
                    "preference": 100,
                    "hop": hops,
                }
            ],
        },
    }


def mpls_hop(label: int | None, address: str | None) -> dict[str, Any]:
    return {"type": "node", "label": label, "local-ip-addr": address, "remote-ip-addr": None}


def srv6_hop(address: str) -> dict[str, Any]:
    return {"type": "srv6-node", "label": None, "local-ip-addr": address, "remote-ip-addr": None}


def sr_policies(*policies: dict[str, Any]) -> dict[str, Any]:
    return {"cisco-crosswork-segment-routing-policy:sr-policies": {"policy": list(policies)}}


def rsvp_tunnels(*tunnels: dict[str, Any]) -> dict[str, Any]:
    return {"cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels": {"tunnel": list(tunnels)}}


def monitored_object(mo_id: str, link_name: str) -> dict[str, Any]:
    src, _, dst = link_name.partition("-")
    return {
        "type": "monitoredObjects",
        "id": mo_id,
        "attributes": {
            "objectName": link_name,
            "objectType": "twamp-sf",
            "meta": {"link": link_name, "source": src, "destination": dst},
        },
    }

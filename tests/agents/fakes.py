"""A fake CNC 7.x, PCA and OSS service inventory at the HTTP layer (respx), speaking the shapes
docs/southbound.md documents (CNC's SSO login and JWT, ietf-network-state topology, keyed
performance metrics, COE SR-policy and RSVP-TE operations, SRv6 through the NSO proxy, the
CAT/NSO L2NM-L3NM services with their te-service-mapping, PCA's login, monitored objects,
aggregate metrics and alerting policies).

The topology reproduces the seed's example: pe1-pe2 and pe2-pe3 carry 15 services
(2 platinum, 5 gold, 8 silver), and with both avoided the delay-shortest way from pe1 to pe4
is pe1 → p1 → p2 → pe4. A slower detour through p3 has the lowest TE metric but only
supports RSVP-TE; p4 supports no TE at all. Every service rides a base (ODN) SR policy of its
tier's color along its path; mapping it to another color moves it onto the policy of that
color while that policy exists and is up.

Tests change the network through the plain dicts (``topology``, ``services``, ``policies``,
``metrics`` …), which are rendered into CNC's shapes on every request.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import respx

from shared.settings import Settings

CNC = "http://cnc.test"
PCA = "http://pca.test"
OSS = "http://oss.test/service-inventory"
ALL_TE = ["sr-mpls", "srv6", "rsvp-te"]
AUTH = {"Authorization": "Bearer test-mesh-token"}

NETWORK = "ISIS_IPV4_L2"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
NETWORKS = f"{TOPOLOGY}/ietf-network-state:networks"
PM = f"{TOPOLOGY}/cisco-crosswork-performance-metrics:igp-links-performance-metrics/igp-link-pm="
SR_LIST = f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies"
RSVP_LIST = f"{TOPOLOGY}/cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"
OPS = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS = f"{OPS}/cisco-crosswork-optimization-engine-sr-policy-operations:"
RSVP_OPS = f"{OPS}/cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations:"
CAT = "/crosswork/nbi/cat-inventory/v1/restconf/data"
NSO = "/crosswork/proxy/nso/restconf/data"
SRV6 = f"{NSO}/cisco-sr-te-cfp:sr-te/cisco-sr-te-cfp-sr-policies:policies/policy="
SSO = "/crosswork/sso/v1/tickets"
TIER_COLOR = {"platinum": 100, "gold": 200, "silver": 300, "bronze": 400}
PCA_METRICS = ("delayAvg", "delayVarAvg", "packetsLostPct")
HEALTHY = {"delayAvg": 5.0, "delayVarAvg": 1.0, "packetsLostPct": 0.0}


async def run_task(
    client: httpx.AsyncClient, task_type: str, payload: dict[str, Any], **envelope: Any
) -> httpx.Response:
    """POST one task envelope to an in-process agent with the mesh token."""
    body = {"task_type": task_type, "payload": payload, **envelope}
    return await client.post("/a2a/tasks", json=body, headers=AUTH)


# --- the network, as tests write it ------------------------------------------------------------


def _node(name: str, sid: int, caps: list[str]) -> dict[str, Any]:
    return {
        "node-id": name,
        "loopback": f"10.0.0.{sid - 16000}",
        "prefix-sid": sid if "sr-mpls" in caps else None,
        "te-capabilities": caps,
    }


def _link(
    a: str, b: str, delay: float, te: float, srlgs: list[int] | None = None
) -> dict[str, Any]:
    return {
        "link-id": f"{a}-{b}",
        "source": a,
        "destination": b,
        "igp-metric": 10,
        "te-metric": te,
        "delay-ms": delay,
        "capacity-mbps": 10000,
        "srlgs": srlgs or [],
        "oper-status": "up",
    }


def seed_topology() -> dict[str, Any]:
    return {
        "nodes": [
            _node("pe1", 16001, ALL_TE),
            _node("pe2", 16002, ALL_TE),
            _node("pe3", 16003, ALL_TE),
            _node("pe4", 16004, ALL_TE),
            _node("p1", 16011, ["sr-mpls", "srv6"]),
            _node("p2", 16012, ["sr-mpls", "srv6"]),
            _node("p3", 16013, ["rsvp-te"]),
            _node("p4", 16014, []),
        ],
        "links": [
            _link("pe1", "pe2", 2, 10),
            _link("pe2", "pe3", 2, 10, [100]),
            _link("pe3", "pe4", 2, 10),
            _link("pe1", "p1", 3, 10),
            _link("p1", "p2", 3, 10, [100]),
            _link("p2", "pe4", 3, 10),
            _link("pe1", "p3", 10, 5),
            _link("p3", "pe4", 10, 5),
            _link("pe1", "p4", 50, 50),
            _link("p4", "pe4", 50, 50),
        ],
    }


def seed_services() -> list[dict[str, Any]]:
    """15 services over the degraded links (2 platinum, 5 gold, 8 silver) and 3 elsewhere.

    ``path`` is the links of the base policy the service rides, from its head-end."""
    out: list[dict[str, Any]] = []
    plan = [("platinum", 2), ("gold", 5), ("silver", 8)]
    n = 0
    for tier, count in plan:
        for _ in range(count):
            n += 1
            out.append(
                {
                    "vpn-id": f"vpn-{n:03d}",
                    "name": f"customer-{n}",
                    "kind": "l3vpn" if n % 3 else "l2vpn",
                    "sla-tier": tier,
                    "head-end": "pe1" if n % 2 else "pe3",
                    "end-point": "pe3" if n % 2 else "pe2",
                    "path": ["pe1-pe2", "pe2-pe3"] if n % 2 else ["pe2-pe3"],
                    "bandwidth-mbps": 100,
                }
            )
    for m, tier in enumerate(["bronze", "gold", "platinum"], start=1):
        out.append(
            {
                "vpn-id": f"vpn-x{m}",
                "name": f"elsewhere-{m}",
                "kind": "l3vpn",
                "sla-tier": tier,
                "head-end": "pe1",
                "end-point": "pe4",
                "path": ["pe1-p1", "p1-p2", "p2-pe4"],
                "bandwidth-mbps": 250,
            }
        )
    return out


def _jwt(sub: str, exp: int = 4_102_444_800) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': sub, 'exp': exp})}.c2ln"


def _restconf_error(status: int, tag: str, message: str) -> httpx.Response:
    error = {"error-type": "application", "error-tag": tag, "error-message": message}
    return httpx.Response(status, json={"ietf-restconf:errors": {"error": [error]}})


def _missing(message: str = "data missing") -> httpx.Response:
    return _restconf_error(409, "data-missing", message)


@dataclass
class FakeNetwork:
    """Stateful CNC + PCA + OSS inventory: what the agents did is recorded for assertions."""

    topology: dict[str, Any] = field(default_factory=seed_topology)
    services: list[dict[str, Any]] = field(default_factory=seed_services)
    policies: list[dict[str, Any]] = field(default_factory=list)
    """Policies created through the northbound: ``head-end``, ``end-point`` (node ids),
    ``color``, ``path-name``, ``binding-sid``, ``te-type``, ``hops`` (node ids after the
    head-end), ``state``; a test may add one with just the key, name and binding SID."""
    creates: list[dict[str, Any]] = field(default_factory=list)
    """Every create as sent, with ``api``: ``coe`` (SR-MPLS), ``nso-srv6`` or ``rsvp-te``."""
    modifies: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    """Every delete: the COE/RSVP-TE key as sent, or ``{"api": "nso-srv6", "name": …}``."""
    mappings: dict[str, int] = field(default_factory=dict)
    """vpn-id → the color its te-service-mapping names."""
    maps: list[dict[str, int]] = field(default_factory=list)
    """Each PATCH of mappings, as vpn-id → color."""
    unmaps: list[str] = field(default_factory=list)
    """Each mapping DELETE, by vpn-id (one that had none included)."""
    utilisation: dict[str, float] = field(default_factory=dict)
    """Mbps per link (either direction) CNC reports; the services' load when not given."""
    no_delay: set[str] = field(default_factory=set)
    """Links whose performance-metrics read answers 409 (no delay known)."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """PCA's measurements per link (``delayAvg``, ``delayVarAvg``, ``packetsLostPct``);
    healthy values for a link or metric not given."""
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"delayAvg": 50.0, "delayVarAvg": 10.0, "packetsLostPct": 1.0}
    )
    srv6_path: list[str] | None = None
    """Node ids the PCE gives the next SRv6 policies (its own TE-shortest path when None)."""
    create_failures: int = 0
    """The next N creates answer 503."""
    lost_answers: int = 0
    """The next N creates create the policy but answer 504 (a lost answer)."""
    services_status: int = 200
    topology_reads: int = 0
    logins: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every CNC call after the login."""

    # --- helpers -----------------------------------------------------------------------------

    def _nodes(self) -> dict[str, dict[str, Any]]:
        return {n["node-id"]: n for n in self.topology["nodes"]}

    def _addr(self, node: str) -> str:
        return str(self._nodes()[node]["loopback"])

    def _by_addr(self, addr: str) -> str | None:
        return next((n for n, d in self._nodes().items() if d["loopback"] == addr), None)

    def _index(self, node: str) -> int:
        return int(self._addr(node).rsplit(".", 1)[1])

    def _link_between(self, a: str, b: str) -> dict[str, Any] | None:
        return next(
            (
                link
                for link in self.topology["links"]
                if {link["source"], link["destination"]} == {a, b}
            ),
            None,
        )

    def _path_up(self, nodes: list[str]) -> bool:
        links = [self._link_between(a, b) for a, b in itertools.pairwise(nodes)]
        return all(link is not None and link["oper-status"] == "up" for link in links)

    def _service_nodes(self, service: dict[str, Any]) -> list[str]:
        """The base policy's nodes: the service's path walked from its head-end."""
        nodes = [service["head-end"]]
        for name in service["path"]:
            a, b = name.split("-", 1)
            nodes.append(b if nodes[-1] == a else a)
        return nodes

    def _base_color(self, service: dict[str, Any]) -> int:
        return int(service.get("color") or TIER_COLOR.get(service["sla-tier"], 400))

    def _full(self, policy: dict[str, Any]) -> dict[str, Any]:
        """A created policy with every field (tests add some with the key only)."""
        hops = policy.get("hops") or [policy["end-point"]]
        nodes = [policy["head-end"], *hops]
        return {
            "te-type": "sr-mpls",
            "sr-policy-type": "explicit",
            **policy,
            "hops": hops,
            "nodes": nodes,
            "state": policy.get("state") or ("up" if self._path_up(nodes) else "down"),
        }

    def _riding(self, service: dict[str, Any]) -> tuple[int, list[str]]:
        """(color, nodes) of the policy the service rides now."""
        color = self.mappings.get(service["vpn-id"])
        if color is not None:
            for policy in map(self._full, self.policies):
                key = (policy["head-end"], policy["end-point"], int(policy["color"]))
                ends = (service["head-end"], service["end-point"], color)
                if key == ends and policy["state"] == "up":
                    return color, policy["nodes"]
        return self._base_color(service), self._service_nodes(service)

    def _base_policies(self) -> list[dict[str, Any]]:
        seen: dict[tuple[str, str, int], dict[str, Any]] = {}
        for service in self.services:
            key = (service["head-end"], service["end-point"], self._base_color(service))
            if key in seen:
                continue
            nodes = self._service_nodes(service)
            seen[key] = {
                "head-end": key[0],
                "end-point": key[1],
                "color": key[2],
                "path-name": f"srte_c_{key[2]}_ep_{self._addr(key[1])}",
                "binding-sid": 900001 + len(seen),
                "te-type": "sr-mpls",
                "sr-policy-type": "odn",
                "hops": nodes[1:],
                "nodes": nodes,
                "state": "up" if self._path_up(nodes) else "down",
            }
        return list(seen.values())

    def load_mbps(self, link: dict[str, Any]) -> float:
        """What CNC reports on the link: the test's figure, else the services riding it."""
        if link["link-id"] in self.utilisation:
            return self.utilisation[link["link-id"]]
        pair = {link["source"], link["destination"]}
        total = 0.0
        for service in self.services:
            _, nodes = self._riding(service)
            if any({a, b} == pair for a, b in itertools.pairwise(nodes)):
                total += float(service["bandwidth-mbps"])
        return total

    # --- CNC rendering -----------------------------------------------------------------------

    def _ifname(self, link: dict[str, Any], end: str) -> str:
        index = self.topology["links"].index(link)
        return f"GigabitEthernet0/0/0/{index}" if end == "a" else f"GigabitEthernet0/0/1/{index}"

    def _cnc_link_id(self, link: dict[str, Any], forward: bool) -> str:
        a, b = link["source"], link["destination"]
        ia, ib = self._ifname(link, "a"), self._ifname(link, "b")
        if forward:
            return f"{a} : {ia} : {b} : {ib} : {NETWORK}"
        return f"{b} : {ib} : {a} : {ia} : {NETWORK}"

    def _cnc_node(self, node: dict[str, Any]) -> dict[str, Any]:
        caps = node["te-capabilities"]
        index = self._index(node["node-id"])
        attrs: dict[str, Any] = {"name": node["node-id"], "router-id": [node["loopback"]]}
        if node.get("prefix-sid") is not None:
            attrs["prefix"] = [
                {
                    "prefix": f"{node['loopback']}/32",
                    "ietf-sr-mpls-topology-state:prefix-sid": {
                        "value-type": "index",
                        "start-sid": int(node["prefix-sid"]) - 16000,
                        "algorithm": 0,
                    },
                }
            ]
        out: dict[str, Any] = {
            "node-id": node["node-id"],
            "ietf-l3-unicast-topology-state:l3-node-attributes": attrs,
            "cisco-crosswork-l3-te-topology:rsvp-te": {"enabled": "rsvp-te" in caps},
        }
        if node.get("prefix-sid") is not None:
            out["ietf-sr-mpls-topology-state:sr-mpls"] = {
                "srgb": [{"lower-bound": 16000, "upper-bound": 23999}]
            }
        if "srv6" in caps:
            out["cisco-crosswork-l3-te-topology:ipv6-router-id"] = [f"fc00::{index:x}"]
            out["cisco-crosswork-srv6-topology-state:srv6-node-sid"] = [
                {
                    "sid": f"fc00:0:{index:x}::",
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

    def _cnc_links(self) -> list[dict[str, Any]]:
        out = []
        for n, link in enumerate(self.topology["links"]):
            for forward in (True, False):
                src, dst = (
                    (link["source"], link["destination"])
                    if forward
                    else (link["destination"], link["source"])
                )
                adjacency_sid = 24000 + 2 * n + int(not forward)
                out.append(
                    {
                        "link-id": self._cnc_link_id(link, forward),
                        "source": {
                            "source-node": src,
                            "source-tp": self._ifname(link, "a" if forward else "b"),
                        },
                        "destination": {
                            "dest-node": dst,
                            "dest-tp": self._ifname(link, "b" if forward else "a"),
                        },
                        "ietf-l3-unicast-topology-state:l3-link-attributes": {
                            "metric1": link["igp-metric"],
                            "metric2": link["te-metric"],
                            "ietf-sr-mpls-topology-state:sr-mpls": {
                                "sids": [{"sid": adjacency_sid, "type": "adjacency"}]
                            },
                            "cisco-crosswork-l3-te-topology:l3-link-attributes": {
                                "max-bandwidth-kbps": int(link["capacity-mbps"] * 1000),
                                "srlg": list(link["srlgs"]),
                            },
                            "cisco-crosswork-l3-te-topology:oper-status": link["oper-status"],
                        },
                    }
                )
        return out

    def _networks(self, request: httpx.Request) -> httpx.Response:
        self.topology_reads += 1
        nodes = [self._cnc_node(n) for n in self.topology["nodes"]]
        links = self._cnc_links()
        limit = request.url.params.get("limit")
        if limit is not None:
            start = int(request.url.params.get("offset", "0"))
            nodes = nodes[start : start + int(limit)]
            links = links[start : start + int(limit)]
        network = {
            "network-id": NETWORK,
            "node": nodes,
            "ietf-network-topology-state:link": links,
        }
        return httpx.Response(200, json={"ietf-network-state:networks": {"network": [network]}})

    def _link_pm(self, cnc_id: str) -> httpx.Response:
        for link in self.topology["links"]:
            for forward in (True, False):
                if self._cnc_link_id(link, forward) != cnc_id:
                    continue
                if link["link-id"] in self.no_delay:
                    return _missing(f"no performance metrics for {cnc_id}")
                src, dst = (
                    (link["source"], link["destination"])
                    if forward
                    else (link["destination"], link["source"])
                )
                pm = {
                    "link-id": cnc_id,
                    "source": src,
                    "destination": dst,
                    "max-bandwidth-kbps": str(int(link["capacity-mbps"] * 1000)),
                    "bandwidth-utilization-kbps": str(int(self.load_mbps(link) * 1000)),
                    "delay": str(int(float(link["delay-ms"]) * 1000)),
                    "interfaces": {
                        "source-interface": self._ifname(link, "a" if forward else "b"),
                        "destination-interface": self._ifname(link, "b" if forward else "a"),
                    },
                }
                return httpx.Response(
                    200, json={"cisco-crosswork-performance-metrics:igp-link-pm": [pm]}
                )
        return _missing(f"unknown link {cnc_id}")

    def _operational(self, policy: dict[str, Any]) -> dict[str, Any]:
        srv6 = policy["te-type"] == "srv6"
        hops = []
        for node in policy["hops"]:
            index = self._index(node)
            if srv6:
                hops.append(
                    {
                        "type": "srv6-node",
                        "label": None,
                        "local-ip-addr": f"fc00::{index:x}",
                        "remote-ip-addr": None,
                    }
                )
            else:
                sid = self._nodes()[node].get("prefix-sid")
                hops.append(
                    {
                        "type": "node",
                        "label": sid,
                        "local-ip-addr": self._addr(node),
                        "remote-ip-addr": None,
                    }
                )
        state = "UP" if policy["state"] == "up" else "DOWN"
        return {
            "headend": self._addr(policy["head-end"]),
            "endpoint": self._addr(policy["end-point"]),
            "color": int(policy["color"]),
            "admin-state": "UP",
            "oper-state": state,
            "sr-policy-type": policy["sr-policy-type"],
            "policy-details": {
                "binding-sid": None if srv6 else policy.get("binding-sid"),
                "srv6-binding-sid": None,
                "pce-controlled": policy["sr-policy-type"] != "odn",
                "path": [
                    {
                        "path-name": policy["path-name"],
                        "path-type": "dynamic" if srv6 else "explicit",
                        "preference": 100,
                        "hop": hops,
                    }
                ],
            },
        }

    def _sr_list(self, request: httpx.Request) -> httpx.Response:
        every = [self._full(p) for p in self.policies if p.get("te-type") != "rsvp-te"]
        listed = [self._operational(p) for p in [*self._base_policies(), *every]]
        tail = request.url.path[len(SR_LIST) :]
        if tail.startswith("/policy="):
            head, end, color = unquote(tail[len("/policy=") :]).split(",")
            listed = [
                p
                for p in listed
                if (p["headend"], p["endpoint"], str(p["color"])) == (head, end, color)
            ]
            if not listed:
                return _missing("no such policy")
        body = {"cisco-crosswork-segment-routing-policy:sr-policies": {"policy": listed}}
        return httpx.Response(200, json=body)

    def _rsvp_list(self) -> httpx.Response:
        tunnels = [self._full(p) for p in self.policies if p.get("te-type") == "rsvp-te"]
        if not tunnels:
            return _missing("no RSVP-TE tunnels")
        listed = [
            {
                "headend": self._addr(t["head-end"]),
                "endpoint": self._addr(t["end-point"]),
                "tunnel-id": t.get("tunnel-id", 1),
                "path-name": t["path-name"],
                "admin-state": "UP",
                "oper-state": "UP" if t["state"] == "up" else "DOWN",
                "hop": [
                    {"step": i, "type": "node", "local-ip-addr": self._addr(n)}
                    for i, n in enumerate(t["hops"], start=1)
                ],
            }
            for t in tunnels
        ]
        body = {"cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels": {"tunnel": listed}}
        return httpx.Response(200, json=body)

    # --- SR policy operations ----------------------------------------------------------------

    def _injected(self) -> httpx.Response | None:
        if self.create_failures > 0:
            self.create_failures -= 1
            return httpx.Response(503, json={"error": "PCE busy"})
        return None

    def _result(self, qualified: str, entry: dict[str, Any], state: str, message: str) -> Any:
        result = {
            "head-end": entry.get("head-end"),
            "end-point": entry.get("end-point"),
            "color": entry.get("color"),
            "state": state,
            "message": message,
        }
        return httpx.Response(200, json={f"{qualified}:output": {"results": [result]}})

    def _sr_op(self, op: str, request: httpx.Request) -> httpx.Response:
        qualified = "cisco-crosswork-optimization-engine-sr-policy-operations"
        entry = json.loads(request.content)["input"]["sr-policies"][0]
        head = self._by_addr(entry["head-end"])
        end = self._by_addr(entry["end-point"])
        key = (head, end, int(entry["color"]))
        existing = next(
            (p for p in self.policies if (p["head-end"], p["end-point"], int(p["color"])) == key),
            None,
        )
        if op == "sr-policy-delete":
            self.deletes.append(entry)
            if existing is None:
                return self._result(qualified, entry, "failure", "SR policy not found in Config DB")
            self.policies.remove(existing)
            return self._result(qualified, entry, "success", "SR policy deleted")
        hops = [
            self._by_addr(h["hop"]["node-ipv4-address"])
            for h in sorted(entry["sr-policy-path"]["hops"], key=lambda h: h["step"])
        ]
        if op == "sr-policy-modify":
            self.modifies.append(entry)
            if existing is None:
                return self._result(qualified, entry, "failure", "SR policy not found")
            existing["hops"] = hops
            return self._result(qualified, entry, "success", "SR policy modified")
        self.creates.append({"api": "coe", **entry})
        if failed := self._injected():
            return failed
        if existing is not None:
            return self._result(qualified, entry, "success", "no change")
        self.policies.append(
            {
                "head-end": head,
                "end-point": end,
                "color": int(entry["color"]),
                "path-name": entry["path-name"],
                "binding-sid": entry.get("binding-sid"),
                "te-type": "sr-mpls",
                "hops": hops,
            }
        )
        if self.lost_answers > 0:
            self.lost_answers -= 1
            return httpx.Response(504, json={"error": "gateway timeout"})
        return self._result(qualified, entry, "success", "SR policy created")

    def _rsvp_op(self, op: str, request: httpx.Request) -> httpx.Response:
        qualified = "cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations"
        entry = json.loads(request.content)["input"]["rsvp-te-tunnels"][0]
        head = self._by_addr(entry["head-end"])
        end = self._by_addr(entry["end-point"])
        existing = next(
            (
                p
                for p in self.policies
                if p.get("te-type") == "rsvp-te" and p["path-name"] == entry["path-name"]
            ),
            None,
        )
        if op == "rsvp-te-tunnel-delete":
            self.deletes.append(entry)
            if existing is None:
                return self._result(
                    qualified, entry, "failure", "RSVP-TE tunnel not found in Config DB"
                )
            self.policies.remove(existing)
            return self._result(qualified, entry, "success", "RSVP-TE tunnel deleted")
        path = entry.get("rsvp-te-tunnel-path", {}).get("hops", [])
        hops = [self._by_addr(h["hop"]["node-ipv4-address"]) for h in path]
        if op == "rsvp-te-tunnel-modify":
            self.modifies.append(entry)
            if existing is None:
                return self._result(qualified, entry, "failure", "RSVP-TE tunnel not found")
            existing["hops"] = hops
            return self._result(qualified, entry, "success", "RSVP-TE tunnel modified")
        self.creates.append({"api": "rsvp-te", **entry})
        if failed := self._injected():
            return failed
        if existing is None:
            self.policies.append(
                {
                    "head-end": head,
                    "end-point": end,
                    "color": 0,
                    "path-name": entry["path-name"],
                    "te-type": "rsvp-te",
                    "tunnel-id": len(self.policies) + 1,
                    "hops": hops,
                }
            )
        return self._result(qualified, entry, "success", "RSVP-TE tunnel created")

    def _pce(self, head: str, end: str) -> list[str]:
        """The TE-shortest path over SRv6 nodes and up links (empty when there is none)."""
        if self.srv6_path is not None:
            return list(self.srv6_path)
        srv6 = {n for n, d in self._nodes().items() if "srv6" in d["te-capabilities"]}
        queue: list[tuple[float, list[str]]] = [(0.0, [head])]
        done: set[str] = set()
        while queue:
            cost, path = heapq.heappop(queue)
            node = path[-1]
            if node == end:
                return path
            if node in done:
                continue
            done.add(node)
            for link in self.topology["links"]:
                if link["oper-status"] != "up" or node not in (link["source"], link["destination"]):
                    continue
                other = link["destination"] if link["source"] == node else link["source"]
                if other in srv6 and other not in done:
                    heapq.heappush(queue, (cost + float(link["te-metric"]), [*path, other]))
        return []

    def _srv6(self, request: httpx.Request, name: str) -> httpx.Response:
        existing = next(
            (p for p in self.policies if p.get("te-type") == "srv6" and p["path-name"] == name),
            None,
        )
        if request.method == "DELETE":
            self.deletes.append({"api": "nso-srv6", "name": name})
            if existing is None:
                return _restconf_error(404, "invalid-value", f"policy {name} not found")
            self.policies.remove(existing)
            return httpx.Response(204)
        [policy] = json.loads(request.content)["cisco-sr-te-cfp-sr-policies:policy"]
        if existing is None:
            self.creates.append({"api": "nso-srv6", **policy})
            if failed := self._injected():
                return failed
        else:
            self.modifies.append({"api": "nso-srv6", **policy})
        head = policy["head-end"][0]["name"]
        end = self._by_addr(policy["tail-end"])
        assert end is not None, policy
        nodes = self._pce(head, end)
        record = {
            "head-end": head,
            "end-point": end,
            "color": int(policy["color"]),
            "path-name": name,
            "te-type": "srv6",
            "sr-policy-type": "dynamic",
            "hops": nodes[1:] or [end],
        }
        if existing is not None:
            existing.update(record)
            return httpx.Response(204)
        self.policies.append(record)
        return httpx.Response(201)

    # --- services ----------------------------------------------------------------------------

    def _service_list(self, kind: str, config: bool) -> httpx.Response:
        if self.services_status != 200:
            return _restconf_error(self.services_status, "operation-failed", "service API down")
        items = []
        for service in (s for s in self.services if s["kind"] == kind):
            if config:
                item: dict[str, Any] = {
                    "vpn-id": service["vpn-id"],
                    "vpn-description": service["name"],
                    "vpn-nodes": {
                        "vpn-node": [
                            {"vpn-node-id": service["head-end"]},
                            {"vpn-node-id": service["end-point"]},
                        ]
                    },
                }
                if service["vpn-id"] in self.mappings:
                    item["ietf-te-service-mapping:te-service-mapping"] = {
                        "te-mapping": {"sr-policy": {"color": self.mappings[service["vpn-id"]]}}
                    }
            else:
                color, nodes = self._riding(service)
                status = "op-up" if self._path_up(nodes) else "op-down"
                item = {
                    "vpn-id": service["vpn-id"],
                    "status": {"oper-status": {"status": f"ietf-vpn-common:{status}"}},
                    "underlay-transport": {
                        f"cisco-{kind}-ntw:discovered-underlay-transport": {
                            "sr-policy-ref": [
                                {
                                    "headend": service["head-end"],
                                    "color": color,
                                    "endpoint": self._addr(service["end-point"]),
                                }
                            ]
                        }
                    },
                }
            items.append(item)
        if not items:
            return _missing("no services")
        return httpx.Response(200, json={f"ietf-{kind}-ntw:vpn-service": items})

    def _map(self, kind: str, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)[f"ietf-{kind}-ntw:vpn-services"]["vpn-service"]
        known = {s["vpn-id"] for s in self.services if s["kind"] == kind}
        wanted: dict[str, int] = {}
        for item in body:
            if item["vpn-id"] not in known:
                return _restconf_error(400, "invalid-value", f"unknown vpn-id {item['vpn-id']}")
            mapping = item["ietf-te-service-mapping:te-service-mapping"]
            wanted[item["vpn-id"]] = int(mapping["te-mapping"]["sr-policy"]["color"])
        self.maps.append(wanted)
        self.mappings.update(wanted)
        return httpx.Response(204)

    def _unmap(self, vpn_id: str) -> httpx.Response:
        self.unmaps.append(vpn_id)
        if self.mappings.pop(vpn_id, None) is None:
            return _restconf_error(404, "invalid-value", "no te-service-mapping")
        return httpx.Response(204)

    # --- dispatch ----------------------------------------------------------------------------

    def cnc(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = request.method
        if path == SSO and method == "POST":
            self.logins += 1
            return httpx.Response(201, text=f"TGT-{self.logins}-fake")
        if path.startswith(f"{SSO}/"):
            if method == "DELETE":
                return httpx.Response(200)
            return httpx.Response(200, text=_jwt("cxm"))
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return httpx.Response(403, text="Unauthorized request")
        self.requests.append((method, path))
        if path == NETWORKS:
            return self._networks(request)
        if path.startswith(PM):
            return self._link_pm(unquote(request.url.raw_path.decode().split("igp-link-pm=", 1)[1]))
        if path.startswith(SR_LIST):
            return self._sr_list(request)
        if path == RSVP_LIST:
            return self._rsvp_list()
        if path.startswith(SR_OPS):
            return self._sr_op(path[len(SR_OPS) :], request)
        if path.startswith(RSVP_OPS):
            return self._rsvp_op(path[len(RSVP_OPS) :], request)
        if path.startswith(SRV6):
            return self._srv6(request, unquote(path[len(SRV6) :]))
        for kind in ("l2vpn", "l3vpn"):
            services = f"ietf-{kind}-ntw:{kind}-ntw/vpn-services"
            if path in (f"{CAT}/{services}/vpn-service", f"{CAT}/{services}"):
                return self._service_list(kind, config=False)
            if path == f"{NSO}/{services}/vpn-service" and method == "GET":
                return self._service_list(kind, config=True)
            if path == f"{NSO}/{services}" and method == "PATCH":
                return self._map(kind, request)
            unmap = re.fullmatch(
                rf"{re.escape(NSO)}/{services}/vpn-service=([^/]+)"
                r"/ietf-te-service-mapping:te-service-mapping",
                path,
            )
            if unmap and method == "DELETE":
                return self._unmap(unquote(unmap.group(1)))
        return httpx.Response(404, json={"error": f"fake CNC has no {method} {path}"})

    # --- PCA ---------------------------------------------------------------------------------

    def _objects(self) -> list[str]:
        return [link["link-id"] for link in self.topology["links"]]

    def pca(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/auth/login":
            return httpx.Response(200, json={}, headers={"authorization": "Bearer pca-token"})
        if request.headers.get("authorization") != "Bearer pca-token":
            return httpx.Response(401, json={"errors": [{"status": "401", "detail": "token"}]})
        if path == "/api/v2/monitored-objects":
            limit = int(request.url.params.get("page[limit]", "100"))
            offset = int(request.url.params.get("page[offset]", "0"))
            names = self._objects()
            data = [
                {
                    "type": "monitoredObjects",
                    "id": f"mo-{name}",
                    "attributes": {
                        "objectName": name,
                        "objectType": "twamp-sf",
                        "meta": {"link": name},
                    },
                }
                for name in names[offset : offset + limit]
            ]
            return httpx.Response(200, json={"data": data, "meta": {"total": len(names)}})
        if path == "/api/v3/metrics/aggregate":
            return self._aggregate(json.loads(request.content))
        if path == "/api/v2/policies/alerting":
            return self._alerting()
        return httpx.Response(404, json={"errors": [{"status": "404", "detail": path}]})

    def _aggregate(self, body: dict[str, Any]) -> httpx.Response:
        attributes = body["data"]["attributes"]
        start = attributes["interval"].split("/")[0]
        result = []
        for query in attributes["metrics"]:
            metric = query["metric"]
            for mo in query["monitoredObjectId"]:
                name = mo.removeprefix("mo-")
                if name not in self._objects():
                    continue
                value = {**HEALTHY, **self.metrics.get(name, {})}.get(metric)
                if value is None:
                    continue
                result.append(
                    {
                        "metric": metric,
                        "monitoredObjectId": mo,
                        "series": [{"timestamp": start, "value": value}],
                    }
                )
        data = {"type": "aggregates", "attributes": {"result": result}}
        return httpx.Response(200, json={"data": data})

    def _alerting(self) -> httpx.Response:
        conditions = [
            {
                "severity": "major",
                "triggersOn": {
                    "metric": {
                        "id": metric,
                        "vendor": "accedian-twamp",
                        "objectType": ["twamp-sf"],
                        "direction": ["2"],
                    },
                    "comparator": "gt",
                    "value": f"{value:g}",
                    "duration": "PT1M",
                },
            }
            for metric, value in self.thresholds.items()
        ]
        policy = {
            "type": "alertPolicies",
            "id": "cxm-lab-link-sla",
            "attributes": {
                "policyName": "link SLA",
                "policyType": "micro-tca",
                "conditions": conditions,
            },
        }
        return httpx.Response(200, json={"data": [policy]})

    # --- OSS ---------------------------------------------------------------------------------

    def oss(self, request: httpx.Request) -> httpx.Response:
        rows = [
            {
                "vpn-id": s["vpn-id"],
                "name": s["name"],
                "sla-tier": s["sla-tier"],
                "bandwidth-mbps": s["bandwidth-mbps"],
                "customer": s["name"].split("-")[0],
            }
            for s in self.services
        ]
        return httpx.Response(200, json={"services": rows})

    def install(self, router: respx.MockRouter) -> None:
        router.route(host="cnc.test").mock(side_effect=self.cnc)
        router.route(host="pca.test").mock(side_effect=self.pca)
        router.route(host="oss.test").mock(side_effect=self.oss)
        # No traffic agent runs beside these tests: its address refuses, as a stopped one's
        # would (the path agent then reads the links' metrics from CNC itself).
        traffic = httpx.URL(Settings().url_of("traffic"))
        router.route(host=traffic.host, port=traffic.port).mock(
            side_effect=httpx.ConnectError("connection refused")
        )


# --- a CNC that only knows its topology (for agents that only read it: io, correlator) -------


@dataclass
class TopologyCnc:
    """CNC's login, topology and performance metrics for a small network, nothing else.

    ``links`` are ``(a, b, srlgs)``; each has the interfaces ``GigabitEthernet0/0/0/<2n>`` at
    ``a`` and ``GigabitEthernet0/0/0/<2n+1>`` at ``b`` (so ``pe2:GigabitEthernet0/0/0/1`` is
    the first link's far end). ``delay_ms`` None answers every delay read with 409.
    """

    nodes: list[str]
    links: list[tuple[str, str, list[int]]]
    delay_ms: float | None = 2.0
    up: bool = True
    calls: int = 0

    def _tp(self, n: int, far: bool) -> str:
        return f"GigabitEthernet0/0/0/{2 * n + int(far)}"

    def document(self) -> dict[str, Any]:
        """The ``ietf-network-state:networks`` answer."""
        nodes = []
        for i, name in enumerate(self.nodes, start=1):
            nodes.append(
                {
                    "node-id": name,
                    "ietf-l3-unicast-topology-state:l3-node-attributes": {
                        "name": name,
                        "router-id": [f"10.0.0.{i}"],
                    },
                }
            )
        links = []
        for n, (a, b, srlgs) in enumerate(self.links):
            for src, dst, src_tp, dst_tp in (
                (a, b, self._tp(n, False), self._tp(n, True)),
                (b, a, self._tp(n, True), self._tp(n, False)),
            ):
                links.append(
                    {
                        "link-id": f"{src} : {src_tp} : {dst} : {dst_tp} : {NETWORK}",
                        "source": {"source-node": src, "source-tp": src_tp},
                        "destination": {"dest-node": dst, "dest-tp": dst_tp},
                        "ietf-l3-unicast-topology-state:l3-link-attributes": {
                            "metric1": 10,
                            "metric2": 10,
                            "cisco-crosswork-l3-te-topology:l3-link-attributes": {
                                "max-bandwidth-kbps": 10_000_000,
                                "srlg": list(srlgs),
                            },
                            "cisco-crosswork-l3-te-topology:oper-status": "up",
                        },
                    }
                )
        network = {"network-id": NETWORK, "node": nodes, "ietf-network-topology-state:link": links}
        return {"ietf-network-state:networks": {"network": [network]}}

    def answer(self, method: str, path: str) -> httpx.Response:
        """CNC's answer to ``method path`` (the path decoded or not)."""
        self.calls += 1
        if not self.up:
            return httpx.Response(503, text="CNC is down")
        if path == SSO and method == "POST":
            return httpx.Response(201, text="TGT-1-topology")
        if path.startswith(f"{SSO}/"):
            return httpx.Response(200, text="" if method == "DELETE" else _jwt("cxm"))
        if path.startswith(NETWORKS):
            return httpx.Response(200, json=self.document())
        if "igp-link-pm=" in path and self.delay_ms is not None:
            link_id = unquote(path.split("igp-link-pm=", 1)[1])
            pm = {"link-id": link_id, "delay": str(int(self.delay_ms * 1000))}
            body = {"cisco-crosswork-performance-metrics:igp-link-pm": [pm]}
            return httpx.Response(200, json=body)
        return _missing(f"no {path}")

    def handler(self, request: httpx.Request) -> httpx.Response:
        """For ``httpx.MockTransport``."""
        return self.answer(request.method, request.url.path)

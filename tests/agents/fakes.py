"""A fake CNC and PCA at the HTTP layer (respx), speaking the shapes shared/southbound.py parses.

The topology reproduces the seed's example: pe1-pe2 and pe2-pe3 carry 15 services
(2 platinum, 5 gold, 8 silver), and with both avoided the delay-shortest way from pe1 to pe4
is pe1 → p1 → p2 → pe4. A slower detour through p3 has the lowest TE metric but only
supports RSVP-TE; p4 supports no TE at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

from shared.southbound import INVENTORY, OPTIMIZATION, SR_OPS, TOPOLOGY

CNC = "http://cnc.test"
PCA = "http://pca.test"
ALL_TE = ["sr-mpls", "srv6", "rsvp-te"]
AUTH = {"Authorization": "Bearer test-mesh-token"}


async def run_task(
    client: httpx.AsyncClient, task_type: str, payload: dict[str, Any], **envelope: Any
) -> httpx.Response:
    """POST one task envelope to an in-process agent with the mesh token."""
    body = {"task_type": task_type, "payload": payload, **envelope}
    return await client.post("/a2a/tasks", json=body, headers=AUTH)


def _node(name: str, sid: int, caps: list[str]) -> dict[str, Any]:
    return {
        "node-id": name,
        "loopback": f"10.0.0.{sid - 16000}",
        "prefix-sid": sid,
        "te-capabilities": caps,
        "role": "pe" if name.startswith("pe") else "p",
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
    """15 services over the degraded links (2 platinum, 5 gold, 8 silver) and 3 elsewhere."""
    out: list[dict[str, Any]] = []
    plan = [("platinum", 2), ("gold", 5), ("silver", 8)]
    n = 0
    for tier, count in plan:
        for _ in range(count):
            n += 1
            path = ["pe1-pe2", "pe2-pe3"] if n % 2 else ["pe3-pe2"]
            out.append(
                {
                    "vpn-id": f"vpn-{n:03d}",
                    "name": f"customer-{n}",
                    "kind": "l3vpn" if n % 3 else "l2vpn",
                    "sla-tier": tier,
                    "head-end": "pe1" if n % 2 else "pe3",
                    "end-point": "pe3" if n % 2 else "pe2",
                    "path": path,
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


@dataclass
class FakeNetwork:
    """Stateful CNC + PCA: what the agents did is recorded for assertions."""

    topology: dict[str, Any] = field(default_factory=seed_topology)
    services: list[dict[str, Any]] = field(default_factory=seed_services)
    policies: list[dict[str, Any]] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    steers: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"delay-avg": 50.0, "delay-var-avg": 10.0, "packets-lost-pct": 1.0}
    )
    create_failures: int = 0
    """The next N sr-policy-create calls answer 503."""
    lost_answers: int = 0
    """The next N sr-policy-create calls create the policy but answer 503 (a lost answer)."""
    services_status: int = 200
    topology_reads: int = 0
    """Healthy metrics are used for a link unless ``metrics`` says otherwise."""

    # --- CNC ---------------------------------------------------------------------------------

    def _topology(self, request: httpx.Request) -> httpx.Response:
        self.topology_reads += 1
        return httpx.Response(200, json={"cisco-crosswork-cxm:topology": self.topology})

    def _services(self, kind: str) -> Any:
        def handler(request: httpx.Request) -> httpx.Response:
            if self.services_status != 200:
                return httpx.Response(self.services_status, json={"error": "service health down"})
            items = [
                {k: v for k, v in s.items() if k != "kind"}
                for s in self.services
                if s["kind"] == kind
            ]
            return httpx.Response(200, json={"vpn-services": {"vpn-service": items}})

        return handler

    def _sr_policies(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"sr-policies": {"sr-policy": self.policies}})

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        policy = body["input"]["sr-policies"][0]
        self.creates.append(policy)
        if self.create_failures > 0:
            self.create_failures -= 1
            return httpx.Response(503, json={"error": "PCE busy"})
        self.policies.append(
            {
                "head-end": policy["head-end"],
                "end-point": policy["end-point"],
                "color": policy["color"],
                "path-name": policy["path-name"],
                "binding-sid": policy["binding-sid"],
                "te-type": policy["cisco-crosswork-cxm:te-type"],
                "hops": [
                    h["hop"].get("node-ipv4-address")
                    for h in policy["sr-policy-path"]["explicit"]["hops"]
                ],
                "state": "up",
            }
        )
        if self.lost_answers > 0:
            self.lost_answers -= 1
            return httpx.Response(504, json={"error": "gateway timeout"})
        return httpx.Response(200, json={"output": {"results": [_ok(policy)]}})

    def _delete(self, request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["input"]["sr-policies"][0]
        self.deletes.append(key)
        before = len(self.policies)
        self.policies = [p for p in self.policies if _key(p) != _key(key)]
        if len(self.policies) == before:
            result = {**_ok(key), "state": "failure", "message": "no such policy"}
        else:
            result = _ok(key)
        return httpx.Response(200, json={"output": {"results": [result]}})

    def _steer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)["input"]
        self.steers.append(body)
        return httpx.Response(200, json={"output": {"status": "ok", "weight": body["weight"]}})

    def _counters(self, request: httpx.Request) -> httpx.Response:
        records = [{"link-id": link, **c} for link, c in self.counters.items()]
        return httpx.Response(200, json={"link-counters": records})

    # --- PCA ---------------------------------------------------------------------------------

    def _metrics(self, request: httpx.Request) -> httpx.Response:
        names = request.url.params["objects"].split(",")
        data = []
        for name in names:
            m = {"delay-avg": 5.0, "delay-var-avg": 1.0, "packets-lost-pct": 0.0}
            m.update(self.metrics.get(name, {}))
            data.append({"objectName": name, **m, "timestamp": "2026-01-19T10:31:00Z"})
        return httpx.Response(200, json={"data": data})

    def _policies(self, request: httpx.Request) -> httpx.Response:
        conditions = [
            {
                "severity": "major",
                "triggersOn": {
                    "duration": "PT1M",
                    "metric": {
                        "vendor": "accedian",
                        "objectType": "twamp-sl",
                        "id": metric,
                        "direction": "sd",
                    },
                    "value": value,
                    "comparator": "gt",
                },
            }
            for metric, value in self.thresholds.items()
        ]
        return httpx.Response(
            200,
            json={
                "data": [{"policyId": "sla", "policyName": "link SLA", "conditions": conditions}]
            },
        )

    def install(self, router: respx.MockRouter) -> None:
        router.get(f"{CNC}{TOPOLOGY}/cisco-crosswork-cxm:topology").mock(side_effect=self._topology)
        for kind in ("l2vpn", "l3vpn"):
            router.get(f"{CNC}{INVENTORY}/ietf-{kind}-ntw:{kind}-ntw/vpn-services").mock(
                side_effect=self._services(kind)
            )
        router.get(f"{CNC}{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies").mock(
            side_effect=self._sr_policies
        )
        router.post(f"{CNC}{SR_OPS}:sr-policy-create").mock(side_effect=self._create)
        router.post(f"{CNC}{SR_OPS}:sr-policy-delete").mock(side_effect=self._delete)
        router.post(f"{CNC}{OPTIMIZATION}/cisco-crosswork-cxm:traffic-steer").mock(
            side_effect=self._steer
        )
        router.get(f"{CNC}{TOPOLOGY}/cisco-crosswork-cxm:link-counters").mock(
            side_effect=self._counters
        )
        router.get(f"{PCA}/api/v2/metrics/links").mock(side_effect=self._metrics)
        router.get(f"{PCA}/api/v2/policies/alerting").mock(side_effect=self._policies)


def _key(p: dict[str, Any]) -> tuple[str, str, int]:
    return p["head-end"], p["end-point"], int(p["color"])


def _ok(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "head-end": p["head-end"],
        "end-point": p["end-point"],
        "color": p["color"],
        "state": "success",
        "message": "",
    }

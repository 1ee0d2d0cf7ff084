"""Southbound REST clients for Cisco Crosswork (CNC) and Cisco PCA (Accedian Skylight).

Agents reach the network only through these clients, with base URLs from settings, so the
same code runs against a real CNC/PCA or the built-in lab. Paths and bodies follow the public
Crosswork NBI (RESTCONF, ``application/yang-data+json``) and Skylight APIs. Where CNC has no
public operation for what CXM needs (per-service steering weights, raw link counters), the
lab serves a ``cisco-crosswork-cxm:`` operation of the same shape; docs/southbound.md lists
which ones those are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel, Field

from shared.errors import SouthboundError

T = TypeVar("T")

YANG_JSON = "application/yang-data+json"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
OPTIMIZATION = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS = f"{OPTIMIZATION}/cisco-crosswork-optimization-engine-sr-policy-operations"
INVENTORY = "/crosswork/nbi/cat-inventory/v1/restconf/data"


class Node(BaseModel):
    node_id: str = Field(alias="node-id")
    loopback: str | None = None
    prefix_sid: int | None = Field(default=None, alias="prefix-sid")
    te_capabilities: list[str] = Field(default_factory=list, alias="te-capabilities")
    role: str | None = None
    model_config = {"populate_by_name": True}


class Link(BaseModel):
    link_id: str = Field(alias="link-id")
    source: str
    destination: str
    igp_metric: float = Field(default=10, alias="igp-metric")
    te_metric: float = Field(default=10, alias="te-metric")
    delay_ms: float = Field(default=1.0, alias="delay-ms")
    capacity_mbps: float = Field(default=10000, alias="capacity-mbps")
    srlgs: list[int] = Field(default_factory=list)
    oper_status: str = Field(default="up", alias="oper-status")
    model_config = {"populate_by_name": True}


class Topology(BaseModel):
    nodes: list[Node]
    links: list[Link]


class Steering(BaseModel):
    """The lab's ``cisco-crosswork-cxm:steering`` leaf: which policy carries how much of it."""

    color: int
    weight: int = Field(ge=0, le=100)  # percent of the service's traffic on the policy


class VpnService(BaseModel):
    vpn_id: str = Field(alias="vpn-id")
    name: str
    service_type: str = Field(alias="service-type")  # l2vpn or l3vpn
    sla_tier: str = Field(alias="sla-tier")
    head_end: str = Field(alias="head-end")
    end_point: str = Field(alias="end-point")
    path: list[str] = Field(default_factory=list)  # links crossed, in order
    bandwidth_mbps: float = Field(default=100, alias="bandwidth-mbps")
    oper_status: str = Field(default="up", alias="oper-status")
    steering: Steering | None = Field(default=None, alias="cisco-crosswork-cxm:steering")
    """Set only on a steered service, and only by the lab (CNC has no such leaf)."""
    model_config = {"populate_by_name": True}


class SrPolicy(BaseModel):
    head_end: str = Field(alias="head-end")
    end_point: str = Field(alias="end-point")
    color: int
    path_name: str = Field(alias="path-name")
    binding_sid: int | None = Field(default=None, alias="binding-sid")
    te_type: str | None = Field(default=None, alias="te-type")
    hops: list[str] = Field(default_factory=list)  # node ids, head-end to end-point
    state: str = "up"
    model_config = {"populate_by_name": True}


class ExplicitPolicy(TypedDict):
    """What create and modify send for one explicit-path policy."""

    head_end: str
    end_point: str
    color: int
    path_name: str
    binding_sid: int
    hops: list[dict[str, Any]]
    description: str
    te_type: str


def _explicit(policy: ExplicitPolicy) -> dict[str, Any]:
    """The COE policy entry, with the lab's ``cisco-crosswork-cxm:te-type`` augmentation."""
    return {
        "head-end": policy["head_end"],
        "end-point": policy["end_point"],
        "color": policy["color"],
        "path-name": policy["path_name"],
        "description": policy["description"],
        "binding-sid": policy["binding_sid"],
        "profile-id": 0,
        "cisco-crosswork-cxm:te-type": policy["te_type"],
        "sr-policy-path": {"explicit": {"hops": policy["hops"]}},
    }


class LinkMetrics(BaseModel):
    object_name: str = Field(alias="objectName")
    delay_ms: float = Field(alias="delay-avg")
    jitter_ms: float = Field(alias="delay-var-avg")
    loss_pct: float = Field(alias="packets-lost-pct")
    timestamp: str
    model_config = {"populate_by_name": True}

    def within(self, limits: Thresholds) -> bool:
        """Below every threshold: reaching one is already a violation (as restore judges it)."""
        return (
            self.delay_ms < limits.delay_ms
            and self.jitter_ms < limits.jitter_ms
            and self.loss_pct < limits.loss_pct
        )


class Thresholds(BaseModel):
    """SLA thresholds from the PCA alert policy: above any of these the link is degraded."""

    delay_ms: float
    jitter_ms: float
    loss_pct: float


class _Client:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        name: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ):
        headers = {"Accept": f"{YANG_JSON}, application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.name = name
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SouthboundError(f"{self.name} unreachable: {exc}", transient=True) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SouthboundError(
                f"{self.name} {method} {path}: HTTP {response.status_code}", transient=True
            )
        if response.status_code >= 400:
            raise SouthboundError(
                f"{self.name} {method} {path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None


class CncClient(_Client):
    """Crosswork Network Controller: topology, services, SR policies, steering."""

    def __init__(self, base_url: str, token: str | None = None, **kwargs: Any):
        super().__init__(base_url, token, name="CNC", **kwargs)

    async def topology(self) -> Topology:
        data = await self._call("GET", f"{TOPOLOGY}/cisco-crosswork-cxm:topology")
        return Topology.model_validate(data["cisco-crosswork-cxm:topology"])

    async def services(self) -> list[VpnService]:
        """L2 and L3 VPN services with their SLA tier and the links their path crosses."""
        out: list[VpnService] = []
        for kind in ("l2vpn", "l3vpn"):
            data = await self._call("GET", f"{INVENTORY}/ietf-{kind}-ntw:{kind}-ntw/vpn-services")
            for item in data["vpn-services"]["vpn-service"]:
                out.append(VpnService.model_validate({**item, "service-type": kind}))
        return out

    async def sr_policies(self) -> list[SrPolicy]:
        data = await self._call(
            "GET", f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies"
        )
        return [SrPolicy.model_validate(p) for p in data["sr-policies"]["sr-policy"]]

    async def create_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """``sr-policy-create`` with an explicit path; returns the per-policy result."""
        return await self._sr_operation("sr-policy-create", _explicit(policy))

    async def modify_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """``sr-policy-modify``: a new explicit path for the policy with this key.

        CNC keeps the policy's binding SID, so traffic steered onto it follows the new path
        without being moved.
        """
        return await self._sr_operation("sr-policy-modify", _explicit(policy))

    async def delete_sr_policy(
        self, *, head_end: str, end_point: str, color: int
    ) -> dict[str, Any]:
        policy = {"head-end": head_end, "end-point": end_point, "color": color}
        return await self._sr_operation("sr-policy-delete", policy)

    async def _sr_operation(self, op: str, policy: dict[str, Any]) -> dict[str, Any]:
        """One policy through a COE SR-policy operation; a ``failure`` result raises."""
        body = {"input": {"sr-policies": [policy]}}
        data = await self._call(
            "POST", f"{SR_OPS}:{op}", json=body, headers={"Content-Type": YANG_JSON}
        )
        return _first_result(data, op)

    async def steer(
        self, *, head_end: str, end_point: str, color: int, services: list[str], protection_pct: int
    ) -> dict[str, Any]:
        """Put ``protection_pct`` percent of the services' traffic on the policy (0 = none)."""
        body = {
            "input": {
                "head-end": head_end,
                "end-point": end_point,
                "color": color,
                "services": services,
                "weight": protection_pct,
            }
        }
        data = await self._call(
            "POST",
            f"{OPTIMIZATION}/cisco-crosswork-cxm:traffic-steer",
            json=body,
            headers={"Content-Type": YANG_JSON},
        )
        return dict(data.get("output", {}))

    async def link_counters(self) -> dict[str, dict[str, float]]:
        """Cumulative octets per link and direction, with the capacity and a sample time."""
        data = await self._call("GET", f"{TOPOLOGY}/cisco-crosswork-cxm:link-counters")
        return {c["link-id"]: c for c in data["link-counters"]}


class PcaClient(_Client):
    """Provider Connectivity Assurance: per-link SLA metrics and the alerting thresholds."""

    def __init__(self, base_url: str, token: str | None = None, **kwargs: Any):
        super().__init__(base_url, token, name="PCA", **kwargs)

    async def link_metrics(self, links: list[str]) -> dict[str, LinkMetrics]:
        data = await self._call("GET", "/api/v2/metrics/links", params={"objects": ",".join(links)})
        return {m["objectName"]: LinkMetrics.model_validate(m) for m in data["data"]}

    async def thresholds(self) -> Thresholds:
        """The raise thresholds of the SLA alert policy (delay, jitter, loss)."""
        data = await self._call("GET", "/api/v2/policies/alerting")
        found: dict[str, float] = {}
        for policy in data["data"]:
            for cond in policy.get("conditions", []):
                trig = cond["triggersOn"]
                found[trig["metric"]["id"]] = float(trig["value"])
        return Thresholds(
            delay_ms=found.get("delay-avg", 50.0),
            jitter_ms=found.get("delay-var-avg", 10.0),
            loss_pct=found.get("packets-lost-pct", 1.0),
        )


def _first_result(data: Any, op: str) -> dict[str, Any]:
    results = (data or {}).get("output", {}).get("results", [])
    if not results:
        raise SouthboundError(f"CNC {op}: empty results")
    result: dict[str, Any] = results[0]
    if result.get("state") == "failure":
        raise SouthboundError(
            f"CNC {op} failed: {result.get('message', 'no message')}",
            transient=bool(result.get("cisco-crosswork-cxm:transient")),
        )
    return result


def link_key(link: str) -> str:
    """A link's name independent of direction: ``pe2-pe1`` and ``pe1-pe2`` are one link."""
    ends = link.split("-")
    return "-".join(sorted(ends)) if len(ends) == 2 else link


@asynccontextmanager
async def southbound_clients(app: Any) -> AsyncIterator[None]:
    """Open ``app.state.cnc`` and ``app.state.pca`` for the app's lifetime, close them after.

    Tests reach an in-process lab by setting ``app.state.southbound_transport``.
    """
    settings = app.state.settings
    transport = getattr(app.state, "southbound_transport", None)
    cnc = CncClient(settings.cnc_base, settings.cnc_token, transport=transport)
    pca = PcaClient(settings.pca_base, settings.pca_token, transport=transport)
    app.state.cnc = cnc
    app.state.pca = pca
    try:
        yield
    finally:
        await cnc.aclose()
        await pca.aclose()


class SharedRead(Generic[T]):
    """A read that is never cached, where callers that arrive while one is under way share it
    (a burst of incidents reads once, and each sees a result at most one read old)."""

    def __init__(self, read: Callable[[], Awaitable[T]]):
        self._read = read
        self._inflight: asyncio.Future[T] | None = None
        self.reads = 0

    async def __call__(self) -> T:
        if self._inflight is None:
            self.reads += 1
            self._inflight = asyncio.ensure_future(self._read())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, finished: asyncio.Future[T]) -> None:
        if self._inflight is finished:
            self._inflight = None

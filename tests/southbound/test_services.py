"""Services (CAT oper + NSO intent + inventory + policy hops), steering by color, shares."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.inventory import ServiceInventory
from shared.southbound import (
    INVENTORY,
    NSO,
    RSVP_TUNNELS,
    SR_POLICIES,
    CncClient,
    VpnService,
    steering_share,
)
from shared.southbound.models import Link, Node, Topology
from shared.southbound.topology import TopologyIndex
from shared.southbound.vpn import with_base_paths
from tests.southbound.conftest import Clock, make_cnc, serve_topology
from tests.southbound.payloads import (
    LINKS,
    NODES,
    both,
    data_missing,
    mpls_hop,
    restconf_error,
    rsvp_tunnels,
    sr_policies,
    sr_policy_oper,
)

L3 = "ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service"
L2 = "ietf-l2vpn-ntw:l2vpn-ntw/vpn-services/vpn-service"
MAPPING = "ietf-te-service-mapping:te-service-mapping"


def oper(
    kind: str,
    vpn_id: str,
    *,
    status: str = "op-up",
    refs: list[dict[str, Any]] | None = None,
    tunnels: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    underlay: dict[str, Any] = {}
    if refs is not None:
        underlay["sr-policy-ref"] = refs
    if tunnels is not None:
        underlay["te-tunnel-ref"] = tunnels
    return {
        "vpn-id": vpn_id,
        "status": {
            "oper-status": {
                "status": f"ietf-vpn-common:{status}",
                "last-change": "2026-11-30T10:00:00Z",
            }
        },
        "underlay-transport": {f"cisco-{kind}-ntw:discovered-underlay-transport": underlay},
    }


def config(
    vpn_id: str, *nodes: str, mapped: int | None = None, description: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vpn-id": vpn_id,
        "vpn-nodes": {"vpn-node": [{"vpn-node-id": n, "ne-id": n} for n in nodes]},
    }
    if description is not None:
        out["vpn-description"] = description
    if mapped is not None:
        out[MAPPING] = {"te-mapping": {"sr-policy": {"color": mapped}}}
    return out


@pytest.fixture
def inventory(tmp_path: Path) -> ServiceInventory:
    path = tmp_path / "inventory.json"
    path.write_text(
        json.dumps(
            {
                "services": [
                    {
                        "vpn-id": "vpn-001",
                        "name": "bank-east-platinum-001",
                        "sla-tier": "platinum",
                        "bandwidth-mbps": 500,
                        "customer": "bank-east",
                    },
                    {
                        "vpn-id": "vpn-002",
                        "name": "retail-gold",
                        "sla-tier": "gold",
                        "bandwidth-mbps": 200,
                        "customer": "retail",
                    },
                    {
                        "vpn-id": "vpn-101",
                        "name": "l2-silver",
                        "sla-tier": "silver",
                        "bandwidth-mbps": 50,
                        "customer": "x",
                    },
                ]
            }
        )
    )
    return ServiceInventory(str(path), default_tier="bronze", default_bandwidth_mbps=10)


@pytest.fixture
async def served(cnc_router: respx.MockRouter, clock: Clock, inventory: ServiceInventory) -> Any:
    serve_topology(cnc_router)
    cnc_router.get(f"{INVENTORY}/{L3}", name="cat-l3").respond(
        200,
        json={
            "ietf-l3vpn-ntw:vpn-service": [
                oper(
                    "l3vpn",
                    "vpn-001",
                    refs=[{"headend": "pe1", "color": 100, "endpoint": "10.0.0.4"}],
                ),
                oper(
                    "l3vpn",
                    "vpn-002",
                    refs=[{"headend": "pe1", "color": 1001, "endpoint": "10.0.0.4"}],
                ),
                oper("l3vpn", "vpn-003", status="op-down"),
            ]
        },
    )
    cnc_router.get(f"{INVENTORY}/{L2}", name="cat-l2").respond(
        200,
        json={
            "ietf-l2vpn-ntw:vpn-service": [
                oper(
                    "l2vpn",
                    "vpn-101",
                    tunnels=[{"tunnel-id": 7, "source": "10.0.0.1", "destination": "10.0.0.4"}],
                )
            ]
        },
    )
    cnc_router.get(f"{NSO}/{L3}", name="nso-l3").respond(
        200,
        json={
            "ietf-l3vpn-ntw:vpn-service": [
                config("vpn-001", "pe1", "pe4"),
                config("vpn-002", "pe1", "pe4", mapped=1001),
                config("vpn-003", "pe1", "pe4", description="no policy"),
                config("vpn-004", "pe4", "pe1"),
            ]
        },
    )
    cnc_router.get(f"{NSO}/{L2}", name="nso-l2").respond(
        200, json={"ietf-l2vpn-ntw:vpn-service": [config("vpn-101", "pe1", "pe4")]}
    )
    cnc_router.get(SR_POLICIES).respond(
        200,
        json=sr_policies(
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                100,
                "own",
                [mpls_hop(17012, "10.0.0.12"), mpls_hop(16004, "10.0.0.4")],
            ),
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                1001,
                "cxm-1",
                [mpls_hop(16011, "10.0.0.11"), mpls_hop(16004, "10.0.0.4")],
            ),
        ),
    )
    cnc_router.get(RSVP_TUNNELS).respond(
        200,
        json=rsvp_tunnels(
            {
                "headend": "10.0.0.1",
                "endpoint": "10.0.0.4",
                "tunnel-id": 7,
                "path-name": "t7",
                "admin-state": "UP",
                "oper-state": "UP",
                "hop": [
                    {"type": "node", "local-ip-addr": "10.0.0.12"},
                    {"type": "node", "local-ip-addr": "10.0.0.4"},
                ],
            }
        ),
    )
    client = make_cnc(cnc_router, clock, inventory=inventory)
    yield client
    await client.aclose()


async def test_services_join_oper_intent_inventory_and_policy_hops(
    served: CncClient, cnc_router: respx.MockRouter
) -> None:
    services = {s.vpn_id: s for s in await served.services()}
    assert list(services) == ["vpn-001", "vpn-002", "vpn-003", "vpn-004", "vpn-101"]
    own = services["vpn-001"]
    assert own.name == "bank-east-platinum-001"
    assert own.service_type == "l3vpn"
    assert (own.sla_tier, own.bandwidth_mbps) == ("platinum", 500)
    assert (own.head_end, own.end_point) == ("pe1", "pe4")
    assert own.path == ["pe1-p2", "pe4-p2"]
    assert own.base_path == own.path  # not steered: it rides its base now
    assert own.color == 100
    assert not own.steered and own.mapped_color is None
    assert own.oper_status == "up"
    steered = services["vpn-002"]
    assert steered.path == ["pe1-p1", "p1-pe4"]  # the protection policy it is mapped to
    assert steered.color == 1001
    assert steered.steered and steered.mapped_color == 1001
    # steered, and no unsteered gold service between its ends: its base is the IGP path
    assert steered.base_path == ["pe1-p1", "p1-pe4"]
    cat = cnc_router.routes["cat-l3"].calls.last.request
    assert cat.url.params["content"] == "nonconfig"


async def test_a_service_without_a_policy_rides_the_igp_shortest_path(
    served: CncClient,
) -> None:
    services = {s.vpn_id: s for s in await served.services()}
    igp = services["vpn-003"]
    # pe1-p1-pe4 and pe1-p2-pe4 both cost 20: the lower node-id sequence wins.
    assert igp.path == ["pe1-p1", "p1-pe4"]
    assert igp.color is None
    assert igp.oper_status == "down"
    assert igp.name == "no policy"
    assert (igp.sla_tier, igp.bandwidth_mbps) == ("bronze", 10)  # not in the inventory
    config_only = services["vpn-004"]
    assert (config_only.head_end, config_only.end_point) == ("pe4", "pe1")
    assert config_only.path == ["p1-pe4", "pe1-p1"]
    assert config_only.oper_status == "unknown"


async def test_an_l2_service_on_rsvp_te_rides_its_tunnel(served: CncClient) -> None:
    services = {s.vpn_id: s for s in await served.services()}
    l2 = services["vpn-101"]
    assert l2.service_type == "l2vpn"
    assert l2.path == ["pe1-p2", "pe4-p2"]
    assert l2.color is None
    assert l2.oper_status == "up"


async def test_the_igp_fallback_avoids_down_links(
    served: CncClient, cnc_router: respx.MockRouter
) -> None:
    links = [*both("pe1", "p1", status="down"), *LINKS[2:]]
    serve_topology(cnc_router, NODES, links)
    services = {s.vpn_id: s for s in await served.services()}
    assert services["vpn-003"].path == ["pe1-p2", "pe4-p2"]


async def test_service_mappings_read_the_intent_and_inventory_alone(
    served: CncClient, cnc_router: respx.MockRouter
) -> None:
    """What a cutover step needs, from the two NSO lists and the inventory: the same tier,
    bandwidth and mapping as the folded view, without CAT's lists, policies or topology."""
    mappings = {m.vpn_id: m for m in await served.service_mappings()}
    read = {route.name for route in cnc_router.routes if route.call_count and route.name}
    assert read - {"tgt", "jwt"} == {"nso-l3", "nso-l2"}  # and the login
    assert list(mappings) == ["vpn-001", "vpn-002", "vpn-003", "vpn-004", "vpn-101"]
    services = {s.vpn_id: s for s in await served.services()}
    for vpn_id, m in mappings.items():
        s = services[vpn_id]
        assert (m.service_type, m.sla_tier, m.bandwidth_mbps, m.steered, m.mapped_color) == (
            s.service_type,
            s.sla_tier,
            s.bandwidth_mbps,
            s.steered,
            s.mapped_color,
        )
    assert mappings["vpn-002"].steered and mappings["vpn-002"].mapped_color == 1001


async def test_no_services_at_all_is_an_empty_list(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    serve_topology(cnc_router)
    for path in (f"{INVENTORY}/{L3}", f"{INVENTORY}/{L2}"):
        cnc_router.get(path).respond(
            409, json={"errors": {"error": [{"error-tag": "data-missing"}]}}
        )
    for path in (f"{NSO}/{L3}", f"{NSO}/{L2}"):
        cnc_router.get(path).respond(404, json=restconf_error("no data", "invalid-value"))
    cnc_router.get(SR_POLICIES).respond(409, json=data_missing())
    cnc_router.get(RSVP_TUNNELS).respond(409, json=data_missing())
    assert await cnc.services() == []


# --- steering by color --------------------------------------------------------------------


def service(vpn_id: str, tier: str, mbps: float, kind: str = "l3vpn") -> VpnService:
    return VpnService(
        vpn_id=vpn_id,
        name=vpn_id,
        service_type=kind,
        sla_tier=tier,
        head_end="pe1",
        end_point="pe4",
        bandwidth_mbps=mbps,
    )


async def test_map_services_is_one_patch_per_model(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    l3 = cnc_router.patch(f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services").respond(204)
    l2 = cnc_router.patch(f"{NSO}/ietf-l2vpn-ntw:l2vpn-ntw/vpn-services").respond(204)
    await cnc.map_services(
        [
            service("vpn-001", "gold", 1),
            service("vpn-101", "gold", 1, "l2vpn"),
            service("vpn-002", "gold", 1),
        ],
        1001,
    )
    assert l3.call_count == 1 and l2.call_count == 1
    mapping = {MAPPING: {"te-mapping": {"sr-policy": {"color": 1001}}}}
    assert json.loads(l3.calls.last.request.content) == {
        "ietf-l3vpn-ntw:vpn-services": {
            "vpn-service": [{"vpn-id": "vpn-001", **mapping}, {"vpn-id": "vpn-002", **mapping}]
        }
    }
    assert json.loads(l2.calls.last.request.content) == {
        "ietf-l2vpn-ntw:vpn-services": {"vpn-service": [{"vpn-id": "vpn-101", **mapping}]}
    }
    await cnc.map_services([("vpn-009", "l3vpn")], 1002)
    assert l3.call_count == 2
    await cnc.map_services([], 1002)
    assert l3.call_count == 2


async def test_map_services_unknown_vpn_is_final(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.patch(f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services").respond(
        400, json=restconf_error("unknown vpn-service vpn-404")
    )
    with pytest.raises(SouthboundError, match="vpn-404") as caught:
        await cnc.map_services([("vpn-404", "l3vpn")], 1001)
    assert not caught.value.transient


async def test_map_services_refuses_an_unknown_model(cnc: CncClient) -> None:
    with pytest.raises(ValueError, match="evpn"):
        await cnc.map_services([("vpn-1", "evpn")], 1001)


async def test_unmap_deletes_each_mapping_and_404_is_done(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "vpn-002" in request.url.path:
            return httpx.Response(404, json=restconf_error("no mapping", "invalid-value"))
        return httpx.Response(204)

    route = cnc_router.delete(url__regex=r".*/vpn-service=.*").mock(side_effect=answer)
    await cnc.unmap_services(
        [service("vpn-001", "gold", 1), ("vpn-002", "l3vpn"), ("a/b", "l2vpn")]
    )
    paths = sorted(unquote(c.request.url.raw_path.decode()) for c in route.calls)
    assert paths == [
        f"{NSO}/ietf-l2vpn-ntw:l2vpn-ntw/vpn-services/vpn-service=a/b/{MAPPING}",
        f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service=vpn-001/{MAPPING}",
        f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service=vpn-002/{MAPPING}",
    ]
    raw = {c.request.url.raw_path.decode() for c in route.calls}
    assert any("vpn-service=a%2Fb/" in p for p in raw)  # the key is percent-encoded


async def test_unmap_runs_with_bounded_concurrency_and_raises_after_all(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    inflight = peak = 0
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        if peak >= 2:
            release.set()
        await release.wait()
        inflight -= 1
        if "vpn-3" in request.url.path:
            return httpx.Response(503, text="busy")
        return httpx.Response(204)

    route = cnc_router.delete(url__regex=r".*/vpn-service=.*").mock(side_effect=answer)
    cnc = make_cnc(cnc_router, clock, concurrency=2)
    with pytest.raises(SouthboundError) as caught:
        await cnc.unmap_services([(f"vpn-{i}", "l3vpn") for i in range(6)])
    assert caught.value.transient
    assert peak == 2
    assert route.call_count == 6
    await cnc.aclose()


# --- steering_share --------------------------------------------------------------------------

GROUP = [
    service("vpn-b1", "bronze", 100),
    service("vpn-s2", "silver", 100),
    service("vpn-s1", "silver", 100),
    service("vpn-g1", "gold", 300),
    service("vpn-p1", "platinum", 400),
]


@pytest.mark.parametrize(
    ("pct", "kept"),
    [
        (100, ["vpn-p1", "vpn-g1", "vpn-s1", "vpn-s2", "vpn-b1"]),
        (0, []),
        (-5, []),
        (40, ["vpn-p1"]),  # 400 of 1000 is exactly 40 %
        (41, ["vpn-p1", "vpn-g1"]),
        (70, ["vpn-p1", "vpn-g1"]),
        (75, ["vpn-p1", "vpn-g1", "vpn-s1"]),
        (90, ["vpn-p1", "vpn-g1", "vpn-s1", "vpn-s2"]),
        (91, ["vpn-p1", "vpn-g1", "vpn-s1", "vpn-s2", "vpn-b1"]),
        (1, ["vpn-p1"]),
    ],
)
def test_steering_share_keeps_the_smallest_share_highest_tier_first(
    pct: int, kept: list[str]
) -> None:
    assert steering_share(GROUP, pct) == kept


def test_steering_share_is_deterministic_and_monotonic() -> None:
    shares = [steering_share(list(reversed(GROUP)), pct) for pct in range(0, 101, 5)]
    assert shares == [steering_share(GROUP, pct) for pct in range(0, 101, 5)]
    for smaller, larger in itertools.pairwise(shares):
        assert larger[: len(smaller)] == smaller


def test_steering_share_of_services_without_bandwidth() -> None:
    idle = [service("vpn-2", "gold", 0), service("vpn-1", "gold", 0)]
    assert steering_share(idle, 50) == []
    assert steering_share(idle, 100) == ["vpn-1", "vpn-2"]
    assert steering_share([], 50) == []


def test_a_steered_service_takes_its_unsteered_siblings_base_path() -> None:
    index = TopologyIndex(
        Topology(
            nodes=[Node(node_id=n) for n in ("pe1", "p1", "p2", "pe4")],
            links=[
                Link(link_id=f"{a}-{b}", source=a, destination=b, igp_metric=metric)
                for a, b, metric in (
                    ("pe1", "p1", 10),
                    ("p1", "pe4", 10),
                    ("pe1", "p2", 30),
                    ("p2", "pe4", 30),
                )
            ],
        )
    )
    odn = ["pe1-p2", "p2-pe4"]  # the ODN path: not the IGP's (pe1-p1-pe4)
    tunnel = ["pe1-p1", "p1-pe4"]
    services = [
        service("vpn-1", "gold", 100).model_copy(update={"path": odn}),
        service("vpn-2", "gold", 100).model_copy(update={"path": tunnel, "steered": True}),
        service("vpn-3", "silver", 100).model_copy(update={"path": odn, "steered": True}),
    ]
    based = {s.vpn_id: s.base_path for s in with_base_paths(services, index)}
    assert based == {"vpn-1": odn, "vpn-2": odn, "vpn-3": tunnel}  # vpn-3: the IGP's guess

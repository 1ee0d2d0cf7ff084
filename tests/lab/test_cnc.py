"""The CNC side of the lab over HTTP: topology, performance metrics, SR policies, services."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from services.lab.network import LabNetwork, Thresholds
from services.lab.topology import LabService, default_topology
from tests.lab.conftest import (
    CAT,
    NETWORKS,
    NSO,
    SR_LIST,
    SR_OPS,
    LabHarness,
)

DEGRADED = {"pe1-pe2", "pe2-pe3"}
PROTECT = ("pe1", "p1", "p2", "pe4")
AROUND_P1_P2 = ("pe1", "p1", "p3", "p4", "p2", "pe4")
ADDR = {f"pe{i}": f"10.0.0.{i}" for i in range(1, 7)} | {
    f"p{i}": f"10.0.0.{10 + i}" for i in range(1, 5)
}
NODE_AT = {a: n for n, a in ADDR.items()}
SID = {n: 16000 + int(a.rsplit(".", 1)[1]) for n, a in ADDR.items()}


def hops(*nodes: str) -> list[dict[str, Any]]:
    return [
        {"step": i, "hop": {"node-ipv4-address": ADDR[n], "node-ipv4-sid": SID[n]}}
        for i, n in enumerate(nodes, start=1)
    ]


def policy(
    *nodes: str, color: int = 1001, bsid: int | None = 24001, **extra: Any
) -> dict[str, Any]:
    """A documented sr-policies[] entry along ``nodes`` (head-end first)."""
    entry: dict[str, Any] = {
        "head-end": ADDR[nodes[0]],
        "end-point": ADDR[nodes[-1]],
        "color": color,
        "path-name": f"cxm-INC-2026-0001-{color}",
        "description": "CXM INC-2026-0001",
        "profile-id": 0,
        "sr-policy-path": {"hops": hops(*nodes[1:])},
        **extra,
    }
    if bsid is not None:
        entry["binding-sid"] = bsid
    return entry


def key(*nodes: str, color: int = 1001) -> dict[str, Any]:
    return {"head-end": ADDR[nodes[0]], "end-point": ADDR[nodes[-1]], "color": color}


def policy_nodes(p: dict[str, Any]) -> list[str]:
    """The node path of an operational policy: head-end, then hops by label or address."""
    by_sid = {sid: n for n, sid in SID.items()}
    path = [NODE_AT[p["headend"]]]
    for hop in p["policy-details"]["path"][0]["hop"]:
        path.append(by_sid[hop["label"]] if hop["label"] else NODE_AT[hop["local-ip-addr"]])
    return path


def links_of(nodes: list[str]) -> list[str]:
    return ["-".join(sorted(pair)) for pair in itertools.pairwise(nodes)]


async def services_with_paths(lab: LabHarness) -> dict[str, dict[str, Any]]:
    """Every service as CXM derives it: CAT ref → operational policy → its hops → links."""
    policies = {(p["headend"], p["endpoint"], p["color"]): p for p in await lab.policies()}
    inventory = {
        s["vpn-id"]: s
        for s in (await lab.client.get("/lab/oss/service-inventory")).json()["services"]
    }
    out = {}
    for kind in ("l3vpn", "l2vpn"):
        for svc in await lab.services(kind):
            (ref,) = svc["underlay-transport"][f"cisco-{kind}-ntw:discovered-underlay-transport"][
                "sr-policy-ref"
            ]
            p = policies[(ADDR[ref["headend"]], ref["endpoint"], ref["color"])]
            nodes = policy_nodes(p)
            out[svc["vpn-id"]] = {
                **inventory[svc["vpn-id"]],
                "kind": kind,
                "color": ref["color"],
                "nodes": nodes,
                "path": links_of(nodes),
                "status": svc["status"]["oper-status"]["status"],
            }
    return out


def canon(link: str) -> str:
    return "-".join(sorted(link.split("-")))


# --- topology ------------------------------------------------------------------------------


async def test_topology_is_ietf_network_state_with_te_attributes(lab: LabHarness) -> None:
    data = await lab.get(NETWORKS)
    (network,) = data["ietf-network-state:networks"]["network"]
    assert network["network-id"] == "ISIS_IPV4_L2"
    nodes = {n["node-id"]: n for n in network["node"]}
    assert len(nodes) == 10
    pe1 = nodes["pe1"]
    attrs = pe1["ietf-l3-unicast-topology-state:l3-node-attributes"]
    assert attrs["router-id"] == ["10.0.0.1"]
    (prefix,) = attrs["prefix"]
    assert prefix["prefix"] == "10.0.0.1/32"
    sid = prefix["ietf-sr-mpls-topology-state:prefix-sid"]
    srgb = pe1["ietf-sr-mpls-topology-state:sr-mpls"]["srgb"][0]
    assert srgb["lower-bound"] + sid["start-sid"] == 16001 and sid["value-type"] == "index"
    assert pe1["cisco-crosswork-l3-te-topology:ipv6-router-id"] == ["fc00::1"]
    assert pe1["cisco-crosswork-srv6-topology-state:srv6-node-sid"][0]["sid"] == "fc00:0:1::"
    # pe5 is SRv6 only (no prefix SID), pe6 RSVP-TE only
    assert "ietf-sr-mpls-topology-state:sr-mpls" not in nodes["pe5"]
    assert "cisco-crosswork-srv6-topology-state:srv6-node-sid" in nodes["pe5"]
    assert nodes["pe6"]["cisco-crosswork-l3-te-topology:rsvp-te"] == {"enabled": True}
    assert "cisco-crosswork-l3-te-topology:rsvp-te" not in nodes["pe1"]

    links = network["ietf-network-topology-state:link"]
    assert len(links) == 24  # two directions per link
    forward, backward = links[0], links[1]
    assert forward["link-id"] == (
        "pe1 : GigabitEthernet0/0/0/0 : pe2 : GigabitEthernet0/0/0/0 : ISIS_IPV4_L2"
    )
    assert forward["source"] == {"source-node": "pe1", "source-tp": "GigabitEthernet0/0/0/0"}
    assert backward["source"]["source-node"] == "pe2"
    assert backward["destination"]["dest-node"] == "pe1"
    l3 = forward["ietf-l3-unicast-topology-state:l3-link-attributes"]
    assert (l3["metric1"], l3["metric2"]) == (20, 20)
    te = l3["cisco-crosswork-l3-te-topology:l3-link-attributes"]
    assert te == {"max-bandwidth-kbps": 10_000_000, "srlg": [100]}
    assert l3["ietf-sr-mpls-topology-state:sr-mpls"]["sids"][0]["type"] == "adjacency"
    assert {
        link["ietf-l3-unicast-topology-state:l3-link-attributes"][
            "cisco-crosswork-l3-te-topology:oper-status"
        ]
        for link in links
    } == {"up"}
    assert "cisco-crosswork-cxm" not in str(data)


async def test_topology_pages_with_limit_and_offset(lab: LabHarness) -> None:
    nodes: list[str] = []
    links: list[str] = []
    offset = 0
    while True:
        data = await lab.get(NETWORKS, params={"limit": 4, "offset": offset})
        (network,) = data["ietf-network-state:networks"]["network"]
        nodes += [n["node-id"] for n in network["node"]]
        links += [link["link-id"] for link in network["ietf-network-topology-state:link"]]
        offset += 4
        if len(network["node"]) < 4 and len(network["ietf-network-topology-state:link"]) < 4:
            break
    assert len(nodes) == len(set(nodes)) == 10
    assert len(links) == len(set(links)) == 24
    bad = await lab.cnc("GET", NETWORKS, params={"limit": "x"})
    assert bad.status_code == 400
    assert bad.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "invalid-value"


async def test_performance_metrics_by_link_id(lab: LabHarness) -> None:
    links = await lab.links()
    response = await lab.pm(links[0]["link-id"])
    assert response.status_code == 200
    (entry,) = response.json()["cisco-crosswork-performance-metrics:igp-link-pm"]
    assert entry == {
        "link-id": links[0]["link-id"],
        "source": "pe1",
        "destination": "pe2",
        "max-bandwidth-kbps": "10000000",
        "bandwidth-utilization-kbps": "4100000",
        "delay": "2000",
        "interfaces": {
            "source-interface": "GigabitEthernet0/0/0/0",
            "destination-interface": "GigabitEthernet0/0/0/0",
        },
    }
    back = (await lab.pm(links[1]["link-id"])).json()
    assert back["cisco-crosswork-performance-metrics:igp-link-pm"][0]["source"] == "pe2"
    missing = await lab.pm("pe1 : Gi0/0/0/9 : pe9 : Gi0/0/0/9 : ISIS_IPV4_L2")
    assert missing.status_code == 409
    error = missing.json()["ietf-restconf:errors"]["error"][0]
    assert error["error-tag"] == "data-missing"
    # the delay is what the link measures: a degradation shows
    await lab.client.post("/lab/links/pe1-pe2/degrade", json={"delay_ms": 80})
    after = (await lab.pm(links[0]["link-id"])).json()
    assert after["cisco-crosswork-performance-metrics:igp-link-pm"][0]["delay"] == "82000"


# --- services and the policies they ride -------------------------------------------------------


async def test_degrading_the_seed_links_hurts_2_5_8(lab: LabHarness) -> None:
    services = await services_with_paths(lab)
    assert len(services) == 26
    hurt = [s for s in services.values() if DEGRADED & set(s["path"])]
    assert Counter(s["sla-tier"] for s in hurt) == {"platinum": 2, "gold": 5, "silver": 8}
    assert all(s["nodes"] == ["pe1", "pe2", "pe3", "pe4"] for s in hurt)
    assert {s["kind"] for s in services.values()} == {"l2vpn", "l3vpn"}
    assert "p1-p3" not in {link for s in services.values() for link in s["path"]}
    # every service rides its own base policy, colored by tier
    tier_color = {"platinum": 100, "gold": 200, "silver": 300, "bronze": 400}
    assert all(s["color"] == tier_color[s["sla-tier"]] for s in services.values())
    odn = [p for p in await lab.policies() if p["sr-policy-type"] == "odn"]
    assert len(odn) == 7 and all(p["oper-state"] == "UP" for p in odn)


async def test_the_way_around_is_pe1_p1_p2_pe4(lab: LabHarness) -> None:
    """What the path agent finds: the shortest TE-metric path avoiding the seed links."""
    import networkx as nx

    graph = nx.Graph()
    for link in await lab.links():
        a, b = link["source"]["source-node"], link["destination"]["dest-node"]
        if canon(f"{a}-{b}") not in DEGRADED:
            metric = link["ietf-l3-unicast-topology-state:l3-link-attributes"]["metric2"]
            graph.add_edge(a, b, te=metric)
    assert nx.shortest_path(graph, "pe1", "pe4", weight="te") == list(PROTECT)


def test_services_with_the_same_ends_and_tier_on_different_paths_get_distinct_colors() -> None:
    topo = default_topology()
    first = topo.services["vpn-001"]
    detour = ("pe1", "p1", "p2", "pe4")
    path = topo.links_of(detour)
    assert path is not None
    topo.services["vpn-999"] = LabService(
        vpn_id="vpn-999",
        name="bank-east-platinum-999",
        service_type="l3vpn",
        sla_tier=first.sla_tier,
        head_end="pe1",
        end_point="pe4",
        nodes=detour,
        path=tuple(path),
        bandwidth_mbps=500.0,
    )
    network = LabNetwork(topo, Thresholds(50, 10, 1))
    ours, theirs = network.base["vpn-001"], network.base["vpn-999"]
    assert ours[2] == 100 and theirs[2] == 101
    assert network.policies[theirs].nodes == list(detour)
    assert network.base["vpn-002"] == ours  # same ends, tier and path: the same policy


async def test_cat_config_and_keyed_reads(lab: LabHarness) -> None:
    path = f"{CAT}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service"
    full = await lab.get(path)
    first = full["ietf-l3vpn-ntw:vpn-service"][0]
    assert first["vpn-nodes"]["vpn-node"][0]["vpn-node-id"] == "pe1"
    nonconfig = await lab.services("l3vpn")
    assert "vpn-nodes" not in nonconfig[0]
    assert nonconfig[0]["status"]["oper-status"]["status"] == "ietf-vpn-common:op-up"
    missing = await lab.cnc("GET", f"{path}=vpn-999")
    assert missing.status_code == 409
    assert missing.json()["errors"]["error"][0]["error-tag"] == "data-missing"
    config = await lab.get(f"{NSO}/ietf-l2vpn-ntw:l2vpn-ntw/vpn-services/vpn-service")
    entry = config["ietf-l2vpn-ntw:vpn-service"][0]
    assert {n["vpn-node-id"] for n in entry["vpn-nodes"]["vpn-node"]} == {"pe1", "pe4"}
    assert "ietf-te-service-mapping:te-service-mapping" not in entry


# --- SR policy operations ----------------------------------------------------------------------


async def test_create_list_dry_run_delete(lab: LabHarness) -> None:
    dry = await lab.sr("dryrun", policy(*PROTECT))
    assert dry[0]["state"] == "success"
    assert [h["sid"] for h in dry[0]["segment-list-hops"]] == [16011, 16012, 16004]
    assert [r["node"] for r in dry[0]["igp-route"]] == list(PROTECT)
    assert all(p["sr-policy-type"] == "odn" for p in await lab.policies())  # nothing changed

    (created,) = await lab.sr("create", policy(*PROTECT))
    assert created == {
        "head-end": "10.0.0.1",
        "end-point": "10.0.0.4",
        "color": 1001,
        "state": "success",
        "message": "SR policy created",
    }
    (mine,) = [p for p in await lab.policies() if p["color"] == 1001]
    assert mine["sr-policy-type"] == "explicit" and mine["oper-state"] == "UP"
    assert mine["policy-details"]["binding-sid"] == 24001
    (path,) = mine["policy-details"]["path"]
    assert path["path-name"] == "cxm-INC-2026-0001-1001"
    assert [h["label"] for h in path["hop"]] == [16011, 16012, 16004]
    keyed = await lab.get(f"{SR_LIST}/policy=10.0.0.1,10.0.0.4,1001")
    assert keyed["cisco-crosswork-segment-routing-policy:policy"][0]["color"] == 1001
    absent = await lab.cnc("GET", f"{SR_LIST}/policy=10.0.0.1,10.0.0.4,7")
    assert absent.status_code == 409

    # the same create again changes nothing; another path under the key is refused
    assert (await lab.sr("create", policy(*PROTECT)))[0]["message"] == "no change"
    (clash,) = await lab.sr("create", policy(*AROUND_P1_P2))
    assert (clash["state"], clash["message"]) == ("failure", "SR policy already exists")

    (deleted,) = await lab.sr("delete", key(*PROTECT))
    assert (deleted["state"], deleted["message"]) == ("success", "SR policy deleted")
    (gone,) = await lab.sr("delete", key(*PROTECT))
    assert (gone["state"], gone["message"]) == ("failure", "SR policy not found in Config DB")
    (unknown,) = await lab.sr("modify", policy(*PROTECT))
    assert (unknown["state"], unknown["message"]) == ("failure", "SR policy not found")
    # the base (ODN) policies are not in CNC's config DB
    (odn,) = await lab.sr("delete", key("pe1", "pe4", color=100))
    assert odn["message"] == "SR policy not found in Config DB"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"head-end": "10.9.9.9"}, "head-end 10.9.9.9 is not the TE router-id of any node"),
        ({"end-point": "10.0.0.1", "sr-policy-path": {"hops": hops("p1", "pe1")}}, "same node"),
        ({"color": 0}, "color 0 is outside"),
        ({"binding-sid": 5}, "binding-sid 5 is outside 16..1048575"),
        ({"sr-policy-path": {"hops": hops("p2", "pe4")}}, "no link between pe1 and p2"),
        (
            {
                "sr-policy-path": {
                    "hops": [
                        {
                            "step": 1,
                            "hop": {"node-ipv4-address": "10.0.0.11", "node-ipv4-sid": 16012},
                        },
                        *hops("p2", "pe4")[1:],
                    ]
                }
            },
            "hop 1: node-ipv4-sid 16012 is not the prefix SID of 10.0.0.11",
        ),
        (
            {
                "sr-policy-path": {
                    "hops": [
                        {
                            "step": 1,
                            "hop": {"node-ipv4-address": "192.0.2.1", "node-ipv4-sid": 16011},
                        }
                    ]
                }
            },
            "192.0.2.1 is not the router-id of any node",
        ),
        ({"sr-policy-path": {"hops": hops("p1", "p2")}}, "is not the end-point"),
        ({"end-point": "10.0.0.6"}, "node pe6 does not support SR-MPLS"),
    ],
)
async def test_refused_policies_fail_inside_200(
    lab: LabHarness, entry: dict[str, Any], message: str
) -> None:
    (result,) = await lab.sr("create", {**policy(*PROTECT), **entry})
    assert result["state"] == "failure" and message in result["message"], result
    assert [p for p in await lab.policies() if p["sr-policy-type"] != "odn"] == []


async def test_binding_sid_in_use_and_down_links(lab: LabHarness) -> None:
    await lab.sr("create", policy(*PROTECT))
    (taken,) = await lab.sr("create", policy("pe4", "p2", "p1", "pe1", color=1002))
    assert "binding-sid 24001 is in use" in taken["message"]
    # no binding SID: the lab allocates one
    (auto,) = await lab.sr("create", policy("pe4", "p2", "p1", "pe1", color=1002, bsid=None))
    assert auto["state"] == "success"
    await lab.client.post("/lab/links/p1-p2/degrade", json={"down": True})
    states = {p["color"]: p["oper-state"] for p in await lab.policies() if p["color"] > 1000}
    assert states == {1001: "DOWN", 1002: "DOWN"}
    (refused,) = await lab.sr("create", policy(*PROTECT, color=1003, bsid=24003))
    assert "link p1-p2 on the path is down" in refused["message"]
    # a dynamic path goes round the down link
    dynamic = policy(*PROTECT, color=1004, bsid=24004)
    dynamic["sr-policy-path"] = {"path-optimization-objective": "te-metric"}
    assert (await lab.sr("create", dynamic))[0]["state"] == "success"
    (mine,) = [p for p in await lab.policies() if p["color"] == 1004]
    assert mine["sr-policy-type"] == "dynamic"
    assert "p1-p2" not in links_of(policy_nodes(mine))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"input": {"sr-policies": {}}}',
        b'{"input": {"sr-policies": [{"head-end": "10.0.0.1", "end-point": "10.0.0.4"}]}}',
    ],
)
async def test_malformed_operation_input_is_an_empty_500(lab: LabHarness, body: bytes) -> None:
    for operation in ("create", "modify", "delete", "dryrun"):
        response = await lab.cnc("POST", f"{SR_OPS}:sr-policy-{operation}", content=body)
        assert (response.status_code, response.content) == (500, b""), operation


@pytest.mark.parametrize(
    "change",
    [
        {"path-name": None},
        {"color": "1001"},
        {"sr-policy-path": {"explicit": {"hops": hops("p1", "p2", "pe4")}}},
        {"sr-policy-path": {"hops": [{"step": 1, "hop": {"node-ipv4-address": "10.0.0.11"}}]}},
        {"cisco-crosswork-cxm:te-type": "sr-mpls"},
    ],
)
async def test_missing_or_wrong_leaves_are_an_empty_500(
    lab: LabHarness, change: dict[str, Any]
) -> None:
    entry = {k: v for k, v in {**policy(*PROTECT), **change}.items() if v is not None}
    response = await lab.op(f"{SR_OPS}:sr-policy-create", {"input": {"sr-policies": [entry]}})
    assert (response.status_code, response.content) == (500, b"")
    assert [p for p in await lab.policies() if p["sr-policy-type"] != "odn"] == []


async def test_modify_moves_the_path_and_the_traffic_riding_it(lab: LabHarness) -> None:
    await lab.sr("create", policy(*PROTECT))
    hurt = [v for v, s in (await services_with_paths(lab)).items() if DEGRADED & set(s["path"])]
    await map_services(lab, hurt, 1001)
    assert await lab.rate_mbps("p1-p2") == 4100 and await lab.rate_mbps("p1-p3") == 0

    (moved,) = await lab.sr("modify", policy(*AROUND_P1_P2))
    assert (moved["state"], moved["message"]) == ("success", "SR policy modified")
    (mine,) = [p for p in await lab.policies() if p["color"] == 1001]
    assert policy_nodes(mine) == list(AROUND_P1_P2)
    assert mine["policy-details"]["binding-sid"] == 24001
    assert await lab.rate_mbps("p1-p3") == 4100 and await lab.rate_mbps("p1-p2") == 0
    assert (await lab.sr("modify", policy(*AROUND_P1_P2)))[0]["message"] == "no change"
    state = (await lab.client.get("/lab/state")).json()
    (view,) = state["sr_policies"]
    assert view["hops"] == list(AROUND_P1_P2) and view["binding-sid"] == 24001
    assert {s["weight"] for s in state["steering"].values()} == {100}
    # a refused modify keeps the policy as it was
    (refused,) = await lab.sr("modify", policy("pe1", "p2", "pe4"))
    assert refused["state"] == "failure" and "no link between pe1 and p2" in refused["message"]
    (still,) = [p for p in await lab.policies() if p["color"] == 1001]
    assert policy_nodes(still) == list(AROUND_P1_P2)


async def test_injected_faults_on_operations(lab: LabHarness) -> None:
    path = f"{SR_OPS}:sr-policy-create"
    body = {"input": {"sr-policies": [policy(*PROTECT)]}}
    await lab.client.post("/lab/faults", json={"operation": "sr-policy-create", "status": 503})
    busy = await lab.op(path, body)
    assert busy.status_code == 503 and busy.json()["ietf-restconf:errors"]["error"]
    fault = {"operation": "sr-policy-create", "status": 500, "transient": False}
    await lab.client.post("/lab/faults", json=fault)
    bad = await lab.op(path, body)
    assert (bad.status_code, bad.content) == (500, b"")
    fault = {"operation": "sr-policy-create", "status": 200, "message": "PCE busy"}
    await lab.client.post("/lab/faults", json=fault)
    (soft,) = await lab.sr("create", policy(*PROTECT))
    assert (soft["state"], soft["message"]) == ("failure", "PCE busy")
    assert (await lab.sr("create", policy(*PROTECT)))[0]["state"] == "success"
    await lab.client.post("/lab/faults", json={"operation": "sr-policies", "status": 504})
    assert (await lab.cnc("GET", SR_LIST)).status_code == 504
    assert (await lab.client.get("/lab/faults")).json() == []


# --- steering by color -------------------------------------------------------------------------


async def map_services(lab: LabHarness, vpn_ids: list[str], color: int) -> None:
    """One PATCH per model, as the client does."""
    kinds = {v: s["kind"] for v, s in (await services_with_paths(lab)).items()}
    for kind in ("l3vpn", "l2vpn"):
        mine = [v for v in vpn_ids if kinds[v] == kind]
        if not mine:
            continue
        model = f"ietf-{kind}-ntw"
        body = {
            f"{model}:vpn-services": {
                "vpn-service": [
                    {
                        "vpn-id": v,
                        "ietf-te-service-mapping:te-service-mapping": {
                            "te-mapping": {"sr-policy": {"color": color}}
                        },
                    }
                    for v in mine
                ]
            }
        }
        response = await lab.cnc("PATCH", f"{NSO}/{model}:{kind}-ntw/vpn-services", json=body)
        assert response.status_code == 204, response.text


async def unmap(lab: LabHarness, vpn_id: str, kind: str) -> int:
    model = f"ietf-{kind}-ntw"
    path = (
        f"{NSO}/{model}:{kind}-ntw/vpn-services/vpn-service={vpn_id}"
        "/ietf-te-service-mapping:te-service-mapping"
    )
    return (await lab.cnc("DELETE", path)).status_code


async def test_steering_by_color_moves_traffic_while_the_policy_is_up(lab: LabHarness) -> None:
    services = await services_with_paths(lab)
    hurt = sorted(v for v, s in services.items() if DEGRADED & set(s["path"]))
    assert await lab.rate_mbps("pe1-pe2") == 4100 and await lab.rate_mbps("pe1-p1") == 0
    # mapped before the policy exists: nothing moves yet
    await map_services(lab, hurt, 1001)
    assert await lab.rate_mbps("pe1-pe2") == 4100
    await lab.sr("create", policy(*PROTECT))
    assert await lab.rate_mbps("pe1-pe2") == 0 and await lab.rate_mbps("pe1-p1") == 4100
    assert await lab.rate_mbps("p2-pe4") == 4100 + 1400  # datacenter and campus ride it too
    now = await services_with_paths(lab)
    assert {now[v]["color"] for v in hurt} == {1001}
    assert all(now[v]["nodes"] == list(PROTECT) for v in hurt)
    config = await lab.get(f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service")
    mapped = {
        s["vpn-id"]: s["ietf-te-service-mapping:te-service-mapping"]["te-mapping"]["sr-policy"]
        for s in config["ietf-l3vpn-ntw:vpn-service"]
        if "ietf-te-service-mapping:te-service-mapping" in s
    }
    assert mapped and {m["color"] for m in mapped.values()} == {1001}

    # a share at a time: bronze/silver go home first (here: the silvers)
    silvers = [v for v in hurt if services[v]["sla-tier"] == "silver"]
    for vpn_id in silvers:
        assert await unmap(lab, vpn_id, services[vpn_id]["kind"]) == 204
    assert await unmap(lab, silvers[0], services[silvers[0]]["kind"]) == 404
    assert await lab.rate_mbps("pe1-pe2") == 8 * 200
    assert await lab.rate_mbps("pe1-p1") == 4100 - 1600

    # the policy goes down: the rest falls back to their own policies; back up: back on it
    await lab.client.post("/lab/links/p1-p2/degrade", json={"down": True})
    assert await lab.rate_mbps("pe1-pe2") == 4100
    assert all(
        s["status"] == "ietf-vpn-common:op-up" for s in (await services_with_paths(lab)).values()
    )
    await lab.client.post("/lab/links/p1-p2/recover")
    assert await lab.rate_mbps("pe1-pe2") == 1600
    # the policy is deleted: everything goes home
    await lab.sr("delete", key(*PROTECT))
    assert await lab.rate_mbps("pe1-pe2") == 4100 and await lab.rate_mbps("pe1-p1") == 0
    weights = (await lab.client.get("/lab/state")).json()["steering"]
    assert weights and {w["weight"] for w in weights.values()} == {0}


async def test_steering_errors_apply_nothing(lab: LabHarness) -> None:
    body = {
        "ietf-l3vpn-ntw:vpn-services": {
            "vpn-service": [
                {
                    "vpn-id": "vpn-001",
                    "ietf-te-service-mapping:te-service-mapping": {
                        "te-mapping": {"sr-policy": {"color": 1001}}
                    },
                },
                {
                    "vpn-id": "vpn-nope",
                    "ietf-te-service-mapping:te-service-mapping": {
                        "te-mapping": {"sr-policy": {"color": 1001}}
                    },
                },
            ]
        }
    }
    path = f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services"
    response = await lab.cnc("PATCH", path, json=body)
    assert response.status_code == 400
    assert "vpn-nope" in response.json()["ietf-restconf:errors"]["error"][0]["error-message"]
    assert (await lab.client.get("/lab/state")).json()["steering"] == {}
    # vpn-002 is an L2VPN: not in the L3 model
    body["ietf-l3vpn-ntw:vpn-services"]["vpn-service"][1]["vpn-id"] = "vpn-002"
    assert (await lab.cnc("PATCH", path, json=body)).status_code == 400
    assert (await lab.cnc("PATCH", path, content=b"{")).status_code == 400


async def test_a_down_link_downs_the_services_on_it(lab: LabHarness) -> None:
    await lab.client.post("/lab/links/pe2-pe3/degrade", json={"down": True})
    services = await services_with_paths(lab)
    down = {v for v, s in services.items() if s["status"] == "ietf-vpn-common:op-down"}
    assert down == {v for v, s in services.items() if "pe2-pe3" in s["path"]}
    statuses = {
        link["link-id"].split(" : ")[0] + "-" + link["link-id"].split(" : ")[2]: link[
            "ietf-l3-unicast-topology-state:l3-link-attributes"
        ]["cisco-crosswork-l3-te-topology:oper-status"]
        for link in await lab.links()
    }
    assert statuses["pe2-pe3"] == statuses["pe3-pe2"] == "down"
    odn = {
        (p["color"]): p["oper-state"] for p in await lab.policies() if p["headend"] == "10.0.0.1"
    }
    assert set(odn.values()) == {"DOWN"}


async def test_congestion_shows_in_the_measured_delay(lab: LabHarness) -> None:
    """Pushing the 2.5 G p2-p4 link past 80 % load adds queueing delay and then loss."""
    response = await lab.client.post("/lab/traffic", json={"factor": 3.0, "link": "p2-p4"})
    assert response.status_code == 200
    # 1000 + 400 Mbps x 3 = 4200 Mbps on 2500: 168 % → capped queue, 40 % overflow loss
    assert await lab.rate_mbps("p2-p4") == 4200
    metrics = lab.lab.network.metrics("p2-p4")
    assert metrics.delay_ms == pytest.approx(5 + 40)
    assert metrics.loss_pct == pytest.approx(40.476, abs=0.01)

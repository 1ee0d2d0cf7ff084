"""The CNC side of the lab through the real southbound client: topology, services, policies."""

from __future__ import annotations

from collections import Counter
from typing import Any

import networkx as nx
import pytest

from shared.errors import SouthboundError
from tests.lab.conftest import LabHarness

DEGRADED = {"pe1-pe2", "pe2-pe3"}


def hops(*nodes: str, lab: LabHarness | None = None) -> list[dict[str, Any]]:
    """COE explicit hops by loopback address, as the tunnel agent sends them."""
    return [
        {"step": i + 1, "hop": {"node-ipv4-address": f"10.0.0.{_index(n)}"}}
        for i, n in enumerate(nodes)
    ]


def _index(node: str) -> int:
    return int(node[2:]) if node.startswith("pe") else 10 + int(node[1:])


def explicit(*nodes: str, color: int = 100, bsid: int = 24001) -> dict[str, Any]:
    """The client arguments of an sr-mpls policy along ``nodes`` (create and modify alike)."""
    return {
        "head_end": nodes[0],
        "end_point": nodes[-1],
        "color": color,
        "path_name": f"protect-{color}",
        "binding_sid": bsid,
        "hops": hops(*nodes[1:]),
        "description": "test",
        "te_type": "sr-mpls",
    }


async def create(lab: LabHarness, *nodes: str, color: int = 100, bsid: int = 24001) -> Any:
    return await lab.cnc.create_sr_policy(**explicit(*nodes, color=color, bsid=bsid))


async def test_topology_has_te_attributes(lab: LabHarness) -> None:
    topo = await lab.cnc.topology()
    nodes = {n.node_id: n for n in topo.nodes}
    links = {link.link_id: link for link in topo.links}
    assert {"pe1", "pe2", "pe3", "pe4", "p1", "p2"} <= set(nodes)
    assert "sr-mpls" in nodes["pe1"].te_capabilities and "srv6" in nodes["pe1"].te_capabilities
    assert nodes["pe6"].te_capabilities == ["rsvp-te"]
    assert nodes["pe1"].prefix_sid and nodes["pe1"].loopback == "10.0.0.1"
    assert set(links) >= DEGRADED
    assert links["pe1-pe2"].srlgs == links["pe2-pe3"].srlgs == [100]
    assert all(link.oper_status == "up" and link.capacity_mbps > 0 for link in links.values())


async def test_degrading_the_seed_links_hurts_2_5_8(lab: LabHarness) -> None:
    services = await lab.cnc.services()
    hurt = [s for s in services if DEGRADED & set(s.path)]
    assert len(hurt) == 15
    assert Counter(s.sla_tier for s in hurt) == {"platinum": 2, "gold": 5, "silver": 8}
    assert {(s.head_end, s.end_point) for s in hurt} == {("pe1", "pe4")}
    assert all(s.path == ["pe1-pe2", "pe2-pe3", "pe3-pe4"] for s in hurt)
    others = [s for s in services if not DEGRADED & set(s.path)]
    assert any(s.sla_tier == "bronze" for s in others) and len(others) >= 5
    assert {s.service_type for s in services} == {"l2vpn", "l3vpn"}


async def test_paths_are_contiguous_and_one_link_carries_nothing(lab: LabHarness) -> None:
    topo = await lab.cnc.topology()
    ends = {link.link_id: {link.source, link.destination} for link in topo.links}
    services = await lab.cnc.services()
    for svc in services:
        at = svc.head_end
        for link in svc.path:
            assert at in ends[link], (svc.vpn_id, link)
            (at,) = ends[link] - {at}
        assert at == svc.end_point
    used = {link for s in services for link in s.path}
    assert "p1-p3" in set(ends) - used


async def test_the_way_around_is_pe1_p1_p2_pe4(lab: LabHarness) -> None:
    topo = await lab.cnc.topology()
    graph = nx.Graph()
    for link in topo.links:
        if link.link_id not in DEGRADED:
            graph.add_edge(link.source, link.destination, delay=link.delay_ms, igp=link.igp_metric)
    for metric in ("delay", "igp"):
        assert nx.shortest_path(graph, "pe1", "pe4", weight=metric) == ["pe1", "p1", "p2", "pe4"]
    assert nx.shortest_path(graph, "pe1", "pe4") == ["pe1", "p1", "p2", "pe4"]


async def test_create_list_delete_policy(lab: LabHarness) -> None:
    result = await create(lab, "pe1", "p1", "p2", "pe4")
    assert result["state"] == "success" and result["head-end"] == "pe1"
    (policy,) = await lab.cnc.sr_policies()
    assert policy.hops == ["pe1", "p1", "p2", "pe4"]
    assert (policy.binding_sid, policy.te_type, policy.state) == (24001, "sr-mpls", "up")
    # the same request again (a replayed node) is a success that changes nothing
    again = await create(lab, "pe1", "p1", "p2", "pe4")
    assert again["state"] == "success" and "already exists" in again["message"]
    assert len(await lab.cnc.sr_policies()) == 1
    deleted = await lab.cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=100)
    assert deleted["state"] == "success"
    assert await lab.cnc.sr_policies() == []
    # deleting what is gone is harmless too, so cleanup can be replayed
    gone = await lab.cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=100)
    assert "nothing to delete" in gone["message"]


async def test_hops_by_sid_or_node_id_with_the_head_end_included(lab: LabHarness) -> None:
    result = await lab.cnc.create_sr_policy(
        head_end="pe1",
        end_point="pe4",
        color=7,
        path_name="by-sid",
        binding_sid=24007,
        hops=[
            {"step": 2, "hop": {"node-ipv4-sid": 16011}},
            {"step": 1, "hop": {"node-id": "pe1"}},
            {"step": 3, "hop": {"node-ipv4-sid": 16012}},
        ],
        description="",
        te_type="srv6",
    )
    assert result["hops"] == ["pe1", "p1", "p2", "pe4"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head_end": "pe9"}, "head-end 'pe9' is not a node"),
        ({"hops": [{"step": 1, "hop": {"node-id": "p2"}}]}, "no link between pe1 and p2"),
        ({"hops": [{"step": 1, "hop": {"node-ipv4-address": "192.0.2.1"}}]}, "192.0.2.1"),
        ({"te_type": "rsvp-te"}, "does not support rsvp-te"),
        ({"binding_sid": 5}, "binding-sid 5"),
    ],
)
async def test_invalid_policies_fail_with_a_message(
    lab: LabHarness, change: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "head_end": "pe1",
        "end_point": "pe4",
        "color": 100,
        "path_name": "p",
        "binding_sid": 24001,
        "hops": hops("p1", "p2", "pe4"),
        "description": "",
        "te_type": "sr-mpls",
        **change,
    }
    with pytest.raises(SouthboundError, match=message) as info:
        await lab.cnc.create_sr_policy(**args)
    assert not info.value.transient
    assert await lab.cnc.sr_policies() == []


async def test_binding_sid_and_key_must_be_unique(lab: LabHarness) -> None:
    await create(lab, "pe1", "p1", "p2", "pe4", color=100, bsid=24001)
    with pytest.raises(SouthboundError, match="binding-sid 24001 is in use"):
        await create(lab, "pe4", "p2", "p1", "pe1", color=100, bsid=24001)
    with pytest.raises(SouthboundError, match="already exists with another path"):
        await create(lab, "pe1", "p1", "p2", "pe3", "pe4", color=100, bsid=24001)


AROUND_P1_P2 = ("pe1", "p1", "p3", "p4", "p2", "pe4")


async def test_modify_moves_the_path_and_keeps_binding_sid_color_and_steering(
    lab: LabHarness,
) -> None:
    await create(lab, "pe1", "p1", "p2", "pe4")
    await lab.cnc.steer(head_end="pe1", end_point="pe4", color=100, services=[], protection_pct=100)
    before = await lab.cnc.link_counters()
    assert before["p1-p3"]["rate-mbps"] == 0 and before["p1-p2"]["rate-mbps"] > 0

    result = await lab.cnc.modify_sr_policy(**explicit(*AROUND_P1_P2))
    assert result["state"] == "success" and result["message"] == "policy modified"
    assert result["binding-sid"] == 24001 and result["hops"] == list(AROUND_P1_P2)
    (policy,) = await lab.cnc.sr_policies()
    assert policy.hops == list(AROUND_P1_P2)
    assert (policy.color, policy.binding_sid, policy.te_type) == (100, 24001, "sr-mpls")
    state = (await lab.client.get("/lab/state")).json()
    assert state["sr_policies"][0]["links"] == ["pe1-p1", "p1-p3", "p3-p4", "p2-p4", "p2-pe4"]
    # the steered services stayed on the policy and their traffic now crosses the new path
    assert len(state["steering"]) == 15
    assert {(v["color"], v["weight"]) for v in state["steering"].values()} == {(100, 100)}
    after = await lab.cnc.link_counters()
    assert after["p1-p3"]["rate-mbps"] == before["p1-p2"]["rate-mbps"]
    assert after["p1-p2"]["rate-mbps"] == 0
    # the same modify again (a replayed reroute) succeeds and changes nothing
    again = await lab.cnc.modify_sr_policy(**explicit(*AROUND_P1_P2))
    assert "nothing changed" in again["message"]
    assert [p.hops for p in await lab.cnc.sr_policies()] == [list(AROUND_P1_P2)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"color": 200}, "no policy pe1 → pe4 color 200 to modify"),
        ({"binding_sid": 24002}, "binding-sid cannot change from 24001 to 24002"),
        (
            {"te_type": "srv6", "hops": hops("p1", "p2", "pe4")},
            "te-type cannot change from sr-mpls to srv6",
        ),
        ({"hops": hops("p2", "pe4")}, "no link between pe1 and p2"),
    ],
)
async def test_a_refused_modify_fails_and_keeps_the_policy(
    lab: LabHarness, change: dict[str, Any], message: str
) -> None:
    await create(lab, "pe1", "p1", "p2", "pe4")
    with pytest.raises(SouthboundError, match=message) as info:
        await lab.cnc.modify_sr_policy(**{**explicit(*AROUND_P1_P2), **change})
    assert not info.value.transient
    (policy,) = await lab.cnc.sr_policies()
    assert (policy.hops, policy.binding_sid) == (["pe1", "p1", "p2", "pe4"], 24001)


async def test_modify_faults_are_injected_like_create_and_delete(lab: LabHarness) -> None:
    await create(lab, "pe1", "p1", "p2", "pe4")
    await lab.client.post("/lab/faults", json={"operation": "sr-policy-modify", "status": 503})
    with pytest.raises(SouthboundError, match="HTTP 503") as failed:
        await lab.cnc.modify_sr_policy(**explicit(*AROUND_P1_P2))
    assert failed.value.transient
    await lab.client.post(
        "/lab/faults", json={"operation": "sr-policy-modify", "status": 200, "transient": True}
    )
    with pytest.raises(SouthboundError, match="injected fault on sr-policy-modify") as soft:
        await lab.cnc.modify_sr_policy(**explicit(*AROUND_P1_P2))
    assert soft.value.transient
    assert [p.hops for p in await lab.cnc.sr_policies()] == [["pe1", "p1", "p2", "pe4"]]
    assert (await lab.cnc.modify_sr_policy(**explicit(*AROUND_P1_P2)))["state"] == "success"
    assert [p.hops for p in await lab.cnc.sr_policies()] == [list(AROUND_P1_P2)]
    assert (await lab.client.get("/lab/faults")).json() == []


async def test_a_down_link_refuses_the_policy_and_downs_existing_ones(lab: LabHarness) -> None:
    await create(lab, "pe1", "p1", "p2", "pe4")
    response = await lab.client.post("/lab/links/p1-p2/degrade", json={"down": True})
    assert response.status_code == 200 and response.json()["oper_status"] == "down"
    (policy,) = await lab.cnc.sr_policies()
    assert policy.state == "down"
    links = {link.link_id: link for link in (await lab.cnc.topology()).links}
    assert links["p1-p2"].oper_status == "down"
    with pytest.raises(SouthboundError, match="p1-p2 on the path is down"):
        await create(lab, "pe1", "p1", "p2", "pe4", color=200, bsid=24002)


async def test_steering_moves_traffic_between_paths(lab: LabHarness) -> None:
    """Counters integrate each service on its path x (1 - share) plus the policy x share."""
    network = lab.app.state.lab.network
    now = [1000.0]
    network.clock = lambda: now[0]
    network._last_sample = now[0]
    services = [s.vpn_id for s in await lab.cnc.services() if DEGRADED & set(s.path)]
    await create(lab, "pe1", "p1", "p2", "pe4")

    async def rates_over(seconds: float) -> dict[str, float]:
        before = await lab.cnc.link_counters()
        now[0] += seconds
        after = await lab.cnc.link_counters()
        return {k: (after[k]["octets"] - before[k]["octets"]) * 8 / seconds / 1e6 for k in after}

    base = await rates_over(10)
    assert base["pe1-pe2"] == pytest.approx(4100) and base["pe1-p1"] == pytest.approx(0)
    out = await lab.cnc.steer(
        head_end="pe1", end_point="pe4", color=100, services=services, protection_pct=75
    )
    assert out["weight"] == 75 and len(out["services"]) == 15
    split = await rates_over(10)
    assert split["pe1-pe2"] == pytest.approx(1025) and split["pe1-p1"] == pytest.approx(3075)
    assert split["pe3-pe4"] == pytest.approx(1025 + 900)  # the metro services stay
    await lab.cnc.steer(head_end="pe1", end_point="pe4", color=100, services=[], protection_pct=100)
    state = (await lab.client.get("/lab/state")).json()
    assert len(state["steering"]) == 15
    assert {v["weight"] for v in state["steering"].values()} == {100}
    full = await rates_over(10)
    assert full["pe1-pe2"] == pytest.approx(0) and full["p2-pe4"] == pytest.approx(4100 + 1400)
    counters = await lab.cnc.link_counters()
    assert counters["pe1-p1"]["capacity-mbps"] == 10000 and counters["pe1-p1"]["timestamp"]
    # deleting the policy sends the traffic home
    await lab.cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=100)
    home = await rates_over(10)
    assert home["pe1-pe2"] == pytest.approx(4100) and home["pe1-p1"] == pytest.approx(0)


async def test_congestion_shows_in_pca_metrics(lab: LabHarness) -> None:
    """Pushing the 2.5 G p2-p4 link past 80 % load adds queueing delay and then loss."""
    before = (await lab.pca.link_metrics(["p2-p4"]))["p2-p4"]
    response = await lab.client.post("/lab/traffic", json={"factor": 3.0, "link": "p2-p4"})
    assert response.status_code == 200
    after = (await lab.pca.link_metrics(["p2-p4"]))["p2-p4"]
    # 1000 + 400 Mbps x 3 = 4200 Mbps on 2500: 168 % → capped queue, 40 % overflow loss
    assert after.delay_ms == pytest.approx(before.delay_ms + 40)
    assert after.loss_pct == pytest.approx(40.476, abs=0.01)


async def test_steer_errors(lab: LabHarness) -> None:
    with pytest.raises(SouthboundError, match="no SR policy"):
        await lab.cnc.steer(
            head_end="pe1", end_point="pe4", color=9, services=[], protection_pct=50
        )
    await create(lab, "pe1", "p1", "p2", "pe4")
    with pytest.raises(SouthboundError, match="unknown services: nope"):
        await lab.cnc.steer(
            head_end="pe1", end_point="pe4", color=100, services=["nope"], protection_pct=50
        )
    metro = next(s.vpn_id for s in await lab.cnc.services() if s.head_end == "pe3")
    with pytest.raises(SouthboundError, match="do not run pe1"):
        await lab.cnc.steer(
            head_end="pe1", end_point="pe4", color=100, services=[metro], protection_pct=50
        )
    with pytest.raises(SouthboundError, match="between 0 and 100"):
        await lab.cnc.steer(
            head_end="pe1", end_point="pe4", color=100, services=[], protection_pct=101
        )


async def test_malformed_operation_bodies_are_400(lab: LabHarness) -> None:
    base = "/crosswork/nbi/optimization/v3/restconf/operations"
    for path, body in [
        (f"{base}/cisco-crosswork-optimization-engine-sr-policy-operations:sr-policy-create", {}),
        (f"{base}/cisco-crosswork-optimization-engine-sr-policy-operations:sr-policy-modify", {}),
        (
            f"{base}/cisco-crosswork-optimization-engine-sr-policy-operations:sr-policy-delete",
            {"input": {"sr-policies": []}},
        ),
        (f"{base}/cisco-crosswork-cxm:traffic-steer", {"input": {"head-end": "pe1"}}),
    ]:
        response = await lab.client.post(path, json=body)
        assert response.status_code == 400, path
        assert response.json()["ietf-restconf:errors"]["error"][0]["error-message"]

"""SR policy operations (bodies exactly as documented) and the operational policy lists."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.southbound import (
    OPERATIONS,
    RSVP_OPS_MODULE,
    RSVP_TUNNELS,
    SR_OPS_MODULE,
    SR_POLICIES,
    SRV6_POLICY,
    CncClient,
)
from tests.southbound.conftest import serve_topology
from tests.southbound.payloads import (
    LINKS,
    NODES,
    data_missing,
    mpls_hop,
    node,
    restconf_error,
    rsvp_tunnels,
    sr_output,
    sr_policies,
    sr_policy_oper,
    srv6_hop,
)

POLICY: dict[str, Any] = {
    "head_end": "pe1",
    "end_point": "pe4",
    "color": 1001,
    "path_name": "cxm-INC-2026-0001-1",
    "binding_sid": 24001,
    "hops": ["pe1", "p1", "pe4"],
    "description": "CXM INC-2026-0001",
    "te_type": "sr-mpls",
}

EXPECTED_ENTRY = {
    "head-end": "10.0.0.1",
    "end-point": "10.0.0.4",
    "color": 1001,
    "path-name": "cxm-INC-2026-0001-1",
    "description": "CXM INC-2026-0001",
    "binding-sid": 24001,
    "profile-id": 0,
    "sr-policy-path": {
        "hops": [
            {"step": 1, "hop": {"node-ipv4-address": "10.0.0.11", "node-ipv4-sid": 16011}},
            {"step": 2, "hop": {"node-ipv4-address": "10.0.0.4", "node-ipv4-sid": 16004}},
        ]
    },
}


def sr_op(router: respx.MockRouter, op: str) -> respx.Route:
    return router.post(f"{OPERATIONS}/{SR_OPS_MODULE}:{op}")


def body(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


@pytest.fixture(autouse=True)
def _topology(cnc_router: respx.MockRouter) -> None:
    serve_topology(cnc_router)


@pytest.mark.parametrize(
    ("method", "op"),
    [
        ("create_sr_policy", "sr-policy-create"),
        ("modify_sr_policy", "sr-policy-modify"),
        ("dry_run_sr_policy", "sr-policy-dryrun"),
    ],
)
async def test_sr_mpls_operation_bodies_are_cncs_own(
    cnc: CncClient, cnc_router: respx.MockRouter, method: str, op: str
) -> None:
    route = sr_op(cnc_router, op).respond(200, json=sr_output("success", "ok"))
    result = await getattr(cnc, method)(**POLICY)
    assert result["state"] == "success"
    sent = body(route)
    assert sent == {"input": {"sr-policies": [EXPECTED_ENTRY]}}
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/yang-data+json"


async def test_hops_after_the_head_end_are_accepted_and_the_end_point_appended(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = sr_op(cnc_router, "sr-policy-create").respond(200, json=sr_output())
    await cnc.create_sr_policy(**{**POLICY, "hops": ["p1"]})
    assert body(route)["input"]["sr-policies"][0] == EXPECTED_ENTRY


async def test_without_a_binding_sid_none_is_sent(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = sr_op(cnc_router, "sr-policy-create").respond(200, json=sr_output())
    policy = {k: v for k, v in POLICY.items() if k not in ("binding_sid", "description")}
    await cnc.create_sr_policy(**policy)
    entry = body(route)["input"]["sr-policies"][0]
    assert "binding-sid" not in entry
    assert entry["description"] == "CXM cxm-INC-2026-0001-1"


async def test_dry_run_returns_the_route_and_segment_list(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    answer = sr_output()
    results = answer[f"{SR_OPS_MODULE}:output"]["results"]
    results[0]["igp-route"] = [{"node": "pe1", "interface": "GigabitEthernet0/0/0/0"}]
    results[0]["segment-list-hops"] = [
        {"step": 1, "sid": 16011, "ip-address": "10.0.0.11", "type": "node"}
    ]
    sr_op(cnc_router, "sr-policy-dryrun").respond(200, json=answer)
    result = await cnc.dry_run_sr_policy(**POLICY)
    assert result["igp-route"][0]["node"] == "pe1"
    assert result["segment-list-hops"][0]["sid"] == 16011


async def test_an_unqualified_output_is_accepted(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    answer = {"output": {"results": [{"state": "success", "message": "no change"}]}}
    sr_op(cnc_router, "sr-policy-create").respond(200, json=answer)
    assert (await cnc.create_sr_policy(**POLICY))["message"] == "no change"


async def test_a_failure_inside_200_is_final_with_cncs_message(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    sr_op(cnc_router, "sr-policy-create").respond(
        200, json=sr_output("failure", "SR policy already exists")
    )
    with pytest.raises(SouthboundError) as caught:
        await cnc.create_sr_policy(**POLICY)
    assert not caught.value.transient
    assert "SR policy already exists" in str(caught.value)


async def test_an_answer_without_results_is_an_error(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    sr_op(cnc_router, "sr-policy-create").respond(200, json={"output": {"results": []}})
    with pytest.raises(SouthboundError):
        await cnc.create_sr_policy(**POLICY)


async def test_an_empty_500_on_an_operation_is_bad_input(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = sr_op(cnc_router, "sr-policy-create").respond(500)
    with pytest.raises(SouthboundError) as caught:
        await cnc.create_sr_policy(**POLICY)
    assert not caught.value.transient
    assert route.call_count == 1


async def test_a_node_without_a_prefix_sid_is_refused_before_sending(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    serve_topology(cnc_router, [*NODES, node("x9", "10.0.0.99", sid=None)], LINKS)
    route = sr_op(cnc_router, "sr-policy-create").respond(200, json=sr_output())
    with pytest.raises(SouthboundError, match="x9"):
        await cnc.create_sr_policy(**{**POLICY, "hops": ["x9", "pe4"]})
    assert route.call_count == 0


async def test_an_unknown_node_rereads_the_topology_then_fails(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    await cnc.topology()
    reads = cnc_router.routes["networks"].call_count
    with pytest.raises(SouthboundError, match="nowhere"):
        await cnc.create_sr_policy(**{**POLICY, "end_point": "nowhere"})
    assert cnc_router.routes["networks"].call_count == reads + 1


async def test_delete_sends_the_key(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    route = sr_op(cnc_router, "sr-policy-delete").respond(200, json=sr_output())
    await cnc.delete_sr_policy(
        head_end="pe1", end_point="pe4", color=1001, path_name="cxm-INC-2026-0001-1"
    )
    assert body(route) == {
        "input": {
            "sr-policies": [
                {
                    "head-end": "10.0.0.1",
                    "end-point": "10.0.0.4",
                    "color": 1001,
                    "path-name": "cxm-INC-2026-0001-1",
                }
            ]
        }
    }


async def test_deleting_a_policy_not_in_config_db_succeeds(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    sr_op(cnc_router, "sr-policy-delete").respond(
        200, json=sr_output("failure", "SR policy not found in Config DB")
    )
    result = await cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=1001)
    assert result["state"] == "success"
    assert result["message"] == "SR policy not found in Config DB"


async def test_a_delete_that_fails_otherwise_raises(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    sr_op(cnc_router, "sr-policy-delete").respond(200, json=sr_output("failure", "locked"))
    with pytest.raises(SouthboundError, match="locked"):
        await cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=1001)


# --- SRv6 through the NSO proxy -------------------------------------------------------------

SRV6 = {**POLICY, "te_type": "srv6"}
SRV6_URL = SRV6_POLICY + "cxm-INC-2026-0001-1"


async def test_srv6_create_is_a_dynamic_pce_policy_put(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = cnc_router.put(SRV6_URL).respond(201)
    result = await cnc.create_sr_policy(**SRV6)
    assert result["state"] == "success"
    assert body(route) == {
        "cisco-sr-te-cfp-sr-policies:policy": [
            {
                "name": "cxm-INC-2026-0001-1",
                "head-end": [{"name": "pe1"}],
                "tail-end": "10.0.0.4",
                "color": 1001,
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
        ]
    }
    assert route.calls.last.request.headers["Content-Type"] == "application/yang-data+json"


async def test_srv6_modify_replaces_with_the_same_put(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = cnc_router.put(SRV6_URL).respond(204)
    await cnc.modify_sr_policy(**SRV6)
    assert route.call_count == 1


async def test_srv6_refusal_is_final_with_the_restconf_message(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.put(SRV6_URL).respond(
        400, json=restconf_error("explicit path not supported with srv6")
    )
    with pytest.raises(SouthboundError, match="explicit path not supported") as caught:
        await cnc.create_sr_policy(**SRV6)
    assert not caught.value.transient


async def test_srv6_dry_run_uses_native_dry_run(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    answer = {
        "dry-run-result": {"native": {"device": [{"name": "pe1", "data": "segment-routing"}]}}
    }
    route = cnc_router.put(SRV6_URL).respond(200, json=answer)
    result = await cnc.dry_run_sr_policy(**SRV6)
    assert route.calls.last.request.url.params["dry-run"] == "native"
    assert result["dry-run-result"]["native"]["device"][0]["name"] == "pe1"


async def test_srv6_delete_and_an_absent_one(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    route = cnc_router.delete(SRV6_URL).mock(
        side_effect=[httpx.Response(204), httpx.Response(404, json=data_missing("no policy"))]
    )
    results = [
        await cnc.delete_sr_policy(
            head_end="pe1",
            end_point="pe4",
            color=1001,
            te_type="srv6",
            path_name="cxm-INC-2026-0001-1",
        )
        for _ in range(2)
    ]
    first, second = results
    assert first["state"] == second["state"] == "success"
    assert route.call_count == 2


async def test_srv6_delete_without_a_name_finds_it_in_the_operational_list(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.get(SR_POLICIES).respond(
        200,
        json=sr_policies(
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                1001,
                "cxm-INC-2026-0001-1",
                [srv6_hop("fc00::11"), srv6_hop("fc00::4")],
                kind="dynamic",
                binding_sid=None,
            )
        ),
    )
    cnc_router.get(RSVP_TUNNELS).respond(409, json=data_missing())
    route = cnc_router.delete(SRV6_URL).respond(204)
    await cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=1001, te_type="srv6")
    assert route.call_count == 1
    route.reset()
    gone = await cnc.delete_sr_policy(head_end="pe1", end_point="pe4", color=7, te_type="srv6")
    assert gone["state"] == "success" and route.call_count == 0


# --- RSVP-TE ----------------------------------------------------------------------------------

RSVP = {**POLICY, "te_type": "rsvp-te", "hops": ["pe1", "p2", "pe4"]}


def rsvp_op(router: respx.MockRouter, op: str) -> respx.Route:
    return router.post(f"{OPERATIONS}/{RSVP_OPS_MODULE}:{op}")


@pytest.mark.parametrize(
    ("method", "op"),
    [
        ("create_sr_policy", "rsvp-te-tunnel-create"),
        ("modify_sr_policy", "rsvp-te-tunnel-modify"),
        ("dry_run_sr_policy", "rsvp-te-tunnel-dryrun"),
    ],
)
async def test_rsvp_te_operation_bodies(
    cnc: CncClient, cnc_router: respx.MockRouter, method: str, op: str
) -> None:
    answer = sr_output(module="rsvp-te-tunnel")
    answer[f"{RSVP_OPS_MODULE}:output"]["results"][0]["tunnel-id"] = 7
    route = rsvp_op(cnc_router, op).respond(200, json=answer)
    result = await getattr(cnc, method)(**RSVP)
    assert result["tunnel-id"] == 7
    assert body(route) == {
        "input": {
            "rsvp-te-tunnels": [
                {
                    "head-end": "10.0.0.1",
                    "end-point": "10.0.0.4",
                    "path-name": "cxm-INC-2026-0001-1",
                    "description": "CXM INC-2026-0001",
                    "signaled-bandwidth": 0,
                    "setup-priority": 7,
                    "hold-priority": 7,
                    "rsvp-te-tunnel-path": {
                        "hops": [
                            {"step": 1, "hop": {"node-ipv4-address": "10.0.0.12"}},
                            {"step": 2, "hop": {"node-ipv4-address": "10.0.0.4"}},
                        ]
                    },
                }
            ]
        }
    }


async def test_rsvp_te_delete_is_keyed_by_path_name(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = rsvp_op(cnc_router, "rsvp-te-tunnel-delete").respond(
        200, json=sr_output("failure", "RSVP-TE tunnel not found", module="rsvp-te-tunnel")
    )
    result = await cnc.delete_sr_policy(
        head_end="pe1", end_point="pe4", color=0, te_type="rsvp-te", path_name="cxm-t"
    )
    assert result["state"] == "success"
    assert body(route) == {
        "input": {
            "rsvp-te-tunnels": [
                {"head-end": "10.0.0.1", "end-point": "10.0.0.4", "path-name": "cxm-t"}
            ]
        }
    }


async def test_an_rsvp_te_failure_raises(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    rsvp_op(cnc_router, "rsvp-te-tunnel-create").respond(
        200, json=sr_output("failure", "node p2 has no RSVP-TE", module="rsvp-te-tunnel")
    )
    with pytest.raises(SouthboundError, match="no RSVP-TE"):
        await cnc.create_sr_policy(**RSVP)


async def test_an_unknown_te_type_is_refused(cnc: CncClient) -> None:
    with pytest.raises(SouthboundError, match="TE type"):
        await cnc.create_sr_policy(**{**POLICY, "te_type": "ldp"})


# --- the operational lists ------------------------------------------------------------------


async def test_operational_policies_parse_into_node_id_hops(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.get(SR_POLICIES).respond(
        200,
        json=sr_policies(
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                1001,
                "cxm-INC-2026-0001-1",
                [mpls_hop(16011, "10.0.0.11"), mpls_hop(16004, "10.0.0.4")],
            ),
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                100,
                "own-pe1-pe4",
                # resolved by label alone, and by address alone
                [mpls_hop(17012, None), mpls_hop(None, "10.0.0.4")],
                oper="DOWN",
                binding_sid=24100,
            ),
            sr_policy_oper(
                "10.0.0.1",
                "10.0.0.4",
                2001,
                "cxm-srv6",
                [srv6_hop("fc00::11"), srv6_hop("fc00::4")],
                kind="dynamic",
                binding_sid=None,
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
                "path-name": "cxm-t",
                "admin-state": "UP",
                "oper-state": "UP",
                "hop": [
                    {"type": "node", "local-ip-addr": "10.0.0.12"},
                    {"type": "node", "local-ip-addr": "10.0.0.4"},
                ],
            }
        ),
    )
    mpls, own, srv6, rsvp = await cnc.sr_policies()
    assert (mpls.head_end, mpls.end_point, mpls.color) == ("pe1", "pe4", 1001)
    assert mpls.path_name == "cxm-INC-2026-0001-1"
    assert mpls.binding_sid == 24001
    assert mpls.te_type == "sr-mpls"
    assert mpls.hops == ["pe1", "p1", "pe4"]
    assert mpls.state == "up"
    assert own.hops == ["pe1", "p2", "pe4"]
    assert own.state == "down"
    assert srv6.te_type == "srv6"
    assert srv6.hops == ["pe1", "p1", "pe4"]
    assert srv6.binding_sid is None
    assert rsvp.te_type == "rsvp-te"
    assert rsvp.tunnel_id == 7
    assert rsvp.path_name == "cxm-t"
    assert rsvp.hops == ["pe1", "p2", "pe4"]
    assert rsvp.color == 0


async def test_no_policies_at_all_is_an_empty_list(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.get(SR_POLICIES).respond(409, json=data_missing())
    cnc_router.get(RSVP_TUNNELS).respond(409, json=data_missing())
    assert await cnc.sr_policies() == []


async def test_an_unknown_head_end_rereads_the_topology(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    await cnc.topology()  # the cached view has no pe9 yet
    serve_topology(cnc_router, [*NODES, node("pe9", "10.0.0.9", sid=9)], LINKS)
    cnc_router.get(SR_POLICIES).respond(
        200,
        json=sr_policies(
            sr_policy_oper("10.0.0.9", "10.0.0.4", 5, "x", [mpls_hop(16004, "10.0.0.4")])
        ),
    )
    cnc_router.get(RSVP_TUNNELS).respond(409, json=data_missing())
    (policy,) = await cnc.sr_policies()
    assert policy.head_end == "pe9"
    assert policy.hops == ["pe9", "pe4"]


async def test_a_policy_list_read_failure_is_transient(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.get(SR_POLICIES).respond(503, text="busy")
    cnc_router.get(RSVP_TUNNELS).respond(409, json=data_missing())
    with pytest.raises(SouthboundError) as caught:
        await cnc.sr_policies()
    assert caught.value.transient


async def test_a_keyed_policy_read(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    oper = sr_policy_oper(
        "10.0.0.1", "10.0.0.4", 1001, "cxm-1", [mpls_hop(16011, "10.0.0.11"), mpls_hop(16004, None)]
    )
    route = cnc_router.get(f"{SR_POLICIES}/policy=10.0.0.1,10.0.0.4,1001").respond(
        200, json={"cisco-crosswork-segment-routing-policy:policy": [oper]}
    )
    policy = await cnc.sr_policy(head_end="pe1", end_point="pe4", color=1001)
    assert policy is not None and policy.hops == ["pe1", "p1", "pe4"]
    assert route.call_count == 1
    cnc_router.get(f"{SR_POLICIES}/policy=10.0.0.1,10.0.0.4,7").respond(409, json=data_missing())
    assert await cnc.sr_policy(head_end="pe1", end_point="pe4", color=7) is None

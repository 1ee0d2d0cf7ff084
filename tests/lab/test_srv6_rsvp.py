"""SRv6 policies through the NSO proxy (PCE-computed) and RSVP-TE tunnels, over HTTP."""

from __future__ import annotations

from typing import Any

from tests.lab.conftest import RSVP_LIST, RSVP_OPS, RSVP_OUT, SR_LIST, SRV6, LabHarness
from tests.lab.test_cnc import ADDR

V6 = {"pe1": "fc00::1", "pe4": "fc00::4", "p1": "fc00::b", "p2": "fc00::c", "pe5": "fc00::5"}


def srv6(name: str = "cxm-INC-2026-0001-1", head: str = "pe1", **extra: Any) -> dict[str, Any]:
    return {
        "cisco-sr-te-cfp-sr-policies:policy": [
            {
                "name": name,
                "head-end": [{"name": head}],
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
                **extra,
            }
        ]
    }


async def srv6_policy(lab: LabHarness) -> dict[str, Any]:
    data = await lab.get(f"{SR_LIST}/policy=10.0.0.1,10.0.0.4,1001")
    entry: dict[str, Any] = data["cisco-crosswork-segment-routing-policy:policy"][0]
    return entry


async def test_srv6_policy_put_read_back_dry_run_delete(lab: LabHarness) -> None:
    name = "cxm-INC-2026-0001-1"
    dry = await lab.cnc("PUT", f"{SRV6}{name}", params={"dry-run": "native"}, json=srv6())
    assert dry.status_code == 200
    (device,) = dry.json()["dry-run-result"]["native"]["device"]
    assert device["name"] == "pe1" and "color 1001" in device["data"]
    assert (await lab.cnc("GET", f"{SR_LIST}/policy=10.0.0.1,10.0.0.4,1001")).status_code == 409

    assert (await lab.cnc("PUT", f"{SRV6}{name}", json=srv6())).status_code == 201
    policy = await srv6_policy(lab)
    assert policy["sr-policy-type"] == "dynamic" and policy["oper-state"] == "UP"
    hop = policy["policy-details"]["path"][0]["hop"]
    assert {h["type"] for h in hop} == {"srv6-node"} and {h["label"] for h in hop} == {None}
    assert [h["local-ip-addr"] for h in hop] == [V6["p1"], V6["p2"], V6["pe4"]]
    assert policy["policy-details"]["srv6-binding-sid"]
    assert (await lab.cnc("PUT", f"{SRV6}{name}", json=srv6())).status_code == 204
    config = await lab.get(f"{SRV6}{name}")
    assert config["cisco-sr-te-cfp-sr-policies:policy"][0]["tail-end"] == "10.0.0.4"

    assert (await lab.cnc("DELETE", f"{SRV6}{name}")).status_code == 204
    gone = await lab.cnc("DELETE", f"{SRV6}{name}")
    assert gone.status_code == 404 and gone.json()["ietf-restconf:errors"]["error"]


async def test_srv6_path_avoids_down_links_and_is_down_without_one(lab: LabHarness) -> None:
    await lab.client.post("/lab/links/p1-p2/degrade", json={"down": True})
    assert (await lab.cnc("PUT", f"{SRV6}a", json=srv6("a"))).status_code == 201
    policy = await srv6_policy(lab)
    assert policy["oper-state"] == "DOWN"  # the SRv6 region has no other way round
    assert policy["policy-details"]["path"][0]["hop"] == []
    await lab.client.post("/lab/links/p1-p2/recover")
    assert (await lab.cnc("PUT", f"{SRV6}a", json=srv6("a"))).status_code == 204
    assert (await srv6_policy(lab))["oper-state"] == "UP"
    # pinned once computed: a link going down later downs it
    await lab.client.post("/lab/links/pe1-p1/degrade", json={"down": True})
    assert (await srv6_policy(lab))["oper-state"] == "DOWN"


def with_leaf(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    body["cisco-sr-te-cfp-sr-policies:policy"][0][name] = value
    return body


async def test_srv6_refusals_are_restconf_400s(lab: LabHarness) -> None:
    explicit = srv6()
    explicit["cisco-sr-te-cfp-sr-policies:policy"][0]["path"] = [
        {"preference": 100, "explicit": {"sid-list": [{"name": "x"}]}}
    ]
    cases = [
        ("a", with_leaf(srv6("a"), "binding-sid", 24001)),
        ("a", with_leaf(srv6("a"), "bandwidth", 1000)),
        ("a", explicit),
        ("a", srv6("a", head="pe2")),  # no SRv6 on pe2
        ("a", srv6("b")),  # name differs from the URL key
    ]
    for name, body in cases:
        response = await lab.cnc("PUT", f"{SRV6}{name}", json=body)
        assert response.status_code == 400, body
        assert response.json()["ietf-restconf:errors"]["error"][0]["error-message"]
    # the key (head, tail, color) is held by an SR-MPLS policy already
    await lab.cnc("PUT", f"{SRV6}a", json=srv6("a"))
    clash = await lab.cnc("PUT", f"{SRV6}b", json=srv6("b"))
    assert clash.status_code == 400 and "already exists" in clash.text


def tunnel(head: str, end: str, *via: str, name: str = "cxm-t1") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "head-end": ADDR[head],
        "end-point": ADDR[end],
        "path-name": name,
        "description": "CXM INC-2026-0001",
        "signaled-bandwidth": 0,
        "setup-priority": 7,
        "hold-priority": 7,
    }
    if via:
        entry["rsvp-te-tunnel-path"] = {
            "hops": [
                {"step": i, "hop": {"node-ipv4-address": ADDR[n]}}
                for i, n in enumerate(via, start=1)
            ]
        }
    return entry


async def rsvp(lab: LabHarness, operation: str, *tunnels: dict[str, Any]) -> list[dict[str, Any]]:
    response = await lab.op(
        f"{RSVP_OPS}:rsvp-te-tunnel-{operation}", {"input": {"rsvp-te-tunnels": list(tunnels)}}
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()[RSVP_OUT]["results"]
    return results


async def test_rsvp_te_tunnel_lifecycle(lab: LabHarness) -> None:
    empty = await lab.cnc("GET", RSVP_LIST)
    assert empty.status_code == 409
    (created,) = await rsvp(lab, "create", tunnel("p4", "pe6", "pe6"))
    assert created["state"] == "success" and created["tunnel-id"] == 1
    listed = await lab.get(RSVP_LIST)
    (t,) = listed["cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"]["tunnel"]
    assert (t["headend"], t["endpoint"], t["tunnel-id"], t["oper-state"]) == (
        "10.0.0.14",
        "10.0.0.6",
        1,
        "UP",
    )
    assert [h["local-ip-addr"] for h in t["hop"]] == ["10.0.0.6"]
    assert (await rsvp(lab, "create", tunnel("p4", "pe6", "pe6")))[0]["message"] == "no change"
    (modified,) = await rsvp(lab, "modify", {**tunnel("p4", "pe6"), "setup-priority": 3})
    assert (modified["state"], modified["tunnel-id"]) == ("success", 1)
    (dynamic,) = await rsvp(lab, "create", tunnel("pe6", "p4", name="cxm-t2"))
    assert dynamic["tunnel-id"] == 2
    await lab.client.post("/lab/links/p4-pe6/degrade", json={"down": True})
    states = [
        t["oper-state"]
        for t in (await lab.get(RSVP_LIST))["cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"][
            "tunnel"
        ]
    ]
    assert states == ["DOWN", "DOWN"]
    (deleted,) = await rsvp(
        lab,
        "delete",
        {
            k: v
            for k, v in tunnel("p4", "pe6").items()
            if k in ("head-end", "end-point", "path-name")
        },
    )
    assert deleted["state"] == "success"
    (gone,) = await rsvp(lab, "delete", tunnel("p4", "pe6"))
    assert (gone["state"], gone["message"]) == ("failure", "RSVP-TE tunnel not found in Config DB")
    (unknown,) = await rsvp(lab, "modify", tunnel("p4", "pe6", name="nope"))
    assert unknown["message"] == "RSVP-TE tunnel not found"
    state = (await lab.client.get("/lab/state")).json()
    assert [t["tunnel-id"] for t in state["rsvp_te_tunnels"]] == [2]


async def test_rsvp_te_refusals(lab: LabHarness) -> None:
    (no_rsvp,) = await rsvp(lab, "create", tunnel("pe1", "pe4", "p1", "p2", "pe4"))
    assert no_rsvp["state"] == "failure" and "does not support RSVP-TE" in no_rsvp["message"]
    (prio,) = await rsvp(lab, "create", {**tunnel("p4", "pe6"), "setup-priority": 9})
    assert "setup-priority 9" in prio["message"]
    bad = await lab.op(
        f"{RSVP_OPS}:rsvp-te-tunnel-create",
        {"input": {"rsvp-te-tunnels": [{"head-end": "10.0.0.14"}]}},
    )
    assert (bad.status_code, bad.content) == (500, b"")
    await lab.client.post("/lab/faults", json={"operation": "rsvp-te", "status": 200})
    (soft,) = await rsvp(lab, "create", tunnel("p4", "pe6"))
    assert soft["state"] == "failure" and "injected fault" in soft["message"]

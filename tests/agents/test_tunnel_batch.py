"""Tunnel Provisioning, batches: every policy of an incident step in one task
(``provision_tunnels``, ``steer_policies``), each answered in its place.

They would fail if a policy were skipped or answered out of order (each is checked in its
place and in CNC), created twice or given a second binding SID (creates and rows are
counted across a 503, a replay and a re-send), or if one policy's failure got lost (reported
in its place while the others still apply); and they pin the shared reads (one set of CNC
reads per batch, whatever the number of policies) that are the batch's reason to exist.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.tunnel import store
from services.tunnel.app import create_app
from services.tunnel.settings import TunnelSettings
from shared.errors import SouthboundError
from shared.settings import Settings
from tests.agents.fakes import AUTH, FakeNetwork, run_task
from tests.support import running

INC = "INC-2026-0001"
KEPT = TunnelSettings(topology_ttl_s=3600.0, ends_ttl_s=3600.0)
"""TTLs no test outlives: a read the agent makes is one it had to make."""
PATHS = {
    ("pe1", "pe4"): ["pe1", "p1", "p2", "pe4"],  # carries vpn-x1..x3
    ("pe1", "pe3"): ["pe1", "p1", "p2", "pe4", "pe3"],  # the odd services
    ("pe3", "pe2"): ["pe3", "pe4", "p2", "p1", "pe1", "pe2"],  # the even services
}
GROUPS = {
    ("pe1", "pe4"): ["vpn-x1", "vpn-x2", "vpn-x3"],
    ("pe1", "pe3"): [f"vpn-{n:03d}" for n in range(1, 16, 2)],
    ("pe3", "pe2"): [f"vpn-{n:03d}" for n in range(2, 16, 2)],
}


def _ask(ends: tuple[str, str], incident: str = INC, **kw: Any) -> dict[str, Any]:
    path = PATHS[ends]
    return {"incident_id": incident, "head_end": ends[0], "end_point": ends[1], "path": path, **kw}


def _batch(*asks: dict[str, Any], incident: str = INC) -> dict[str, Any]:
    return {"incident_id": incident, "tunnels": list(asks)}


async def _task(
    client: httpx.AsyncClient, task_type: str, payload: dict[str, Any], key: str
) -> httpx.Response:
    """A task as the orchestrator sends it: under an idempotency key."""
    body = {"task_type": task_type, "payload": payload}
    return await client.post("/a2a/tasks", json=body, headers={**AUTH, "Idempotency-Key": key})


def _reads(net: FakeNetwork, since: int) -> Counter[str]:
    """The CNC reads (GET, by path) made since request ``since``."""
    return Counter(path for method, path in net.requests[since:] if method == "GET")


async def _rows(app: FastAPI, incident: str = INC) -> list[dict[str, Any]]:
    return await store.by_incident(app.state.engine, incident)


async def test_a_batch_provisions_every_policy_in_order_with_one_set_of_reads(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    every = list(PATHS)
    # what one policy's provisioning reads from CNC, on an agent that kept nothing yet
    async with running(create_app(agent_settings, tunnel_settings=KEPT)) as client:
        one = await run_task(client, "provision_tunnel", _ask(every[0], "INC-2026-0002"))
        assert one.status_code == 200, one.text
    one_policy = _reads(net, 0)
    mark = len(net.requests)
    async with running(create_app(agent_settings, tunnel_settings=KEPT)) as client:
        response = await _task(client, "provision_tunnels", _batch(*map(_ask, every)), "p")
        batch_reads = _reads(net, mark)
        # the same three policies one task each (another incident), for comparison
        mark = len(net.requests)
        for ends in every:
            one = await run_task(client, "provision_tunnel", _ask(ends, "INC-2026-0003"))
            assert one.status_code == 200, one.text
        single_reads = _reads(net, mark)
    assert response.status_code == 200, response.text
    parts = response.json()["result"]["tunnels"]
    # every policy answered in request order, each under its own ends, and created in CNC
    assert [(p["head_end"], p["end_point"]) for p in parts] == every
    assert all(p.get("error") is None for p in parts)
    results = [p["result"] for p in parts]
    assert [r["path"] for r in results] == [PATHS[e] for e in every]
    assert all(r["state"] == "up" and r["te_type"] == "sr-mpls" for r in results)
    assert len({r["binding_sid"] for r in results}) == 3
    created = net.creates[1:4]
    assert sorted(c["path-name"] for c in created) == sorted(r["tunnel_id"] for r in results)
    # three policies, the reads of one; one task per policy read CNC's policies each time
    assert batch_reads == one_policy
    assert sum(single_reads.values()) > sum(batch_reads.values())


async def test_one_policys_failure_is_reported_in_its_place_and_the_others_are_built(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(agent_settings)
    crooked = {**_ask(("pe1", "pe4")), "head_end": "pe2"}  # its path starts elsewhere
    unsupported = {**_ask(("pe1", "pe3")), "path": ["pe1", "p4", "pe4", "pe3"]}
    asks = [crooked, unsupported, _ask(("pe1", "pe4")), _ask(("pe3", "pe2"))]
    async with running(app) as client:
        cnc = app.state.cnc
        create = cnc.create_sr_policy

        async def refuse_pe3(**policy: Any) -> dict[str, Any]:
            if policy["head_end"] == "pe3":
                raise SouthboundError("CNC refused the SR policy")
            return await create(**policy)

        monkeypatch.setattr(cnc, "create_sr_policy", refuse_pe3)
        response = await _task(client, "provision_tunnels", _batch(*asks), "p")
        rows = {r["end_point"]: r for r in await _rows(app)}
        monkeypatch.setattr(cnc, "create_sr_policy", create)
        again = await _task(client, "provision_tunnels", _batch(*asks), "p-again")
    assert response.status_code == 200, response.text
    crooked_part, unsupported_part, built, refused = response.json()["result"]["tunnels"]
    assert crooked_part["error"] == {
        "code": "bad_path",
        "message": "path must start at head_end and end at end_point",
        "status": 422,
    }
    assert (crooked_part["head_end"], crooked_part["end_point"]) == ("pe2", "pe4")
    assert unsupported_part["error"]["code"] == "te_unsupported"
    assert refused["error"]["code"] == "tunnel_provision_failed"
    assert refused["error"]["status"] == 502 and "CNC refused" in refused["error"]["message"]
    assert built["result"]["state"] == "up" and built.get("error") is None
    # the refused policy's row keeps its identifiers for the next attempt; no row for the
    # policies refused before planning
    assert rows["pe2"]["state"] == "failed" and rows["pe4"]["state"] == "up"
    assert set(rows) == {"pe2", "pe4"}
    # sent again: the refused one is created under the same identifiers, the built one not
    # again (one create each in CNC over both tasks)
    parts = again.json()["result"]["tunnels"]
    assert parts[2]["result"] == built["result"]
    assert parts[3]["result"]["tunnel_id"] == rows["pe2"]["tunnel_id"]
    assert parts[3]["result"]["binding_sid"] == rows["pe2"]["binding_sid"]
    assert Counter(c["path-name"] for c in net.creates) == Counter(
        [rows["pe4"]["tunnel_id"], rows["pe2"]["tunnel_id"]]
    )


async def test_a_passing_cnc_failure_fails_the_whole_batch_and_the_retry_creates_once(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """503, nothing recorded under the key and nothing planned: the same key later builds
    every policy once; a replay of it and a re-send under a new key write nothing."""
    app = create_app(agent_settings)
    body = _batch(*map(_ask, PATHS))
    async with running(app) as client:
        read = app.state.sr_policies
        busy = [True] * 3  # every attempt of the agent's own retries

        async def busy_read() -> Any:
            if busy:
                busy.pop()
                raise SouthboundError("CNC busy", transient=True)
            return await read()

        app.state.sr_policies = busy_read
        first = await _task(client, "provision_tunnels", body, "k")
        planned = await _rows(app)
        again = await _task(client, "provision_tunnels", body, "k")
        mark = len(net.requests)
        replay = await _task(client, "provision_tunnels", body, "k")
        resent = await _task(client, "provision_tunnels", body, "k2")
        rows = await _rows(app)
    assert first.status_code == 503, first.text
    assert first.json()["detail"]["code"] == "southbound"
    assert planned == [] and busy == []
    assert again.status_code == 200, again.text
    assert "replayed" not in again.json() or not again.json()["replayed"]
    built = again.json()["result"]
    assert replay.json()["result"] == built and replay.json().get("replayed") is True
    assert resent.json()["result"] == built
    # one create and one binding SID per policy, whatever was sent; the replay and the
    # re-send (every policy up) did not even read CNC
    assert len(net.creates) == 3 == len(rows)
    assert sorted(r["binding_sid"] for r in rows) == sorted(
        p["result"]["binding_sid"] for p in built["tunnels"]
    )
    assert net.requests[mark:] == []


async def test_ends_asked_twice_in_one_batch_make_one_policy(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        ask = _ask(("pe1", "pe4"))
        response = await run_task(client, "provision_tunnels", _batch(ask, ask))
    first, second = response.json()["result"]["tunnels"]
    assert first == second and first["result"]["state"] == "up"
    assert len(net.creates) == 1


async def test_the_single_forms_answer_as_the_batch(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """``provision_tunnel`` and ``steer_traffic`` are a batch of one: the same answers."""
    async with running(create_app(agent_settings)) as client:
        batch = await run_task(client, "provision_tunnels", _batch(*map(_ask, PATHS)))
        built = [p["result"] for p in batch.json()["result"]["tunnels"]]
        single = await run_task(client, "provision_tunnel", _ask(("pe1", "pe3")))
        assert single.status_code == 200, single.text
        assert single.json()["result"] == built[1]
        steer = {"incident_id": INC, "tunnel_id": built[0]["tunnel_id"]}
        one = await run_task(client, "steer_traffic", {**steer, "service_ids": ["vpn-x1"]})
        both = await run_task(
            client,
            "steer_policies",
            {"incident_id": INC, "policies": [{**steer, "service_ids": ["vpn-x1"]}]},
        )
        missing = await run_task(client, "steer_traffic", {**steer, "tunnel_id": "nope"})
        crooked = await run_task(
            client, "provision_tunnel", {**_ask(("pe1", "pe4")), "path": ["pe2", "pe4"]}
        )
    assert one.status_code == 200, one.text
    assert both.json()["result"]["policies"][0]["result"] == one.json()["result"]
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "unknown_tunnel"
    assert crooked.status_code == 422 and crooked.json()["detail"]["code"] == "bad_path"
    assert len(net.creates) == 3


async def _built(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await run_task(client, "provision_tunnels", _batch(*map(_ask, PATHS)))
    assert response.status_code == 200, response.text
    return [p["result"] for p in response.json()["result"]["tunnels"]]


def _steers(built: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "incident_id": INC,
            "tunnel_id": t["tunnel_id"],
            "service_ids": GROUPS[(t["head_end"], t["end_point"])],
        }
        for t in built
    ]


async def test_a_steering_batch_maps_every_policy_once_reading_the_ends_once(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    app = create_app(agent_settings, tunnel_settings=KEPT)
    async with running(app) as client:
        built = await _built(client)
        ends_reads = app.state.service_ends._refs.reads
        steers = _steers(built)
        # a service of another pair named too: refused in its place, as steer_traffic does
        steers[0]["service_ids"] = [*steers[0]["service_ids"], "vpn-001"]
        body = {"incident_id": INC, "policies": steers}
        response = await _task(client, "steer_policies", body, "s")
        maps = len(net.maps)
        replay = await _task(client, "steer_policies", body, "s")
        rows = {r["tunnel_id"]: r for r in await _rows(app)}
    assert response.status_code == 200, response.text
    parts = response.json()["result"]["policies"]
    assert [p["tunnel_id"] for p in parts] == [t["tunnel_id"] for t in built]
    for tunnel, part in zip(built, parts, strict=True):
        result = part["result"]
        group = GROUPS[(tunnel["head_end"], tunnel["end_point"])]
        assert result["services"] == group and result["color"] == tunnel["color"]
        assert all(net.mappings[vpn] == tunnel["color"] for vpn in group)
        assert rows[tunnel["tunnel_id"]]["services"] == group
    assert parts[0]["result"]["not_steered"] == ["vpn-001"]
    # each service written once, the services' ends read once for the batch
    assert Counter(vpn for patch in net.maps for vpn in patch) == Counter(
        vpn for group in GROUPS.values() for vpn in group
    )
    assert app.state.service_ends._refs.reads - ends_reads == 1
    # the replay answers from its record and writes nothing
    assert replay.json()["result"] == response.json()["result"] and len(net.maps) == maps


async def test_one_policys_steering_failure_is_reported_in_its_place(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(agent_settings)
    async with running(app) as client:
        built = await _built(client)
        steers = _steers(built)
        unknown = {"incident_id": INC, "tunnel_id": "sr-policy-gone"}
        elsewhere = {**steers[0], "service_ids": ["vpn-001"]}  # not between its ends
        cnc = app.state.cnc
        map_services = cnc.map_services

        async def refuse(services: Any, color: int) -> None:
            if color == built[2]["color"]:
                raise SouthboundError("CNC refused the te-service-mapping")
            await map_services(services, color)

        monkeypatch.setattr(cnc, "map_services", refuse)
        body = {"incident_id": INC, "policies": [unknown, steers[1], steers[2], elsewhere]}
        response = await run_task(client, "steer_policies", body)
    assert response.status_code == 200, response.text
    gone, odd, even, refused = response.json()["result"]["policies"]
    assert gone["error"] == {
        "code": "unknown_tunnel",
        "message": f"no tunnel sr-policy-gone for incident {INC}",
        "status": 404,
    }
    assert even["error"]["code"] == "southbound" and even["error"]["status"] == 502
    assert refused["error"]["code"] == "no_steerable_services"
    assert odd["result"]["services"] == GROUPS[("pe1", "pe3")]
    assert all(net.mappings.get(vpn) is None for vpn in GROUPS[("pe3", "pe2")])


async def test_a_passing_failure_of_one_policys_steering_fails_the_batch_to_be_retried(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(agent_settings)
    async with running(app) as client:
        built = await _built(client)
        body = {"incident_id": INC, "policies": _steers(built)}
        cnc = app.state.cnc
        map_services = cnc.map_services
        busy = [True] * 3  # every attempt of the agent's own retries, for one policy

        async def busy_once(services: Any, color: int) -> None:
            if color == built[1]["color"] and busy:
                busy.pop()
                raise SouthboundError("CNC busy", transient=True)
            await map_services(services, color)

        monkeypatch.setattr(cnc, "map_services", busy_once)
        first = await _task(client, "steer_policies", body, "k")
        again = await _task(client, "steer_policies", body, "k")
    assert first.status_code == 503 and first.json()["detail"]["code"] == "southbound"
    assert again.status_code == 200, again.text
    assert not again.json().get("replayed")
    for tunnel, part in zip(built, again.json()["result"]["policies"], strict=True):
        group = GROUPS[(tunnel["head_end"], tunnel["end_point"])]
        assert part["result"]["services"] == group
        assert all(net.mappings[vpn] == tunnel["color"] for vpn in group)


async def test_a_batch_naming_another_incident_is_refused(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        body = _batch(_ask(("pe1", "pe4")), _ask(("pe1", "pe3"), "INC-2026-0009"))
        response = await run_task(client, "provision_tunnels", body)
    assert response.status_code == 422
    assert "tunnels[1].incident_id" in response.text
    assert net.creates == []

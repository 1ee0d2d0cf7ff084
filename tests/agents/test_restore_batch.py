"""Restoration Monitor, batches: one cutover step and one cleanup for all of an incident's
policies (``cutover_policies``, ``cleanup_policies``).

They would fail if a policy were skipped (each is checked in its place and in CNC), moved
twice (each step's mapping writes are counted, a replay must write nothing), or if one
policy's failure got lost (reported in its place while the others still apply), and they pin
the shared reads (one mappings read and one SLA check per step, whatever the number of
policies) that are the batch's reason to exist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.restore.app import create_app
from shared.errors import SouthboundError
from shared.settings import Settings
from tests.agents.fakes import AUTH, FakeNetwork, run_task
from tests.support import running

INC = "INC-2026-0001"
LINKS = ["pe1-pe2", "pe2-pe3"]
X = "sr-policy-pe1-pe4-protect-001"
ODD = "sr-policy-pe1-pe3-protect-002"
EVEN = "sr-policy-pe3-pe2-protect-003"
COLORS = {X: 1001, ODD: 1002, EVEN: 1003}
GROUPS = {
    X: ["vpn-x1", "vpn-x2", "vpn-x3"],  # pe1 → pe4, 250 Mbps each
    ODD: [f"vpn-{n:03d}" for n in range(1, 16, 2)],  # pe1 → pe3, 100 Mbps each
    EVEN: [f"vpn-{n:03d}" for n in range(2, 16, 2)],  # pe3 → pe2
}
ENDS = {X: ("pe1", "pe4"), ODD: ("pe1", "pe3"), EVEN: ("pe3", "pe2")}


def _protected(net: FakeNetwork) -> None:
    """Three policies of one incident up, every group's services mapped onto its own."""
    for tid, (head, end) in ENDS.items():
        net.policies.append(
            {
                "head-end": head,
                "end-point": end,
                "color": COLORS[tid],
                "path-name": tid,
                "binding-sid": 24000 + COLORS[tid] % 1000,
            }
        )
        net.mappings.update(dict.fromkeys(GROUPS[tid], COLORS[tid]))


def _ref(tid: str, *, keyed: bool = True) -> dict[str, Any]:
    head, end = ENDS[tid]
    key = {"head_end": head, "end_point": end, "color": COLORS[tid]} if keyed else {}
    return {"tunnel_id": tid, "service_ids": GROUPS[tid], **key}


def _step(protection: int, policies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "incident_id": INC,
        "links": LINKS,
        "protection_pct": protection,
        "original_pct": 100 - protection,
        "policies": list(policies),
    }


async def _task(
    client: httpx.AsyncClient, task_type: str, payload: dict[str, Any], key: str
) -> httpx.Response:
    """A task as the orchestrator sends it: under an idempotency key."""
    body = {"task_type": task_type, "payload": payload}
    return await client.post("/a2a/tasks", json=body, headers={**AUTH, "Idempotency-Key": key})


def _count_sla_checks(app: FastAPI) -> list[int]:
    """Wrap PCA's metrics read (the SLA check) to count it; call inside ``running``."""
    pca = app.state.pca
    read = pca.link_metrics
    calls = [0]

    async def counted(links: list[str]) -> Any:
        calls[0] += 1
        return await read(links)

    pca.link_metrics = counted
    return calls


def _on_policy(net: FakeNetwork, tid: str) -> list[str]:
    return sorted(vpn for vpn, color in net.mappings.items() if color == COLORS[tid])


async def test_a_step_moves_every_policy_once_with_one_read_and_one_sla_check(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    _protected(net)
    app = create_app(agent_settings)
    every = [_ref(X), _ref(ODD), _ref(EVEN)]
    async with running(app) as client:
        checks = _count_sla_checks(app)
        answers = {}
        for step, protection in enumerate((75, 50, 25, 0)):
            before = len(net.maps), len(net.unmaps)
            response = await _task(
                client, "cutover_policies", _step(protection, every), f"{INC}:{step}"
            )
            assert response.status_code == 200, response.text
            answers[protection] = result = response.json()["result"]
            assert result["within_sla"] is True
            # every policy answered, in request order, and CNC shows exactly what it says
            assert [p["tunnel_id"] for p in result["policies"]] == [X, ODD, EVEN]
            for part in result["policies"]:
                tid, res = part["tunnel_id"], part["result"]
                assert part.get("error") is None and res["protection_pct"] == protection
                assert sorted(res["on_protection"]) == _on_policy(net, tid)
                assert sorted(res["on_protection"] + res["on_original"]) == sorted(GROUPS[tid])
            # no service written twice in one step (one PATCH per kind per policy at most)
            written = Counter(vpn for patch in net.maps[before[0] :] for vpn in patch)
            written.update(net.unmaps[before[1] :])
            assert max(written.values(), default=1) == 1
        replayed = await _task(client, "cutover_policies", _step(0, every), f"{INC}:3")
    # 50 %: the odd group (8 of 100 Mbps) keeps 4 services on its policy, the x group 2 of 3
    assert len(answers[50]["policies"][1]["result"]["on_protection"]) == 4
    assert answers[50]["policies"][0]["result"]["on_protection"] == ["vpn-x2", "vpn-x3"]
    assert net.mappings == {}  # 0/100: every service of every policy home
    # a replay of the last step (a crash before the orchestrator's checkpoint) moves nothing
    assert replayed.json()["result"] == answers[0]
    assert sorted(net.unmaps) == sorted(vpn for group in GROUPS.values() for vpn in group)
    # what the policies share was read once per step, not once per policy
    assert app.state.mappings.reads == 4 and checks == [4]
    assert app.state.services.reads == 0 and app.state.sr_policies.reads == 0


async def test_a_step_matches_the_single_policy_form(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """The batch and ``cutover_step`` leave CNC the same, policy by policy."""
    _protected(net)
    async with running(create_app(agent_settings)) as client:
        batch = await run_task(client, "cutover_policies", _step(50, [_ref(X), _ref(ODD)]))
        after_batch = dict(net.mappings)
        net.mappings.update({**dict.fromkeys(GROUPS[X], 1001), **dict.fromkeys(GROUPS[ODD], 1002)})
        for tid in (X, ODD):
            single = {"incident_id": INC, "links": LINKS, "protection_pct": 50, "original_pct": 50}
            one = await run_task(client, "cutover_step", {**single, **_ref(tid)})
            assert one.status_code == 200, one.text
            mine = next(p for p in batch.json()["result"]["policies"] if p["tunnel_id"] == tid)
            assert one.json()["result"]["on_protection"] == mine["result"]["on_protection"]
            assert "sla" in one.json()["result"]  # the single form still carries its report
    assert net.mappings == after_batch


async def test_one_policys_failure_is_reported_in_its_place_and_the_others_apply(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    _protected(net)
    app = create_app(agent_settings)
    unknown = {"tunnel_id": "sr-policy-gone", "service_ids": ["vpn-x1"]}  # no key: looked up
    every = [_ref(X), unknown, _ref(ODD), _ref(EVEN, keyed=False)]
    async with running(app) as client:
        cnc = app.state.cnc
        map_services = cnc.map_services

        async def refuse_odd(services: Any, color: int) -> None:
            if color == COLORS[ODD]:
                raise SouthboundError("CNC refused the te-service-mapping")
            await map_services(services, color)

        monkeypatch.setattr(cnc, "map_services", refuse_odd)
        response = await run_task(client, "cutover_policies", _step(25, every))
    assert response.status_code == 200, response.text
    parts = response.json()["result"]["policies"]
    assert [p["tunnel_id"] for p in parts] == [X, "sr-policy-gone", ODD, EVEN]
    assert parts[1]["error"] == {
        "code": "unknown_tunnel",
        "message": "no SR policy named sr-policy-gone in CNC",
        "status": 404,
    }
    assert parts[2]["error"]["code"] == "southbound" and parts[2]["error"]["status"] == 502
    assert parts[1].get("result") is None and parts[2].get("result") is None
    # the others moved: x keeps platinum alone at 25 %, the even group (found by name) too
    assert parts[0]["result"]["on_protection"] == ["vpn-x3"] == _on_policy(net, X)
    assert sorted(parts[3]["result"]["on_protection"]) == _on_policy(net, EVEN)
    assert len(_on_policy(net, EVEN)) < len(GROUPS[EVEN])
    assert _on_policy(net, ODD) == sorted(GROUPS[ODD])  # its step failed: nothing moved


async def test_a_passing_cnc_failure_fails_the_whole_step_so_it_is_retried(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 and nothing recorded under the key: the same key later applies the step."""
    _protected(net)
    app = create_app(agent_settings)
    every = [_ref(X), _ref(ODD)]
    async with running(app) as client:
        cnc = app.state.cnc
        unmap_services = cnc.unmap_services
        busy = [True]

        async def busy_once(services: Any) -> None:
            if busy.pop() if busy else False:
                raise SouthboundError("CNC busy", transient=True)
            await unmap_services(services)

        monkeypatch.setattr(cnc, "unmap_services", busy_once)
        first = await _task(client, "cutover_policies", _step(0, every), "k")
        again = await _task(client, "cutover_policies", _step(0, every), "k")
    assert first.status_code == 503
    assert first.json()["detail"]["code"] == "southbound"
    assert again.status_code == 200, again.text
    assert all(p["result"]["on_protection"] == [] for p in again.json()["result"]["policies"])
    assert _on_policy(net, X) == _on_policy(net, ODD) == []


async def test_an_sla_violation_puts_every_policy_back(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    _protected(net)
    net.metrics["pe2-pe3"] = {"delayAvg": 80.0}
    async with running(create_app(agent_settings)) as client:
        response = await run_task(client, "cutover_policies", _step(50, [_ref(X), _ref(EVEN)]))
    result = response.json()["result"]
    assert result["within_sla"] is False and result["sla"]["violated_links"] == ["pe2-pe3"]
    for part in result["policies"]:
        res = part["result"]
        assert res["reverted"] is True and (res["protection_pct"], res["original_pct"]) == (100, 0)
        assert sorted(res["on_protection"]) == sorted(GROUPS[part["tunnel_id"]])
    assert _on_policy(net, X) == sorted(GROUPS[X])
    assert _on_policy(net, EVEN) == sorted(GROUPS[EVEN])


async def test_a_bad_split_changes_nothing(agent_settings: Settings, net: FakeNetwork) -> None:
    _protected(net)
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "cutover_policies", {**_step(50, [_ref(X)]), "original_pct": 40}
        )
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "bad_cutover_step"
    assert net.maps == [] and net.unmaps == []


async def test_cleanup_removes_every_policy_once_and_reports_each(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    _protected(net)
    net.policies = [p for p in net.policies if p["path-name"] != EVEN]  # removed already
    app = create_app(agent_settings)
    every = [_ref(X), _ref(ODD), _ref(EVEN)]
    body = {"incident_id": INC, "policies": every}
    async with running(app) as client:
        first = await _task(client, "cleanup_policies", body, "clean")
        replay = await _task(client, "cleanup_policies", body, "clean")
        again = await _task(client, "cleanup_policies", body, "clean-again")
    assert first.status_code == 200, first.text
    parts = first.json()["result"]["policies"]
    assert [(p["tunnel_id"], p["result"]["already_absent"]) for p in parts] == [
        (X, False),
        (ODD, False),
        (EVEN, True),
    ]
    assert replay.json()["result"] == first.json()["result"]
    assert all(p["result"]["already_absent"] for p in again.json()["result"]["policies"])
    # each policy deleted once, its services unmapped once; one read of CNC's policies each
    assert sorted(d["color"] for d in net.deletes) == [COLORS[X], COLORS[ODD]]
    assert Counter(net.unmaps) == Counter(GROUPS[X] + GROUPS[ODD])
    assert net.policies == [] and _on_policy(net, EVEN) == sorted(GROUPS[EVEN])
    assert app.state.sr_policies.reads == 2


async def test_cleanup_reports_a_failed_removal_in_its_place(
    agent_settings: Settings, net: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    _protected(net)
    app = create_app(agent_settings)
    async with running(app) as client:
        cnc = app.state.cnc
        delete = cnc.delete_sr_policy

        async def refuse_x(**key: Any) -> dict[str, Any]:
            if key["color"] == COLORS[X]:
                raise SouthboundError("CNC refused the delete")
            return await delete(**key)

        monkeypatch.setattr(cnc, "delete_sr_policy", refuse_x)
        body = {"incident_id": INC, "policies": [_ref(X), _ref(ODD)]}
        response = await run_task(client, "cleanup_policies", body)
    parts = response.json()["result"]["policies"]
    assert parts[0]["error"]["code"] == "southbound" and parts[0].get("result") is None
    assert parts[1]["result"] == {"deleted": True, "tunnel_id": ODD, "already_absent": False}
    assert [p["path-name"] for p in net.policies] == [X, EVEN]

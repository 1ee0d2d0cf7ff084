"""Tunnel Provisioning: TE type, binding SIDs, idempotency, retries, steering, deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.tunnel import store
from services.tunnel.app import create_app
from services.tunnel.settings import TunnelSettings
from shared.db import make_engine, migrate
from shared.models import utcnow
from shared.settings import Settings
from tests.agents.fakes import FakeNetwork, run_task
from tests.support import running

PROTECT = ["pe1", "p1", "p2", "pe4"]


def _provision(
    incident: str = "INC-2026-0001", path: list[str] = PROTECT, **kw: Any
) -> dict[str, Any]:
    return {
        "incident_id": incident,
        "head_end": path[0],
        "end_point": path[-1],
        "path": path,
        **kw,
    }


async def test_provisions_sr_mpls_with_explicit_hops(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(client, "provision_tunnel", _provision())
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["tunnel_id"] == "sr-policy-pe1-pe4-protect-001"
    assert result["binding_sid"] == 24001 and isinstance(result["binding_sid"], int)
    assert result["te_type"] == "sr-mpls"
    assert result["state"] == "up"
    assert result["path"] == PROTECT and result["hops"] == PROTECT[1:]
    [created] = net.creates
    assert created["api"] == "coe"  # SR-MPLS: the optimization engine's sr-policy-create
    assert (created["head-end"], created["end-point"]) == ("10.0.0.1", "10.0.0.4")
    assert created["path-name"] == result["tunnel_id"]
    assert created["binding-sid"] == 24001
    assert created["color"] == result["color"]
    assert created["sr-policy-path"]["hops"] == [
        {"step": 1, "hop": {"node-ipv4-sid": 16011, "node-ipv4-address": "10.0.0.11"}},
        {"step": 2, "hop": {"node-ipv4-sid": 16012, "node-ipv4-address": "10.0.0.12"}},
        {"step": 3, "hop": {"node-ipv4-sid": 16004, "node-ipv4-address": "10.0.0.4"}},
    ]


async def test_te_type_follows_node_capabilities(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        rsvp = await run_task(
            client, "provision_tunnel", _provision("INC-2026-0002", ["pe1", "p3", "pe4"])
        )
        srv6 = await run_task(
            client, "provision_tunnel", _provision("INC-2026-0003", PROTECT, te_type="srv6")
        )
        none = await run_task(
            client, "provision_tunnel", _provision("INC-2026-0004", ["pe1", "p4", "pe4"])
        )
        unsupported = await run_task(
            client,
            "provision_tunnel",
            _provision("INC-2026-0005", ["pe1", "p3", "pe4"], te_type="sr-mpls"),
        )
    assert rsvp.json()["result"]["te_type"] == "rsvp-te"
    assert srv6.json()["result"]["te_type"] == "srv6"
    assert none.status_code == 422
    assert none.json()["detail"]["code"] == "te_unsupported"
    assert "p4" in none.json()["detail"]["message"]
    assert unsupported.status_code == 422 and "p3" in unsupported.json()["detail"]["message"]
    assert [c["api"] for c in net.creates] == ["rsvp-te", "nso-srv6"]


async def test_an_srv6_policy_takes_the_pces_path(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """SRv6 is dynamic: CNC's PCE routes it, and the tunnel answers with the path it took."""
    net.srv6_path = ["pe1", "pe3", "pe4"]  # not even adjacent: whatever the PCE says goes
    net.topology["links"].append(
        {**net.topology["links"][0], "link-id": "pe1-pe3", "destination": "pe3"}
    )
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "provision_tunnel",
            _provision(te_type="srv6", avoid_links=["pe1-pe2", "pe2-pe3"]),
        )
        again = await run_task(client, "provision_tunnel", _provision(te_type="srv6"))
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["te_type"] == "srv6"
    assert result["path"] == ["pe1", "pe3", "pe4"] and result["hops"] == ["pe3", "pe4"]
    assert again.json()["result"] == result
    [created] = net.creates
    assert created["api"] == "nso-srv6" and created["name"] == result["tunnel_id"]
    assert created["tail-end"] == "10.0.0.4" and created["color"] == result["color"]


async def test_an_srv6_path_over_a_link_to_avoid_fails_the_provisioning(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.srv6_path = ["pe1", "pe2", "pe3", "pe4"]
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client,
            "provision_tunnel",
            _provision(te_type="srv6", avoid_links=["pe3-pe2"]),
        )
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail["code"] == "tunnel_provision_failed"
    assert "pe3-pe2" in detail["message"] and "pe1 -> pe2 -> pe3 -> pe4" in detail["message"]
    # the policy the PCE routed there is not left behind
    assert net.policies == []
    assert net.deletes == [{"api": "nso-srv6", "name": "sr-policy-pe1-pe4-protect-001"}]


async def test_binding_sids_are_unique_and_skip_ones_in_use(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.policies.append(
        {
            "head-end": "pe2",
            "end-point": "pe3",
            "color": 7,
            "path-name": "other",
            "binding-sid": 24002,
        }
    )
    async with running(create_app(agent_settings)) as client:
        sids = []
        for n in range(1, 5):
            response = await run_task(client, "provision_tunnel", _provision(f"INC-2026-010{n}"))
            sids.append(response.json()["result"]["binding_sid"])
    assert all(isinstance(s, int) for s in sids)
    assert len(set(sids)) == 4
    assert 24002 not in sids
    assert sids[0] == 24001


async def test_reprovisioning_an_incident_returns_the_same_tunnel(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    app = create_app(agent_settings)
    async with running(app) as client:
        first = await run_task(client, "provision_tunnel", _provision())
        second = await run_task(client, "provision_tunnel", _provision())
    # A restarted agent on the same database still knows the tunnel.
    async with running(create_app(agent_settings)) as client:
        third = await run_task(client, "provision_tunnel", _provision())
    assert first.json()["result"] == second.json()["result"] == third.json()["result"]
    assert len(net.creates) == 1


async def test_an_incident_gets_one_policy_per_pair_of_ends(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """Each group of services an incident protects has its own policy; asking again for a
    group's policy (a replay, a restart) answers the one it already has."""
    back = list(reversed(PROTECT))
    async with running(create_app(agent_settings)) as client:
        there = (await run_task(client, "provision_tunnel", _provision())).json()["result"]
        home = (await run_task(client, "provision_tunnel", _provision(path=back))).json()
        again = (await run_task(client, "provision_tunnel", _provision(path=back))).json()
        steer = await run_task(
            client,
            "steer_traffic",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": there["tunnel_id"],
                "service_ids": ["vpn-x1"],
            },
        )
    assert steer.status_code == 200, steer.text
    assert home["result"]["tunnel_id"] != there["tunnel_id"]
    assert (home["result"]["head_end"], home["result"]["end_point"]) == (back[0], back[-1])
    assert again["result"] == home["result"]
    assert home["result"]["binding_sid"] != there["binding_sid"]
    assert len(net.creates) == 2


async def test_three_transient_failures_give_up_with_502(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.create_failures = 3
    cfg = TunnelSettings(backoff_s=0.001)
    async with running(create_app(agent_settings, tunnel_settings=cfg)) as client:
        failed = await run_task(client, "provision_tunnel", _provision())
        assert failed.status_code == 502
        assert failed.json()["detail"]["code"] == "tunnel_provision_failed"
        assert len(net.creates) == 3
        # Once CNC is healthy again, the retry reuses the identifiers it allocated.
        retried = await run_task(client, "provision_tunnel", _provision())
    assert retried.status_code == 200
    assert retried.json()["result"]["tunnel_id"] == "sr-policy-pe1-pe4-protect-001"
    assert len(net.creates) == 4 and len(net.policies) == 1


async def test_two_transient_failures_then_success(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.create_failures = 2
    cfg = TunnelSettings(backoff_s=0.001)
    async with running(create_app(agent_settings, tunnel_settings=cfg)) as client:
        response = await run_task(client, "provision_tunnel", _provision())
    assert response.status_code == 200
    assert len(net.creates) == 3 and len(net.policies) == 1


async def test_a_create_whose_answer_was_lost_is_not_repeated(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    net.lost_answers = 1
    cfg = TunnelSettings(backoff_s=0.001)
    async with running(create_app(agent_settings, tunnel_settings=cfg)) as client:
        response = await run_task(client, "provision_tunnel", _provision())
    assert response.status_code == 200
    assert len(net.creates) == 1 and len(net.policies) == 1
    assert response.json()["result"]["binding_sid"] == net.policies[0]["binding-sid"]


async def test_a_policy_already_in_cnc_is_adopted_with_its_identifiers(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """The agent lost its database but CNC still has the tunnel: adopt, do not duplicate."""
    net.policies.append(
        {
            "head-end": "pe1",
            "end-point": "pe4",
            "color": 1001,
            "path-name": "sr-policy-pe1-pe4-protect-001",
            "binding-sid": 24001,
        }
    )
    async with running(create_app(agent_settings)) as client:
        response = await run_task(client, "provision_tunnel", _provision())
        again = await run_task(client, "provision_tunnel", _provision())
    result = response.json()["result"]
    assert net.creates == []
    assert (result["binding_sid"], result["color"]) == (24001, 1001)
    assert again.json()["result"] == result


async def test_steer_and_delete(agent_settings: Settings, net: FakeNetwork) -> None:
    async with running(create_app(agent_settings)) as client:
        tunnel = (await run_task(client, "provision_tunnel", _provision())).json()["result"]
        steer = await run_task(
            client,
            "steer_traffic",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": tunnel["tunnel_id"],
                "service_ids": ["vpn-x1", "vpn-001", "vpn-x2"],
            },
        )
        assert steer.status_code == 200, steer.text
        assert steer.json()["result"]["traffic_steered"] is True
        # a pe1 -> pe4 policy carries only pe1 -> pe4 services; the others are reported
        assert steer.json()["result"]["not_steered"] == ["vpn-001"]
        assert steer.json()["result"]["services"] == ["vpn-x1", "vpn-x2"]
        # steered by color: one te-service-mapping PATCH for the group
        assert net.maps == [{"vpn-x1": tunnel["color"], "vpn-x2": tunnel["color"]}]
        stranger = await run_task(
            client,
            "steer_traffic",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": tunnel["tunnel_id"],
                "service_ids": ["vpn-001"],
            },
        )
        assert stranger.status_code == 422
        assert stranger.json()["detail"]["code"] == "no_steerable_services"
        delete = {"incident_id": "INC-2026-0001", "tunnel_id": tunnel["tunnel_id"]}
        first = await run_task(client, "delete_tunnel", delete)
        second = await run_task(client, "delete_tunnel", delete)
        never = await run_task(
            client, "delete_tunnel", {"incident_id": "INC-2026-0009", "tunnel_id": "nope"}
        )
    assert first.json()["result"]["deleted"] is True
    assert sorted(net.unmaps) == ["vpn-x1", "vpn-x2"]  # traffic moved off before the delete
    assert net.mappings == {}
    assert second.json()["result"] == {
        "deleted": True,
        "tunnel_id": tunnel["tunnel_id"],
        "already_absent": True,
    }
    assert never.status_code == 200 and never.json()["result"]["deleted"] is True
    assert len(net.deletes) == 1 and net.policies == []


async def test_a_policy_carries_only_services_that_run_its_way(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """An SR policy is one-way: a pe4 -> pe1 service needs a policy headed at pe4."""
    net.services.append(
        {
            "vpn-id": "vpn-back",
            "name": "the-other-way",
            "kind": "l3vpn",
            "sla-tier": "gold",
            "head-end": "pe4",
            "end-point": "pe1",
            "path": ["p2-pe4", "p1-p2", "pe1-p1"],
            "bandwidth-mbps": 100,
        }
    )
    async with running(create_app(agent_settings)) as client:
        tunnel = (await run_task(client, "provision_tunnel", _provision())).json()["result"]
        steer = await run_task(
            client,
            "steer_traffic",
            {
                "incident_id": "INC-2026-0001",
                "tunnel_id": tunnel["tunnel_id"],
                "service_ids": ["vpn-x1", "vpn-back"],
            },
        )
    assert steer.status_code == 200, steer.text
    assert steer.json()["result"]["not_steered"] == ["vpn-back"]
    assert net.maps == [{"vpn-x1": tunnel["color"]}]


async def test_removing_a_tunnel_leaves_services_another_policy_took(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """A service a second incident has moved onto its own live policy keeps that mapping
    when the first incident's tunnel goes."""
    async with running(create_app(agent_settings)) as client:
        first = (await run_task(client, "provision_tunnel", _provision())).json()["result"]
        second = (await run_task(client, "provision_tunnel", _provision("INC-2026-0002"))).json()[
            "result"
        ]
        for incident, tunnel, services in (
            ("INC-2026-0001", first, ["vpn-x1", "vpn-x2"]),
            ("INC-2026-0002", second, ["vpn-x2"]),
        ):
            steer = {"incident_id": incident, "tunnel_id": tunnel["tunnel_id"]}
            steered = await run_task(client, "steer_traffic", {**steer, "service_ids": services})
            assert steered.status_code == 200, steered.text
        delete = {"incident_id": "INC-2026-0001", "tunnel_id": first["tunnel_id"]}
        assert (await run_task(client, "delete_tunnel", delete)).status_code == 200
    assert net.unmaps == ["vpn-x1"]
    assert net.mappings == {"vpn-x2": second["color"]}


async def test_steering_an_unknown_tunnel_is_404(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings)) as client:
        response = await run_task(
            client, "steer_traffic", {"incident_id": "INC-2026-0001", "tunnel_id": "nope"}
        )
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "unknown_tunnel"


# --- reroute_tunnel, against the in-process lab ------------------------------------------------

AROUND_P1_P2 = ["pe1", "p1", "p3", "p4", "p2", "pe4"]


@dataclass
class OnLab:
    lab: httpx.AsyncClient
    tunnel: httpx.AsyncClient

    async def policy(self) -> dict[str, Any]:
        """The one SR policy CNC (the lab) holds."""
        (policy,) = (await self.lab.get("/lab/state")).json()["sr_policies"]
        return dict(policy)

    async def provision_and_steer(self, **kw: Any) -> dict[str, Any]:
        tunnel = await run_task(self.tunnel, "provision_tunnel", _provision(**kw))
        assert tunnel.status_code == 200, tunnel.text
        result: dict[str, Any] = tunnel.json()["result"]
        steer = {"incident_id": "INC-2026-0001", "tunnel_id": result["tunnel_id"]}
        assert (await run_task(self.tunnel, "steer_traffic", steer)).status_code == 200
        return result

    async def reroute(self, tunnel_id: str, path: list[str]) -> httpx.Response:
        payload = {"incident_id": "INC-2026-0001", "tunnel_id": tunnel_id, "path": path}
        return await run_task(self.tunnel, "reroute_tunnel", payload)


@pytest.fixture
async def on_lab(agent_settings: Settings) -> AsyncIterator[OnLab]:
    """The tunnel agent with its CNC calls going to the lab over ASGI (the lab's inventory)."""
    settings = agent_settings.model_copy(update={"service_inventory": None})
    lab = lab_app(settings, LabSettings(push_alerts=False))
    transport = httpx.ASGITransport(app=lab)
    async with (
        running(lab) as lab_client,
        running(create_app(settings, southbound_transport=transport)) as tunnel,
    ):
        yield OnLab(lab_client, tunnel)


async def test_reroute_moves_the_live_tunnel_and_keeps_its_traffic(on_lab: OnLab) -> None:
    tunnel = await on_lab.provision_and_steer()
    before = await on_lab.policy()
    assert before["hops"] == PROTECT

    response = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["rerouted"] is True and result["previous_path"] == PROTECT
    assert result["path"] == AROUND_P1_P2 and result["state"] == "up"
    same = ("tunnel_id", "binding_sid", "color", "te_type", "head_end", "end_point")
    assert {k: result[k] for k in same} == {k: tunnel[k] for k in same}
    after = await on_lab.policy()
    assert after["hops"] == AROUND_P1_P2
    assert (after["binding-sid"], after["color"]) == (before["binding-sid"], before["color"])
    steering = (await on_lab.lab.get("/lab/state")).json()["steering"]
    assert len(steering) == 15 and {s["color"] for s in steering.values()} == {tunnel["color"]}
    # the agent remembers the new path: provisioning again answers with it
    again = await run_task(on_lab.tunnel, "provision_tunnel", _provision())
    assert again.json()["result"]["path"] == AROUND_P1_P2


async def test_a_replayed_reroute_changes_nothing(on_lab: OnLab) -> None:
    tunnel = await on_lab.provision_and_steer()
    first = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert first.status_code == 200, first.text
    # were CNC called again, this fault would fail the replay
    await on_lab.lab.post("/lab/faults", json={"operation": "topology", "status": 400})
    replay = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert replay.status_code == 200, replay.text
    assert replay.json()["result"]["path"] == AROUND_P1_P2
    assert replay.json()["result"]["previous_path"] == AROUND_P1_P2
    assert len((await on_lab.lab.get("/lab/faults")).json()) == 1
    assert (await on_lab.policy())["hops"] == AROUND_P1_P2


async def test_rerouting_what_cannot_be_rerouted_is_a_4xx(on_lab: OnLab) -> None:
    unknown = await on_lab.reroute("sr-policy-pe1-pe4-protect-404", AROUND_P1_P2)
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["code"] == "unknown_tunnel"
    assert "sr-policy-pe1-pe4-protect-404" in unknown.json()["detail"]["message"]
    tunnel = await on_lab.provision_and_steer(te_type="srv6")
    # p3 and p4 carry sr-mpls only: a srv6 tunnel cannot go round that way
    mismatch = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"]["code"] == "te_unsupported"
    assert "p3 does not support srv6" in mismatch.json()["detail"]["message"]
    elsewhere = await on_lab.reroute(tunnel["tunnel_id"], ["pe1", "p1", "p2", "pe3"])
    assert elsewhere.status_code == 422 and elsewhere.json()["detail"]["code"] == "bad_path"
    # SRv6 is dynamic: the policy is where CNC's PCE put it, and nothing moved it
    assert (await on_lab.policy())["hops"] == tunnel["path"]
    delete = {"incident_id": "INC-2026-0001", "tunnel_id": tunnel["tunnel_id"]}
    assert (await run_task(on_lab.tunnel, "delete_tunnel", delete)).status_code == 200
    deleted = await on_lab.reroute(tunnel["tunnel_id"], ["pe1", "p1", "p2", "pe3", "pe4"])
    assert deleted.status_code == 409
    assert deleted.json()["detail"]["code"] == "tunnel_not_up"
    assert "is deleted" in deleted.json()["detail"]["message"]


async def test_a_transient_reroute_failure_is_retried(on_lab: OnLab) -> None:
    tunnel = await on_lab.provision_and_steer()
    await on_lab.lab.post("/lab/faults", json={"operation": "sr-policy-modify", "status": 503})
    response = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert response.status_code == 200, response.text
    assert (await on_lab.lab.get("/lab/faults")).json() == []
    assert (await on_lab.policy())["hops"] == AROUND_P1_P2


async def test_a_refused_reroute_fails_at_once_with_502(on_lab: OnLab) -> None:
    """CNC answering ``state: failure`` has decided: no retry, the tunnel stays where it is."""
    tunnel = await on_lab.provision_and_steer()
    fault = {"operation": "sr-policy-modify", "status": 200, "count": 2}
    await on_lab.lab.post("/lab/faults", json=fault)
    failed = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert failed.status_code == 502
    assert failed.json()["detail"]["code"] == "tunnel_reroute_failed"
    assert "injected fault on sr-policy-modify" in failed.json()["detail"]["message"]
    [left] = (await on_lab.lab.get("/lab/faults")).json()  # one attempt, not three
    assert left["remaining"] == 1
    assert (await on_lab.policy())["hops"] == PROTECT
    await on_lab.lab.delete("/lab/faults")
    # the tunnel is still live on its old path, so the reroute can be tried again
    retried = await on_lab.reroute(tunnel["tunnel_id"], AROUND_P1_P2)
    assert retried.status_code == 200 and retried.json()["result"]["previous_path"] == PROTECT


async def test_an_upgrade_keeps_the_tunnels_of_version_1(tmp_path: Path) -> None:
    """Version 1 kept one tunnel per incident; version 2 keys policies by id, rows kept."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'tunnel.db'}")
    try:
        await migrate(engine, "tunnel", store.MIGRATIONS[:1])
        now = utcnow()
        row = {
            "incident_id": "INC-2026-0001",
            "seq": 1,
            "tunnel_id": "sr-policy-pe1-pe4-protect-001",
            "binding_sid": 24001,
            "color": 101,
            "head_end": "pe1",
            "end_point": "pe4",
            "te_type": "sr-mpls",
            "path": PROTECT,
            "hops": [],
            "state": "up",
            "protection_pct": 100,
            "services": ["vpn-x1"],
            "attempts": 1,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
        }
        async with engine.begin() as conn:
            await conn.execute(store._legacy_tunnels.insert().values(**row))
        await migrate(engine, "tunnel", store.MIGRATIONS)
        kept = await store.by_group(engine, "INC-2026-0001", "pe1", "pe4")
    finally:
        await engine.dispose()
    assert kept is not None
    assert {k: kept[k] for k in ("tunnel_id", "binding_sid", "state", "services")} == {
        "tunnel_id": "sr-policy-pe1-pe4-protect-001",
        "binding_sid": 24001,
        "state": "up",
        "services": ["vpn-x1"],
    }

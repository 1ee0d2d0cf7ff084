"""Real topologies from topohub, and ``cxm scenario`` against the lab and the IO agent."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from typing import Any

import httpx
import pytest

from cxm.scenario import run_scenario
from services.io.app import create_app as create_io
from services.lab.app import create_app as create_lab
from services.lab.settings import LabSettings
from services.lab.topology import build_topology
from shared.settings import Settings
from tests.lab.conftest import NETWORKS
from tests.support import running, wait_for


def test_abilene_from_topohub_is_deterministic() -> None:
    topo = build_topology("sndlib/abilene", seed=0)
    assert (len(topo.nodes), len(topo.links)) == (12, 15)
    assert len(topo.services) == 132  # one service per demand of the SNDlib matrix
    assert build_topology("sndlib/abilene", seed=0).services == topo.services
    tiers = Counter(s.sla_tier for s in topo.services.values())
    assert set(tiers) <= {"platinum", "gold", "silver", "bronze"} and len(tiers) >= 3
    for link in topo.links.values():
        assert "-" not in link.source and link.delay_ms > 0 and link.capacity_mbps > 0
    for svc in topo.services.values():
        assert topo.links_of(svc.nodes) == list(svc.path)
    assert {"sla-degradation", "no-path", "recover-all"} <= set(topo.scenarios)
    other = build_topology("sndlib/abilene", seed=1)
    assert [n.te_capabilities for n in other.nodes.values()] != [
        n.te_capabilities for n in topo.nodes.values()
    ] or [s.sla_tier for s in other.services.values()] != [
        s.sla_tier for s in topo.services.values()
    ]


def test_unknown_topology_names_itself() -> None:
    with pytest.raises(ValueError, match="sndlib/atlantis"):
        build_topology("sndlib/atlantis")


async def test_abilene_lab_serves_the_documented_shapes(
    make_lab: object, settings: Settings
) -> None:
    async with make_lab(settings, LabSettings(topology="sndlib/abilene")) as lab:  # type: ignore[operator]
        data = await lab.get(NETWORKS)
        (network,) = data["ietf-network-state:networks"]["network"]
        assert len(network["node"]) == 12
        assert len(network["ietf-network-topology-state:link"]) == 30
        services = await lab.services("l3vpn") + await lab.services("l2vpn")
        assert len(services) == 132
        # every service's ref names a policy of the operational list
        policies = {(p["headend"], p["endpoint"], p["color"]) for p in await lab.policies()}
        address = {n: lab.lab.network.address(n) for n in lab.lab.network.topology.nodes}
        for svc in services:
            transport = next(iter(svc["underlay-transport"].values()))
            (ref,) = transport["sr-policy-ref"]
            assert (address[ref["headend"]], ref["endpoint"], ref["color"]) in policies
        link = next(iter(lab.lab.network.topology.links.values()))
        forward = network["ietf-network-topology-state:link"][0]["link-id"]
        pm = (await lab.pm(forward)).json()["cisco-crosswork-performance-metrics:igp-link-pm"][0]
        assert int(pm["delay"]) == round(link.delay_ms * 1000)
        response = await lab.client.post("/lab/scenarios/sla-degradation", json={"step_s": 0})
        hurt = response.json()["links"]
        await lab.app.state.lab.pusher.drain()
        assert [a["objectName"] for a in lab.receiver.alerts] == hurt


def mounted(lab_app: object, io_app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        mounts={
            "http://lab": httpx.ASGITransport(app=lab_app),  # type: ignore[arg-type]
            "http://io": httpx.ASGITransport(app=io_app),  # type: ignore[arg-type]
        }
    )


async def test_scenario_without_wait(settings: Settings) -> None:
    settings = settings.model_copy(update={"lab_url": "http://lab", "io_url": "http://io"})
    lab_app = create_lab(settings, LabSettings(push_alerts=False))
    out = io.StringIO()
    async with running(lab_app), mounted(lab_app, lab_app) as client:
        code = await run_scenario(settings, "sla-degradation", wait=False, client=client, out=out)
    assert code == 0 and "pe1-pe2, pe2-pe3" in out.getvalue()


async def test_scenario_wait_follows_the_ticket_to_closed(settings: Settings) -> None:
    settings = settings.model_copy(update={"lab_url": "http://lab", "io_url": "http://io"})
    lab_app = create_lab(settings, LabSettings(push_alerts=False))
    io_app = create_io(settings)
    out = io.StringIO()
    headers = {"Authorization": f"Bearer {settings.mesh_token}"}

    async def mesh_plays_along(io_client: httpx.AsyncClient) -> None:
        """What the mesh would do: open a ticket for the links, then close it."""
        tasks: list[tuple[str, dict[str, Any]]] = [
            ("new_ticket", {"severity": "high", "summary": "SLA", "degraded_links": ["pe1-pe2"]}),
            ("status_update", {"status": "assessing", "phase": "2", "message": "15 services"}),
            ("ticket_closed", {"resolution": "resolved", "duration_seconds": 1, "summary": "ok"}),
        ]
        # the ticket opens once the scenario hurt the link (run_scenario ignores older tickets)
        await wait_for(lambda: "pe1-pe2" in lab_app.state.lab.network.conditions, timeout=30)
        for task_type, payload in tasks:
            body = {"task_type": task_type, "payload": {"incident_id": "INC-2026-0001", **payload}}
            response = await io_client.post("/a2a/tasks", json=body, headers=headers)
            assert response.status_code == 200, response.text

    async with running(lab_app), running(io_app) as io_client, mounted(lab_app, io_app) as client:
        player = asyncio.create_task(mesh_plays_along(io_client))
        code = await run_scenario(
            settings, "sla-degradation", wait=True, client=client, out=out, timeout_s=60
        )
        await player
    text = out.getvalue()
    assert code == 0, text
    assert "INC-2026-0001 status_update assessing (phase 2): 15 services" in text
    assert "INC-2026-0001 ticket_closed resolved" in text


async def test_scenario_reports_a_missing_lab_in_one_line(settings: Settings) -> None:
    settings = settings.model_copy(update={"lab_url": "http://127.0.0.1:9"})
    out = io.StringIO()
    code = await run_scenario(settings, "sla-degradation", wait=False, out=out)
    assert code == 1
    assert out.getvalue().count("\n") == 1 and "lab is not reachable" in out.getvalue()


async def test_scenario_unknown_name(settings: Settings) -> None:
    settings = settings.model_copy(update={"lab_url": "http://lab"})
    lab_app = create_lab(settings, LabSettings(push_alerts=False))
    out = io.StringIO()
    async with running(lab_app), mounted(lab_app, lab_app) as client:
        code = await run_scenario(settings, "nope", wait=False, client=client, out=out)
    assert code == 1 and "unknown scenario 'nope'" in out.getvalue()

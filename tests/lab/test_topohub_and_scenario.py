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
from tests.support import running


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


async def test_abilene_lab_serves_through_the_clients(make_lab: object, settings: Settings) -> None:
    async with make_lab(settings, LabSettings(topology="sndlib/abilene")) as lab:  # type: ignore[operator]
        topo = await lab.cnc.topology()
        services = await lab.cnc.services()
        assert len(topo.nodes) == 12 and len(services) == 132
        link = topo.links[0].link_id
        assert (await lab.pca.link_metrics([link]))[link].delay_ms == topo.links[0].delay_ms
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
        for task_type, payload in tasks:
            await asyncio.sleep(0.05)
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

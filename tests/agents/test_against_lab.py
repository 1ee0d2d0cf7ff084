"""The five agents against the real lab (CNC/PCA emulation) in-process, over ASGI.

This is the seed's flow as far as these agents take it: impact of degrading pe1-pe2 and
pe2-pe3, an alternate path, a protection tunnel, steering, SLA checks, cutover, cleanup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.impact.app import create_app as impact_app
from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.path.app import create_app as path_app
from services.restore.app import create_app as restore_app
from services.traffic.app import create_app as traffic_app
from services.traffic.settings import TrafficSettings
from services.tunnel.app import create_app as tunnel_app
from shared.settings import Settings
from tests.agents.fakes import run_task
from tests.support import running

DEGRADED = ["pe1-pe2", "pe2-pe3"]
INCIDENT = "INC-2026-0001"


@asynccontextmanager
async def lab_mesh(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """The lab plus the five agents, each agent's southbound going to the lab over ASGI."""
    lab = lab_app(settings, LabSettings(push_alerts=False))
    async with AsyncExitStack() as stack:
        lab_client = await stack.enter_async_context(running(lab))
        transport = httpx.ASGITransport(app=lab)
        apps: dict[str, FastAPI] = {
            "impact": impact_app(settings, southbound_transport=transport),
            "path": path_app(settings, southbound_transport=transport),
            "tunnel": tunnel_app(settings, southbound_transport=transport),
            "restore": restore_app(settings, southbound_transport=transport),
            "traffic": traffic_app(
                settings,
                traffic_settings=TrafficSettings(sampler_enabled=False),
                southbound_transport=transport,
            ),
        }
        clients: dict[str, Any] = {"lab": lab_client}
        for name, app in apps.items():
            clients[name] = await stack.enter_async_context(running(app))
        yield clients


async def _ok(client: httpx.AsyncClient, task_type: str, payload: dict[str, Any]) -> Any:
    response = await run_task(client, task_type, payload)
    assert response.status_code == 200, f"{task_type}: {response.text}"
    return response.json()["result"]


@pytest.fixture
def lab_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"cnc_url": "http://lab", "pca_url": "http://lab"})


async def test_seed_flow_against_the_lab(lab_settings: Settings) -> None:
    async with lab_mesh(lab_settings) as c:
        for link in DEGRADED:
            degrade = await c["lab"].post(
                f"/lab/links/{link}/degrade", json={"delay_ms": 120, "loss_pct": 2}
            )
            assert degrade.status_code < 300, degrade.text

        impact = await _ok(
            c["impact"], "assess_impact", {"incident_id": INCIDENT, "degraded_links": DEGRADED}
        )
        assert impact["total_affected"] == 15
        assert impact["services_by_tier"] == {"platinum": 2, "gold": 5, "silver": 8}

        sla = await _ok(c["restore"], "check_sla", {"incident_id": INCIDENT, "links": DEGRADED})
        assert sla["within_sla"] is False

        path = await _ok(
            c["path"],
            "compute_path",
            {
                "incident_id": INCIDENT,
                "head_end": "pe1",
                "end_point": "pe4",
                "avoid_links": DEGRADED,
            },
        )
        assert path["found"] is True
        assert path["path"][0] == "pe1" and path["path"][-1] == "pe4"
        assert not {"pe1-pe2", "pe2-pe1", "pe2-pe3", "pe3-pe2"} & set(path["links"])

        tunnel = await _ok(
            c["tunnel"],
            "provision_tunnel",
            {"incident_id": INCIDENT, "head_end": "pe1", "end_point": "pe4", "path": path["path"]},
        )
        again = await _ok(
            c["tunnel"],
            "provision_tunnel",
            {"incident_id": INCIDENT, "head_end": "pe1", "end_point": "pe4", "path": path["path"]},
        )
        assert again == tunnel
        assert isinstance(tunnel["binding_sid"], int)
        service_ids = [s["service_id"] for s in impact["affected_services"]]
        steered = await _ok(
            c["tunnel"],
            "steer_traffic",
            {"incident_id": INCIDENT, "tunnel_id": tunnel["tunnel_id"], "service_ids": service_ids},
        )
        assert steered["traffic_steered"] is True

        demand = await _ok(c["traffic"], "demand_matrix", {})
        assert demand["total_mbps"] > 0
        await _ok(c["traffic"], "link_utilisation", {})
        loads = await _ok(c["traffic"], "link_utilisation", {"links": DEGRADED})
        assert set(loads["links"]) <= {"pe1-pe2", "pe2-pe3", "pe2-pe1", "pe3-pe2"}

        # Still degraded: the first cutover step is taken back.
        step = {
            "incident_id": INCIDENT,
            "tunnel_id": tunnel["tunnel_id"],
            "links": DEGRADED,
            "service_ids": service_ids,
        }
        reverted = await _ok(
            c["restore"], "cutover_step", {**step, "protection_pct": 75, "original_pct": 25}
        )
        assert reverted["reverted"] is True and reverted["protection_pct"] == 100

        for link in DEGRADED:
            recover = await c["lab"].post(f"/lab/links/{link}/recover")
            assert recover.status_code < 300, recover.text
        sla = await _ok(c["restore"], "check_sla", {"incident_id": INCIDENT, "links": DEGRADED})
        assert sla["within_sla"] is True, sla
        for protection, original in ((75, 25), (50, 50), (25, 75), (0, 100)):
            done = await _ok(
                c["restore"],
                "cutover_step",
                {**step, "protection_pct": protection, "original_pct": original},
            )
            assert done["within_sla"] is True and done["reverted"] is False

        cleanup = {"incident_id": INCIDENT, "tunnel_id": tunnel["tunnel_id"]}
        assert (await _ok(c["restore"], "cleanup", cleanup))["already_absent"] is False
        assert (await _ok(c["restore"], "cleanup", cleanup))["already_absent"] is True
        deleted = await _ok(c["tunnel"], "delete_tunnel", cleanup)
        assert deleted == {
            "deleted": True,
            "tunnel_id": tunnel["tunnel_id"],
            "already_absent": True,
        }

"""Tickets that are not about a link (#12), end to end in-process: correlator → IO and the
orchestrator, which matches the ticket to the runbooks instead of running the network loop.

A strong match on a non-critical ticket starts a session by itself (``cxm-auto``) and the
ticket's view carries ``runbook_session_id``; a critical ticket or a weak match starts
nothing and waits for an operator; the match endpoints have no side effect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from services.correlator.app import create_app as create_correlator
from services.correlator.settings import CorrelatorSettings
from services.orchestrator.runbooks.sessions import sessions
from tests.correlator.conftest import Cnc
from tests.runbooks.session_mesh import MESH_TOKEN, Cxm, cxm_mesh, local_step
from tests.support import running, wait_for

CORRELATOR_PORT = 8001
MESH = {"Authorization": f"Bearer {MESH_TOKEN}"}

DISK: dict[str, Any] = {
    "id": "linux-disk-full",
    "title": "Linux filesystem filling up: free disk space",
    "description": "A filesystem on a Linux host is running out of disk space "
    "(NodeFilesystemSpaceFillingUp): find what grew, clean old logs and temp files, "
    "and verify the free space.",
    "keywords": ["disk full", "filesystem filling up", "no space left on device", "disk space"],
    "labels": {"mountpoint": "/"},
    "steps": {
        "prechecks": [local_step("free space", "echo 4% free", idempotent=True)],
        "main": [local_step("clean temp files", "echo cleaned")],
        "postchecks": [local_step("free space again", "echo verified 40% free")],
    },
    "rollback": [],
}
NGINX: dict[str, Any] = {
    "id": "nginx-restart",
    "title": "Restart nginx after upstream errors",
    "description": "nginx answers 502 Bad Gateway: check the upstreams, reload nginx.",
    "keywords": ["nginx", "502 bad gateway", "upstream errors"],
    "labels": {"service": "nginx"},
    "steps": {"main": [local_step("reload", "echo reloaded")]},
    "rollback": [],
}
DISK_TICKET = {
    "title": "Filesystem / on web-03 is filling up",
    "description": "Filesystem / has 4% space left and will fill within 4 hours.",
    "labels": {"alertname": "NodeFilesystemSpaceFillingUp", "mountpoint": "/"},
}


def disk_alert() -> dict[str, Any]:
    """Alertmanager's webhook for node_exporter's disk alert on a host (not a network node)."""
    return {
        "version": "4",
        "status": "firing",
        "receiver": "cxm",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "NodeFilesystemSpaceFillingUp",
                    "instance": "web-03:9100",
                    "mountpoint": "/",
                    "fstype": "ext4",
                    "severity": "warning",
                },
                "annotations": {
                    "summary": DISK_TICKET["title"],
                    "description": DISK_TICKET["description"],
                },
                "startsAt": "2026-01-01T00:00:00Z",
                "fingerprint": "fs-web-03",
            }
        ],
    }


@asynccontextmanager
async def ticket_mesh(tmp_path: Path) -> AsyncIterator[tuple[Cxm, httpx.AsyncClient]]:
    """IO, the orchestrator and the correlator in-process, with the two runbooks stored."""
    async with cxm_mesh(tmp_path) as cxm:
        correlator = create_correlator(
            cxm.settings,
            mesh_transport=cxm.routes,
            config=CorrelatorSettings(group_wait_s=1.0, tick_s=1.0),
            cnc_transport=httpx.MockTransport(Cnc().handler),
        )
        async with running(correlator) as corr:
            cxm.routes.apps[CORRELATOR_PORT] = correlator
            operator = await cxm.user("olivia")
            await cxm.runbook(DISK, operator)
            await cxm.runbook(NGINX, operator)
            yield cxm, corr


async def matched(cxm: Cxm, incident_id: str) -> dict[str, Any]:
    """The ticket once the orchestrator's matches reached IO."""

    async def ready() -> dict[str, Any] | None:
        response = await cxm.io.get(f"/api/v1/tickets/{incident_id}", headers=cxm.admin())
        ticket: dict[str, Any] = response.json()
        return ticket if response.status_code == 200 and ticket["runbook_matches"] else None

    found: dict[str, Any] = await wait_for(ready, timeout=30)
    return found


async def demo(corr: httpx.AsyncClient, **ticket: Any) -> str:
    response = await corr.post("/api/v1/tickets/demo/ticket", json=ticket, headers=MESH)
    assert response.status_code == 202, response.text
    (entry,) = response.json()["alerts"]
    assert entry["disposition"] == "new_incident", entry
    incident_id: str = entry["incident_id"]
    return incident_id


def orchestrator(cxm: Cxm) -> httpx.AsyncClient:
    assert cxm.orchestrator is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cxm.orchestrator),
        base_url="http://orchestrator",
        headers=MESH,  # the orchestrator's REST asks for the mesh token, as every agent's
    )


async def signal(cxm: Cxm, incident_id: str, **details: Any) -> dict[str, Any]:
    """What ServiceNow's webhook makes notify send when a person resolves the record."""
    body = {
        "task_type": "incident_signal",
        "payload": {"incident_id": incident_id, "signal": "operator_resolved", "details": details},
    }
    async with orchestrator(cxm) as orch:
        response = await orch.post("/a2a/tasks", json=body, headers=MESH)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def orchestrator_view(cxm: Cxm, incident_id: str) -> dict[str, Any]:
    async with orchestrator(cxm) as orch:
        response = await orch.get(f"/api/v1/incidents/{incident_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def sessions_started(cxm: Cxm) -> int:
    assert cxm.orchestrator is not None
    async with cxm.orchestrator.state.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(sessions)) or 0)


async def test_host_alert_matched_and_a_strong_match_runs_by_itself(tmp_path: Path) -> None:
    async with ticket_mesh(tmp_path) as (cxm, corr):
        response = await corr.post(
            "/api/v1/tickets/webhook/alertmanager", json=disk_alert(), headers=MESH
        )
        assert response.status_code == 202, response.text
        (entry,) = response.json()["alerts"]
        assert entry["disposition"] == "new_incident", entry
        incident_id = entry["incident_id"]

        ticket = await matched(cxm, incident_id)
        assert ticket["kind"] == "host"
        assert ticket["degraded_links"] == []
        best = ticket["runbook_matches"][0]
        assert best["runbook_id"] == "linux-disk-full"
        assert set(best["factors"]) == {"semantic", "keyword", "history", "recency"}
        assert best["explanation"]
        assert [m["confidence"] for m in ticket["runbook_matches"]] == sorted(
            (m["confidence"] for m in ticket["runbook_matches"]), reverse=True
        )
        session_id = ticket["runbook_session_id"]
        assert session_id, ticket

        session = await cxm.settled(session_id)
        assert session["started_by"] == "cxm-auto"
        assert session["runbook_id"] == "linux-disk-full"
        assert session["target"] == "web-03"
        assert session["verification"]["outcome"] == "resolved", session
        closed = await cxm.closed_ticket(incident_id)
        assert closed["resolution"] == "resolved"
        # the orchestrator shows the host ticket like an incident, from its sessions
        view = await orchestrator_view(cxm, incident_id)
        assert view["kind"] == "host" and view["host"] == "web-03"
        assert (view["status"], view["final"]) == ("resolved", True)
        assert view["runbook_session_id"] == session_id
        # a person resolving the record afterwards changes nothing
        assert (await signal(cxm, incident_id, resolved_by="ann"))["accepted"] is False
        # the network loop never ran for it: IO knows no other ticket
        listed = await cxm.io.get("/api/v1/tickets", headers=cxm.admin())
        assert [t["kind"] for t in listed.json()] == ["host"]

        async def freed() -> bool:
            found = await corr.get("/api/v1/incidents", params={"status": "closed"})
            return any(i["incident_id"] == incident_id for i in found.json())

        await wait_for(freed, timeout=30)


async def test_critical_ticket_waits_for_a_person(tmp_path: Path) -> None:
    async with ticket_mesh(tmp_path) as (cxm, corr):
        incident_id = await demo(corr, severity="critical", host="web-03", **DISK_TICKET)
        ticket = await matched(cxm, incident_id)
        assert ticket["runbook_matches"][0]["runbook_id"] == "linux-disk-full"
        assert ticket["runbook_session_id"] is None
        assert ticket["status"] == "analyzing"
        update = [e for e in ticket["events"] if e["task_type"] == "status_update"][-1]
        assert update["payload"]["details"]["auto_run"]["started"] is False
        assert "critical" in update["payload"]["details"]["auto_run"]["reason"]
        assert await sessions_started(cxm) == 0
        # an operator's pick runs it, and the view follows the session
        operator = await cxm.user("oscar")
        session_id = await cxm.start(incident_id, "linux-disk-full", operator)

        async def carried() -> bool:
            view = await cxm.ticket_view(incident_id)
            return bool(view["runbook_session_id"] == session_id)

        await wait_for(carried, timeout=30)


async def test_weak_match_starts_nothing(tmp_path: Path) -> None:
    async with ticket_mesh(tmp_path) as (cxm, corr):
        incident_id = await demo(
            corr,
            title="Printer on floor 3 keeps jamming",
            description="Paper stuck in tray 2 since this morning",
            severity="low",
            host="printer-3f",
            labels={},
        )
        ticket = await matched(cxm, incident_id)
        assert len(ticket["runbook_matches"]) == 2  # always offered, best first
        assert ticket["runbook_session_id"] is None
        assert ticket["status"] == "analyzing"
        assert await sessions_started(cxm) == 0
        view = await orchestrator_view(cxm, incident_id)
        assert (view["kind"], view["status"], view["final"]) == ("host", "analyzing", False)
        # nobody ran anything; a person fixed the printer and resolved the ServiceNow record
        answer = await signal(cxm, incident_id, resolved_by="pat", source="servicenow")
        assert answer == {"incident_id": incident_id, "accepted": True, "status": "resolved"}
        closed = await cxm.closed_ticket(incident_id)
        assert closed["resolution"] == "resolved"
        (event,) = [e for e in closed["events"] if e["task_type"] == "ticket_closed"]
        assert event["payload"]["details"]["resolved_by"] == "pat"
        view = await orchestrator_view(cxm, incident_id)
        assert (view["status"], view["final"], view["closed_by"]) == ("resolved", True, "pat")
        assert (await signal(cxm, incident_id))["accepted"] is False  # once

        async def freed() -> bool:
            found = await corr.get("/api/v1/incidents", params={"status": "closed"})
            return any(i["incident_id"] == incident_id for i in found.json())

        await wait_for(freed, timeout=30)


async def test_match_endpoints_have_no_side_effect(tmp_path: Path) -> None:
    async with ticket_mesh(tmp_path) as (cxm, corr):
        viewer = await cxm.user("vera", role="viewer")
        response = await cxm.io.post(
            "/api/v1/runbooks/match", json={**DISK_TICKET, "severity": "high"}, headers=viewer
        )
        assert response.status_code == 200, response.text
        matches = response.json()["matches"]
        assert [m["runbook_id"] for m in matches] == ["linux-disk-full", "nginx-restart"]
        assert set(matches[0]["factors"]) == {"semantic", "keyword", "history", "recency"}
        assert 0 <= matches[1]["confidence"] < matches[0]["confidence"] <= 1
        bad = await cxm.io.post("/api/v1/runbooks/match", json={"title": ""}, headers=viewer)
        assert bad.status_code == 422
        assert await sessions_started(cxm) == 0
        assert (await cxm.io.get("/api/v1/tickets", headers=viewer)).json() == []

        incident_id = await demo(corr, severity="critical", host="web-03", **DISK_TICKET)
        await matched(cxm, incident_id)
        before = len((await cxm.ticket_view(incident_id))["events"])
        again = await cxm.io.get(f"/api/v1/tickets/{incident_id}/runbook-matches", headers=viewer)
        assert again.status_code == 200, again.text
        assert again.json()["matches"][0]["runbook_id"] == "linux-disk-full"
        assert len((await cxm.ticket_view(incident_id))["events"]) == before
        assert await sessions_started(cxm) == 0
        missing = await cxm.io.get("/api/v1/tickets/INC-2026-9999/runbook-matches", headers=viewer)
        assert missing.status_code == 404

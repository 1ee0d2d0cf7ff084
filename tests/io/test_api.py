"""The IO Agent's API in-process: tickets, stream, approvals, auth, figures, topology, peers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.io import admin, console, protection
from services.io.app import create_app
from services.io.settings import IoSettings
from shared.models import NewTicket
from shared.settings import Settings
from tests.io.conftest import IoFactory
from tests.io.fakes import (
    INCIDENT,
    MESH_TOKEN,
    TUNNEL_PATH,
    Orchestrator,
    approval,
    closed,
    envelope,
    new_ticket,
    seed_phases,
    serve,
    status,
)


async def test_tickets_list_detail_and_stats(make_io: IoFactory) -> None:
    async with make_io() as io:
        await io.task(new_ticket())
        for phase in seed_phases():
            await io.task(phase)
        tickets = (await io.http.get("/api/v1/tickets")).json()
        assert [t["incident_id"] for t in tickets] == [INCIDENT]
        ticket = tickets[0]
        assert ticket["severity"] == "high"
        assert ticket["status"] == "provisioning"
        assert ticket["phase"] == "4"
        assert ticket["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
        assert ticket["affected_services_count"] == 15
        assert ticket["highest_tier"] == "platinum"

        detail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert [e["task_type"] for e in detail["events"]] == ["new_ticket"] + ["status_update"] * 3
        assert detail["events"][3]["payload"]["details"]["binding_sid"] == 24001
        assert all("received_at" in e for e in detail["events"])

        assert (await io.http.get("/api/v1/tickets", params={"q": "pe2-pe3"})).json()
        assert (await io.http.get("/api/v1/tickets", params={"tier": "gold"})).json() == []
        assert (await io.http.get("/api/v1/tickets/INC-2026-9999")).status_code == 404

        figures = (await io.http.get("/api/v1/stats")).json()
        assert figures["open"] == 1 and figures["mttr_seconds"] is None
        assert figures["by_tier"]["platinum"] == 1

        await io.task(closed())
        figures = (await io.http.get("/api/v1/stats")).json()
        assert figures["open"] == 0 and figures["closed"] == 1
        assert figures["mttr_seconds"] is not None
        assert (await io.http.get("/api/v1/tickets", params={"status": "open"})).json() == []


async def test_stream_delivers_ticket_events_and_replays(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mesh_token=MESH_TOKEN, mesh_retries=0)
    app = create_app(settings, mesh_transport=Orchestrator().transport())
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def read(lines: AsyncIterator[str], want: str) -> dict[str, Any]:
            event: dict[str, str] = {}
            async for line in lines:
                if line.startswith("event:"):
                    event["event"] = line.split(":", 1)[1].strip()
                elif line.startswith("id:"):
                    event["id"] = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    event["data"] = line.split(":", 1)[1].strip()
                elif not line and event.get("event") == want:
                    return {**event, "data": json.loads(event["data"])}
                elif not line:
                    event = {}
            raise AssertionError("stream ended")

        async with http.stream("GET", "/api/v1/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            await asyncio.wait_for(read(lines, "hello"), 10)
            posted = await http.post(
                "/a2a/tasks",
                json=new_ticket(),
                headers={"Authorization": f"Bearer {MESH_TOKEN}"},
            )
            assert posted.status_code == 200
            message = await asyncio.wait_for(read(lines, "ticket"), 10)
        assert message["data"]["ticket"]["incident_id"] == INCIDENT
        assert message["data"]["event"]["task_type"] == "new_ticket"

        # a console that reconnects with Last-Event-ID gets what it missed
        first_id = int(message["id"])
        await http.post(
            "/a2a/tasks",
            json=seed_phases()[0],
            headers={"Authorization": f"Bearer {MESH_TOKEN}"},
        )
        headers = {"Last-Event-ID": str(first_id)}
        async with http.stream("GET", "/api/v1/stream", headers=headers) as response:
            replayed = await asyncio.wait_for(read(response.aiter_lines(), "ticket"), 10)
        assert int(replayed["id"]) > first_id
        assert replayed["data"]["ticket"]["status"] == "assessing"


async def test_approve_forwards_decision_with_authenticated_user(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(new_ticket())
        await io.task(approval())
        pending = (await io.http.get("/api/v1/approvals")).json()
        assert [a["approval_id"] for a in pending] == ["APR-0001"]
        assert (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()[
            "status"
        ] == "waiting_approval"

        alice = await io.user("alice", "operator")
        response = await io.http.post(
            "/api/v1/approvals/APR-0001/approve",
            json={"notes": "tunnel looks right", "decided_by": "mallory"},
            headers=alice,
        )
        assert response.status_code == 200, response.text
        row = response.json()
        assert row["status"] == "approved" and row["decided_by"] == "alice"
        assert row["notes"] == "tunnel looks right"
        sent = orchestrator.received[-1]
        assert sent["task_type"] == "approval_decision"
        assert sent["payload"] == {
            "approval_id": "APR-0001",
            "incident_id": INCIDENT,
            "decision": "approve",
            "decided_by": "alice",
            "notes": "tunnel looks right",
        }
        assert (await io.http.get("/api/v1/approvals")).json() == []
        again = await io.http.post("/api/v1/approvals/APR-0001/reject", headers=alice)
        assert again.status_code == 409
        assert "approved" in again.json()["detail"]


async def test_reject_on_loopback_is_the_local_operator(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(approval())
        response = await io.http.post(
            "/api/v1/approvals/APR-0001/reject", json={"notes": "not during business hours"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["decided_by"] == "local-operator"
        assert orchestrator.received[-1]["payload"]["decision"] == "reject"
        everything = (await io.http.get("/api/v1/approvals", params={"status": "all"})).json()
        assert everything[0]["status"] == "rejected"


async def test_batch_by_ids_and_by_incident(make_io: IoFactory, orchestrator: Orchestrator) -> None:
    async with make_io() as io:
        for n in (1, 2, 3):
            await io.task(approval(approval_id=f"APR-000{n}"))
        await io.task(approval("INC-2026-0002", "APR-0009"))
        response = await io.http.post(
            "/api/v1/approvals/batch", json={"ids": ["APR-0001", "APR-0002", "APR-0404"]}
        )
        body = response.json()
        assert body["decided"] == 2 and body["failed"] == 1
        assert {r["approval_id"]: r.get("code") for r in body["results"] if not r["ok"]} == {
            "APR-0404": 404
        }
        response = await io.http.post(
            "/api/v1/approvals/batch", json={"incident_id": INCIDENT, "notes": "all fine"}
        )
        assert response.json()["decided"] == 1
        left = (await io.http.get("/api/v1/approvals")).json()
        assert [a["approval_id"] for a in left] == ["APR-0009"]
        decided = [m["payload"]["approval_id"] for m in orchestrator.received]
        assert sorted(decided) == ["APR-0001", "APR-0002", "APR-0003"]
        assert (await io.http.post("/api/v1/approvals/batch", json={})).status_code == 422


async def test_delegation_limits_who_decides(make_io: IoFactory) -> None:
    async with make_io() as io:
        await io.task(approval())
        alice = await io.user("alice", "operator")
        bob = await io.user("bob", "operator")
        await io.user("vera", "viewer")
        refused = await io.http.post(
            "/api/v1/approvals/APR-0001/delegate", json={"to": "vera"}, headers=alice
        )
        assert refused.status_code == 422
        response = await io.http.post(
            "/api/v1/approvals/APR-0001/delegate", json={"to": "alice"}, headers=bob
        )
        assert response.status_code == 200
        assert response.json()["delegated_to"] == "alice"
        assert response.json()["delegated_by"] == "bob"
        denied = await io.http.post("/api/v1/approvals/APR-0001/approve", headers=bob)
        assert denied.status_code == 403
        assert "alice" in denied.json()["detail"]
        ok = await io.http.post("/api/v1/approvals/APR-0001/approve", headers=alice)
        assert ok.status_code == 200 and ok.json()["decided_by"] == "alice"

        # an admin may decide what was delegated to someone else
        await io.task(approval(approval_id="APR-0002"))
        await io.http.post("/api/v1/approvals/APR-0002/delegate", json={"to": "bob"}, headers=bob)
        admin_headers = {"Authorization": f"Bearer {io.admin_token()}"}
        ok = await io.http.post("/api/v1/approvals/APR-0002/reject", headers=admin_headers)
        assert ok.status_code == 200 and ok.json()["decided_by"] == "admin"


async def test_expiry_and_incident_end(make_io: IoFactory, orchestrator: Orchestrator) -> None:
    async with make_io() as io:
        await io.task(approval(approval_id="APR-OLD", expires_in_s=-1))
        assert (await io.http.get("/api/v1/approvals")).json() == []
        old = (await io.http.get("/api/v1/approvals/APR-OLD")).json()
        assert old["status"] == "expired"
        late = await io.http.post("/api/v1/approvals/APR-OLD/approve")
        assert late.status_code == 409
        assert orchestrator.received == []

        await io.task(approval(approval_id="APR-ESC"))
        await io.task(status(INCIDENT, "escalated", "3", "No alternate path; escalated"))
        assert (await io.http.get("/api/v1/approvals/APR-ESC")).json()["status"] == "expired"

        await io.task(approval("INC-2026-0002", "APR-CLOSE"))
        await io.task(closed("INC-2026-0002"))
        row = (await io.http.get("/api/v1/approvals/APR-CLOSE")).json()
        assert row["status"] == "cancelled" and "closed" in row["outcome"]


async def test_sweeper_expires_without_a_reader(make_io: IoFactory) -> None:
    async with make_io(io={"expiry_sweep_s": 0.05}) as io:
        await io.task(approval(expires_in_s=0.2))
        engine = io.app.state.engine
        from services.io import approvals as approvals_store
        from tests.support import wait_for

        async def expired() -> bool:
            row = await approvals_store.get(engine, "APR-0001")
            return row is not None and row["status"] == "expired"

        await wait_for(expired, timeout=10)


async def test_orchestrator_conflict_is_shown(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(approval())
        orchestrator.mode = "conflict"
        response = await io.http.post("/api/v1/approvals/APR-0001/approve", json={"notes": "x"})
        assert response.status_code == 409
        assert "no longer pending" in response.json()["detail"]
        row = (await io.http.get("/api/v1/approvals/APR-0001")).json()
        assert row["status"] == "cancelled"


async def test_orchestrator_down_keeps_the_approval_pending(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(approval())
        orchestrator.mode = "down"
        response = await io.http.post("/api/v1/approvals/APR-0001/approve")
        assert response.status_code == 503
        assert "still pending" in response.json()["detail"]
        assert (await io.http.get("/api/v1/approvals/APR-0001")).json()["status"] == "pending"
        orchestrator.mode = "ok"
        response = await io.http.post("/api/v1/approvals/APR-0001/approve")
        assert response.status_code == 200


async def test_roles(make_io: IoFactory) -> None:
    async with make_io() as io:
        await io.task(approval())
        viewer = await io.user("vera", "viewer")
        operator = await io.user("otto", "operator")
        assert (await io.http.get("/api/v1/tickets", headers=viewer)).status_code == 200
        assert (await io.http.get("/api/v1/approvals", headers=viewer)).status_code == 200
        denied = await io.http.post("/api/v1/approvals/APR-0001/approve", headers=viewer)
        assert denied.status_code == 403
        lab = await io.http.post("/api/v1/lab/links/pe1-pe2/recover", headers=viewer)
        assert lab.status_code == 403
        assert (await io.http.get("/api/v1/users", headers=operator)).status_code == 403
        assert (await io.http.post("/api/v1/users", json={"username": "x"})).status_code == 403
        me = (await io.http.get("/api/v1/auth/me", headers=viewer)).json()
        assert me == {"username": "vera", "role": "viewer", "via": "token"}
        bad = await io.http.get("/api/v1/tickets", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401

        # admin: list (hints only), revoke, change role
        admin_headers = {"Authorization": f"Bearer {io.admin_token()}"}
        users = (await io.http.get("/api/v1/users", headers=admin_headers)).json()
        vera = next(u for u in users if u["username"] == "vera")
        assert "token" not in json.dumps(vera["tokens"][0]).replace('"tokens"', "")
        token_id = vera["tokens"][0]["id"]
        deleted = await io.http.delete(f"/api/v1/tokens/{token_id}", headers=admin_headers)
        assert deleted.status_code == 204
        assert (await io.http.get("/api/v1/tickets", headers=viewer)).status_code == 401
        promoted = await io.http.patch(
            "/api/v1/users/otto", json={"role": "admin"}, headers=admin_headers
        )
        assert promoted.json()["role"] == "admin"
        assert (await io.http.get("/api/v1/users", headers=operator)).status_code == 200


async def test_no_token_is_401_when_loopback_trust_is_off(make_io: IoFactory) -> None:
    async with make_io(io={"loopback_trust": False}) as io:
        response = await io.http.get("/api/v1/tickets")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert (
            await io.http.post("/api/v1/approvals/batch", json={"ids": ["x"]})
        ).status_code == 401
        admin_headers = {"Authorization": f"Bearer {io.admin_token()}"}
        assert (await io.http.get("/api/v1/tickets", headers=admin_headers)).status_code == 200
        # the console page and its config stay reachable, so the sign-in form can show
        assert (await io.http.get("/")).status_code == 200
        assert (await io.http.get("/api/v1/console/config")).json()["loopback_trust"] is False


async def test_loopback_trust_refuses_rebinding_proxies_and_other_sites(make_io: IoFactory) -> None:
    async with make_io() as io:
        assert (await io.http.get("/api/v1/auth/me")).json()["via"] == "loopback"
        for headers in (
            {"Host": "evil.example:8999"},
            {"X-Forwarded-For": "203.0.113.9"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "http://evil.example"},
        ):
            response = await io.http.get("/api/v1/auth/me", headers=headers)
            assert response.status_code == 401, headers


async def test_bootstrap_admin_token_file(make_io: IoFactory, tmp_path: Path) -> None:
    async with make_io() as io:
        path = tmp_path / "io-admin-token"
        assert path.stat().st_mode & 0o777 == 0o600
        me = await io.http.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {io.admin_token()}"}
        )
        assert me.json() == {"username": "admin", "role": "admin", "via": "token"}
    before = path.read_text()
    async with make_io():  # users exist: no second admin, the file is left alone
        assert path.read_text() == before


def test_admin_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("CXM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CXM_DATABASE_URL", raising=False)
    assert admin.main(["create-user", "olga", "--role", "operator"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("cxm_")
    assert admin.main(["create-user", "olga"]) == 1
    assert admin.main(["set-role", "olga", "admin"]) == 0
    assert admin.main(["list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["role"] == "admin" and token not in json.dumps(listed)
    assert listed[0]["created_by"] == listed[0]["updated_by"] == "cli"
    assert admin.main(["revoke", str(listed[0]["tokens"][0]["id"])]) == 0
    assert admin.main(["list"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tokens"][0]["revoked_by"] == "cli"


async def test_topology_cached_and_unavailable(make_io: IoFactory) -> None:
    async with make_io() as io:
        topo = (await io.http.get("/api/v1/topology")).json()
        assert topo["available"] is True
        assert {n["id"] for n in topo["nodes"]} == {"pe1", "pe2", "pe3", "pe4", "p1", "p2"}
        assert all(
            0 <= n["x"] <= topo["width"] and 0 <= n["y"] <= topo["height"] for n in topo["nodes"]
        )
        assert len({(n["x"], n["y"]) for n in topo["nodes"]}) == 6
        again = (await io.http.get("/api/v1/topology")).json()
        assert again["fetched_at"] == topo["fetched_at"]
    async with make_io(cnc_up=False) as io:
        topo = (await io.http.get("/api/v1/topology")).json()
        assert topo["available"] is False
        assert "unavailable" in topo["error"]


async def test_lab_proxy(make_io: IoFactory, network_calls: list[tuple[str, Any]]) -> None:
    async with make_io() as io:
        response = await io.http.post(
            "/api/v1/lab/links/pe1-pe2/degrade", json={"delay_ms": 80, "loss_pct": 2}
        )
        assert response.status_code == 200 and response.json()["state"] == "applied"
        assert network_calls[-1] == ("degrade pe1-pe2", {"delay_ms": 80, "loss_pct": 2})
        assert (await io.http.post("/api/v1/lab/links/pe1-pe2/recover")).status_code == 200
        assert (await io.http.post("/api/v1/lab/links/zz-yy/flap")).status_code == 404
        assert (await io.http.post("/api/v1/lab/links/pe1-pe2/melt")).status_code == 404
        run = await io.http.post("/api/v1/lab/scenarios/sla-degradation")
        assert run.json() == {"scenario": "sla-degradation", "started": True}
        assert (await io.http.get("/api/v1/lab/topology")).json()["links"]
    async with make_io(peers_up=False) as io:
        down = await io.http.post("/api/v1/lab/links/pe1-pe2/flap")
        assert down.status_code == 503 and "unreachable" in down.json()["detail"]
    async with make_io(lab_enabled=False) as io:
        assert (await io.http.post("/api/v1/lab/links/pe1-pe2/flap")).status_code == 404


async def test_audit_trail(make_io: IoFactory) -> None:
    async with make_io() as io:
        trail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}/audit")).json()
        assert trail["available"] is True
        assert trail["events"][0]["event_type"] == "incident_created"
    async with make_io(peers_up=False) as io:
        trail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}/audit")).json()
        assert trail == {"available": False, "error": "audit agent unreachable: ConnectError"}


async def test_docs_are_served_without_a_cdn(make_io: IoFactory) -> None:
    async with make_io() as io:
        page = (await io.http.get("/docs")).text
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
        assert "cdn" not in page.lower() and "https://" not in page
        assert (await io.http.get("/redoc")).status_code == 404
        js = await io.http.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
        paths = (await io.http.get("/openapi.json")).json()["paths"]
        for path in (
            "/api/v1/tickets",
            "/api/v1/tickets/{incident_id}",
            "/api/v1/approvals",
            "/api/v1/approvals/{approval_id}/approve",
            "/api/v1/approvals/batch",
            "/api/v1/stats",
            "/api/v1/stream",
        ):
            assert path in paths
        index = (await io.http.get("/")).text
        assert "https://" not in index
        assert '<script type="module" src="/static/js/main.js">' in index


CONSOLE_MODULES = {p.name for p in (console.STATIC / "js").glob("*.js")}


async def test_console_modules_are_served_as_javascript(make_io: IoFactory) -> None:
    """Every module main.js imports, transitively, is there, as JavaScript, revalidated.

    A browser refuses a module served with a non-JavaScript type, and one missing import
    leaves a blank page: both are caught here without a browser.
    """
    async with make_io() as io:
        seen: set[str] = set()
        todo = ["main.js"]
        while todo:
            name = todo.pop()
            seen.add(name)
            response = await io.http.get(f"/static/js/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith("text/javascript"), name
            assert response.headers["cache-control"] == "no-cache", name
            imports = re.findall(r'^import [^;]+ from "\./([\w.]+)";', response.text, re.M)
            todo.extend(i for i in imports if i not in seen)
        assert seen == CONSOLE_MODULES
        css = await io.http.get("/static/app.css")
        assert css.headers["content-type"].startswith("text/css")
        vendor = await io.http.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert "cache-control" not in vendor.headers


async def test_unknown_incident_notifications_and_repeats(make_io: IoFactory) -> None:
    async with make_io() as io:
        await io.task(approval())
        await io.task(approval())  # the same approval twice is one approval
        everything = (await io.http.get("/api/v1/approvals", params={"status": "all"})).json()
        assert len(everything) == 1
        invalid = await io.http.post(
            "/a2a/tasks",
            json={"task_type": "approval_required", "payload": {"approval_id": "x"}},
            headers={"Authorization": f"Bearer {MESH_TOKEN}"},
        )
        assert invalid.status_code == 422
        assert "payload.incident_id" in invalid.text


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_IO_LOOPBACK_TRUST", "false")
    assert IoSettings().loopback_trust is False


TUNNEL = "sr-policy-pe1-pe4-protect-001"
MOVED = ["pe1", "pe2", "p1", "pe4", "p2", "pe3"]


def _escalated(tunnel_words: str, incident: str = INCIDENT) -> dict[str, Any]:
    """ticket_closed for an escalation; ``tunnel_words`` is the orchestrator's prose about it."""
    return envelope(
        "ticket_closed",
        {
            "incident_id": incident,
            "resolution": "escalated",
            "duration_seconds": 90,
            "summary": "Incident escalated to an operator: SLA not recovered",
            "details": {
                "final_status": "escalated",
                "close_reason": "sla_not_recovered",
                "tunnel_id": TUNNEL,
                "tunnel": tunnel_words,
            },
            "source_agent": "orchestrator",
        },
    )


def _steered(incident: str = INCIDENT) -> dict[str, Any]:
    return status(
        incident,
        "steering",
        "5",
        f"Traffic steered onto {TUNNEL}, monitoring SLA",
        traffic_steered=True,
        tunnel_id=TUNNEL,
        service_ids=["svc-1"],
    )


def _protection(view: dict[str, Any]) -> tuple[Any, Any, Any]:
    return view["tunnel"], view["protection_path"], view["tunnel_left_up"]


async def test_ticket_carries_its_tunnel_protection_path_and_tunnel_left_up(
    make_io: IoFactory,
) -> None:
    """The fields follow each task, in the list, the detail and the live stream alike."""
    async with make_io() as io:
        pushed = io.app.state.broadcaster.subscribe()

        async def after(task: dict[str, Any]) -> dict[str, Any]:
            """Send ``task``; return the ticket as listed, checking detail and stream agree."""
            await io.task(task)
            [listed] = (await io.http.get("/api/v1/tickets")).json()
            detail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
            message = pushed.get_nowait()
            while message.kind != "ticket":
                message = pushed.get_nowait()
            assert _protection(detail) == _protection(listed)
            assert _protection(message.data["ticket"]) == _protection(listed)
            return listed

        ticket = await after(new_ticket())
        assert _protection(ticket) == (None, None, None)
        assessed, computed, provisioned = seed_phases()
        assert _protection(await after(assessed)) == (None, None, None)

        ticket = await after(computed)
        assert ticket["tunnel"] is None and ticket["tunnel_left_up"] is None
        assert ticket["protection_path"] == {
            "kind": "computed",
            "path": TUNNEL_PATH,
            "links": ["pe1-p1", "p1-pe4", "pe4-p2", "p2-pe3"],
            "hops": 4,
            "head_end": "pe1",
            "end_point": "pe3",
        }

        ticket = await after(provisioned)
        assert ticket["tunnel"] == {
            "tunnel_id": TUNNEL,
            "state": "provisioned",
            "path": TUNNEL_PATH,
            "hops": 4,
            "binding_sid": 24001,
            "te_type": "sr-mpls",
        }
        assert ticket["protection_path"]["kind"] == "tunnel"
        assert ticket["protection_path"]["path"] == TUNNEL_PATH

        # asking, and failing, change nothing of what the network carries
        ticket = await after(approval())
        assert ticket["status"] == "waiting_approval"
        assert ticket["tunnel"]["state"] == "provisioned"
        err = envelope(
            "error",
            {
                "incident_id": INCIDENT,
                "error_code": "steer_failed",
                "message": "Steering failed once, retrying",
                "details": {"tunnel_id": "sr-policy-other", "path": ["pe1", "pe2"]},
                "source_agent": "orchestrator",
            },
        )
        assert (await after(err))["tunnel"]["tunnel_id"] == TUNNEL

        assert (await after(_steered()))["tunnel"]["state"] == "carrying"

        # re-routed in place: the newest path wins, hops follow
        ticket = await after(
            status(
                INCIDENT, "monitoring", "6", "Re-routed", tunnel_id=TUNNEL, path=MOVED, reroute=1
            )
        )
        assert ticket["tunnel"]["path"] == MOVED and ticket["tunnel"]["hops"] == 5
        assert ticket["protection_path"]["path"] == MOVED
        assert "pe2-p1" in ticket["protection_path"]["links"]
        # a cutover step names the tunnel without a path: the path stays
        ticket = await after(status(INCIDENT, "restoring", "7", "Cutover 75/25", tunnel_id=TUNNEL))
        assert ticket["tunnel"]["path"] == MOVED and ticket["tunnel"]["state"] == "carrying"
        assert ticket["tunnel_left_up"] is None

        # the escalation's prose is not read: what matters is that traffic was on the tunnel
        ticket = await after(_escalated("still in service, see runbook 7"))
        assert ticket["status"] == "escalated"
        assert ticket["tunnel_left_up"] == TUNNEL
        assert ticket["tunnel"]["state"] == "left_up"

        removed = await io.http.post(f"/api/v1/tickets/{INCIDENT}/tunnel/remove", json={})
        assert removed.status_code == 200, removed.text
        [listed] = (await io.http.get("/api/v1/tickets")).json()
        assert listed["tunnel_left_up"] is None
        assert listed["tunnel"]["state"] == "removed"
        assert listed["tunnel"]["path"] == MOVED
        message = pushed.get_nowait()
        while message.kind != "ticket" or message.data["event"]["task_type"] != "tunnel_removed":
            message = pushed.get_nowait()
        assert message.data["ticket"]["tunnel_left_up"] is None


async def test_no_tunnel_left_up_unless_it_carried_traffic(make_io: IoFactory) -> None:
    """An escalation before steering leaves nothing up, whatever its prose says; a resolved
    close after the tunnel's cleanup leaves nothing up either."""
    async with make_io() as io:
        await io.task(new_ticket())
        for phase in seed_phases():
            await io.task(phase)
        await io.task(_escalated("left up: it carries the protected services"))
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert ticket["tunnel_left_up"] is None
        assert ticket["tunnel"]["state"] == "removed"

        other = "INC-2026-0002"
        await io.task(new_ticket(other))
        for phase in [*seed_phases(other), _steered(other)]:
            await io.task(phase)
        await io.task(
            status(other, "restoring", "7", "Traffic back", tunnel_id=TUNNEL, cleanup=True)
        )
        await io.task(closed(other))
        ticket = (await io.http.get(f"/api/v1/tickets/{other}")).json()
        assert ticket["tunnel"]["state"] == "removed"
        assert ticket["tunnel_left_up"] is None


async def test_upgrade_fills_the_fields_from_the_stored_events(make_io: IoFactory) -> None:
    """A database from before the fields existed: the migration replays each ticket."""
    async with make_io() as io:
        await io.task(new_ticket())
        for phase in [*seed_phases(), _steered()]:
            await io.task(phase)
        await io.task(_escalated("left up"))
        async with io.app.state.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE tickets SET tunnel = NULL, tunnel_left_up = NULL"))
            await conn.execute(
                sa.text("DELETE FROM cxm_migrations WHERE owner = 'io' AND version = 6")
            )
        assert (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()["tunnel"] is None
    async with make_io() as io:
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert ticket["tunnel_left_up"] == TUNNEL
        assert ticket["tunnel"]["path"] == TUNNEL_PATH


async def test_operator_removes_a_tunnel_an_escalation_left_up(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(new_ticket())
        for phase in [*seed_phases(), _steered()]:
            await io.task(phase)
        await io.task(_escalated("left up: it carries the protected services"))
        url = f"/api/v1/tickets/{INCIDENT}/tunnel/remove"
        viewer = await io.user("vic", "viewer")
        assert (await io.http.post(url, headers=viewer)).status_code == 403
        orchestrator.mode = "down"
        down = await io.http.post(url)
        assert down.status_code == 503 and "nothing changed" in down.json()["detail"]
        orchestrator.mode = "ok"
        alice = await io.user("alice", "operator")
        done = await io.http.post(url, json={"notes": "customer moved"}, headers=alice)
        assert done.status_code == 200, done.text
        assert done.json()["removed_by"] == "alice"
        [sent] = [m for m in orchestrator.received if m["task_type"] == "delete_tunnel"]
        assert sent["payload"] == {"incident_id": INCIDENT, "tunnel_id": TUNNEL}
        events = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()["events"]
        [removed] = [e["payload"] for e in events if e["task_type"] == "tunnel_removed"]
        assert removed["notes"] == "customer moved" and removed["removed_by"] == "alice"
        await io.app.state.outbox.flush()
        [audited] = [m for m in orchestrator.received if m["task_type"] == "audit_event"]
        assert audited["payload"]["details"]["action"] == "tunnel_removed"
        assert audited["payload"]["details"]["removed_by"] == "alice"
        again = await io.http.post(url, headers=alice)
        assert again.status_code == 409 and "no tunnel left up" in again.json()["detail"]


async def test_no_tunnel_to_remove_is_409_and_changes_nothing(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    async with make_io() as io:
        await io.task(new_ticket())
        await io.task(_escalated("removed: never carried traffic"))
        response = await io.http.post(f"/api/v1/tickets/{INCIDENT}/tunnel/remove")
        assert response.status_code == 409
        assert (
            await io.http.post("/api/v1/tickets/INC-2026-9999/tunnel/remove")
        ).status_code == 404
    assert not [m for m in orchestrator.received if m["task_type"] == "delete_tunnel"]


# --- several policies: one per group of services with the same ends ---------------------------

FIRST, SECOND = "sr-policy-pe1-pe3-protect-001", "sr-policy-pe2-pe4-protect-002"
SECOND_PATH = ["pe2", "p1", "pe4"]
SECOND_MOVED = ["pe2", "pe1", "p1", "pe4"]


def _policy_wire(tunnel_id: str, path: list[str], services: list[str]) -> dict[str, Any]:
    """One entry of ``details.tunnels`` as the orchestrator sends it in phase 4."""
    return {
        "tunnel_id": tunnel_id,
        "binding_sid": 24001 if tunnel_id == FIRST else 24002,
        "te_type": "sr-mpls",
        "path": path,
        "head_end": path[0],
        "end_point": path[-1],
        "color": 100 if tunnel_id == FIRST else 101,
        "service_ids": services,
    }


def _two_policies(incident: str = INCIDENT) -> list[dict[str, Any]]:
    """Phase 4 with two policies, then steering that could not protect one service."""
    first = _policy_wire(FIRST, TUNNEL_PATH, ["svc-1", "svc-2"])
    second = _policy_wire(SECOND, SECOND_PATH, ["svc-3", "svc-4"])
    top = {k: v for k, v in first.items() if k != "service_ids"}
    return [
        status(
            incident,
            "provisioning",
            "4",
            "2 protection policies created, steering traffic",
            **top,
            tunnels=[first, second],
        ),
        status(
            incident,
            "steering",
            "5",
            f"Traffic steered onto {FIRST}, {SECOND}; 1 service unprotected",
            traffic_steered=True,
            tunnel_id=FIRST,
            service_ids=["svc-1", "svc-2"],
            tunnel_ids=[FIRST, SECOND],
            tunnels=[
                {"tunnel_id": FIRST, "service_ids": ["svc-1", "svc-2"]},
                {"tunnel_id": SECOND, "service_ids": ["svc-3"]},
            ],
            unprotected_services=["svc-9"],
        ),
    ]


def _escalated_both(incident: str = INCIDENT) -> dict[str, Any]:
    return envelope(
        "ticket_closed",
        {
            "incident_id": incident,
            "resolution": "escalated",
            "duration_seconds": 120,
            "summary": "Incident escalated to an operator: SLA not recovered",
            "details": {
                "final_status": "escalated",
                "tunnel_id": FIRST,
                "tunnel_ids": [FIRST, SECOND],
                "tunnels": [{"tunnel_id": FIRST}, {"tunnel_id": SECOND}],
            },
            "source_agent": "orchestrator",
        },
    )


def _fields(view: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(view[k] for k in protection.FIELDS)


async def test_two_policies_are_tracked_left_up_and_removed_together(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    """Phase 4 with two policies, steering that leaves a service unprotected, a re-route of the
    second policy, an escalation leaving both up, and the operator removing both."""
    async with make_io() as io:
        pushed = io.app.state.broadcaster.subscribe()

        async def after(task: dict[str, Any]) -> dict[str, Any]:
            """Send ``task``; return the ticket as listed, checking detail and stream agree."""
            await io.task(task)
            [listed] = (await io.http.get("/api/v1/tickets")).json()
            detail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
            message = pushed.get_nowait()
            while message.kind != "ticket":
                message = pushed.get_nowait()
            assert _fields(detail) == _fields(listed) == _fields(message.data["ticket"])
            return listed

        ticket = await after(new_ticket())
        assert ticket["tunnels"] == [] and ticket["tunnels_left_up"] == []
        assert ticket["unprotected_services"] == []
        for phase in seed_phases()[:2]:
            await after(phase)
        provisioning, steering = _two_policies()

        ticket = await after(provisioning)
        assert ticket["tunnel"] == {
            "tunnel_id": FIRST,
            "state": "provisioned",
            "path": TUNNEL_PATH,
            "hops": 4,
            "binding_sid": 24001,
            "te_type": "sr-mpls",
            "head_end": "pe1",
            "end_point": "pe3",
        }
        assert ticket["tunnels"] == [
            {**ticket["tunnel"], "service_ids": ["svc-1", "svc-2"]},
            {
                "tunnel_id": SECOND,
                "state": "provisioned",
                "path": SECOND_PATH,
                "hops": 2,
                "binding_sid": 24002,
                "te_type": "sr-mpls",
                "head_end": "pe2",
                "end_point": "pe4",
                "service_ids": ["svc-3", "svc-4"],
            },
        ]
        assert ticket["protection_path"]["path"] == TUNNEL_PATH

        ticket = await after(steering)
        assert [p["state"] for p in ticket["tunnels"]] == ["carrying", "carrying"]
        assert ticket["tunnel"]["state"] == "carrying"
        # steering names the services each policy carries now; the paths stay
        assert ticket["tunnels"][1]["service_ids"] == ["svc-3"]
        assert ticket["tunnels"][1]["path"] == SECOND_PATH
        assert ticket["unprotected_services"] == ["svc-9"]

        # the second policy is re-routed: its path moves, the first and protection_path stay
        ticket = await after(
            status(
                INCIDENT,
                "monitoring",
                "6",
                f"Re-routed {SECOND}",
                tunnel_id=SECOND,
                path=SECOND_MOVED,
                reroute=1,
            )
        )
        assert ticket["tunnels"][1]["path"] == SECOND_MOVED
        assert ticket["tunnels"][1]["hops"] == 3
        assert ticket["tunnels"][1]["state"] == "carrying"
        assert ticket["tunnel"]["tunnel_id"] == FIRST
        assert ticket["tunnel"]["path"] == TUNNEL_PATH
        assert ticket["protection_path"]["path"] == TUNNEL_PATH
        assert ticket["tunnels_left_up"] == [] and ticket["tunnel_left_up"] is None

        ticket = await after(_escalated_both())
        assert [p["state"] for p in ticket["tunnels"]] == ["left_up", "left_up"]
        assert ticket["tunnels_left_up"] == [FIRST, SECOND]
        assert ticket["tunnel_left_up"] == FIRST
        assert ticket["tunnel"]["state"] == "left_up"
        assert ticket["unprotected_services"] == ["svc-9"]

        alice = await io.user("alice", "operator")
        url = f"/api/v1/tickets/{INCIDENT}/tunnel/remove"
        done = await io.http.post(url, json={"notes": "both moved"}, headers=alice)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["tunnel_ids"] == [FIRST, SECOND] and body["tunnel_id"] == FIRST
        assert [r["tunnel_id"] for r in body["removed"]] == [FIRST, SECOND]
        sent = [m["payload"] for m in orchestrator.received if m["task_type"] == "delete_tunnel"]
        assert sent == [
            {"incident_id": INCIDENT, "tunnel_id": FIRST},
            {"incident_id": INCIDENT, "tunnel_id": SECOND},
        ]
        detail = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        removed = [e["payload"] for e in detail["events"] if e["task_type"] == "tunnel_removed"]
        assert [(r["tunnel_id"], r["removed_by"]) for r in removed] == [
            (FIRST, "alice"),
            (SECOND, "alice"),
        ]
        assert [p["state"] for p in detail["tunnels"]] == ["removed", "removed"]
        assert detail["tunnels"][1]["path"] == SECOND_MOVED
        assert detail["tunnels_left_up"] == [] and detail["tunnel_left_up"] is None
        await io.app.state.outbox.flush()
        audited = [
            m["payload"]["details"]["tunnel_id"]
            for m in orchestrator.received
            if m["task_type"] == "audit_event"
            and m["payload"]["details"].get("action") == "tunnel_removed"
        ]
        assert sorted(audited) == [FIRST, SECOND]
        assert (await io.http.post(url, headers=alice)).status_code == 409


async def test_removal_stopped_half_way_keeps_the_rest_left_up(
    make_io: IoFactory, orchestrator: Orchestrator
) -> None:
    """The tunnel agent fails on the second policy: the first stays removed, a retry asks only
    for the second."""
    async with make_io() as io:
        await io.task(new_ticket())
        for task in [*_two_policies(), _escalated_both()]:
            await io.task(task)
        url = f"/api/v1/tickets/{INCIDENT}/tunnel/remove"
        real = io.app.state.mesh.call
        calls = 0

        async def second_fails(contract: Any, request: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                orchestrator.mode = "down"
            return await real(contract, request, **kwargs)

        io.app.state.mesh.call = second_fails
        failed = await io.http.post(url)
        assert failed.status_code == 503
        assert f"removed {FIRST}; {SECOND} and the rest unchanged" in failed.json()["detail"]
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert ticket["tunnels_left_up"] == [SECOND] and ticket["tunnel_left_up"] == SECOND
        assert [p["state"] for p in ticket["tunnels"]] == ["removed", "left_up"]
        orchestrator.mode = "ok"
        again = await io.http.post(url)
        assert again.status_code == 200 and again.json()["tunnel_ids"] == [SECOND]
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert ticket["tunnels_left_up"] == [] and ticket["tunnel_left_up"] is None


async def test_single_tunnel_has_one_policy(make_io: IoFactory) -> None:
    """Old events (one tunnel, no lists) give one policy that mirrors ``tunnel``."""
    async with make_io() as io:
        await io.task(new_ticket())
        for phase in [*seed_phases(), _steered()]:
            await io.task(phase)
        await io.task(_escalated("left up"))
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        [policy] = ticket["tunnels"]
        assert policy == {
            **ticket["tunnel"],
            "head_end": None,
            "end_point": None,
            "service_ids": ["svc-1"],
        }
        assert ticket["tunnels_left_up"] == [TUNNEL] and ticket["unprotected_services"] == []


async def test_upgrade_replays_every_policy(make_io: IoFactory) -> None:
    """Migration 7 fills the policies from the stored events, and re-folds ``tunnel`` too."""
    async with make_io() as io:
        await io.task(new_ticket())
        for task in [*_two_policies(), _escalated_both()]:
            await io.task(task)
        async with io.app.state.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE tickets SET tunnels = NULL, tunnels_left_up = NULL,"
                    " unprotected_services = NULL, tunnel_left_up = NULL"
                )
            )
            await conn.execute(
                sa.text("DELETE FROM cxm_migrations WHERE owner = 'io' AND version = 7")
            )
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert ticket["tunnels"] == [] and ticket["tunnel_left_up"] is None
    async with make_io() as io:
        ticket = (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()
        assert [p["tunnel_id"] for p in ticket["tunnels"]] == [FIRST, SECOND]
        assert ticket["tunnels_left_up"] == [FIRST, SECOND] and ticket["tunnel_left_up"] == FIRST
        assert ticket["unprotected_services"] == ["svc-9"]


def test_fold_cleanup_names_its_policies() -> None:
    """A cleanup naming ``tunnel_ids`` removes those; one naming none removes every policy."""
    fields = protection.replay([("status_update", t["payload"]) for t in _two_policies()])
    named = status(INCIDENT, "restoring", "7", "Back", cleanup=True, tunnel_ids=[SECOND])
    after = {**fields, **protection.fold(fields, "status_update", named["payload"])}
    assert [p["state"] for p in after["tunnels"]] == ["carrying", "removed"]
    every = status(INCIDENT, "restoring", "7", "Back", tunnel_id=FIRST, cleanup=True)
    after = {**after, **protection.fold(after, "status_update", every["payload"])}
    assert [p["state"] for p in after["tunnels"]] == ["removed", "removed"]


PROACTIVE = "INC-2026-0014"


async def test_a_proactive_ticket_is_marked_in_the_list_and_the_view(make_io: IoFactory) -> None:
    """new_ticket's ``proactive`` shows on the ticket; a payload without it is a reactive one."""
    async with make_io() as io:
        await io.task(new_ticket())  # the seed's payload: no proactive field
        await io.task(
            new_ticket(
                PROACTIVE,
                severity="medium",
                summary="Congestion forecast on pe1-pe2: 95% in 300s (threshold 70%)",
                degraded_links=["pe1-pe2"],
                proactive=True,
            )
        )
        listed = {t["incident_id"]: t for t in (await io.http.get("/api/v1/tickets")).json()}
        assert listed[PROACTIVE]["proactive"] is True
        assert listed[INCIDENT]["proactive"] is False
        view = (await io.http.get(f"/api/v1/tickets/{PROACTIVE}")).json()
        assert view["proactive"] is True
        assert view["events"][0]["payload"]["proactive"] is True
        assert (await io.http.get(f"/api/v1/tickets/{INCIDENT}")).json()["proactive"] is False

        # the orchestrator's later updates never unmark it, and a reactive one stays reactive
        await io.task(status(PROACTIVE, "assessing", "2", "2 services ride pe1-pe2"))
        await io.task(status(INCIDENT, "assessing", "2", "15 services affected"))
        listed = {t["incident_id"]: t for t in (await io.http.get("/api/v1/tickets")).json()}
        assert listed[PROACTIVE]["proactive"] is True and listed[INCIDENT]["proactive"] is False


async def test_a_proactive_update_marks_a_ticket_whose_new_ticket_was_lost(
    make_io: IoFactory,
) -> None:
    """The proactive branch says ``details.proactive``; a late reactive-looking new_ticket
    (an older correlator) does not unmark the ticket."""
    async with make_io() as io:
        await io.task(status(PROACTIVE, "assessing", "2", "Forecast 95 %", proactive=True))
        assert (await io.http.get(f"/api/v1/tickets/{PROACTIVE}")).json()["proactive"] is True
        await io.task(new_ticket(PROACTIVE, degraded_links=["pe1-pe2"]))
        assert (await io.http.get(f"/api/v1/tickets/{PROACTIVE}")).json()["proactive"] is True


def test_a_reactive_new_ticket_keeps_the_seed_payload() -> None:
    """``proactive`` is on the wire only when true, so a reactive ticket's payload is unchanged."""
    fields = {"incident_id": INCIDENT, "severity": "high", "summary": "pe1-pe2 down"}
    assert "proactive" not in NewTicket(**fields).model_dump(mode="json")
    assert NewTicket(**fields, proactive=True).model_dump(mode="json")["proactive"] is True
    assert NewTicket.model_validate(fields).proactive is False


async def test_upgrade_adds_proactive_and_reads_it_from_the_stored_new_ticket(
    make_io: IoFactory,
) -> None:
    """A database from before migration 9 keeps working: reactive rows read false, and a
    new_ticket already stored with ``proactive: true`` marks its ticket."""
    async with make_io() as io:
        await io.task(new_ticket())
        await io.task(new_ticket(PROACTIVE, degraded_links=["pe1-pe2"], proactive=True))
        async with io.app.state.engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE tickets DROP COLUMN proactive"))
            await conn.execute(
                sa.text("DELETE FROM cxm_migrations WHERE owner = 'io' AND version = 9")
            )
    async with make_io() as io:
        listed = {t["incident_id"]: t for t in (await io.http.get("/api/v1/tickets")).json()}
        assert listed[PROACTIVE]["proactive"] is True
        assert listed[INCIDENT]["proactive"] is False
        await io.task(new_ticket("INC-2026-0015"))  # rows written after the upgrade too
        view = (await io.http.get("/api/v1/tickets/INC-2026-0015")).json()
        assert view["proactive"] is False

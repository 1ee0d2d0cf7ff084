"""Runbook sessions end to end: IO's REST API → the orchestrator's durable session graph →
the local connector (and a real sshd), with approvals decided through IO's approval API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.runbooks.session_mesh import cxm_mesh, document, local_step
from tests.support import wait_for


async def test_happy_path_with_an_approval_resolves_the_ticket(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        bob = await cxm.user("bob")
        doc = document(
            "echo-fix",
            [
                local_step(
                    "say the host",
                    "echo fixing {{ticket.host}}",
                    requires_approval=True,
                    expect={"contains": "fixing web-03"},
                )
            ],
            prechecks=[local_step("precheck", "echo ok", idempotent=True)],
            postchecks=[local_step("postcheck", "echo verified", expect={"contains": "verified"})],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0101", host="web-03", labels={"path": "/var/tmp"})
        session_id = await cxm.start("INC-2026-0101", "echo-fix", alice)

        approval = await cxm.pending("INC-2026-0101")
        assert approval["action"] == "runbook_step"
        assert approval["details"]["command"] == "echo fixing web-03"
        assert approval["details"]["session_id"] == session_id
        view = await cxm.session(session_id)
        assert view["status"] == "waiting_approval"
        assert [s["status"] for s in view["steps"]] == ["completed", "waiting_approval", "pending"]

        response = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/approve",
            json={"notes": "go"},
            headers=bob,
        )
        assert response.status_code == 200, response.text
        done = await cxm.settled(session_id)
        assert done["status"] == "completed"
        assert [s["status"] for s in done["steps"]] == ["completed"] * 3
        assert done["steps"][1]["output"].strip() == "fixing web-03"
        assert done["steps"][1]["exit_code"] == 0
        assert done["verification"]["outcome"] == "resolved"
        assert any("could not be asked" in r for r in done["verification"]["reasons"])

        ticket = await cxm.closed_ticket("INC-2026-0101")
        assert ticket["resolution"] == "resolved"
        statuses = [
            e["payload"]["status"] for e in ticket["events"] if e["task_type"] == "status_update"
        ]
        assert statuses[0] == "in_progress" and "waiting_approval" in statuses
        assert statuses[-1] == "resolved"
        audit = [r.payload for r in cxm.net.to("audit")]
        steps = [a for a in audit if a["event_type"] == "runbook_step"]
        assert {(a["details"]["name"], a["details"]["event"]) for a in steps} >= {
            ("say the host", "started"),
            ("say the host", "finished"),
        }


async def test_a_rejected_step_rejects_the_session_and_escalates_the_ticket(
    tmp_path: Path,
) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "reject-me",
            [local_step("dangerous", "echo boom", requires_approval=True)],
            rollback=[local_step("undo", "echo undo")],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0102", host="web-03")
        session_id = await cxm.start("INC-2026-0102", "reject-me", alice)
        approval = await cxm.pending("INC-2026-0102")
        response = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/reject",
            json={"notes": "not now"},
            headers=alice,
        )
        assert response.status_code == 200, response.text
        done = await cxm.settled(session_id)
        assert done["status"] == "rejected"
        assert done["steps"][0]["status"] == "rejected"
        assert "rejected by alice: not now" in done["steps"][0]["reason"]
        assert done["verification"]["outcome"] == "escalated"

        ticket = await cxm.closed_ticket("INC-2026-0102")
        assert ticket["status"] == "escalated"
        closing = [e for e in ticket["events"] if e["task_type"] == "ticket_closed"]
        assert closing[0]["payload"]["details"]["rejected"] is True
        assert closing[0]["payload"]["details"]["decided_by"] == "alice"


async def test_a_failing_main_step_rolls_back_in_reverse_and_escalates(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "fails",
            [
                local_step("first", "echo one"),
                local_step("breaks", "false"),
                local_step("never", "echo never"),
            ],
            postchecks=[local_step("check", "echo fine")],
            rollback=[
                local_step("undo first", "echo undo-1"),
                local_step("undo second", "echo undo-2"),
            ],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0103", host="web-03")
        session_id = await cxm.start("INC-2026-0103", "fails", alice)
        done = await cxm.settled(session_id)
        assert done["status"] == "failed"
        got = [(s["name"], s["phase"], s["status"]) for s in done["steps"]]
        assert got == [
            ("first", "main", "completed"),
            ("breaks", "main", "failed"),
            ("never", "main", "skipped"),
            ("check", "postchecks", "skipped"),
            ("undo second", "rollback", "completed"),
            ("undo first", "rollback", "completed"),
        ]
        verification = done["verification"]
        assert verification["outcome"] == "escalated"
        assert "step 'breaks' failed: exit code 1, expected 0" in verification["reasons"][0]
        assert "undo second completed, undo first completed" in verification["reasons"][1]

        ticket = await cxm.closed_ticket("INC-2026-0103")
        assert ticket["status"] == "escalated"
        kinds = [e["task_type"] for e in ticket["events"]]
        assert "error" in kinds and kinds[-1] == "ticket_closed"
        rollback_updates = [
            e["payload"]["message"]
            for e in ticket["events"]
            if e["task_type"] == "status_update" and "Rollback" in e["payload"]["message"]
        ]
        assert len(rollback_updates) == 2


async def _flaky_http(failures: int) -> tuple[asyncio.Server, list[int]]:
    """An HTTP server answering 503 ``failures`` times, then 200 ``healthy``."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline() not in (b"\r\n", b""):
            pass  # the request's headers: every request is answered alike
        seen.append(1)
        status, body = (
            ("503 Service Unavailable", b"busy")
            if len(seen) <= failures
            else (
                "200 OK",
                b"healthy",
            )
        )
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


async def test_an_idempotent_step_is_retried_on_a_transient_failure(tmp_path: Path) -> None:
    server, seen = await _flaky_http(failures=2)
    port = server.sockets[0].getsockname()[1]
    async with server, cxm_mesh(tmp_path, runbook_retry_attempts=3) as cxm:
        alice = await cxm.user("alice")
        response = await cxm.io.post(
            "/api/v1/connections",
            json={
                "name": "svc-http",
                "environment": "dev",
                "connector": "http",
                "url": f"http://127.0.0.1:{port}",
            },
            headers=alice,
        )
        assert response.status_code == 201, response.text
        step = {
            "name": "health",
            "connector": "http",
            "connection": "svc-http",
            "request": {"method": "GET", "path": "/health"},
            "idempotent": True,
            "expect": {"status": 200, "contains": "healthy"},
        }
        await cxm.runbook(document("flaky", [step]), alice)
        await cxm.ticket("INC-2026-0104", host="web-03")
        session_id = await cxm.start("INC-2026-0104", "flaky", alice)
        done = await cxm.settled(session_id)
        assert done["status"] == "completed", done
        assert done["steps"][0]["attempts"] == 3
        assert done["steps"][0]["exit_code"] == 200
        assert len(seen) == 3


async def test_a_non_idempotent_step_cut_short_is_unknown_until_a_person_decides(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "may-finish"
    ran = tmp_path / "runs.log"
    command = (
        f"sh -c 'echo run >> {ran}; while [ ! -f {marker} ]; do sleep 0.1; done; echo finished'"
    )
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "once-only",
            [local_step("change", command), local_step("after", "echo after")],
            rollback=[local_step("undo", "echo undo")],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0105", host="web-03")
        session_id = await cxm.start("INC-2026-0105", "once-only", alice)

        async def running() -> bool:
            view = await cxm.session(session_id)
            return bool(view["steps"] and view["steps"][0]["status"] == "running" and ran.exists())

        await wait_for(running)
        await cxm.restart()  # the step was running when the orchestrator went away

        approval = await cxm.pending("INC-2026-0105")
        assert approval["details"]["kind"] == "unknown"
        view = await cxm.session(session_id)
        assert view["steps"][0]["status"] == "unknown"
        assert ran.read_text().count("run") == 1  # never run again by itself

        marker.touch()
        response = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/approve",
            json={"notes": "checked: it did not apply", "option": "retry"},
            headers=alice,
        )
        assert response.status_code == 200, response.text
        done = await cxm.settled(session_id)
        assert done["status"] == "completed", done
        assert [s["status"] for s in done["steps"]] == ["completed", "completed"]
        assert ran.read_text().count("run") == 2  # once cut short, once retried on decision


async def test_an_unknown_step_can_be_skipped_or_aborted(tmp_path: Path) -> None:
    ran = tmp_path / "runs.log"
    command = f"sh -c 'echo run >> {ran}; sleep 60'"
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "hangs",
            [local_step("change", command), local_step("after", "echo after")],
            rollback=[local_step("undo", "echo undo")],
        )
        await cxm.runbook(doc, alice)
        outcomes: dict[str, dict[str, Any]] = {}
        for incident_id, choice in (("INC-2026-0106", "skip"), ("INC-2026-0107", "abort")):
            await cxm.ticket(incident_id, host=f"web-{incident_id[-1]}")
            session_id = await cxm.start(incident_id, "hangs", alice)

            async def running(sid: str = session_id) -> bool:
                view = await cxm.session(sid)
                return bool(view["steps"] and view["steps"][0]["status"] == "running")

            await wait_for(running)
            await wait_for(ran.exists)
            await cxm.restart()
            approval = await cxm.pending(incident_id)
            action = "reject" if choice == "abort" else "approve"
            body = {"option": "skip"} if choice == "skip" else {"notes": "leave it"}
            response = await cxm.io.post(
                f"/api/v1/approvals/{approval['approval_id']}/{action}", json=body, headers=alice
            )
            assert response.status_code == 200, response.text
            outcomes[choice] = await cxm.settled(session_id)
            ran.unlink()
        skipped = outcomes["skip"]
        assert [s["status"] for s in skipped["steps"]] == ["skipped", "completed"]
        assert skipped["verification"]["outcome"] == "escalated"  # 0.3: a skipped step
        aborted = outcomes["abort"]
        assert aborted["status"] == "failed"
        assert [(s["name"], s["status"]) for s in aborted["steps"]] == [
            ("change", "failed"),
            ("after", "skipped"),
            ("undo", "completed"),
        ]
        assert "aborted by alice" in aborted["verification"]["reasons"][0]


async def test_four_eyes_refuses_the_starter_and_accepts_another_operator(
    tmp_path: Path,
) -> None:
    async with cxm_mesh(tmp_path, runbook_four_eyes=True) as cxm:
        alice = await cxm.user("alice")
        bob = await cxm.user("bob")
        doc = document("guarded", [local_step("act", "echo act", requires_approval=True)])
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0108", host="web-03")
        session_id = await cxm.start("INC-2026-0108", "guarded", alice)
        approval = await cxm.pending("INC-2026-0108")
        url = f"/api/v1/approvals/{approval['approval_id']}/approve"
        refused = await cxm.io.post(url, json={}, headers=alice)
        assert refused.status_code == 403, refused.text
        assert "four-eyes" in refused.json()["detail"]
        assert (await cxm.pending("INC-2026-0108"))["status"] == "pending"
        accepted = await cxm.io.post(url, json={}, headers=bob)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["decided_by"] == "bob"
        assert (await cxm.settled(session_id))["status"] == "completed"


async def test_the_frequency_guard_refuses_a_session_storm(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path, runbook_session_limit=2) as cxm:
        alice = await cxm.user("alice")
        await cxm.runbook(document("quick", [local_step("noop", "true")]), alice)
        for n in range(3):
            await cxm.ticket(f"INC-2026-011{n}", host="db-01")
        await cxm.start("INC-2026-0110", "quick", alice)
        await cxm.start("INC-2026-0111", "quick", alice)
        response = await cxm.io.post(
            "/api/v1/tickets/INC-2026-0112/runbook-sessions",
            json={"runbook_id": "quick"},
            headers=alice,
        )
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "session_limit"
        assert "CXM_RUNBOOK_SESSION_LIMIT=2" in detail["message"] and "db-01" in detail["message"]


async def test_a_missing_connection_says_what_is_missing(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        step = {
            "name": "look",
            "connector": "ssh",
            "connection": "{{ticket.host}}",
            "command": "uptime",
        }
        await cxm.runbook(document("needs-ssh", [step]), alice)
        await cxm.ticket("INC-2026-0120", host="web-09")
        session_id = await cxm.start("INC-2026-0120", "needs-ssh", alice)
        done = await cxm.settled(session_id)
        assert done["status"] == "failed"
        assert "connection 'web-09' is not in the inventory" in done["reason"]
        assert done["verification"]["outcome"] == "escalated"
        assert done["steps"][0]["status"] == "pending"  # nothing ran

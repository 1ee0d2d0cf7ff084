"""A step approval nobody decides expires: the session ends without running the step, and
the ticket escalates (with an ``error`` naming the timeout, and a notification).

Timers are scaled (``CXM_TIME_SCALE`` 0.01 in ``cxm_mesh``): a 100 s approval timeout is one
second here.
"""

from __future__ import annotations

from pathlib import Path

from tests.runbooks.session_mesh import cxm_mesh, document, local_step
from tests.support import wait_for


async def test_an_approval_that_times_out_escalates_the_session_and_the_ticket(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    async with cxm_mesh(tmp_path, approval_timeout_s=100) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "slow-people",
            [
                local_step("precheck", "echo ok", idempotent=True),
                local_step("change", f"touch {ran}", requires_approval=True),
            ],
            rollback=[local_step("undo", "echo undo")],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0140", host="web-03")
        session_id = await cxm.start("INC-2026-0140", "slow-people", alice)
        approval = await cxm.pending("INC-2026-0140")
        assert approval["action"] == "runbook_step"

        done = await cxm.settled(session_id)  # nobody decides
        assert done["status"] == "failed", done
        change = done["steps"][1]
        assert change["name"] == "change" and change["status"] == "rejected"
        assert change["reason"].startswith("no decision on step 'change' before ")
        assert not ran.exists()  # the step never ran
        assert done["verification"]["outcome"] == "escalated"
        assert done["pending_approval"] is None

        ticket = await cxm.closed_ticket("INC-2026-0140")
        assert ticket["status"] == "escalated"
        errors = [e["payload"] for e in ticket["events"] if e["task_type"] == "error"]
        assert [e["error_code"] for e in errors] == ["approval_timeout"]
        closing = [e for e in ticket["events"] if e["task_type"] == "ticket_closed"]
        assert closing[0]["payload"]["resolution"] == "escalated"

        # the expired approval can no longer be decided
        async def not_pending() -> bool:
            response = await cxm.io.get(
                f"/api/v1/approvals/{approval['approval_id']}", headers=cxm.admin()
            )
            return bool(response.json()["status"] != "pending")

        await wait_for(not_pending)
        late = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/approve", json={}, headers=alice
        )
        assert late.status_code == 409, late.text
        assert not ran.exists()

        audit = [r.payload for r in cxm.net.to("audit")]
        decided = [
            a["details"]["approval"]
            for a in audit
            if a["event_type"] == "state_change" and "approval" in a["details"]
        ]
        assert [(d["decision"], d["decided_by"]) for d in decided] == [("timeout", "system")]
        escalations = [r.payload for r in cxm.net.to("notify")]
        assert any("escalated" in str(n) for n in escalations), escalations

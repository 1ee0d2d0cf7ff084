"""A rollback step whose runbook says ``requires_approval`` asks a person before it runs.

Undoing runs by itself unless the author marked the undo as risky (restarting a service,
re-linking a certificate): then it waits for a decision like a main step. Rejecting it leaves
that undo out and goes on with the other rollback steps; the session still fails.
"""

from __future__ import annotations

from pathlib import Path

from tests.runbooks.session_mesh import cxm_mesh, document, local_step


async def test_a_risky_rollback_step_waits_for_a_person_and_a_refusal_skips_only_it(
    tmp_path: Path,
) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        doc = document(
            "risky-undo",
            [local_step("breaks", "false")],
            rollback=[
                local_step("safe undo", "echo safe"),
                local_step("risky undo", "echo risky", requires_approval=True),
            ],
        )
        await cxm.runbook(doc, alice)
        await cxm.ticket("INC-2026-0140", host="web-03")
        session_id = await cxm.start("INC-2026-0140", "risky-undo", alice)
        approval = await cxm.pending("INC-2026-0140")
        assert approval["action"] == "runbook_step"
        assert approval["details"]["step"] == "risky undo"
        assert approval["details"]["step_phase"] == "rollback"
        response = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/reject",
            json={"notes": "leave it"},
            headers=alice,
        )
        assert response.status_code == 200, response.text
        done = await cxm.settled(session_id)
    assert done["status"] == "failed"
    got = [(s["name"], s["phase"], s["status"]) for s in done["steps"]]
    # reverse order: the risky one (last) is asked first, refused, and the safe one still runs
    assert got == [
        ("breaks", "main", "failed"),
        ("risky undo", "rollback", "skipped"),
        ("safe undo", "rollback", "completed"),
    ]
    assert "rejected by alice: leave it" in done["steps"][1]["reason"]
    assert done["verification"]["outcome"] == "escalated"

"""Runbook sessions survive ``kill -9`` of the orchestrator process.

IO, audit and the orchestrator run as ``cxm agent NAME`` processes on SQLite. The orchestrator
is SIGKILLed (no shutdown, nothing flushed) at the two moments that matter and started again
on the same data:

- while a session waits for a person to approve a step: the approval is still pending in IO
  afterwards, approving it finishes the session, and the step ran exactly once;
- while a non-idempotent step runs: the restarted orchestrator does not run it again by
  itself; the step is ``unknown`` and IO asks a person to retry, skip or abort it.

Each step's side effect is a line appended to a file, so "ran exactly once" is counted on
disk, not inferred from the session's own account.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runbooks.process_mesh import Console, console, restart_killed, session_mesh
from tests.support import Mesh, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("runbook-processes"),
    pytest.mark.timeout(420),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    data = tmp_path_factory.mktemp("runbook-crash")
    with session_mesh(data, CXM_APPROVAL_TIMEOUT_S="100000") as m:
        yield m


def local_step(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "connector": "local", "command": command, **extra}


def runbook(runbook_id: str, main: list[dict[str, Any]], **phases: Any) -> dict[str, Any]:
    return {
        "id": runbook_id,
        "title": f"Crash test {runbook_id}",
        "description": "a step with a side effect on disk",
        "keywords": ["crash"],
        "steps": {"main": main, **phases},
        "rollback": [local_step("undo", "echo undo")],
    }


def lines(path: Path, word: str) -> int:
    return path.read_text().split().count(word) if path.exists() else 0


async def test_kill_while_a_step_waits_for_approval(stack: Mesh, tmp_path: Path) -> None:
    incident = "INC-2026-0951"
    runs = tmp_path / "runs.log"
    async with console(stack) as http:
        io = Console(stack, http)
        document = runbook(
            "crash-approval",
            [
                local_step(
                    "change", f"sh -c 'echo ran >> {runs}; echo changed'", requires_approval=True
                ),
                local_step("after", "echo after"),
            ],
            postchecks=[local_step("verify", "echo verified", expect={"contains": "verified"})],
        )
        await io.call("POST", "/api/v1/runbooks", json=document, expect=201)
        await io.ticket(incident, host="web-51")
        session_id = await io.start(incident, "crash-approval")
        approval = await io.pending(incident)
        view = await io.session(session_id)
        assert view["status"] == "waiting_approval"
        assert view["pending_approval"]["approval_id"] == approval["approval_id"]

        restart_killed(stack)

        # still pending in IO and in the restarted orchestrator; nothing ran meanwhile
        again = await io.pending(incident)
        assert again["approval_id"] == approval["approval_id"]
        assert again["status"] == "pending"
        view = await io.session(session_id)
        assert view["status"] == "waiting_approval", view
        assert view["pending_approval"]["approval_id"] == approval["approval_id"]
        assert lines(runs, "ran") == 0

        await io.call(
            "POST", f"/api/v1/approvals/{approval['approval_id']}/approve", json={"notes": "go"}
        )
        done = await io.settled(session_id)
        assert done["status"] == "completed", done
        assert [(s["name"], s["status"]) for s in done["steps"]] == [
            ("change", "completed"),
            ("after", "completed"),
            ("verify", "completed"),
        ]
        assert done["steps"][0]["output"].strip() == "changed"
        assert lines(runs, "ran") == 1  # exactly once, after the approval
        every = await io.json(
            "GET", "/api/v1/approvals", params={"incident_id": incident, "status": "all"}
        )
        assert [(a["approval_id"], a["status"]) for a in every] == [
            (approval["approval_id"], "approved")
        ]
        ticket = await io.closed_ticket(incident)
        assert ticket["resolution"] == "resolved", ticket


async def test_kill_while_a_non_idempotent_step_runs(stack: Mesh, tmp_path: Path) -> None:
    incident = "INC-2026-0952"
    runs = tmp_path / "runs.log"
    release = tmp_path / "release"
    # appends "start", waits (at most 60 s) for the test to release it, then appends "ran"
    command = (
        f"sh -c 'echo start >> {runs}; i=0; "
        f'while [ ! -f {release} ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i+1)); done; '
        f"echo ran >> {runs}'"
    )
    try:
        async with console(stack) as http:
            io = Console(stack, http)
            document = runbook(
                "crash-running",
                [local_step("change", command), local_step("after", "echo after")],
            )
            await io.call("POST", "/api/v1/runbooks", json=document, expect=201)
            await io.ticket(incident, host="web-52")
            session_id = await io.start(incident, "crash-running")

            async def running() -> bool:
                view = await io.session(session_id)
                steps = view["steps"]
                return bool(steps and steps[0]["status"] == "running" and lines(runs, "start"))

            await wait_for(running, timeout=60, interval=0.1)

            restart_killed(stack)

            approval = await io.pending(incident)
            assert approval["action"] == "runbook_step"
            details = approval["details"]
            assert details["kind"] == "unknown"
            assert details["step"] == "change"
            assert "did it take effect" in details["question"]
            assert set(details["options"]) == {"approve", "approve with option skip", "reject"}
            view = await io.session(session_id)
            assert view["status"] == "waiting_approval"
            assert view["steps"][0]["status"] == "unknown", view
            assert "not run again without a decision" in view["steps"][0]["reason"]
            assert lines(runs, "start") == 1  # not re-run by the restarted orchestrator

            await io.call(
                "POST",
                f"/api/v1/approvals/{approval['approval_id']}/approve",
                json={"option": "skip", "notes": "checked by hand: it applied"},
            )
            done = await io.settled(session_id)
            assert [(s["name"], s["status"]) for s in done["steps"]] == [
                ("change", "skipped"),
                ("after", "completed"),
            ], done
            assert "skipped by admin" in done["steps"][0]["reason"]
            # a skipped step lowers the confidence below what resolves a ticket by itself
            assert done["verification"]["outcome"] == "escalated"
            assert any("skipped: change" in r for r in done["verification"]["reasons"])
            assert lines(runs, "start") == 1  # skipped means never run again
            ticket = await io.closed_ticket(incident)
            assert ticket["status"] == "escalated"
    finally:
        release.touch()  # the orphaned first attempt may end now

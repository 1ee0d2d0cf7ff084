"""Approvals end to end: the real orchestrator waits, an operator decides through IO's API.

The mesh runs with ``CXM_APPROVAL_REQUIRED_FOR=provision,steer``. Approving through
``POST /api/v1/approvals/{id}/approve`` resumes the graph; rejecting escalates with who
decided; either way nothing is provisioned before a human said so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.test_closed_loop import SEED_LINKS, closed_event, open_incident, ticket, wait_until
from tests.support import Mesh, mesh

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-approvals")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    env = {
        "CXM_TIME_SCALE": "0.02",
        "CXM_LAB_SCENARIO_DURATION_S": "100000",
        "CXM_CORRELATOR_GROUP_WAIT_S": "50",
        "CXM_APPROVAL_REQUIRED_FOR": "provision,steer",
        "CXM_APPROVAL_TIMEOUT_S": "100000",
    }
    with mesh(tmp_path_factory.mktemp("e2e-approvals"), extra_env=env) as m:
        yield m


def pending(http: httpx.Client, stack: Mesh, incident: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = http.get(
        f"{stack.url('io')}/api/v1/approvals", params={"incident_id": incident}
    ).json()
    return rows


def policies(http: httpx.Client, stack: Mesh) -> list[dict[str, Any]]:
    state: dict[str, Any] = http.get(f"{stack.url('lab')}/lab/state").json()
    return list(state["sr_policies"])


def test_approve_through_io_resumes_the_flow(stack: Mesh) -> None:
    with stack.client() as http:
        incident = open_incident(http, stack, "sla-degradation", SEED_LINKS)
        [first] = wait_until(lambda: pending(http, stack, incident), what="provision approval")
        assert first["action"] == "provision"
        wait_until(
            lambda: ticket(http, stack, incident)["status"] == "waiting_approval",
            what="ticket shown as waiting for approval",
        )
        assert policies(http, stack) == []  # nothing provisioned before a human said so

        decided = http.post(
            f"{stack.url('io')}/api/v1/approvals/{first['approval_id']}/approve",
            json={"notes": "path via p1/p2 looks good"},
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["decided_by"] == "admin"

        [second] = wait_until(
            lambda: [a for a in pending(http, stack, incident) if a["action"] == "steer"],
            what="steer approval",
        )
        assert len(policies(http, stack)) == 1  # provisioned, not yet steered
        batch = http.post(
            f"{stack.url('io')}/api/v1/approvals/batch",
            json={"incident_id": incident, "decision": "approve", "notes": "go"},
        )
        assert batch.json()["decided"] == 1, batch.text
        wait_until(
            lambda: any(
                e["payload"].get("phase") == "5" for e in ticket(http, stack, incident)["events"]
            ),
            what="traffic steered after approval",
        )
        # the orchestrator's own view agrees: no approval is pending any more
        again = http.post(
            f"{stack.url('io')}/api/v1/approvals/{second['approval_id']}/approve", json={}
        )
        assert again.status_code == 409
        for link in SEED_LINKS:
            http.post(f"{stack.url('lab')}/lab/links/{link}/recover")
        closed = wait_until(lambda: closed_event(ticket(http, stack, incident)), what="close")
        assert closed["details"]["close_reason"] == "sla_recovered"
        assert policies(http, stack) == []


def test_reject_through_io_escalates_with_who_decided(stack: Mesh) -> None:
    with stack.client() as http:
        incident = open_incident(http, stack, "sla-degradation", SEED_LINKS)
        [first] = wait_until(lambda: pending(http, stack, incident), what="provision approval")
        rejected = http.post(
            f"{stack.url('io')}/api/v1/approvals/{first['approval_id']}/reject",
            json={"notes": "maintenance window on p1"},
        )
        assert rejected.status_code == 200, rejected.text
        closed = wait_until(lambda: closed_event(ticket(http, stack, incident)), what="close")
        assert closed["resolution"] == "escalated"
        assert closed["details"]["decided_by"] == "admin"
        assert "maintenance window on p1" in str(closed["details"])
        assert ticket(http, stack, incident)["status"] == "escalated"
        assert policies(http, stack) == []
        http.post(f"{stack.url('lab')}/lab/scenarios/recover-all")

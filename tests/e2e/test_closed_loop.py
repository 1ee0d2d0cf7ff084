"""The seed's SLA incident end to end on real processes: PCA alert → closed ticket.

All ten agents and the lab run as `cxm agent NAME` processes on free ports, with
CXM_TIME_SCALE shrinking the seed's timers. The test only drives the lab's control API
(as an operator or `cxm scenario` would) and reads what the IO agent received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import groupby
from typing import Any

import httpx
import pytest

from shared.models import NODES
from tests.support import Mesh, mesh

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

SEED_LINKS = ["pe1-pe2", "pe2-pe3"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    env = {
        "CXM_TIME_SCALE": "0.02",
        # the test, not the lab's timer, decides when the links recover
        "CXM_LAB_SCENARIO_DURATION_S": "100000",
        # 1 s (scaled) to gather the scenario's second link into the first new_ticket
        "CXM_CORRELATOR_GROUP_WAIT_S": "50",
        # The SLA flow alone: with the traffic watcher on, the protection tunnel's step of
        # load on pe1-p1 read as a trend (41 % measured, 83 % forecast) and its proactive
        # alert was folded into the seed incident by node pe1 (CI-equivalent run, 18:03).
        # tests/e2e/test_proactive.py covers the watcher; the two gaps are in docs/proactive.md.
        "CXM_TRAFFIC_PROACTIVE_ENABLED": "false",
    }
    with mesh(tmp_path_factory.mktemp("e2e"), extra_env=env) as m:
        yield m


def wait_until(fn: Any, timeout: float = 90.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}")


def tickets_for(http: httpx.Client, stack: Mesh, links: list[str]) -> list[dict[str, Any]]:
    rows = http.get(f"{stack.url('io')}/api/v1/tickets").json()
    return [t for t in rows if set(links) <= set(t["degraded_links"])]


def ticket(http: httpx.Client, stack: Mesh, incident_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"{stack.url('io')}/api/v1/tickets/{incident_id}").json()
    return body


def closed_event(detail: dict[str, Any]) -> dict[str, Any] | None:
    closed = [e for e in detail["events"] if e["task_type"] == "ticket_closed"]
    return closed[-1]["payload"] if closed else None


def quiet(http: httpx.Client, stack: Mesh) -> None:
    """Wait until the correlator has no incident still open, so a new scenario opens its own.

    The previous test's incident closes at IO first; the correlator hears of it through the
    orchestrator's outbox a moment later, and until then alerts on nearby links join it.
    """
    mesh_auth = {"Authorization": f"Bearer {stack.token}"}

    def none_open() -> bool:
        rows = http.get(f"{stack.url('correlator')}/api/v1/incidents", headers=mesh_auth).json()
        return not [r for r in rows if r["status"] != "closed"]

    wait_until(none_open, what="correlator without open incidents")


def open_incident(http: httpx.Client, stack: Mesh, scenario: str, links: list[str]) -> str:
    lab = stack.url("lab")
    quiet(http, stack)
    assert http.post(f"{lab}/lab/reset").status_code < 300
    assert http.post(f"{lab}/lab/scenarios/{scenario}").status_code < 300
    found = wait_until(
        lambda: [
            t for t in tickets_for(http, stack, links) if t["status"] not in ("closed", "escalated")
        ],
        what=f"a ticket for {links}",
    )
    assert len(found) == 1, f"expected one ticket for {links}, got {found}"
    return str(found[0]["incident_id"])


def test_seed_incident_closes_after_recovery(stack: Mesh) -> None:
    with stack.client() as http:
        incident = open_incident(http, stack, "sla-degradation", SEED_LINKS)
        assert incident.startswith("INC-20")

        # protected: the tunnel is up and traffic steered, while the links are still degraded
        def steered() -> bool:
            detail = ticket(http, stack, incident)
            return any(e["payload"].get("phase") == "5" for e in detail["events"])

        wait_until(steered, what="traffic steered")
        detail = ticket(http, stack, incident)
        new = [e for e in detail["events"] if e["task_type"] == "new_ticket"]
        assert len(new) == 1
        assert sorted(new[0]["payload"]["degraded_links"]) == SEED_LINKS
        assert new[0]["payload"]["source_agent"] == "event_correlator"
        assert new[0]["payload"]["status"] == "new"

        for link in SEED_LINKS:
            assert http.post(f"{stack.url('lab')}/lab/links/{link}/recover").status_code < 300
        closed = wait_until(
            lambda: closed_event(ticket(http, stack, incident)), what="ticket_closed"
        )

        detail = ticket(http, stack, incident)
        updates = [e["payload"] for e in detail["events"] if e["task_type"] == "status_update"]
        phases = [phase for phase, _ in groupby(u["phase"] for u in updates)]
        assert phases == ["1", "2", "3", "4", "5", "6", "7"], phases
        by_phase = {u["phase"]: u for u in updates}
        assert by_phase["2"]["status"] == "assessing"
        assert by_phase["2"]["details"]["total_affected"] == 15
        assert by_phase["2"]["details"]["services_by_tier"] == {
            "platinum": 2,
            "gold": 5,
            "silver": 8,
        }
        assert by_phase["3"]["status"] == "computing"
        assert by_phase["3"]["details"]["hop_count"] == 4
        four = by_phase["4"]["details"]
        assert by_phase["4"]["status"] == "provisioning"
        assert isinstance(four["binding_sid"], int)
        assert four["te_type"] in ("sr-mpls", "srv6", "rsvp-te")
        assert four["tunnel_id"]
        for update in updates:
            assert update["incident_id"] == incident
            assert update["source_agent"] == "orchestrator"
            assert {"status", "phase", "message", "details", "updated_at"} <= set(update)

        assert closed["resolution"] == "resolved"
        assert closed["duration_seconds"] >= 0
        d = closed["details"]
        assert d["close_reason"] == "sla_recovered"
        assert sorted(d["degraded_links"]) == SEED_LINKS
        assert d["affected_services_count"] == 15
        assert d["tunnel_id"] == four["tunnel_id"]
        assert d["nodes_executed"] == list(NODES)
        assert detail["status"] == "closed"
        assert [e["task_type"] for e in detail["events"]].count("ticket_closed") == 1

        # the protection tunnel is gone and every service is back on its own policy: no
        # te-service-mapping names the tunnel's color any more
        state = http.get(f"{stack.url('lab')}/lab/state").json()
        assert not [p for p in state["sr_policies"] if p.get("path-name") == four["tunnel_id"]]
        assert not [s for s in state["steering"].values() if s["color"] == four["color"]]


def test_tunnel_moved_off_a_protection_link_that_degrades(stack: Mesh) -> None:
    """Runs right after the seed test, before no-path re-degrades the seed links: replayed
    within a second of that, they would rightly look like a flapping link and be dampened.

    p2-pe4 carries the tunnel and shares no node or SRLG with the seed links: the correlator
    opens its own incident for it, and the seed incident's monitoring re-routes the tunnel."""
    lab = stack.url("lab")
    with stack.client() as http:
        incident = open_incident(http, stack, "sla-degradation", SEED_LINKS)

        def updates() -> list[dict[str, Any]]:
            detail = ticket(http, stack, incident)
            return [e["payload"] for e in detail["events"] if e["task_type"] == "status_update"]

        wait_until(lambda: any(u["phase"] == "6" for u in updates()), what="monitoring")
        tunnel = next(u["details"] for u in updates() if u["phase"] == "4")
        assert tunnel["path"] == ["pe1", "p1", "p2", "pe4"]
        assert http.post(f"{lab}/lab/links/p2-pe4/degrade").status_code < 300

        moved = wait_until(
            lambda: [u["details"] for u in updates() if "reroute" in u["details"]],
            what="tunnel re-routed",
        )[0]
        assert moved["tunnel_id"] == tunnel["tunnel_id"]
        assert moved["previous_path"] == ["pe1", "p1", "p2", "pe4"]
        assert moved["path"][0] == "pe1" and moved["path"][-1] == "pe4"
        assert moved["avoided"] == ["p2-pe4"]
        assert "p2-pe4" not in {
            "-".join(sorted(pair)) for pair in zip(moved["path"], moved["path"][1:], strict=False)
        }
        # the same policy in CNC, same binding SID, now on the new hops
        state = http.get(f"{lab}/lab/state").json()
        [policy] = [p for p in state["sr_policies"] if p.get("path-name") == tunnel["tunnel_id"]]
        assert policy["binding-sid"] == tunnel["binding_sid"]
        assert policy["hops"][-len(moved["path"]) + 1 :] == moved["path"][1:]
        assert "p2-pe4" not in {"-".join(sorted(link.split("-"))) for link in policy["links"]}

        for link in [*SEED_LINKS, "p2-pe4"]:
            assert http.post(f"{lab}/lab/links/{link}/recover").status_code < 300
        closed = wait_until(
            lambda: closed_event(ticket(http, stack, incident)), what="ticket_closed"
        )
        assert closed["resolution"] == "resolved", [u["message"] for u in updates()]
        assert sorted(closed["details"]["degraded_links"]) == SEED_LINKS
        state = http.get(f"{lab}/lab/state").json()
        assert not [p for p in state["sr_policies"] if p.get("path-name") == tunnel["tunnel_id"]]


def test_no_path_escalates(stack: Mesh) -> None:
    with stack.client() as http:
        incident = open_incident(http, stack, "no-path", SEED_LINKS[:1])
        detail = wait_until(
            lambda: (d := ticket(http, stack, incident))["status"] == "escalated" and d,
            what="escalation",
        )
        statuses = [
            e["payload"].get("status")
            for e in detail["events"]
            if e["task_type"] == "status_update"
        ]
        assert "escalated" in statuses
        assert "provisioning" not in statuses
        http.post(f"{stack.url('lab')}/lab/scenarios/recover-all")


def test_no_impact_closes(stack: Mesh) -> None:
    with stack.client() as http:
        lab = stack.url("lab")
        quiet(http, stack)
        assert http.post(f"{lab}/lab/reset").status_code < 300
        assert http.post(f"{lab}/lab/scenarios/no-impact").status_code < 300
        state = http.get(f"{lab}/lab/state").json()
        links = list(state["degraded_links"])
        assert links
        rows = wait_until(
            lambda: [t for t in tickets_for(http, stack, links) if t["status"] == "closed"],
            what="no-impact close",
        )
        closed = closed_event(ticket(http, stack, rows[0]["incident_id"]))
        assert closed is not None
        assert closed["details"]["close_reason"] == "no_impact"
        assert closed["details"]["affected_services_count"] == 0
        http.post(f"{lab}/lab/scenarios/recover-all")

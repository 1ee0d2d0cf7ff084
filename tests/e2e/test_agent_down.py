"""Issue 15: agents gone for a while (stopped, not restarted), on real processes.

The mesh runs under ``cxm up`` on SNDlib's polska, except restore, notify and audit, which the
test runs itself so that they can stay stopped (:class:`bench.chaos_lib.Chaos`). Two links
fail; once every incident has traffic on its protection policy, the three agents stop:

- restore: the incidents monitoring through it must not escalate while it is down (the
  orchestrator retries the step, ``CXM_PEER_DOWN_GRACE_S``); when it is back they carry on
  and resolve;
- notify and audit stay down while the incidents close: what the orchestrator must tell them
  waits in its outbox (its own database), and when they are back it drains, in order: one
  Webex message per incident, an audit chain that verifies, with each incident's state
  changes in the order IO saw them.

"Down for a while" is a condition, not a sleep: until the orchestrator has been retrying
against the stopped restore agent for ``DOWN_S`` seconds (its own ``down for`` count).
``python -m bench.chaos --down AGENT --down-s 60`` is the long version.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.chaos_lib import FINAL, Chaos, plan_waves, settle
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-down"), pytest.mark.timeout(900)]

DOWN = ("restore", "notify", "audit")
DOWN_S = 10.0
"""Seconds the orchestrator must have found restore down before it comes back (real time)."""
LINKS = 2


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    # the default grace (120 s); monitoring may take 600 real seconds (restarts are slow here)
    env = {
        "CXM_TIME_SCALE": "0.02",
        "CXM_PEER_DOWN_GRACE_S": "120",
        "CXM_MONITOR_TIMEOUT_S": "30000",
    }
    with Chaos(
        tmp_path_factory.mktemp("down"), network="sndlib/polska", env=env, own=DOWN
    ) as running:
        yield running


def _events(ticket: dict[str, Any], task_type: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ticket.get("events", []) if e["task_type"] == task_type]


def _pending_in_outbox(data_dir: Path, agent: str) -> int:
    """Tasks for ``agent`` waiting in the orchestrator's outbox (its own SQLite database)."""
    with sqlite3.connect(f"file:{data_dir / 'orchestrator.db'}?mode=ro", uri=True) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM outbox WHERE agent = ? AND delivered_at IS NULL AND NOT dead",
            (agent,),
        ).fetchone()
    return int(count)


def _down_for(row: dict[str, Any] | None, agent: str) -> float:
    """How long the orchestrator has found ``agent`` down, from the run's ``last_error``."""
    text = str((row or {}).get("last_error") or "")
    found = re.search(r"down for ([\d.]+) s", text)
    return float(found.group(1)) if found and f"{agent}/" in text else 0.0


@pytest.fixture(scope="module")
def result(chaos: Chaos) -> dict[str, Any]:
    [links] = plan_waves(chaos.topo, LINKS, LINKS)
    lab = chaos.url("lab")
    for link in links:
        chaos.http.post(f"{lab}/lab/links/{link}/degrade", json={"delay_ms": 120})

    def protected() -> list[dict[str, Any]] | None:
        rows = [
            r
            for r in chaos.tickets() or []
            if set(r.get("degraded_links") or []) & set(links) and r.get("phase") == "6"
        ]
        return rows if len(rows) == len(links) else None

    tickets = wait_until(protected, "every incident monitoring on its protection", 300)
    ids = [t["incident_id"] for t in tickets]
    for name in DOWN:
        chaos.stop_own(name)
    for link in links:  # the SLA recovers now; only the stopped restore agent can tell
        chaos.http.post(f"{lab}/lab/links/{link}/recover")
    wait_until(
        lambda: all(_down_for(chaos.orchestrator_incident(i), "restore") >= DOWN_S for i in ids),
        f"the orchestrator retrying against the stopped restore agent for {DOWN_S} s",
        300,
    )
    during = {t["incident_id"]: t for t in chaos.tickets() or [] if t["incident_id"] in ids}
    chaos.start_own("restore")
    chaos.wait_healthy(["restore"], 300)
    closed = wait_until(
        lambda: (
            rows
            if len(rows := [t for t in chaos.tickets() or [] if t["incident_id"] in ids])
            == len(ids)
            and all(t["status"] in FINAL for t in rows)
            else None
        ),
        "every incident closed while notify and audit are still down",
        300,
    )
    queued = {name: _pending_in_outbox(chaos.data_dir, name) for name in ("notify", "audit")}
    assert chaos.webex is not None
    webex_while_down = sum(chaos.webex.by_incident()[i] for i in ids)
    for name in ("notify", "audit"):
        chaos.start_own(name)
    chaos.wait_healthy(["notify", "audit"], 300)
    details = {i: chaos.ticket(i) or {} for i in ids}
    return {
        "ids": ids,
        "during": during,
        "closed": closed,
        "queued": queued,
        "webex_while_down": webex_while_down,
        "details": details,
        "settled": settle(chaos, [_incident(i, details[i]) for i in ids], timeout_s=300),
    }


def _incident(incident_id: str, ticket: dict[str, Any]) -> Any:
    from bench.chaos_lib import Incident, _classify

    incident = Incident(link="", wave=0, phase="down", incident_id=incident_id)
    _classify(incident, ticket)
    return incident


def test_monitoring_does_not_escalate_while_restore_is_down(result: dict[str, Any]) -> None:
    during = result["during"]
    assert all(t["status"] not in FINAL for t in during.values()), during
    for incident_id, ticket in result["details"].items():
        assert not _events(ticket, "error"), (incident_id, _events(ticket, "error"))


def test_incidents_carry_on_and_resolve_once_restore_is_back(result: dict[str, Any]) -> None:
    for incident_id, ticket in result["details"].items():
        closed = _events(ticket, "ticket_closed")
        assert len(closed) == 1, (incident_id, closed)
        assert closed[0]["resolution"] == "resolved", (incident_id, closed[0])


def test_deliveries_queue_while_notify_and_audit_are_down(result: dict[str, Any]) -> None:
    assert result["webex_while_down"] == 0
    assert result["queued"]["notify"] >= len(result["ids"]), result["queued"]
    assert result["queued"]["audit"] > 0, result["queued"]


def test_the_backlog_drains_in_order_and_loses_nothing(result: dict[str, Any]) -> None:
    settled = result["settled"]
    for incident_id in result["ids"]:
        assert settled["webex_by_incident"].get(incident_id) == 1, settled["webex_by_incident"]
        assert settled["notify_delivered_by_incident"].get(incident_id) == 1, settled
        assert settled["audit_final"][incident_id] == ["closed"], settled["audit_final"]
        assert settled["audit_order_ok"][incident_id], incident_id
    assert settled["audit_verify"] and settled["audit_verify"]["ok"], settled["audit_verify"]
    assert not settled["leftover_policies"], settled["leftover_policies"]

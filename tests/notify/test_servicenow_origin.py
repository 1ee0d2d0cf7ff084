"""Tickets that came from ServiceNow (#12): notify adopts the record instead of creating one.

A notification whose ``details.servicenow`` names the record the ticket came from (the
runbook session adds it from the ticket's labels) maps the CXM incident to that record on
first contact: no ``POST``, no correlation lookup, every update a ``PATCH`` of that sys_id.
The record goes In Progress when CXM takes it up, On Hold for a manual review, Resolved with
close code and notes, and an escalation raises its urgency. ``Notify.channels`` restricts the
routing (a step's work note is for ServiceNow alone). ServiceNow is faked with respx.
"""

from __future__ import annotations

import json
from typing import Any

import respx

from services.notify.routing import route
from services.notify.settings import DEFAULT_ROUTING
from shared.settings import Settings
from tests.notify.conftest import FakeWebex, Mailbox, Peers
from tests.notify.test_notify import SNOW, agent, mock_snow, notify_settings, task

ORIGIN = "46d44a5fa9fe198101a78787e40d8f5d"
REF = {"sys_id": ORIGIN, "number": "INC0010023"}
INCIDENT = "INC-2026-0042"


def record(state: str = "2") -> dict[str, Any]:
    return {"result": {"sys_id": ORIGIN, "number": "INC0010023", "state": state}}


def from_snow(key: str, **payload: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A notification about the ticket that came from ServiceNow record INC0010023."""
    details = {"servicenow": REF, **payload.pop("details", {})}
    return task(key, incident_id=INCIDENT, severity="medium", tier=None, details=details, **payload)


def test_routing_always_and_only() -> None:
    assert route("medium", None, DEFAULT_ROUTING, always=["servicenow"]) == (
        "medium",
        ["webex", "servicenow", "email"],
    )
    assert route("critical", None, DEFAULT_ROUTING, only=["servicenow"])[1] == ["servicenow"]
    assert route("medium", None, DEFAULT_ROUTING, only=["servicenow"])[1] == []
    assert route("low", None, DEFAULT_ROUTING, always=["servicenow"], only=["servicenow"])[1] == [
        "servicenow"
    ]


async def test_the_record_is_adopted_noted_held_and_resolved(
    settings: Settings, peers: Peers
) -> None:
    ns = notify_settings(snow=True, servicenow_hold_reason="4")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        snow = mock_snow(router)
        patch = router.patch(f"{SNOW}/api/now/table/incident/{ORIGIN}").respond(200, json=record())
        async with agent(settings, ns, peers) as (client, _):
            # a session starts: the record is taken up (In Progress) with a work note; medium
            # would not route to ServiceNow, but this ticket's record must follow
            body, headers = from_snow(
                "k-start",
                event="status_update",
                subject=f"{INCIDENT}: runbook linux-disk-full started",
                body="Runbook linux-disk-full (v1) started by cxm-auto: 3 step(s)",
                details={"status": "in_progress", "phase": "runbook"},
            )
            answer = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            channels = answer["result"]["channels"]
            assert channels["servicenow"]["status"] == "sent", channels
            assert channels["servicenow"]["external_id"] == ORIGIN
            assert channels["servicenow"]["number"] == "INC0010023"
            assert channels["servicenow"]["action"] == "updated"

            # a step's note: ServiceNow alone, never Webex or Email
            body, headers = from_snow(
                "k-step",
                event="runbook_step",
                subject=f"{INCIDENT}: runbook linux-disk-full step 'free space' completed",
                body="prechecks · free space (step 1 of 3): completed (exit 0)\noutput: 4% free",
                details={"step": "free space", "step_status": "completed"},
                channels=["servicenow"],
            )
            step = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert list(step["result"]["channels"]) == ["servicenow"]
            assert step["result"]["template"] == "step"

            # manual review: On Hold, with the hold reason configured and a note saying why
            body, headers = from_snow(
                "k-review",
                event="manual_review",
                subject=f"{INCIDENT}: manual review needed after runbook linux-disk-full",
                body="Manual review needed before this is resolved: the runbook has no "
                "postchecks to confirm the fix",
                details={"status": "in_progress", "phase": "verification"},
            )
            held = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert held["result"]["channels"]["servicenow"]["action"] == "on_hold"

            # resolved: state 6 with the close code and the verification as close notes
            body, headers = from_snow(
                "k-close",
                event="ticket_closed",
                subject=f"{INCIDENT} resolved: runbook linux-disk-full",
                body="Runbook linux-disk-full: 3 of 3 step(s) completed; 1 postcheck(s) passed",
                details={"status": "resolved", "resolution": "resolved"},
            )
            closed = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert closed["result"]["channels"]["servicenow"]["action"] == "resolved"

            assert snow["create"].call_count == 0 and snow["find"].call_count == 0
            patches = [json.loads(c.request.content) for c in patch.calls]
            assert len(patches) == 4
            assert patches[0]["state"] == "2" and "started by cxm-auto" in patches[0]["work_notes"]
            assert set(patches[1]) == {"work_notes"}
            assert patches[1]["work_notes"].startswith("CXM runbook step: ")
            assert "free space (step 1 of 3): completed (exit 0)" in patches[1]["work_notes"]
            assert "Severity" not in patches[1]["work_notes"]  # the step alone, not the facts
            assert patches[2]["state"] == "3" and patches[2]["hold_reason"] == "4"
            assert "no postchecks to confirm the fix" in patches[2]["work_notes"]
            assert patches[3]["state"] == "6"
            assert patches[3]["close_code"] == "Solved (Permanently)"
            assert "1 postcheck(s) passed" in patches[3]["close_notes"]

            log = (await client.get(f"/api/v1/deliveries?incident_id={INCIDENT}")).json()
            assert {(r["event"], r["channel"]) for r in log if r["status"] == "sent"} == {
                ("status_update", "servicenow"),
                ("runbook_step", "servicenow"),
                ("manual_review", "servicenow"),
                ("ticket_closed", "servicenow"),
            }

            # the inbound webhook knows the adopted record: a person's comment reaches IO
            comment = {
                "sys_id": ORIGIN,
                "number": "INC0010023",
                "state": "6",
                "comments": "confirmed fixed",
                "sys_updated_by": "jane.operator",
                "sys_updated_on": "2026-03-01 15:30:00",
            }
            hook = await client.post(
                "/api/v1/servicenow/webhook",
                json=comment,
                headers={"Authorization": "Bearer hook-secret"},
            )
            assert hook.status_code == 202, hook.text
            # resolved by CXM already: the person's close is not news for the orchestrator
            assert hook.json() == {
                "incident_id": INCIDENT,
                "sys_id": ORIGIN,
                "number": "INC0010023",
                "forwarded": ["io:status_update"],
            }


async def test_escalation_takes_a_new_record_up_and_raises_its_urgency(
    settings: Settings, peers: Peers
) -> None:
    ns = notify_settings(snow=True)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        snow = mock_snow(router)
        patch = router.patch(f"{SNOW}/api/now/table/incident/{ORIGIN}").respond(200, json=record())
        async with agent(settings, ns, peers) as (client, _):
            body, headers = from_snow(
                "k-esc",
                event="escalation",
                subject=f"{INCIDENT} escalated: runbook linux-disk-full",
                body="step 'delete' rejected by alice",
                details={"status": "escalated", "resolution": "escalated"},
            )
            answer = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert answer["result"]["channels"]["servicenow"]["status"] == "sent"
            (sent,) = [json.loads(c.request.content) for c in patch.calls]
            assert sent["urgency"] == "1" and sent["state"] == "2"  # In Progress, not resolved
            assert "rejected by alice" in sent["work_notes"]
            assert snow["create"].call_count == 0


async def test_channels_restrict_what_the_routing_picks(
    settings: Settings, webex: FakeWebex, smtp: Mailbox, peers: Peers
) -> None:
    ns = notify_settings(webex, smtp, snow=True)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        snow = mock_snow(router)
        async with agent(settings, ns, peers) as (client, _):
            # critical routes to all three; the note asks for ServiceNow alone
            body, headers = task("k-1", event="runbook_step", channels=["servicenow"])
            only = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert list(only["result"]["channels"]) == ["servicenow"]
            assert snow["create"].call_count == 1
            assert webex.messages == [] and smtp.messages == []

            # a medium ticket that did not come from ServiceNow has no record to note on
            body, headers = task(
                "k-2",
                incident_id="INC-2026-0002",
                severity="medium",
                tier=None,
                channels=["servicenow"],
            )
            none = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert none["result"]["channels"] == {}
            assert snow["create"].call_count == 1

            # a channel list wider than the routing does not add channels
            body, headers = task(
                "k-3",
                incident_id="INC-2026-0003",
                severity="low",
                tier=None,
                channels=["webex", "email"],
            )
            low = (await client.post("/a2a/tasks", json=body, headers=headers)).json()
            assert list(low["result"]["channels"]) == ["email"]

            bad = task("k-4", channels=["pager"])
            refused = await client.post("/a2a/tasks", json=bad[0], headers=bad[1])
            assert refused.status_code == 422, refused.text


async def test_a_record_already_followed_by_another_incident_is_refused(
    settings: Settings, peers: Peers
) -> None:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        snow = mock_snow(router)
        router.patch(f"{SNOW}/api/now/table/incident/{ORIGIN}").respond(200, json=record())
        async with agent(settings, notify_settings(snow=True), peers) as (client, _):
            first = from_snow("k-a", event="status_update", subject="started")
            await client.post("/a2a/tasks", json=first[0], headers=first[1])
            other = task("k-b", incident_id="INC-2026-0043", details={"servicenow": REF})
            answer = (await client.post("/a2a/tasks", json=other[0], headers=other[1])).json()
            result = answer["result"]["channels"]["servicenow"]
            assert result["status"] == "failed"
            assert (
                result["error"] == f"ServiceNow INC0010023 already follows CXM incident {INCIDENT}"
            )
            assert snow["create"].call_count == 0

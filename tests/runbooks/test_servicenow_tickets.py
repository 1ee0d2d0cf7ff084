"""ServiceNow both ways (#12), in-process: an incident created in ServiceNow reaches CXM
through the correlator's webhook, is matched and run, gets one work note per step on its own
record and is resolved there (or put On Hold for a manual review); nothing is ever created.

The correlator, IO, the orchestrator and notify run in-process on one mesh (audit is
``FakeNetwork``'s); ServiceNow's Table API is faked at the HTTP layer with respx: an
in-memory incident table that records every call (``GET ?sysparm_query=``, ``POST``,
``PATCH``, answers wrapped in ``result``). The record is posted as a Business Rule posts
``current``: ``sys_id``, ``number``, ``short_description``, ``description``, ``priority``,
``cmdb_ci`` as ``{display_value, value}``, ``state``, ``category``, and the labels its
runbook reads. Steps are ``local`` (tests/e2e/test_seed000.py runs them over real SSH).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import respx

from services.correlator.app import create_app as create_correlator
from services.correlator.settings import CorrelatorSettings
from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from tests.correlator.conftest import Cnc
from tests.runbooks.session_mesh import MESH_TOKEN, Cxm, cxm_mesh, local_step
from tests.runbooks.test_ticket_flow import DISK, NGINX, matched
from tests.support import running, wait_for

CORRELATOR_PORT, NOTIFY_PORT = 8001, 8007
MESH = {"Authorization": f"Bearer {MESH_TOKEN}"}
SNOW = "https://dev12345.service-now.com"
TABLE = f"{SNOW}/api/now/table/incident"
WEBHOOK = "/api/v1/tickets/webhook/servicenow"


@dataclass
class Table:
    """ServiceNow's incident table as the Table API shows it, and every call made to it."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def open(self, sys_id: str, number: str, **fields: Any) -> dict[str, Any]:
        """A record a person opened in ServiceNow (what the Business Rule then posts)."""
        self.records[sys_id] = {"sys_id": sys_id, "number": number, "state": "1", **fields}
        return dict(self.records[sys_id])

    def patches(self, sys_id: str) -> list[dict[str, Any]]:
        return [body for method, sid, body in self.calls if method == "PATCH" and sid == sys_id]

    def notes(self, sys_id: str) -> list[str]:
        return [p["work_notes"] for p in self.patches(sys_id) if "work_notes" in p]

    def mock(self, router: respx.MockRouter) -> None:
        def find(request: httpx.Request) -> httpx.Response:
            self.calls.append(("GET", None, dict(request.url.params)))
            wanted = request.url.params.get("sysparm_query", "").removeprefix("correlation_id=")
            found = [r for r in self.records.values() if r.get("correlation_id") == wanted]
            return httpx.Response(200, json={"result": found})

        def create(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            self.calls.append(("POST", None, body))
            n = len(self.records) + 1
            made = self.open(f"{n:032x}", f"INC{20000 + n:07d}", **body)
            return httpx.Response(201, json={"result": made})

        def update(request: httpx.Request, sys_id: str) -> httpx.Response:
            body = json.loads(request.content)
            self.calls.append(("PATCH", sys_id, body))
            record = self.records.get(sys_id)
            if record is None:
                return httpx.Response(404, json={"error": {"message": "No Record found"}})
            # work_notes is a journal field: each write adds an entry, it never replaces
            record.update({k: v for k, v in body.items() if k != "work_notes"})
            if "work_notes" in body:
                record.setdefault("journal", []).append(body["work_notes"])
            return httpx.Response(200, json={"result": dict(record)})

        router.get(TABLE).mock(side_effect=find)
        router.post(TABLE).mock(side_effect=create)
        router.patch(url__regex=rf"^{TABLE}/(?P<sys_id>[0-9a-f]{{32}})$").mock(side_effect=update)


def business_rule(record: dict[str, Any], host: str, **fields: Any) -> dict[str, Any]:
    """What an "after insert" Business Rule's REST message posts for ``current``."""
    return {
        "sys_id": record["sys_id"],
        "number": record["number"],
        "state": record["state"],
        "cmdb_ci": {"display_value": host, "value": "b0c4030ac0a800090152e7a4564ca36c"},
        "category": "software",
        "priority": "3",
        **fields,
    }


@asynccontextmanager
async def snow_mesh(tmp_path: Path) -> AsyncIterator[tuple[Cxm, httpx.AsyncClient, Table]]:
    """IO, the orchestrator, the correlator and notify in-process, ServiceNow behind respx."""
    table = Table()
    with respx.mock(assert_all_called=False) as router:
        table.mock(router)
        async with cxm_mesh(tmp_path) as cxm:
            correlator = create_correlator(
                cxm.settings,
                mesh_transport=cxm.routes,
                config=CorrelatorSettings(group_wait_s=1.0, tick_s=1.0),
                cnc_transport=httpx.MockTransport(Cnc().handler),
            )
            notify = create_notify(
                cxm.settings,
                NotifySettings(
                    servicenow_url=SNOW,
                    servicenow_username="cxm.integration",
                    servicenow_password="snow-secret-password",
                    notify_retries=0,
                ),
                mesh_transport=cxm.routes,
            )
            async with running(correlator) as corr, running(notify):
                cxm.routes.apps[CORRELATOR_PORT] = correlator
                cxm.routes.apps[NOTIFY_PORT] = notify
                operator = await cxm.user("olivia")
                await cxm.runbook(DISK, operator)
                await cxm.runbook(NGINX, operator)
                yield cxm, corr, table


async def ticket_of(corr: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await corr.post(WEBHOOK, json=body, headers=MESH)
    assert response.status_code == 202, response.text
    (entry,) = response.json()["alerts"]
    assert entry["disposition"] == "new_incident", entry
    incident_id: str = entry["incident_id"]
    return incident_id


async def test_a_servicenow_incident_is_run_noted_per_step_and_resolved_on_its_record(
    tmp_path: Path,
) -> None:
    async with snow_mesh(tmp_path) as (cxm, corr, table):
        opened = table.open(
            "46d44a5fa9fe198101a78787e40d8f5d",
            "INC0010023",
            short_description="Filesystem / on web-03 is filling up",
        )
        body = business_rule(
            opened,
            "web-03",
            short_description="Filesystem / on web-03 is filling up",
            description="Filesystem / has 4% space left and will fill within 4 hours.",
            labels={"alertname": "NodeFilesystemSpaceFillingUp", "mountpoint": "/"},
        )
        incident_id = await ticket_of(corr, body)

        # matched on arrival and run by itself (medium, a strong match)
        ticket = await matched(cxm, incident_id)
        assert ticket["kind"] == "host" and ticket["severity"] == "medium"
        assert ticket["runbook_matches"][0]["runbook_id"] == "linux-disk-full"
        session_id = ticket["runbook_session_id"]
        assert session_id, ticket
        session = await cxm.settled(session_id)
        assert session["verification"]["outcome"] == "resolved", session
        assert (await cxm.closed_ticket(incident_id))["resolution"] == "resolved"

        sys_id = opened["sys_id"]

        def resolved() -> bool:
            return table.records[sys_id].get("state") == "6"

        await wait_for(resolved, timeout=30)
        # never a second incident: no create, no lookup; everything on the original sys_id
        assert [c for c in table.calls if c[0] != "PATCH"] == []
        assert {sid for _, sid, _ in table.calls} == {sys_id}
        assert len(table.records) == 1

        patches = table.patches(sys_id)
        # CXM took it up (In Progress) with its first note: what it matched
        assert patches[0]["state"] == "2", patches[0]
        assert "linux-disk-full" in patches[0]["work_notes"]
        # one work note per step, in the order they ran, with its status and exit code
        steps = [n for n in table.notes(sys_id) if n.startswith("CXM runbook step: ")]
        names = [s["name"] for s in session["steps"]]
        assert len(steps) == len(names) == 3, steps
        for note, step in zip(steps, session["steps"], strict=True):
            assert f"{step['phase']} · {step['name']} (step" in note, note
            assert ": completed (exit 0)" in note and "output (last lines):" in note
        assert "verified 40% free" in steps[-1]
        # resolved with close code and the verification's reasons as close notes
        final = patches[-1]
        assert final["state"] == "6" and final["close_code"] == "Solved (Permanently)"
        for reason in session["verification"]["reasons"]:
            assert reason in final["close_notes"], reason
        assert table.records[sys_id]["state"] == "6"

        # the step notes went to ServiceNow alone
        assert cxm.orchestrator is not None
        deliveries = await corr_notify_log(cxm, incident_id)
        assert {d["channel"] for d in deliveries if d["event"] == "runbook_step"} == {"servicenow"}

        # the rule fires again (an update to the record): still that one ticket, nothing new.
        # The correlator hears the ticket closed through the orchestrator's outbox: wait for it
        async def freed() -> bool:
            found = await corr.get("/api/v1/incidents", params={"status": "closed"})
            return any(i["incident_id"] == incident_id for i in found.json())

        await wait_for(freed, timeout=30)
        again = await corr.post(WEBHOOK, json={**body, "state": "6"}, headers=MESH)
        assert again.status_code == 202 and again.json()["alerts"][0]["incident_id"] is None
        resent = await corr.post(WEBHOOK, json=body, headers=MESH)
        assert resent.status_code == 200, resent.text
        (entry,) = resent.json()["alerts"]
        assert (entry["disposition"], entry["incident_id"]) == ("duplicate", incident_id)
        listed = (await cxm.io.get("/api/v1/tickets", headers=cxm.admin())).json()
        assert [t["incident_id"] for t in listed] == [incident_id]


async def corr_notify_log(cxm: Cxm, incident_id: str) -> list[dict[str, Any]]:
    app = cxm.routes.apps[NOTIFY_PORT]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://notify", headers=MESH
    ) as client:
        response = await client.get("/api/v1/deliveries", params={"incident_id": incident_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def test_a_result_that_needs_review_puts_the_record_on_hold(tmp_path: Path) -> None:
    """nginx-restart has no postchecks: verified at 0.5, a person reviews (On Hold). Priority
    1 is critical, which never runs by itself: an operator picks the runbook."""
    async with snow_mesh(tmp_path) as (cxm, corr, table):
        opened = table.open("5d2e8c1fdb5a3010a9e4c1a2b3c4d5e6", "INC0010024")
        body = business_rule(
            opened,
            "lb-2",
            priority="1",
            short_description="nginx answers 502 Bad Gateway on lb-2",
            description="Checkout fails: nginx 502 bad gateway, upstream errors since 10:02.",
            labels={"service": "nginx"},
        )
        incident_id = await ticket_of(corr, body)
        ticket = await matched(cxm, incident_id)
        assert ticket["severity"] == "critical" and ticket["runbook_session_id"] is None
        assert ticket["runbook_matches"][0]["runbook_id"] == "nginx-restart", ticket
        sys_id = opened["sys_id"]
        # the first note says what CXM found; nothing runs yet, so the record stays New
        (first,) = await wait_for(lambda: table.patches(sys_id), timeout=30)
        assert "state" not in first and "nginx-restart" in first["work_notes"]
        session_id = await cxm.start(incident_id, "nginx-restart", await cxm.user("oscar"))
        session = await cxm.settled(session_id)
        assert session["verification"]["outcome"] == "in_progress", session

        def held() -> bool:
            return table.records[sys_id].get("state") == "3"

        await wait_for(held, timeout=30)
        hold = table.patches(sys_id)[-1]
        assert hold["state"] == "3" and "hold_reason" not in hold  # none configured
        assert "Manual review needed" in hold["work_notes"]
        assert "no postchecks to confirm the fix" in hold["work_notes"]
        steps = [n for n in table.notes(sys_id) if n.startswith("CXM runbook step: ")]
        assert len(steps) == 1 and "main · reload (step 1 of 1): completed" in steps[0]
        assert [c for c in table.calls if c[0] != "PATCH"] == []
        assert all(p.get("state") != "6" for p in table.patches(sys_id))
        # the ticket stays open in CXM for the person who reviews it
        view = await cxm.ticket_view(incident_id)
        assert view["status"] == "in_progress"


async def test_a_failing_step_escalates_the_record(tmp_path: Path) -> None:
    """A main step that fails: rollback, escalated; the record stays In Progress, urgency 1."""
    async with snow_mesh(tmp_path) as (cxm, corr, table):
        operator = await cxm.user("fred")
        broken = {
            **NGINX,
            "id": "nginx-broken",
            "steps": {"main": [local_step("reload", "sh -c 'echo reload failed; exit 3'")]},
            "rollback": [local_step("note the state", "echo state noted")],
        }
        await cxm.runbook(broken, operator)
        opened = table.open("6e3f9d20ec6b4121b0f5d2b3c4d5e6f7", "INC0010025")
        body = business_rule(opened, "lb-3", priority="1", short_description="nginx 502 on lb-3")
        incident_id = await ticket_of(corr, body)
        await matched(cxm, incident_id)
        session_id = await cxm.start(incident_id, "nginx-broken", operator)
        session = await cxm.settled(session_id)
        assert session["status"] == "failed", session
        assert session["verification"]["outcome"] == "escalated"
        sys_id = opened["sys_id"]

        def escalated() -> bool:
            return any(p.get("urgency") == "1" for p in table.patches(sys_id))

        await wait_for(escalated, timeout=30)
        last = table.patches(sys_id)[-1]
        assert last["urgency"] == "1" and "escalated" in last["work_notes"]
        assert table.records[sys_id]["state"] == "2"  # In Progress, not resolved
        steps = [n for n in table.notes(sys_id) if n.startswith("CXM runbook step: ")]
        assert len(steps) == 2, steps
        # the total grows when the rollback is laid out after the failure
        assert "main · reload (step 1 of 1): failed (exit 3)" in steps[0], steps[0]
        assert "why: exit code 3, expected 0" in steps[0] and "reload failed" in steps[0]
        assert "rollback · note the state (step 2 of 2): completed (exit 0)" in steps[1]
        assert [c for c in table.calls if c[0] != "PATCH"] == []

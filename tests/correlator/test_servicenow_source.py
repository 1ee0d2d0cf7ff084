"""ServiceNow incidents in (#12): a record a Business Rule posts becomes a ticket, once.

``POST /api/v1/tickets/webhook/servicenow`` takes the incident record as the Table API spells
it (``sys_id``, ``number``, ``short_description``, ``description``, ``priority`` or
``impact``/``urgency``, ``cmdb_ci`` as a name or ``{display_value, value}``, ``state``,
``category``, ``u_host``): a host ticket, or a network incident when the CI is a node or link
of the topology. The ticket carries the record's ``sys_id`` and ``number`` as labels (what
lets notify update that record instead of creating one). A resent record never opens a
second ticket, a resolved one none at all, and bad records are 422s that name the field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.correlator.settings import WebhookAuth
from services.correlator.sources import SourceError, servicenow_severity
from tests.correlator.conftest import AUTH

URL = "/api/v1/tickets/webhook/servicenow"
SYS_ID = "46d44a5fa9fe198101a78787e40d8f5d"


def record(**fields: Any) -> dict[str, Any]:
    """What a Business Rule on the incident table posts (``current``'s fields)."""
    base: dict[str, Any] = {
        "sys_id": SYS_ID,
        "number": "INC0010023",
        "short_description": "Disk almost full on web-03",
        "description": "Filesystem / on web-03 has 4% space left.\nNo space left soon.",
        "impact": "2",
        "urgency": "1",
        "priority": "2",
        "cmdb_ci": {"display_value": "web-03", "value": "b0c4030ac0a800090152e7a4564ca36c"},
        "state": "1",
        "category": "software",
        "opened_at": "2026-03-01 14:26:16",
    }
    return base | fields


async def test_a_record_becomes_a_host_ticket_labelled_with_its_reference(harness: Any) -> None:
    async with harness() as h:
        r = await h.post(URL, record(labels={"mountpoint": "/"}, u_path="/var/tmp"))
        assert r.status_code == 202, r.text
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident", entry
        assert "host ticket for web-03" in entry["reason"]
        assert entry["fingerprint"] == f"servicenow-{SYS_ID}"
        await h.elapse(3.1)
        (ticket,) = await h.delivered("io", "new_ticket")
        assert ticket["kind"] == "host" and ticket["host"] == "web-03"
        assert ticket["severity"] == "high"  # priority 2
        assert ticket["title"] == "Disk almost full on web-03"
        assert ticket["description"].startswith("Filesystem / on web-03 has 4% space left.")
        labels = ticket["labels"]
        assert labels["servicenow_sys_id"] == SYS_ID
        assert labels["servicenow_number"] == "INC0010023"
        assert labels["category"] == "software"
        assert labels["cmdb_ci"] == "web-03"
        assert labels["mountpoint"] == "/" and labels["path"] == "/var/tmp"
        (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["kind"] == "host" and start["host"] == "web-03"
        assert start["labels"]["servicenow_sys_id"] == SYS_ID
        (row,) = (await h.client.get("/api/v1/alerts", params={"source": "servicenow"})).json()
        assert row["external_id"] == "INC0010023"


async def test_u_host_wins_and_the_table_api_wrapper_is_read(harness: Any) -> None:
    async with harness() as h:
        body = {"result": record(u_host="db-01", cmdb_ci="Payroll DB", priority="1 - Critical")}
        r = await h.post(URL, body)
        assert r.status_code == 202, r.text
        assert "host ticket for db-01" in r.json()["alerts"][0]["reason"]
        (row,) = (await h.client.get("/api/v1/alerts", params={"source": "servicenow"})).json()
        assert row["severity"] == "critical"


async def test_a_ci_the_topology_knows_is_a_network_incident(harness: Any) -> None:
    async with harness() as h:
        link = record(cmdb_ci="pe2-pe1")
        r = await h.post(URL, link)
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident" and entry["link"] == "pe1-pe2", entry
        node = record(sys_id="a" * 32, number="INC0010024", cmdb_ci={"display_value": "p9"})
        r = await h.post(URL, node)
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "new_incident" and entry["link"] is None, entry
        await h.elapse(3.1)
        tickets = await h.delivered("io", "new_ticket", 2)
        assert {t["kind"] for t in tickets} == {"network"}
        assert sorted(x for t in tickets for x in t["degraded_links"]) == ["p9-p10", "pe1-pe2"]


async def test_a_resent_record_never_opens_a_second_ticket(harness: Any) -> None:
    async with harness() as h:
        first = (await h.post(URL, record())).json()["alerts"][0]
        incident = first["incident_id"]
        # the rule fires again (an update, a retry) within the dedup window
        again = await h.post(URL, record(state="2", short_description="edited"))
        assert again.status_code in (200, 202), again.text
        entry = again.json()["alerts"][0]
        assert (entry["disposition"], entry["incident_id"]) == ("duplicate", incident)
        await h.elapse(3.1)
        await h.delivered("orchestrator", "start_incident")
        closed = {"incident_id": incident, "resolution": "resolved", "degraded_links": []}
        r = await h.client.post(
            "/a2a/tasks", json={"task_type": "incident_closed", "payload": closed}, headers=AUTH
        )
        assert r.status_code == 200 and r.json()["result"]["closed"] is True
        # long after, with the host free again: still the same ticket, nothing ingested
        h.clock.advance(3600)
        late = await h.post(URL, record())
        assert late.status_code == 200, late.text
        assert late.json()["accepted"] == 0
        (entry,) = late.json()["alerts"]
        assert (entry["disposition"], entry["incident_id"]) == ("duplicate", incident)
        assert entry["reason"] == f"ServiceNow INC0010023 is already CXM ticket {incident}"
        # a batch mixing the known record and a new one: only the new one is ingested
        other = record(sys_id="b" * 32, number="INC0010030")
        mixed = await h.post(URL, [record(), other])
        assert mixed.status_code == 202, mixed.text
        assert mixed.json()["accepted"] == 1
        assert [e["disposition"] for e in mixed.json()["alerts"]] == ["duplicate", "new_incident"]
        await h.elapse(3.1)
        await h.flush()
        assert len(h.peers.of("io", "new_ticket")) == 2


@pytest.mark.parametrize("state", ["6", "7", "8", "Resolved", "Canceled", {"value": "7"}])
async def test_a_resolved_or_closed_record_is_not_a_new_ticket(harness: Any, state: Any) -> None:
    async with harness() as h:
        r = await h.post(URL, record(state=state))
        assert r.status_code == 202, r.text
        (entry,) = r.json()["alerts"]
        assert entry["disposition"] == "discarded", entry
        assert entry["incident_id"] is None
        await h.flush()
        assert h.peers.of("io", "new_ticket") == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (record(sys_id=None), "sys_id is required"),
        (record(sys_id="INC0010023"), "sys_id 'INC0010023' is not a sys_id (32 hex digits)"),
        (record(cmdb_ci=None), "no host: set u_host (or host), or cmdb_ci"),
        (record(cmdb_ci="b0c4030ac0a800090152e7a4564ca36c"), "cmdb_ci 'b0c4030ac0a8"),
        (record(cmdb_ci="Payroll DB"), "cmdb_ci 'Payroll DB' is not a host name"),
        (record(priority="7"), "priority '7' is not one of 1..5"),
        (record(priority=None, urgency="high"), "urgency 'high' is not one of 1..3"),
        (record(state="Awaiting nothing"), "state 'Awaiting nothing' is not an incident state"),
        (record(opened_at="yesterday"), "opened_at: not an ISO 8601 time"),
        (record(number="INC 1"), "number 'INC 1' is not an incident number"),
        (record(description={"a": 1}), "description must be text"),
        ([], "no alerts in the body"),
        (["INC0010023"], "servicenow[0]: expected an object"),
    ],
)
async def test_bad_records_are_refused_naming_the_field(
    harness: Any, body: Any, problem: str
) -> None:
    async with harness() as h:
        r = await h.post(URL, body)
        assert r.status_code == 422, r.text
        assert problem in r.json()["detail"], r.json()
        assert (await h.client.get("/api/v1/alerts", params={"source": "servicenow"})).json() == []


async def test_not_json_and_wrong_credentials(harness: Any) -> None:
    auth = {"servicenow": WebhookAuth(bearer_token="snow-rule-token")}
    async with harness(webhook_auth=auth) as h:
        raw = json.dumps(record()).encode()
        ctype = {"content-type": "application/json"}
        r = await h.client.post(URL, content=raw, headers={**ctype, **AUTH})
        assert r.status_code == 401 and "servicenow" in r.text
        rule = {**ctype, "Authorization": "Bearer snow-rule-token"}
        r = await h.client.post(URL, content=b"{not json", headers=rule)
        assert r.status_code == 400 and "malformed JSON" in r.text
        r = await h.client.post(URL, content=raw, headers=rule)
        assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("fields", "severity"),
    [
        ({"priority": "1"}, "critical"),
        ({"priority": 2}, "high"),
        ({"priority": "3 - Moderate"}, "medium"),
        ({"priority": {"value": "4", "display_value": "4 - Low"}}, "low"),
        ({"priority": "5 - Planning"}, "low"),
        ({"impact": "1", "urgency": "1"}, "critical"),
        ({"impact": "2", "urgency": "1"}, "high"),
        ({"impact": "2", "urgency": "2"}, "medium"),
        ({"impact": "3", "urgency": "2"}, "low"),
        ({"urgency": "1"}, "medium"),  # impact missing: ServiceNow's default 3 → priority 3
        ({}, "medium"),
    ],
)
def test_severity_from_priority_or_impact_and_urgency(
    fields: dict[str, Any], severity: str
) -> None:
    assert servicenow_severity(fields) == severity


def test_severity_refuses_a_priority_out_of_range() -> None:
    with pytest.raises(SourceError, match=r"priority .0. is not one of 1\.\.5"):
        servicenow_severity({"priority": "0"})

"""Redelivery: a channel still failing after the in-call retries is retried in the background,
in order per (incident, channel), across restarts, until sent, refused for good or too old."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import respx
import sqlalchemy as sa

from services.notify import store
from shared.agent import idempotency_table
from shared.db import Migration, create_tables, make_engine, migrate
from shared.models import utcnow
from shared.settings import Settings
from tests.notify.conftest import Mailbox, Peers
from tests.notify.test_notify import FACTS, SNOW, agent, notify_settings, task
from tests.support import wait_for

FAST: dict[str, Any] = {
    "notify_retries": 1,
    "notify_redelivery_backoff_s": 2.0,
    "notify_redelivery_backoff_max_s": 10.0,
}
"""At the tests' time scale (0.01) redelivery waits 20 ms, then at most 100 ms."""


@dataclass
class FakeServiceNow:
    """The Table API's incident table in memory; ``down`` (or ``down_for`` some CXM incidents)
    answers ``fail_status`` instead. ``log`` is every request in order: (method, status, body)."""

    down: bool = False
    down_for: set[str] = field(default_factory=set)
    fail_status: int = 503
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        sys_id = request.url.path.rsplit("/", 1)[-1]
        incident = {
            "GET": request.url.params.get("sysparm_query", "").removeprefix("correlation_id="),
            "POST": body.get("correlation_id"),
            "PATCH": self.incidents.get(sys_id, {}).get("correlation_id"),
        }[request.method]
        if self.down or incident in self.down_for:
            self.log.append((request.method, self.fail_status, body))
            error = {"error": {"message": "Instance unavailable"}, "status": "failure"}
            return httpx.Response(self.fail_status, json=error)
        answer: dict[str, Any]
        if request.method == "GET":
            found = [r for r in self.incidents.values() if r["correlation_id"] == incident]
            status, answer = 200, {"result": found[:1]}
        elif request.method == "POST":
            sys_id = uuid.uuid4().hex
            number = f"INC{len(self.incidents) + 10001:07d}"
            self.incidents[sys_id] = {"sys_id": sys_id, "number": number, "state": "1"} | body
            status, answer = 201, {"result": self.incidents[sys_id]}
        else:
            self.incidents[sys_id].update(body)
            status, answer = 200, {"result": self.incidents[sys_id]}
        self.log.append((request.method, status, body))
        return httpx.Response(status, json=answer)

    def served(self) -> list[str]:
        """What ServiceNow did, in order: find, create, note, resolve."""
        kinds = {"GET": "find", "POST": "create"}
        return [
            kinds.get(m) or ("resolve" if body.get("state") == "6" else "note")
            for m, status, body in self.log
            if status < 400
        ]


@pytest.fixture
def snow() -> Iterator[FakeServiceNow]:
    """The fake ServiceNow instance, answering every request to it while the test runs."""
    fake = FakeServiceNow()
    with respx.mock(assert_all_mocked=True) as router:
        router.route(host=httpx.URL(SNOW).host).mock(side_effect=fake.handle)
        yield fake


async def send(client: httpx.AsyncClient, key: str, **payload: Any) -> dict[str, Any]:
    """One notify task; its answer per channel."""
    body, headers = task(key, **payload)
    response = await client.post("/a2a/tasks", json=body, headers=headers)
    assert response.status_code == 200, response.text
    channels: dict[str, Any] = response.json()["result"]["channels"]
    return channels


async def rows(client: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = (await client.get("/api/v1/deliveries", params=filters)).json()
    return log


async def statuses(client: httpx.AsyncClient, **filters: str) -> list[str]:
    return [r["status"] for r in await rows(client, **filters)]


async def exported(client: httpx.AsyncClient, sample: str) -> bool:
    return sample in (await client.get("/metrics")).text


def audited(peers: Peers, channel: str) -> list[tuple[str, str]]:
    """(event, status) of each notification_sent audit event for the channel, in order."""
    return [
        (a["payload"]["details"]["event"], a["payload"]["details"]["status"])
        for a in peers.of("audit", "audit_event")
        if a["payload"]["details"]["channel"] == channel
    ]


async def test_servicenow_down_then_back_lands_create_note_resolve_in_order(
    settings: Settings, snow: FakeServiceNow, peers: Peers
) -> None:
    ns = notify_settings(snow=True, **FAST)
    snow.down = True
    async with agent(settings, ns, peers) as (client, app):
        opened = (await send(client, "k-new"))["servicenow"]
        assert opened["status"] == "retrying" and opened["attempts"] == 2
        assert opened["next_attempt_at"] and "503" in opened["error"]

        # The next two are not sent ahead of the create: they wait behind it, at once.
        update = await send(client, "k-phase", event="status_update", subject="Tunnel provisioned")
        closed = await send(client, "k-close", event="ticket_closed", details=FACTS)
        for answer in (update["servicenow"], closed["servicenow"]):
            assert answer["status"] == "queued" and answer["attempts"] == 0
            assert "queued behind" in answer["reason"]

        log = await rows(client, channel="servicenow")
        assert [r["status"] for r in log] == ["retrying"] * 3
        assert all(r["next_attempt_at"] for r in log)
        # The loop keeps trying the oldest, and only the oldest, while ServiceNow is down.
        await wait_for(lambda: len(snow.log) >= 5)
        assert {m for m, _, _ in snow.log} == {"GET"}
        await wait_for(
            lambda: exported(client, 'cxm_notify_retry_backlog{channel="servicenow"} 3.0')
        )

        snow.down = False
        await wait_for(lambda: statuses(client, channel="servicenow"), timeout=10)
        await wait_for(lambda: _all(statuses(client, channel="servicenow"), "sent"), timeout=10)

        assert snow.served() == ["find", "create", "note", "resolve"]
        assert [m for m, _, _ in snow.log].count("POST") == 1
        [incident] = snow.incidents.values()
        assert incident["correlation_id"] == "INC-2026-0001" and incident["state"] == "6"
        log = await rows(client, channel="servicenow")
        assert log[0]["attempts"] > 2 and all(r["sent_at"] for r in log)
        assert [r["external_id"] for r in log] == [incident["sys_id"]] * 3

        await app.state.outbox.flush()
        events = audited(peers, "servicenow")
        for event in ("new_incident", "status_update", "ticket_closed"):
            assert [s for e, s in events if e == event] == ["retrying", "sent"]
        await wait_for(
            lambda: exported(client, 'cxm_notify_retry_backlog{channel="servicenow"} 0.0')
        )


async def _all(values: Any, expected: str) -> bool:
    got = await values
    return bool(got) and set(got) == {expected}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The notify agent's database: SQLite under tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return settings
    dsn: str = request.getfixturevalue("postgres_dsn")
    name = f"notify_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return settings.model_copy(update={"database_url": f"{dsn.rsplit('/', 1)[0]}/{name}"})


async def test_queued_deliveries_survive_a_restart(
    db_settings: Settings, snow: FakeServiceNow, peers: Peers
) -> None:
    ns = notify_settings(snow=True, **FAST)
    snow.down = True
    async with agent(db_settings, ns, peers) as (client, _):
        assert (await send(client, "k-new"))["servicenow"]["status"] == "retrying"
        update = await send(client, "k-phase", event="escalation", subject="Escalated")
        assert update["servicenow"]["status"] == "queued"
    assert await _stored_statuses(db_settings) == ["retrying", "retrying"]

    snow.down = False
    async with agent(db_settings, ns, peers) as (client, _):
        await wait_for(lambda: _all(statuses(client, channel="servicenow"), "sent"))
    assert snow.served() == ["find", "create", "note"]
    assert snow.log[-1][2]["urgency"] == "1"


async def _stored_statuses(settings: Settings) -> list[str]:
    engine = make_engine(settings.db_url("notify"))
    try:
        async with engine.connect() as conn:
            t = store.deliveries
            query = sa.select(t.c.status).where(t.c.channel == "servicenow").order_by(t.c.id)
            return list((await conn.scalars(query)).all())
    finally:
        await engine.dispose()


async def test_mail_sent_while_the_relay_restarts_arrives_exactly_once(
    settings: Settings, smtp: Mailbox, peers: Peers
) -> None:
    ns = notify_settings(smtp=smtp, **FAST)
    smtp.stop()
    async with agent(settings, ns, peers) as (client, app):
        mail = (await send(client, "k-mail", severity="low", tier=None))["email"]
        assert mail["status"] == "retrying" and "SMTP unreachable" in mail["error"]

        # The sender redelivers the task meanwhile: answered from the queued row, not resent.
        async with app.state.engine.begin() as conn:
            await conn.execute(sa.delete(idempotency_table))
        again = (await send(client, "k-mail", severity="low", tier=None))["email"]
        assert again["status"] == "retrying" and again["duplicate"] is True

        smtp.start()
        await wait_for(lambda: _all(statuses(client), "sent"))
        await app.state.notifier.redeliver_due()
        async with app.state.engine.begin() as conn:
            await conn.execute(sa.delete(idempotency_table))
        third = (await send(client, "k-mail", severity="low", tier=None))["email"]
        assert third["status"] == "sent" and third["duplicate"] is True
        assert len(smtp.messages) == 1
        assert smtp.messages[0]["X-CXM-Incident"] == "INC-2026-0001"
        [row] = await rows(client)
        assert row["attempts"] > 2 and row["next_attempt_at"] is None


async def test_a_refusal_is_final_and_is_not_retried(
    settings: Settings, snow: FakeServiceNow, peers: Peers
) -> None:
    snow.down, snow.fail_status = True, 400
    async with agent(settings, notify_settings(snow=True, **FAST), peers) as (client, app):
        answer = (await send(client, "k-new"))["servicenow"]
        assert answer["status"] == "failed" and answer["attempts"] == 1
        assert "next_attempt_at" not in answer
        await app.state.notifier.redeliver_due()
        assert len(snow.log) == 1
        assert await statuses(client, channel="servicenow") == ["failed"]


async def test_too_old_is_abandoned_and_a_later_success_is_reported_once(
    settings: Settings, snow: FakeServiceNow, peers: Peers
) -> None:
    # 300 s is 3 s at the tests' time scale: the first answer (two attempts) must come before
    # it, which 300 ms did not always leave on a busy CI machine ("abandoned" at once)
    ns = notify_settings(snow=True, **FAST | {"notify_redelivery_max_age_s": 300.0})
    snow.down = True
    async with agent(settings, ns, peers) as (client, app):
        assert (await send(client, "k-new"))["servicenow"]["status"] == "retrying"
        await wait_for(lambda: _all(statuses(client, channel="servicenow"), "abandoned"))
        [row] = await rows(client, channel="servicenow")
        assert row["attempts"] > 2 and "503" in row["error"]

        # Abandoned is not the end for the sender: its redelivery of the task tries again.
        snow.down = False
        for _ in range(2):
            async with app.state.engine.begin() as conn:
                await conn.execute(sa.delete(idempotency_table))
            assert (await send(client, "k-new"))["servicenow"]["status"] == "sent"
        assert snow.served() == ["find", "create"]
        await app.state.outbox.flush()
        assert audited(peers, "servicenow") == [
            ("new_incident", "retrying"),
            ("new_incident", "abandoned"),
            ("new_incident", "sent"),
        ]
        assert await exported(
            client, 'cxm_notify_deliveries_total{channel="servicenow",status="abandoned"} 1.0'
        )


async def test_one_pairs_backlog_blocks_no_other_pair_or_channel(
    settings: Settings, snow: FakeServiceNow, smtp: Mailbox, peers: Peers
) -> None:
    snow.down_for = {"INC-2026-0001"}
    ns = notify_settings(smtp=smtp, snow=True, **FAST)
    async with agent(settings, ns, peers) as (client, _):
        first = await send(client, "k1-new")
        assert (first["servicenow"]["status"], first["email"]["status"]) == ("retrying", "sent")
        second = await send(client, "k1-phase", event="status_update")
        assert (second["servicenow"]["status"], second["email"]["status"]) == ("queued", "sent")
        for key in ("k2-new", "k2-phase"):
            other = await send(client, key, incident_id="INC-2026-0002")
            assert other["servicenow"]["status"] == "sent"
        assert len(smtp.messages) == 4
        assert await statuses(client, incident_id="INC-2026-0001", channel="servicenow") == [
            "retrying",
            "retrying",
        ]

        snow.down_for.clear()
        await wait_for(lambda: _all(statuses(client, channel="servicenow"), "sent"))
        by_incident = {r["correlation_id"]: r for r in snow.incidents.values()}
        assert sorted(by_incident) == ["INC-2026-0001", "INC-2026-0002"]
        assert snow.served().count("create") == 2


async def test_migration_3_adds_redelivery_to_an_existing_log(db_settings: Settings) -> None:
    """A delivery log made before redelivery (migrations 1 and 2) gets its columns, keeps its
    rows, and takes a queued delivery."""
    old = sa.MetaData()
    log = sa.Table(
        "notify_deliveries",
        old,
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in store.deliveries.c
            if c.name not in store.REDELIVERY_COLUMNS
        ),
    )
    before = (Migration(1, "delivery log", create_tables(old, "notify_deliveries")),)
    engine = make_engine(db_settings.db_url("notify"))
    try:
        assert await migrate(engine, "notify", (*before, store.MIGRATIONS[1])) == [1, 2]
        async with engine.begin() as conn:
            now = utcnow()
            sent = {"status": "sent", "attempts": 1, "created_at": now, "updated_at": now}
            await conn.execute(
                log.insert().values(dedup_key="k-old", channel="email", event="opened", **sent)
            )

        assert await migrate(engine, "notify", store.MIGRATIONS) == [3]
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("notify_deliveries")}
            )
        assert set(store.REDELIVERY_COLUMNS) <= columns
        row = await store.claim(
            engine, key="k-new", channel="email", incident_id="INC-1", event="status_update"
        )
        payload = {"incident_id": "INC-1", "event": "status_update", "subject": "s"}
        due = utcnow()
        await store.finish(
            engine,
            row["id"],
            status="retrying",
            attempts=2,
            error="SMTP unreachable",
            next_attempt_at=due,
            payload=payload,
        )
        queued = await store.next_retrying(engine, "INC-1", "email")
        assert queued is not None
        assert (queued["dedup_key"], queued["payload"]) == ("k-new", payload)
        assert queued["next_attempt_at"] == due
        assert await store.backlog(engine) == {"email": 1}
        assert await store.waiting_before(engine, row["id"] + 1, "INC-1", "email") == row["id"]
        listed = await store.list_deliveries(
            engine, incident_id=None, channel=None, status=None, limit=10
        )
        assert [r["status"] for r in listed] == ["sent", "retrying"]
    finally:
        await engine.dispose()

"""The group commit's merge: one write set that equals applying the steps one after another."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from services.correlator import store
from services.correlator.decide import Rules
from services.correlator.emit import Emitter
from services.correlator.settings import CorrelatorSettings
from services.correlator.store import WriteSet
from shared.models import AuditEvent
from shared.settings import Settings
from tests.correlator.payloads import skylight


def test_merge_keeps_last_snapshot_inserted_if_any_step_inserted() -> None:
    first = WriteSet(
        alerts=[{"id": "a1"}],
        incidents=[(True, {"incident_id": "INC-1", "severity": "medium"})],
        links=[(False, {"link": "pe1-pe2", "penalty": 0.0})],
        sequences=[(True, 2026, 1)],
        outbox=[{"idempotency_key": "k1"}],
        dispositions=[("INC-1", "new_incident", {"alert_id": "a1"})],
    )
    second = WriteSet(
        alerts=[{"id": "a2"}],
        incidents=[
            (False, {"incident_id": "INC-1", "severity": "high"}),
            (True, {"incident_id": "INC-2", "severity": "low"}),
        ],
        links=[(False, {"link": "pe1-pe2", "penalty": 1000.0})],
        sequences=[(False, 2026, 2)],
        outbox=[{"idempotency_key": "k2"}],
        dispositions=[("INC-1", "correlated", {"alert_id": "a2"})],
    )
    merged = WriteSet.merge([first, second])
    assert [a["id"] for a in merged.alerts] == ["a1", "a2"]
    assert merged.incidents == [
        (True, {"incident_id": "INC-1", "severity": "high"}),
        (True, {"incident_id": "INC-2", "severity": "low"}),
    ]
    assert merged.links == [(False, {"link": "pe1-pe2", "penalty": 1000.0})]
    assert merged.sequences == [(True, 2026, 2)]
    assert [o["idempotency_key"] for o in merged.outbox] == ["k1", "k2"]
    assert [d[2]["alert_id"] for d in merged.dispositions] == ["a1", "a2"]
    assert WriteSet.merge([first]) is first


async def test_a_write_that_fails_before_the_database_does_not_stop_the_writer(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while merging answers that request with 503; the next request is still served."""
    real_merge = WriteSet.merge
    calls = {"n": 0}

    def merge_once_broken(sets: list[WriteSet]) -> WriteSet:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("merge bug")
        return real_merge(sets)

    monkeypatch.setattr(WriteSet, "merge", staticmethod(merge_once_broken))
    async with harness() as h:
        failed = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        assert failed.status_code == 503, failed.text
        ok = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe2"))
        assert ok.status_code == 202, ok.text
        assert ok.json()["alerts"][0]["disposition"] == "new_incident"


async def test_a_write_the_database_refuses_is_a_503_and_the_next_one_commits(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's one-call SQLite transaction (a write of alert, incident, link and outbox
    rows only) failing, as a full disk would: that request is answered 503 with nothing
    stored; the writer gives its connection back, takes a fresh one, and the next request
    is stored and answered as if the refused one had never come."""
    real = store.commit_statements
    calls = {"n": 0}

    def fail_once(db: Any, statements: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real(db, statements)

    async with harness() as h:
        opened = await h.post("/api/v1/alerts", [{"link": "pe1-pe2", "labels": {"i": "1"}}])
        assert opened.json()["alerts"][0]["disposition"] == "new_incident"
        monkeypatch.setattr(store, "commit_statements", fail_once)
        failed = await h.post("/api/v1/alerts", [{"link": "pe1-pe2", "labels": {"i": "2"}}])
        assert failed.status_code == 503, failed.text
        ok = await h.post("/api/v1/alerts", [{"link": "pe1-pe2", "labels": {"i": "3"}}])
        assert ok.status_code == 202, ok.text
        assert ok.json()["alerts"][0]["disposition"] == "correlated"
        stored = await store.list_alerts(
            h.corr.engine,
            source=None,
            link=None,
            disposition=None,
            incident_id=None,
            since=None,
            limit=10,
        )
    assert calls["n"] >= 2
    assert {a["labels"]["i"] for a in stored} == {"1", "3"}


def test_grouped_disposition_audit_is_the_models_own_payload() -> None:
    """The grouped audit event of a write carries its alert list as written (not validated
    and dumped through the model): the payload is exactly the model's dump of the same event."""
    config = CorrelatorSettings()
    emitter = Emitter(io_enabled=True, rules=Rules.of(Settings(), config), config=config)
    now = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    item = {"alert_id": "a1", "source": "rest", "link": "pe1-pe2", "node": None}
    ws = WriteSet(
        dispositions=[
            ("INC-2026-0001", "correlated", item),
            ("INC-2026-0001", "correlated", {**item, "alert_id": "a2", "node": "pe1"}),
            (None, "discarded", {**item, "alert_id": "a3", "reason": "délai ✓"}),
        ]
    )
    emitter.audit_dispositions(ws, now)
    expected = [
        AuditEvent(
            event_type=event_type,
            incident_id=inc,
            source_agent="event_correlator",
            details={"disposition": disposition, "count": len(alerts), "alerts": alerts},
            occurred_at=now,
        ).model_dump(mode="json", exclude_none=True)
        for event_type, inc, disposition, alerts in [
            (
                "alert_correlated",
                "INC-2026-0001",
                "correlated",
                [d[2] for d in ws.dispositions[:2]],
            ),
            ("alert_discarded", None, "discarded", [ws.dispositions[2][2]]),
        ]
    ]
    assert [row["payload"] for row in ws.outbox] == expected
    assert [row["idempotency_key"] for row in ws.outbox] == [
        "audit:alerts:a1:correlated",
        "audit:alerts:a3:discarded",
    ]

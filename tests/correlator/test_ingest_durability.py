"""The ingest hot path keeps its promise: an alert answered 202 is in the database.

The correlator writes its alert, outbox, incident and link-state rows on SQLite with
hand-bound executemany statements (store.py) and serves ``POST /api/v1/alerts`` in plain
ASGI ahead of the framework (app.py); both were made for speed, so these tests check what
speed must not cost: the rows read back exactly as SQLAlchemy's own statements store them,
the one query by fingerprint still has its (now partial) index, and a correlator killed with
SIGKILL right after its answers has every alert it acknowledged on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.correlator import store
from shared.db import make_engine, migrate
from shared.outbox import outbox_table
from tests.support import ROOT, free_port, http_server, wait_until

TOKEN = "kill-test-token"


def _row(alert_id: str, when: datetime) -> dict[str, Any]:
    return {
        "id": alert_id,
        "received_at": when,
        "source": "rest",
        "link": "pe1-pe2",
        "node": None,
        "status": "firing",
        "severity": "high",
        "metric": "latency",
        "value": 92.5,
        "threshold": None,
        "summary": "délai élevé ✓",
        "labels": {"instance": "x-1", "ünïcode": "ok"},
        "annotations": {},
        "fingerprint": "fp",
        "starts_at": when.astimezone(timezone(timedelta(hours=2))),  # wall time kept, as before
        "ends_at": None,
        "observed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds
        "duration_s": None,
        "external_id": None,
        "disposition": "correlated",
        "incident_id": "INC-2026-000001",
        "reason": "joined",
    }


def _incident(inc_id: str, when: datetime, **kw: Any) -> dict[str, Any]:
    """A pending incident row as the state writes it (``kw`` overrides columns)."""
    return {
        "incident_id": inc_id,
        "status": "pending",
        "resolution": None,
        "severity": "high",
        "links": ["pe1-pe2"],
        "nodes": [],
        "created_at": when,
        "emit_at": when,
        "emitted_at": None,
        "last_alert_at": when,
        "closed_at": None,
        "dampened_until": None,
        "proactive": False,
        "triage": None,
        **kw,
    }


async def test_hand_bound_alert_rows_read_back_as_core_inserts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'rows.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.meta.create_all, tables=[store.alerts])
        when = datetime(2026, 11, 30, 14, 5, 6, 789012, tzinfo=UTC)
        async with engine.begin() as conn:
            await store.apply(conn, store.WriteSet(alerts=[_row("fast", when)]))
            await conn.execute(store.alerts.insert(), [_row("core", when)])
        async with engine.connect() as conn:
            rows = {
                r["id"]: {k: v for k, v in r.items() if k != "id"}
                for r in (await conn.execute(sa.select(store.alerts))).mappings()
            }
            raw = (
                await conn.exec_driver_sql(
                    "SELECT id, received_at, starts_at, observed_at, typeof(labels) "
                    "FROM corr_alerts ORDER BY id"
                )
            ).all()
    finally:
        await engine.dispose()
    assert rows["fast"] == rows["core"]
    assert rows["fast"]["labels"] == {"instance": "x-1", "ünïcode": "ok"}
    assert rows["fast"]["received_at"] == when
    core, fast = raw
    assert fast[1:] == core[1:]  # the very text SQLAlchemy stores, so ordering is unchanged


async def test_hand_bound_outbox_rows_read_back_as_core_inserts(tmp_path: Path) -> None:
    """Outbox rows on SQLite are bound by hand too (orjson payloads); the deliverer reads
    them through the table, so they must read back as SQLAlchemy's own insert stores them."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    when = datetime(2026, 11, 30, 14, 5, 6, tzinfo=UTC)  # no microseconds

    def row(key: str) -> dict[str, Any]:
        return {
            "agent": "audit",
            "task_type": "audit_event",
            "payload": {
                "event_type": "alert_correlated",
                "details": {"alerts": [{"id": "a", "node": None, "n": 1, "v": 2.5, "ü": "✓"}]},
            },
            "incident_id": "INC-2026-0001",
            "idempotency_key": key,
            "attempts": 0,
            "next_attempt_at": when,
            "created_at": when.replace(microsecond=123),
            "delivered_at": None,
            "dead": False,
            "last_error": None,
        }

    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.meta.create_all, tables=[store.alerts])
            await conn.run_sync(outbox_table.metadata.create_all, tables=[outbox_table])
        async with engine.begin() as conn:
            await store.apply(conn, store.WriteSet(outbox=[row("fast"), row("fast")]))
            await conn.execute(outbox_table.insert(), [row("core")])
        async with engine.connect() as conn:
            rows = {
                r["idempotency_key"]: {
                    k: v for k, v in r.items() if k not in ("id", "idempotency_key")
                }
                for r in (await conn.execute(sa.select(outbox_table))).mappings()
            }
            raw = (
                await conn.exec_driver_sql(
                    "SELECT next_attempt_at, created_at, dead, typeof(payload) FROM outbox "
                    "ORDER BY id"
                )
            ).all()
    finally:
        await engine.dispose()
    assert set(rows) == {"fast", "core"}  # the repeated key was skipped, as before
    assert rows["fast"] == rows["core"]
    assert rows["fast"]["created_at"] == when.replace(microsecond=123)
    assert raw[0] == raw[1]


async def test_hand_bound_incident_and_link_rows_read_back_as_core_upserts(
    tmp_path: Path,
) -> None:
    """Incident and link-state rows on SQLite (inserted, then updated by their key) store
    what SQLAlchemy's own statements store: the same text, JSON the same value."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'upsert.db'}")
    when = datetime(2026, 11, 30, 14, 5, 6, 789012, tzinfo=UTC)

    def incident(inc_id: str, **kw: Any) -> dict[str, Any]:
        return _incident(inc_id, when, **{"emit_at": when + timedelta(seconds=3), **kw})

    def link(name: str, **kw: Any) -> dict[str, Any]:
        return {
            "link": name,
            "seen": True,
            "degraded": True,
            "penalty": 0.0,
            "updated_at": when,
            "suppressed_since": None,
            "changes": 0,
            **kw,
        }

    later = {"status": "open", "emitted_at": when, "triage": {"confidence": 0.5, "why": ["ü"]}}
    flap = {"penalty": 1234.5, "changes": 2, "suppressed_since": when, "degraded": False}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.meta.create_all)
        for step in (
            store.WriteSet(incidents=[(True, incident("fast"))], links=[(True, link("fast"))]),
            store.WriteSet(
                incidents=[(False, incident("fast", **later))],
                links=[(False, link("fast", **flap))],
            ),
        ):
            async with engine.begin() as conn:
                await store.apply(conn, step)
        async with engine.begin() as conn:  # the same through SQLAlchemy's statements
            await store._upsert(conn, store.incidents, "incident_id", [(incident("core"), True)])
            await store._upsert(conn, store.link_states, "link", [(link("core"), True)])
            await store._upsert(
                conn, store.incidents, "incident_id", [(incident("core", **later), False)]
            )
            await store._upsert(conn, store.link_states, "link", [(link("core", **flap), False)])
        async with engine.connect() as conn:
            raw: dict[str, list[tuple[Any, ...]]] = {
                table: [
                    tuple(row[1:])
                    for row in await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")
                ]
                for table in ("corr_incidents", "corr_link_state")
            }
            read = (await conn.execute(sa.select(store.incidents))).mappings().all()
    finally:
        await engine.dispose()
    for table, (core, fast) in raw.items():
        # the same text, but JSON only the same value (orjson writes no spaces, no escapes)
        assert [_value(v) for v in fast] == [_value(v) for v in core], table
    assert read[1]["triage"] == {"confidence": 0.5, "why": ["ü"]}


async def _one_incident(path: Path) -> tuple[AsyncEngine, datetime, dict[str, Any]]:
    """A fresh correlator database holding one incident (whose key a test then repeats)."""
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    when = datetime(2026, 11, 30, 14, 5, 6, tzinfo=UTC)
    inc = _incident("INC-2026-0001", when)
    async with engine.begin() as conn:
        await conn.run_sync(store.meta.create_all)
        await store.apply(conn, store.WriteSet(incidents=[(True, inc)]))
    return engine, when, inc


async def test_a_write_that_fails_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-bound statements of a write run in one call on the driver's thread, inside
    SQLAlchemy's transaction: a statement that fails after others succeeded rolls them back
    (the writer then answers 503 and reloads). Also through the statement-by-statement
    fallback, used when the driver is not aiosqlite as this code knows it."""
    engine, when, inc = await _one_incident(tmp_path / "atomic.db")
    try:
        for fallback in (False, True):
            if fallback:  # the driver not recognised: one statement at a time
                monkeypatch.setattr(store, "Sqlite3", type("NotSqlite", (), {}))
            # alerts first, then the incident inserted again: its key exists, so it fails
            ws = store.WriteSet(alerts=[_row(f"a{fallback}", when)], incidents=[(True, inc)])
            # the driver's own error in one call, SQLAlchemy's wrapping of it statement by
            # statement: the writer answers both alike (503, nothing stored, state reloaded)
            with pytest.raises((sqlite3.IntegrityError, sa.exc.IntegrityError)):
                async with engine.begin() as conn:
                    await store.apply(conn, ws)
        async with engine.begin() as conn:  # the fallback path writes as the fast one does
            await store.apply(conn, store.WriteSet(alerts=[_row("ok", when)]))
        async with engine.connect() as conn:
            ids = [r[0] for r in await conn.exec_driver_sql("SELECT id FROM corr_alerts")]
    finally:
        await engine.dispose()
    assert ids == ["ok"]


async def test_the_writers_one_call_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    """The group-commit writer's SQLite lane (store.commit_statements: BEGIN, the statements,
    COMMIT in one call on the driver's thread): a statement that fails rolls back the ones
    before it, leaves no transaction open, and the next write on the same connection commits."""
    engine, when, inc = await _one_incident(tmp_path / "lane.db")
    try:
        async with engine.connect() as conn:
            lane = await store.SqliteLane.of(conn)
            assert lane is not None
            broken = store.WriteSet(alerts=[_row("lost", when)], incidents=[(True, inc)])
            with pytest.raises(sqlite3.IntegrityError):
                await lane.run(store.commit_statements, lane.db, store.sqlite_statements(broken))
            assert not lane.db.in_transaction
            fine = store.WriteSet(alerts=[_row("kept", when)])
            await lane.run(store.commit_statements, lane.db, store.sqlite_statements(fine))
            assert not lane.db.in_transaction
        async with engine.connect() as conn:
            ids = [r[0] for r in await conn.exec_driver_sql("SELECT id FROM corr_alerts")]
    finally:
        await engine.dispose()
    assert ids == ["kept"]


def _value(raw: Any) -> Any:
    if isinstance(raw, str) and raw[:1] in ("{", "["):
        return ("json", json.loads(raw))
    return raw


async def test_fingerprint_index_only_for_servicenow_and_used(tmp_path: Path) -> None:
    """Migration 2 replaces the index of every alert's fingerprint by one of ServiceNow's
    alerts only, and the query that needs it (a record already made a ticket) still uses it."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ix.db'}")
    statements: list[tuple[str, Any]] = []
    try:
        await migrate(engine, "correlator", store.MIGRATIONS[:1])
        async with engine.begin() as conn:  # the database as version 1 made it
            await conn.exec_driver_sql("DROP INDEX IF EXISTS ix_corr_alerts_servicenow_fp")
            await conn.exec_driver_sql(
                "CREATE INDEX ix_corr_alerts_fingerprint ON corr_alerts (fingerprint)"
            )
        assert await migrate(engine, "correlator", store.MIGRATIONS) == [2]
        async with engine.connect() as conn:
            names = {
                name
                for (name,) in await conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'index'"
                    " AND tbl_name = 'corr_alerts'"
                )
            }
        assert "ix_corr_alerts_fingerprint" not in names
        assert "ix_corr_alerts_servicenow_fp" in names

        def seen(_c: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
            statements.append((stmt, params))

        sa.event.listen(engine.sync_engine, "before_cursor_execute", seen)
        assert await store.incident_of_fingerprint(engine, "servicenow", "fp") is None
        sa.event.remove(engine.sync_engine, "before_cursor_execute", seen)
        stmt, params = statements[-1]
        async with engine.connect() as conn:
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}", params)).all()
    finally:
        await engine.dispose()
    assert any("ix_corr_alerts_servicenow_fp" in str(step) for step in plan), plan


class _Peers(BaseHTTPRequestHandler):
    """CNC, IO, orchestrator and audit stood in: 200 and an empty object to everything."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_kill_9_right_after_202_loses_no_acknowledged_alert(tmp_path: Path) -> None:
    """Senders post single alerts and batches concurrently; the correlator is killed with
    SIGKILL while requests are in flight. Every alert id a 202 carried is in the database."""
    port, peers = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{peers}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    env.update(
        PYTHONPATH=str(ROOT),
        CXM_DATA_DIR=str(tmp_path / "cxm"),
        CXM_MESH_TOKEN=TOKEN,
        CXM_CORRELATOR__PORT=str(port),
        CXM_LOG_LEVEL="WARNING",
        CXM_LAB_URL=peer_url,
        CXM_IO_URL=peer_url,
        CXM_ORCHESTRATOR_URL=peer_url,
        CXM_AUDIT_URL=peer_url,
    )
    url = f"http://127.0.0.1:{port}"
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            i = 0
            while not stop.is_set():
                size = 1 if n % 2 else 20
                body = [
                    {
                        "source": "test",
                        "link": f"n{(i + k) % 5}-n{(i + k) % 5 + 1}",
                        "severity": "high",
                        "labels": {"instance": f"s{n}-{i}-{k}"},
                    }
                    for k in range(size)
                ]
                i += 1
                try:
                    r = client.post("/api/v1/alerts", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 202:
                    with lock:
                        acked.extend(a["id"] for a in r.json()["alerts"])

    log = (tmp_path / "correlator.log").open("wb")
    with http_server(peers, _Peers):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxm.cli", "agent", "correlator"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
        try:

            def healthy() -> bool:
                assert proc.poll() is None, (tmp_path / "correlator.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{url}/health", timeout=2).status_code == 200
                return False

            wait_until(healthy, "the correlator serving", timeout=120)
            for t in threads:
                t.start()
            wait_until(lambda: len(acked) >= 400, "400 alerts acknowledged", timeout=120)
            proc.send_signal(signal.SIGKILL)  # while the senders keep posting
            proc.wait()
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for t in threads:
                t.join()
            log.close()
    with lock:
        answered = set(acked)
    db = tmp_path / "cxm" / "correlator.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:  # recovers the WAL as a restart would
        stored = {row[0] for row in conn.execute("SELECT id FROM corr_alerts")}
    assert len(answered) >= 400
    assert answered <= stored, f"{len(answered - stored)} acknowledged alerts lost"

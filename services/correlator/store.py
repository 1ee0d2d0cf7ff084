"""The correlator's tables (SQLAlchemy Core, SQLite and PostgreSQL alike) and its migrations.

Alerts are written before the webhook is answered; incidents, the per-year id sequence, the
links' flap state and silences are written in the same transaction as the alerts that changed
them, so a restart rebuilds exactly the state that was acknowledged.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from sqlite3 import Connection as Sqlite3
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables
from shared.outbox import outbox_table

meta = sa.MetaData()

alerts = sa.Table(
    "corr_alerts",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("link", sa.String(128), nullable=True),
    sa.Column("node", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("metric", sa.String(128), nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=True),
    sa.Column("ends_at", UtcDateTime, nullable=True),
    sa.Column("observed_at", UtcDateTime, nullable=True),
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("external_id", sa.String(512), nullable=True),
    sa.Column("disposition", sa.String(20), nullable=False),
    sa.Column("incident_id", sa.String(40), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_corr_alerts_received", "received_at"),
    sa.Index("ix_corr_alerts_link", "link", "received_at"),
    sa.Index("ix_corr_alerts_incident", "incident_id"),
    sa.Index("ix_corr_alerts_disposition", "disposition", "received_at"),
    sa.Index(
        "ix_corr_alerts_servicenow_fp",
        "fingerprint",
        sqlite_where=sa.text("source = 'servicenow'"),
        postgresql_where=sa.text("source = 'servicenow'"),
    ),
)
"""``ix_corr_alerts_servicenow_fp`` is partial: the one query by fingerprint
(:func:`incident_of_fingerprint`) is ServiceNow's, and an index of every alert's fingerprint
(random values, so every insert dirtied a random page of it) was the costliest of the
table's indexes on the ingest path, about a quarter of SQLite's insert time."""

incidents = sa.Table(
    "corr_incidents",
    meta,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("resolution", sa.String(40), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("links", sa.JSON, nullable=False),
    sa.Column("nodes", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("emit_at", UtcDateTime, nullable=False),
    sa.Column("emitted_at", UtcDateTime, nullable=True),
    sa.Column("last_alert_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("dampened_until", UtcDateTime, nullable=True),
    sa.Column("proactive", sa.Boolean, nullable=False, default=False),
    sa.Column("triage", sa.JSON, nullable=True),
    sa.Index("ix_corr_incidents_status", "status"),
)

sequences = sa.Table(
    "corr_incident_seq",
    meta,
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last", sa.Integer, nullable=False),
)

link_states = sa.Table(
    "corr_link_state",
    meta,
    sa.Column("link", sa.String(128), primary_key=True),
    sa.Column("seen", sa.Boolean, nullable=False),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("penalty", sa.Float, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=True),
    sa.Column("suppressed_since", UtcDateTime, nullable=True),
    sa.Column("changes", sa.Integer, nullable=False),
)
"""The set of alerts firing on a link is not stored here (it would be rewritten on every alert);
it is rebuilt on start from the recent alerts."""

silences = sa.Table(
    "corr_silences",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("matchers", sa.JSON, nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("ends_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)


def _servicenow_fingerprint_index(conn: sa.Connection) -> None:
    """The fingerprint index only for ServiceNow's alerts (see the table)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_corr_alerts_fingerprint")
    next(i for i in alerts.indexes if i.name == "ix_corr_alerts_servicenow_fp").create(
        conn, checkfirst=True
    )


MIGRATIONS = (
    Migration(
        1,
        "alerts, incidents, id sequence, link flap state, silences",
        create_tables(
            meta,
            "corr_alerts",
            "corr_incidents",
            "corr_incident_seq",
            "corr_link_state",
            "corr_silences",
        ),
    ),
    Migration(
        2,
        "fingerprint index on corr_alerts only for ServiceNow's alerts",
        _servicenow_fingerprint_index,
    ),
)


@dataclass
class WriteSet:
    """Everything one decision step changed, written in one transaction."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(incident_id, values) applied to every alert of that incident."""
    incidents: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    sequences: list[tuple[bool, int, int]] = field(default_factory=list)
    silences: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    dispositions: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    """(incident_id, disposition, alert summary): audited grouped when the write set is written."""
    touched_incidents: set[str] = field(default_factory=set)
    touched_links: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.alerts
            or self.alert_updates
            or self.incidents
            or self.links
            or self.sequences
            or self.silences
            or self.outbox
            or self.dispositions
        )

    @classmethod
    def merge(cls, sets: list[WriteSet]) -> WriteSet:
        """One write set for a group commit, in decision order.

        Rows written whole (incidents, link states, sequences, silences) keep only their last
        snapshot, inserted if any step inserted it; appended rows (alerts, outbox) are
        concatenated. Applying the merge equals applying the sets one after another.
        """
        if len(sets) == 1:
            return sets[0]
        out = cls()
        incidents_: dict[str, tuple[bool, dict[str, Any]]] = {}
        links_: dict[str, tuple[bool, dict[str, Any]]] = {}
        silences_: dict[str, tuple[bool, dict[str, Any]]] = {}
        years: dict[int, tuple[bool, int, int]] = {}
        for ws in sets:
            out.alerts += ws.alerts
            out.alert_updates += ws.alert_updates
            out.outbox += ws.outbox
            out.dispositions += ws.dispositions
            _keep_last(incidents_, ws.incidents, "incident_id")
            _keep_last(links_, ws.links, "link")
            _keep_last(silences_, ws.silences, "id")
            for insert, year, last in ws.sequences:
                first = years.get(year, (insert, year, last))
                years[year] = (first[0] or insert, year, last)
        out.incidents = list(incidents_.values())
        out.links = list(links_.values())
        out.silences = list(silences_.values())
        out.sequences = list(years.values())
        return out


def _keep_last(
    into: dict[str, tuple[bool, dict[str, Any]]], rows: list[tuple[bool, dict[str, Any]]], key: str
) -> None:
    for insert, row in rows:
        before = into.get(row[key])
        into[row[key]] = (insert or (before is not None and before[0]), row)


async def apply(conn: AsyncConnection, ws: WriteSet) -> None:
    """Write ``ws``: one statement per table and kind (executemany), whatever its size."""
    if conn.dialect.name == "sqlite":
        await _apply_sqlite(conn, ws)
        return
    if ws.alerts:
        await conn.execute(alerts.insert(), ws.alerts)
    await _upsert(conn, incidents, "incident_id", [(row, i) for i, row in ws.incidents])
    await _upsert(conn, link_states, "link", [(row, i) for i, row in ws.links])
    if ws.outbox:
        # Keys are deterministic, so a replayed step may repeat one: skip it, keep the rest.
        await conn.execute(_insert_ignoring_duplicates(conn, outbox_table), ws.outbox)
    await _apply_rare(conn, ws)


async def _apply_sqlite(conn: AsyncConnection, ws: WriteSet) -> None:
    """:func:`apply` on SQLite: the rows every write of a storm has (alerts, the incidents
    and links they touched, outbox rows) bound by hand (:func:`sqlite_statements`) and
    executed in one call on the driver's thread; the rare rest through SQLAlchemy after them.

    Why one call: aiosqlite runs each statement on its own thread, and every statement was
    a round trip (a queued call, a wake-up of the event loop, SQLAlchemy's cursor work)
    costing the loop more than SQLite's own work for a small write. The transaction is
    SQLAlchemy's as before (its commit follows). Order: the alerts come first, so an
    ``alert_updates`` entry (every alert of an incident) also reaches this write's alerts.
    """
    statements = sqlite_statements(ws)
    if statements:
        lane = await SqliteLane.of(conn)
        if lane is not None:
            await lane.run(_executemany_all, lane.db, statements)
        else:
            for sql, params in statements:
                await conn.exec_driver_sql(sql, params)
    await _apply_rare(conn, ws)


def sqlite_statements(ws: WriteSet) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The hand-bound statements of ``ws``'s common rows (:class:`SqliteRows`), in order."""
    statements: list[tuple[str, list[tuple[Any, ...]]]] = []
    if ws.alerts:
        statements.append((_ALERT_ROWS.sql, _ALERT_ROWS.encode(ws.alerts)))
    statements += _INCIDENT_ROWS.upserts(ws.incidents)
    statements += _LINK_ROWS.upserts(ws.links)
    if ws.outbox:
        # Keys are deterministic, so a replayed step may repeat one: skip it, keep the rest.
        statements.append((_OUTBOX_ROWS.sql, _OUTBOX_ROWS.encode(ws.outbox)))
    return statements


def only_common_rows(ws: WriteSet) -> bool:
    """True when ``ws`` holds nothing :func:`_apply_rare` writes (the usual write of a storm)."""
    return not (ws.alert_updates or ws.sequences or ws.silences)


@dataclass(frozen=True)
class SqliteLane:
    """aiosqlite's thread and the ``sqlite3`` connection it owns, behind one pooled connection.

    ``run(fn, ...)`` queues one call onto that thread (aiosqlite's own queue, the order of
    every statement of that connection) and resolves when it has run.
    """

    run: Callable[..., Awaitable[Any]]
    db: Sqlite3

    @classmethod
    async def of(cls, conn: AsyncConnection) -> SqliteLane | None:
        """The lane under ``conn``, or None when the driver is not aiosqlite as known here."""
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        run_in_thread = getattr(driver, "_execute", None)  # aiosqlite's, one queued call
        db = getattr(driver, "_conn", None)
        if run_in_thread is None or not isinstance(db, Sqlite3):
            return None
        return cls(run_in_thread, db)


def commit_statements(db: Sqlite3, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    """On the driver's thread: one whole transaction, BEGIN, the statements, COMMIT.

    Any error rolls back every statement before it and is raised to the caller (the writer
    answers 503 and reloads). Runs to its end once started, even if the awaiting task is
    cancelled: no transaction is ever left open on the connection.
    """
    db.execute("BEGIN")
    try:
        for sql, params in statements:
            db.executemany(sql, params)
        db.commit()
    except BaseException:
        db.rollback()
        raise


async def _apply_rare(conn: AsyncConnection, ws: WriteSet) -> None:
    """The writes a storm seldom has, the same on both backends: alert updates (after the
    alerts, so they reach this write's too), year sequences, silences."""
    for incident_id, values in ws.alert_updates:
        await conn.execute(
            alerts.update().where(alerts.c.incident_id == incident_id).values(**values)
        )
    await _upsert(
        conn, sequences, "year", [({"year": y, "last": n}, i) for i, y, n in ws.sequences]
    )
    await _upsert(conn, silences, "id", [(row, i) for i, row in ws.silences])


def _executemany_all(db: Sqlite3, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    """On the driver's thread, inside the open transaction."""
    for sql, params in statements:
        db.executemany(sql, params)


def _sqlite_time(value: datetime) -> str:
    """A datetime as SQLAlchemy's SQLite type stores it: its wall time
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLite's DATETIME drops the zone; ours are UTC)."""
    return value.isoformat(sep=" ", timespec="microseconds")[:26]


def _json_text(value: Any) -> str:
    """JSON text for a JSON column: orjson (several times faster than the stdlib, which
    SQLAlchemy uses); what orjson refuses (integers past 64 bits, non-string keys) goes
    through the stdlib as before. Read back, both are the same value (orjson writes NaN as
    null, where the stdlib wrote a non-standard NaN)."""
    if value == {}:
        return "{}"
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


class SqliteRows:
    """Rows of one table bound by hand on SQLite, for one driver ``executemany``.

    Why: in the ingest profile SQLAlchemy's per-row parameter processing (stdlib JSON,
    datetime formatting, the compiled-statement machinery) cost more than SQLite's own
    insert; the grouped audit events (every alert of a write listed once) make the outbox
    payloads long; and every write of a storm updates each incident and link it touched.
    Used for those four tables (alerts, outbox, incidents, link states). Each value is
    stored as SQLAlchemy's SQLite types store it (JSON text, ``null`` for None in a JSON
    column, a datetime's wall time, booleans as 0/1, a column's scalar default for None),
    checked by tests that read rows back through the table, so reads are unchanged.
    PostgreSQL keeps the Core statements.
    """

    def __init__(
        self,
        table: sa.Table,
        *,
        skip: tuple[str, ...] = (),
        conflict: str = "",
        key: str | None = None,
    ):
        cols = [c for c in table.columns if c.name not in skip]
        self.columns = tuple(c.name for c in cols)
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join('?' for _ in cols)}){conflict}"
        )
        # with a key, UPDATE ... SET every other column WHERE key: the values reordered, key last
        others = [i for i, name in enumerate(self.columns) if name != key]
        self.update_sql = (
            f"UPDATE {table.name} SET {', '.join(f'{self.columns[i]} = ?' for i in others)} "
            f"WHERE {key} = ?"
            if key
            else ""
        )
        order = [*others, self.columns.index(key)] if key else others
        self._update_order = operator.itemgetter(*order)
        self._values = operator.itemgetter(*self.columns)
        self._json = tuple(i for i, c in enumerate(cols) if isinstance(c.type, sa.JSON))
        self._times = tuple(i for i, c in enumerate(cols) if isinstance(c.type, UtcDateTime))
        self._defaults = tuple(
            (i, c.default.arg)  # type: ignore[attr-defined]
            for i, c in enumerate(cols)
            if c.default is not None and c.default.is_scalar
        )

    def encode(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        out = []
        last: datetime | None = None
        text = ""
        for row in rows:
            values = list(self._values(row))
            for i in self._json:
                values[i] = _json_text(values[i])
            for i in self._times:
                value = values[i]
                if value is not None:
                    if value is not last:  # a write's rows mostly share their times
                        last, text = value, _sqlite_time(value)
                    values[i] = text
            for i, default in self._defaults:
                if values[i] is None:
                    values[i] = default
            out.append(tuple(values))
        return out

    def upserts(
        self, rows: list[tuple[bool, dict[str, Any]]]
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """As :func:`_upsert`: the new rows inserted, the known ones updated by the key."""
        new = [row for insert, row in rows if insert]
        known = [row for insert, row in rows if not insert]
        out = []
        if new:
            out.append((self.sql, self.encode(new)))
        if known:
            reorder = self._update_order
            out.append((self.update_sql, [reorder(r) for r in self.encode(known)]))
        return out


_ALERT_ROWS = SqliteRows(alerts)
_INCIDENT_ROWS = SqliteRows(incidents, key="incident_id")
_LINK_ROWS = SqliteRows(link_states, key="link")
_OUTBOX_ROWS = SqliteRows(outbox_table, skip=("id",), conflict=" ON CONFLICT DO NOTHING")


async def _upsert(
    conn: AsyncConnection, table: sa.Table, key: str, rows: list[tuple[dict[str, Any], bool]]
) -> None:
    """Insert the new rows, update the known ones by ``key``: at most two statements."""
    new = [row for row, insert in rows if insert]
    known = [{**row, "_key": row[key]} for row, insert in rows if not insert]
    if new:
        await conn.execute(table.insert(), new)
    if known:
        await conn.execute(table.update().where(table.c[key] == sa.bindparam("_key")), known)


def _insert_ignoring_duplicates(conn: AsyncConnection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert()


async def list_alerts(
    engine: AsyncEngine,
    *,
    source: str | None,
    link: str | None,
    disposition: str | None,
    incident_id: str | None,
    since: datetime | None,
    limit: int,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` (the last id of a page) is a keyset cursor on the same order,
    so paging neither skips nor repeats a row while alerts keep arriving."""
    t = alerts
    query = sa.select(t).order_by(t.c.received_at.desc(), t.c.id.desc()).limit(limit)
    if before:
        at = sa.select(t.c.received_at).where(t.c.id == before).scalar_subquery()
        query = query.where(
            sa.or_(t.c.received_at < at, sa.and_(t.c.received_at == at, t.c.id < before))
        )
    if source:
        query = query.where(t.c.source == source)
    if link:
        query = query.where(t.c.link == link)
    if disposition:
        query = query.where(t.c.disposition == disposition)
    if incident_id:
        query = query.where(t.c.incident_id == incident_id)
    if since:
        query = query.where(t.c.received_at >= since)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [dict(r) for r in rows]


async def incident_of_fingerprint(engine: AsyncEngine, source: str, fingerprint: str) -> str | None:
    """The incident the first alert of ``source`` with this fingerprint opened or joined, if
    any: how a ServiceNow record that was already made a ticket is known again after its
    ticket closed (the dedup window alone forgets it)."""
    t = alerts
    query = (
        sa.select(t.c.incident_id)
        .where(
            t.c.fingerprint == fingerprint,
            # a literal, so the planner can prove the partial index applies
            t.c.source == sa.bindparam("source", source, literal_execute=True),
            t.c.incident_id.is_not(None),
        )
        .order_by(t.c.received_at, t.c.id)
        .limit(1)
    )
    async with engine.connect() as conn:
        found: str | None = await conn.scalar(query)
    return found


async def list_incidents(
    engine: AsyncEngine, *, status: str | None, limit: int
) -> list[dict[str, Any]]:
    t = incidents
    query = sa.select(t).order_by(t.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(t.c.status == status)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [dict(r) for r in rows]

"""The correlator's tables (SQLAlchemy Core, SQLite and PostgreSQL alike) and its migrations.

Alerts are written before the webhook is answered; incidents, the per-year id sequence, the
links' flap state and silences are written in the same transaction as the alerts that changed
them, so a restart rebuilds exactly the state that was acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
    sa.Index("ix_corr_alerts_fingerprint", "fingerprint"),
    sa.Index("ix_corr_alerts_disposition", "disposition", "received_at"),
)

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
    if ws.alerts:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(_SQLITE_ALERT_INSERT, [_sqlite_alert(r) for r in ws.alerts])
        else:
            await conn.execute(alerts.insert(), ws.alerts)
    for incident_id, values in ws.alert_updates:
        await conn.execute(
            alerts.update().where(alerts.c.incident_id == incident_id).values(**values)
        )
    await _upsert(
        conn, sequences, "year", [({"year": y, "last": n}, i) for i, y, n in ws.sequences]
    )
    await _upsert(conn, incidents, "incident_id", [(row, i) for i, row in ws.incidents])
    await _upsert(conn, link_states, "link", [(row, i) for i, row in ws.links])
    await _upsert(conn, silences, "id", [(row, i) for i, row in ws.silences])
    if ws.outbox:
        # Keys are deterministic, so a replayed step may repeat one: skip it, keep the rest.
        await conn.execute(_insert_ignoring_duplicates(conn, outbox_table), ws.outbox)


_ALERT_COLUMNS = tuple(c.name for c in alerts.columns)
_ALERT_JSON = frozenset(c.name for c in alerts.columns if isinstance(c.type, sa.JSON))
_ALERT_TIMES = frozenset(c.name for c in alerts.columns if isinstance(c.type, UtcDateTime))
_SQLITE_ALERT_INSERT = (
    f"INSERT INTO {alerts.name} ({', '.join(_ALERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _ALERT_COLUMNS)})"
)
"""The alert rows on SQLite, bound by hand: in the ingest profile SQLAlchemy's per-row
parameter processing (stdlib JSON, datetime formatting, the compiled-statement machinery)
cost more than SQLite's own insert. :func:`_sqlite_alert` stores exactly what SQLAlchemy's
SQLite types store (checked by a test reading rows back through the table), so reads are
unchanged; PostgreSQL keeps the Core insert."""


def _sqlite_alert(row: dict[str, Any]) -> tuple[Any, ...]:
    """One alert row as SQLAlchemy's SQLite binds it: JSON text, and a datetime as its wall
    time ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLite's DATETIME drops the zone; ours are UTC)."""
    out: list[Any] = []
    for name in _ALERT_COLUMNS:
        value = row.get(name)
        if name in _ALERT_JSON:
            value = orjson.dumps(value).decode()
        elif value is not None and name in _ALERT_TIMES:
            value = value.isoformat(sep=" ", timespec="microseconds")[:26]
        elif value is None and name == "summary":
            value = ""
        out.append(value)
    return tuple(out)


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
        .where(t.c.fingerprint == fingerprint, t.c.source == source, t.c.incident_id.is_not(None))
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

"""The audit tables: an append-only, hash-chained event log and the Elasticsearch backlog.

Each event row stores ``seq`` (its place in the chain, unique), ``prev_hash`` and
``hash = sha256(prev_hash + canonical JSON of the row's content)``. Any edit to a stored row,
a deleted row, or a reordering breaks the chain at that row, and ``chain.verify`` finds it.
Both backends also get triggers that refuse UPDATE and DELETE, so only someone who can drop
the trigger (a database superuser, the file's owner) can tamper, and that is detected.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.db import Migration, UtcDateTime

meta = sa.MetaData()
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "audit_events",
    meta,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("event_key", sa.String(200), nullable=True, unique=True),
    sa.Column("event_type", sa.String(64), nullable=False, index=True),
    sa.Column("incident_id", sa.String(64), nullable=True, index=True),
    sa.Column("source_agent", sa.String(64), nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False, index=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

es_pending = sa.Table(
    "audit_es_pending",
    meta,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("dead", sa.Boolean, nullable=False, default=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

_PG_APPEND_ONLY = (
    """
    CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()
    """,
    """
    CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()
    """,
)
_SQLITE_APPEND_ONLY = (
    """
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END
    """,
)


def _create(conn: Connection) -> None:
    meta.create_all(conn, tables=[events, es_pending])


def _append_only(conn: Connection) -> None:
    statements = _PG_APPEND_ONLY if conn.dialect.name == "postgresql" else _SQLITE_APPEND_ONLY
    for statement in statements:
        conn.exec_driver_sql(statement)


MIGRATIONS = (
    Migration(1, "hash-chained event log and ES backlog", _create),
    Migration(2, "refuse UPDATE and DELETE on the event log", _append_only),
)

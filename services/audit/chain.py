"""Appending to and verifying the hash chain.

Appends are serialized so the chain stays one line: an ``asyncio.Lock`` in the (single) audit
process, plus, on PostgreSQL, a transaction-level advisory lock that also holds against any
other writer process. ``seq`` is unique, so even a writer that ignored both locks could not
fork the chain: its insert would fail instead. An event whose idempotency key is already
stored is answered from the stored row, so redelivery (the sender's outbox retrying after a
lost answer or a restart) never writes an event twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audit.store import es_pending, events
from shared.models import AuditEvent, utcnow

GENESIS = "0" * 64
CHAIN_LOCK_ID = 0x43584D41554454  # "CXMAUDT": the advisory lock that serializes appends
_CONTENT = (
    "seq",
    "event_key",
    "event_type",
    "incident_id",
    "source_agent",
    "occurred_at",
    "recorded_at",
    "details",
)


def iso(value: datetime) -> str:
    """One spelling of a timestamp on both backends (microseconds, UTC, ``Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: dict[str, Any]) -> str:
    """The row's content as canonical JSON: sorted keys, no spaces, UTF-8, ISO timestamps."""
    content = {k: row[k] for k in _CONTENT}
    content["occurred_at"] = iso(row["occurred_at"])
    content["recorded_at"] = iso(row["recorded_at"])
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(row)).encode()).hexdigest()


def as_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("occurred_at", "recorded_at"):
        data[key] = iso(data[key])
    return data


@dataclass(frozen=True)
class Appended:
    row: dict[str, Any]
    duplicate: bool


async def append(
    engine: AsyncEngine,
    lock: asyncio.Lock,
    event: AuditEvent,
    *,
    key: str | None,
    es_index: bool,
) -> Appended:
    """Write ``event`` at the head of the chain and commit before returning."""
    (appended,) = await append_many(engine, lock, [(key, event)], es_index=es_index)
    return appended


async def append_many(
    engine: AsyncEngine,
    lock: asyncio.Lock,
    items: Sequence[tuple[str | None, AuditEvent]],
    *,
    es_index: bool,
) -> list[Appended]:
    """Write ``(key, event)`` pairs at the head of the chain in this order, in one transaction
    committed before returning; a key already stored (or earlier in ``items``) is answered
    from its row, as a duplicate, and writes nothing."""
    # Normalize to plain JSON now, so what is hashed is exactly what is read back.
    details = [json.loads(json.dumps(e.details, default=str, allow_nan=False)) for _, e in items]
    out: list[Appended] = []
    async with lock, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK_ID)))
        keys = {key for key, _ in items if key is not None}
        stored: dict[str, dict[str, Any]] = {}
        if keys:
            found = await conn.execute(sa.select(events).where(events.c.event_key.in_(keys)))
            stored = {r.event_key: as_dict(r) for r in found}
        head = (
            await conn.execute(
                sa.select(events.c.seq, events.c.hash).order_by(events.c.seq.desc()).limit(1)
            )
        ).first()
        seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS)
        for (key, event), plain in zip(items, details, strict=True):
            if key is not None and key in stored:
                out.append(Appended(stored[key], duplicate=True))
                continue
            row: dict[str, Any] = {
                "seq": seq + 1,
                "event_key": key,
                "event_type": event.event_type,
                "incident_id": event.incident_id,
                "source_agent": event.source_agent,
                "occurred_at": event.occurred_at.astimezone(UTC),
                "recorded_at": utcnow(),
                "details": plain,
            }
            row["prev_hash"] = prev_hash
            row["hash"] = row_hash(prev_hash, row)
            event_id = (
                await conn.execute(events.insert().values(**row).returning(events.c.id))
            ).scalar_one()
            row["id"] = event_id
            if es_index:
                await _queue_for_search(conn, row)
            seq, prev_hash = row["seq"], row["hash"]
            result = dict(row)
            result["occurred_at"] = iso(row["occurred_at"])
            result["recorded_at"] = iso(row["recorded_at"])
            if key is not None:
                stored[key] = result
            out.append(Appended(result, duplicate=False))
    return out


async def _queue_for_search(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """The search copy is queued in the same transaction: never lost, never ahead of the log."""
    doc = {
        k: row[k]
        for k in ("id", "seq", "event_type", "incident_id", "source_agent", "details", "hash")
    }
    doc["occurred_at"] = iso(row["occurred_at"])
    doc["recorded_at"] = iso(row["recorded_at"])
    await conn.execute(
        es_pending.insert().values(
            event_id=row["id"], doc=doc, attempts=0, dead=False, created_at=utcnow()
        )
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    count: int
    head_hash: str
    broken_id: int | None = None
    broken_seq: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head_hash": self.head_hash,
            "broken_id": self.broken_id,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
        }


async def verify(engine: AsyncEngine, *, batch: int = 1000) -> Verdict:
    """Walk the chain in ``seq`` order; stop at the first row that does not follow."""
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda c: sa.inspect(c).has_table("audit_events"))
        if not exists:
            return Verdict(ok=True, count=0, head_hash=GENESIS)
        prev, expected, count = GENESIS, 1, 0
        while True:
            rows = (
                await conn.execute(
                    sa.select(events)
                    .where(events.c.seq >= expected)
                    .order_by(events.c.seq)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return Verdict(ok=True, count=count, head_hash=prev)
            for r in rows:
                row = dict(r._mapping)
                reason = None
                if row["seq"] != expected:
                    reason = f"seq {expected} is missing (a row was deleted)"
                elif row["prev_hash"] != prev:
                    reason = "prev_hash does not match the previous row's hash"
                elif row_hash(prev, row) != row["hash"]:
                    reason = "content does not match its hash (the row was edited)"
                if reason:
                    return Verdict(
                        ok=False,
                        count=count,
                        head_hash=prev,
                        broken_id=int(row["id"]),
                        broken_seq=int(row["seq"]),
                        reason=reason,
                    )
                prev = row["hash"]
                expected += 1
                count += 1

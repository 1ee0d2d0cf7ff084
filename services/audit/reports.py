"""Compliance reports: an incident's full timeline, and MTTR/SLA figures by tier and period.

The SLA report reads only the audit log. An incident starts at its ``incident_created`` event
(or, from an orchestrator that does not send one, its first ``state_change`` to ``new``); it is
restored at ``restoration_complete`` (or its ``state_change`` to ``closed``) and escalated at
``escalation``. Its tier is the ``tier`` or ``highest_tier`` its events carry, its duration the
``duration_seconds`` they carry, else restored minus started. Compliance counts an escalated
incident as a miss, and leaves still-open incidents out.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit.chain import as_dict
from services.audit.store import events

Format = Literal["json", "csv", "html"]
Bucket = Literal["period", "day", "week", "month"]
START_TYPES = ("incident_created",)
END_TYPES = ("restoration_complete",)
TIER_ORDER = ("platinum", "gold", "silver", "bronze", "unknown")


async def timeline(engine: AsyncEngine, incident_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(events)
                .where(events.c.incident_id == incident_id)
                .order_by(events.c.occurred_at, events.c.seq)
            )
        ).all()
    return [as_dict(r) for r in rows]


def _is_start(e: dict[str, Any]) -> bool:
    return e["event_type"] in START_TYPES or (
        e["event_type"] == "state_change" and (e["details"] or {}).get("to") == "new"
    )


def _is_end(e: dict[str, Any]) -> bool:
    return e["event_type"] in END_TYPES or (
        e["event_type"] == "state_change" and (e["details"] or {}).get("to") == "closed"
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def incident_facts(incident_id: str, evs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One incident's start, end, tier, duration and outcome from its events."""
    starts = [_ts(e["occurred_at"]) for e in evs if _is_start(e)]
    ends = [e for e in evs if _is_end(e)]
    escalations = [e for e in evs if e["event_type"] == "escalation"]
    tier = None
    for e in evs:
        d = e["details"] or {}
        tier = tier or d.get("highest_tier") or d.get("tier")
    started = min(starts) if starts else (_ts(evs[0]["occurred_at"]) if evs else None)
    restored = _ts(ends[0]["occurred_at"]) if ends else None
    duration: float | None = None
    for e in ends:
        d = e["details"] or {}
        value = d.get("duration_seconds", d.get("duration_s"))
        if isinstance(value, int | float):
            duration = float(value)
            break
    if duration is None and restored is not None and started is not None:
        duration = (restored - started).total_seconds()
    outcome = "restored" if restored else ("escalated" if escalations else "open")
    return {
        "incident_id": incident_id,
        "tier": str(tier) if tier else "unknown",
        "started_at": started,
        "restored_at": restored,
        "escalated": bool(escalations),
        "outcome": outcome,
        "duration_s": duration if outcome == "restored" else None,
    }


def _bucket(ts: datetime, bucket: Bucket, start: datetime) -> str:
    if bucket == "day":
        return ts.strftime("%Y-%m-%d")
    if bucket == "week":
        iso = ts.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if bucket == "month":
        return ts.strftime("%Y-%m")
    return start.strftime("%Y-%m-%d")


async def sla(
    engine: AsyncEngine,
    *,
    period_start: datetime,
    period_end: datetime,
    bucket: Bucket,
    targets: dict[str, float],
) -> dict[str, Any]:
    """MTTR and SLA compliance per (period, tier) for incidents started in the period."""
    async with engine.connect() as conn:
        started = (
            await conn.execute(
                sa.select(events.c.incident_id)
                .where(
                    events.c.incident_id.is_not(None),
                    events.c.occurred_at >= period_start,
                    events.c.occurred_at < period_end,
                    events.c.event_type.in_((*START_TYPES, "state_change")),
                )
                .distinct()
            )
        ).all()
        ids = [r.incident_id for r in started]
        rows: list[Any] = []
        for chunk in range(0, len(ids), 500):
            rows += (
                await conn.execute(
                    sa.select(events)
                    .where(events.c.incident_id.in_(ids[chunk : chunk + 500]))
                    .order_by(events.c.occurred_at, events.c.seq)
                )
            ).all()
    by_incident: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_incident[r.incident_id].append(as_dict(r))
    incidents = []
    for incident_id, evs in by_incident.items():
        facts = incident_facts(incident_id, evs)
        begun = facts["started_at"]
        if any(_is_start(e) for e in evs) and begun and period_start <= begun < period_end:
            incidents.append(facts)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for facts in incidents:
        groups[(_bucket(facts["started_at"], bucket, period_start), facts["tier"])].append(facts)
        groups[(_bucket(facts["started_at"], bucket, period_start), "all")].append(facts)
    order = {t: i for i, t in enumerate((*TIER_ORDER, "all"))}
    rows_out = [
        _figures(period, tier, members, targets)
        for (period, tier), members in sorted(
            groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
        )
    ]
    return {
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
        "bucket": bucket,
        "targets_s": targets,
        "rows": rows_out,
        "incidents": [
            {
                **f,
                "started_at": f["started_at"].isoformat() if f["started_at"] else None,
                "restored_at": f["restored_at"].isoformat() if f["restored_at"] else None,
            }
            for f in sorted(incidents, key=lambda f: f["started_at"])
        ],
    }


def _figures(
    period: str, tier: str, members: list[dict[str, Any]], targets: dict[str, float]
) -> dict[str, Any]:
    durations = [m["duration_s"] for m in members if m["duration_s"] is not None]
    restored = [m for m in members if m["outcome"] == "restored"]
    escalated = [m for m in members if m["outcome"] == "escalated"]
    met = [
        m
        for m in restored
        if m["duration_s"] is not None and m["duration_s"] <= targets.get(m["tier"], float("inf"))
    ]
    judged = len(restored) + len(escalated)
    return {
        "period": period,
        "tier": tier,
        "incidents": len(members),
        "restored": len(restored),
        "escalated": len(escalated),
        "open": len(members) - judged,
        "mttr_s": round(statistics.fmean(durations), 3) if durations else None,
        "median_ttr_s": round(statistics.median(durations), 3) if durations else None,
        "max_ttr_s": round(max(durations), 3) if durations else None,
        "target_s": targets.get(tier),
        "within_target": len(met),
        "sla_compliance_pct": round(100.0 * len(met) / judged, 2) if judged else None,
    }


def default_period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = _utc(end) if end else datetime.now(UTC)
    start = _utc(start) if start else end - timedelta(days=30)
    return start, end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- rendering -------------------------------------------------------------------------------


def render(
    fmt: Format, *, title: str, data: dict[str, Any], rows: list[dict[str, Any]], filename: str
) -> Response:
    """JSON is the whole report; CSV and HTML are its table, for a spreadsheet or a printout."""
    if fmt == "json":
        return JSONResponse(data)
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    meta = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(_cell(v))}</li>"
        for k, v in data.items()
        if not isinstance(v, list)
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1><ul>{meta}</ul>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>"
    )
    return HTMLResponse(page)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)

"""Message templates per event: one set of facts rendered as Markdown (Webex), text and HTML
(Email) and a work note (ServiceNow), so every channel tells the same story."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from shared.models import Notify

EVENT_KINDS: dict[str, str] = {
    "new_incident": "new_incident",
    "incident_created": "new_incident",
    "new_ticket": "new_incident",
    "opened": "new_incident",
    "phase_update": "phase_update",
    "status_update": "phase_update",
    "state_change": "phase_update",
    "escalation": "escalation",
    "escalated": "escalation",
    "error": "error",
    "closed": "closed",
    "ticket_closed": "closed",
    "incident_closed": "closed",
    "restoration_complete": "closed",
    "resolved": "closed",
    "runbook_step": "step",
    "manual_review": "review",
    "on_hold": "review",
}
"""Event names peers send → the template that renders them; anything else is ``update``."""

TITLES: dict[str, str] = {
    "new_incident": "New incident",
    "phase_update": "Phase update",
    "escalation": "ESCALATED",
    "error": "Error",
    "closed": "Closed",
    "step": "Runbook step",
    "review": "Manual review",
    "update": "Update",
}


def event_kind(event: str) -> str:
    return EVENT_KINDS.get(event.strip().lower(), "update")


@dataclass(frozen=True)
class Rendered:
    kind: str
    subject: str
    markdown: str
    text: str
    html: str
    work_note: str
    facts: dict[str, str] = field(default_factory=dict)


def facts_of(payload: Notify, *, console_url: str | None) -> dict[str, str]:
    """The incident's facts in display order; absent facts are left out, not shown empty."""
    d = payload.details
    facts: dict[str, str] = {}
    if payload.incident_id:
        facts["Incident"] = payload.incident_id
    facts["Severity"] = payload.severity
    tier = payload.tier or d.get("tier") or d.get("highest_tier")
    if tier:
        facts["Tier"] = str(tier)
    for key in ("status", "phase"):
        if d.get(key):
            facts[key.capitalize()] = str(d[key])
    links = d.get("degraded_links") or d.get("links")
    if links:
        facts["Degraded links"] = (
            ", ".join(map(str, links)) if isinstance(links, list) else str(links)
        )
    count = _services_count(d)
    if count is not None:
        facts["Affected services"] = str(count)
    tunnel = _tunnel(d)
    if tunnel:
        facts["Tunnel"] = tunnel
    if d.get("error_code"):
        facts["Error code"] = str(d["error_code"])
    resolution = d.get("resolution") or d.get("close_reason")
    if resolution:
        facts["Resolution"] = str(resolution)
    duration = d.get("duration_seconds", d.get("duration_s"))
    if isinstance(duration, int | float):
        facts["Duration"] = _duration(float(duration))
    if console_url and payload.incident_id:
        base = console_url.rstrip("/")
        facts["Console"] = f"{base}/"
        facts["Ticket"] = f"{base}/api/v1/tickets/{payload.incident_id}"
    return facts


def render(payload: Notify, *, console_url: str | None = None) -> Rendered:
    kind = event_kind(payload.event)
    facts = facts_of(payload, console_url=console_url)
    prefix = f"[CXM {payload.severity.upper()}] {TITLES[kind]}"
    ident = f" {payload.incident_id}" if payload.incident_id else ""
    subject = f"{prefix}{ident}: {payload.subject}"
    body = payload.body.strip()

    md = [f"**{html.escape(subject)}**", ""]
    if body:
        md += [body, ""]
    md += [f"- **{k}**: {_md_value(v)}" for k, v in facts.items()]

    text = [subject, "=" * min(len(subject), 78), ""]
    if body:
        text += [body, ""]
    width = max((len(k) for k in facts), default=0)
    text += [f"{k + ':':<{width + 1}} {v}" for k, v in facts.items()]

    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{_html_value(v)}</td></tr>"
        for k, v in facts.items()
    )
    page = (
        f"<html><body><h2>{html.escape(subject)}</h2>"
        + (f"<p>{html.escape(body)}</p>" if body else "")
        + f"<table>{rows}</table></body></html>"
    )

    note = [f"CXM {TITLES[kind].lower()}: {payload.subject}"]
    if body:
        note.append(body)
    if kind != "step":
        # a step's note is one of many on the same record: the incident's facts are in the
        # notes around it, so it carries only the step
        note += [f"{k}: {v}" for k, v in facts.items() if k not in ("Console",)]
    return Rendered(
        kind=kind,
        subject=subject,
        markdown="\n".join(md),
        text="\n".join(text) + "\n",
        html=page,
        work_note="\n".join(note),
        facts=facts,
    )


def _services_count(d: dict[str, Any]) -> int | None:
    for key in ("total_affected", "affected_services_count", "services_count"):
        if isinstance(d.get(key), int | float):
            return int(d[key])
    services = d.get("affected_services")
    if isinstance(services, list):
        return len(services)
    if isinstance(services, int):
        return services
    return None


def _tunnel(d: dict[str, Any]) -> str | None:
    raw = d.get("tunnel")
    t: dict[str, Any] = raw if isinstance(raw, dict) else d
    tunnel_id = t.get("tunnel_id") or (raw if isinstance(raw, str) else None)
    if not tunnel_id:
        return None
    parts = [str(tunnel_id)]
    if t.get("te_type"):
        parts.append(str(t["te_type"]))
    if t.get("binding_sid") is not None:
        parts.append(f"BSID {t['binding_sid']}")
    path = t.get("path") or d.get("protection_path")
    if isinstance(path, list) and path:
        parts.append(" → ".join(map(str, path)))
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s ({seconds:.0f} s)"
    if minutes:
        return f"{minutes}m {secs:02d}s ({seconds:.0f} s)"
    return f"{seconds:.0f} s"


def _md_value(value: str) -> str:
    return value if value.startswith("http") else value.replace("*", "\\*").replace("_", "\\_")


def _html_value(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return f"<a href='{html.escape(value, quote=True)}'>{html.escape(value)}</a>"
    return html.escape(value)

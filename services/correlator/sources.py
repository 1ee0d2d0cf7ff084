"""Each source's native payload → ``NormalizedAlert``s, or a ``SourceError`` naming the problem.

Parsers are pure functions of the body and the topology (which names links and maps
``node:interface`` to a link); they never store anything, so a refused body changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.correlator.topology import TopologyView
from shared.models import (
    LINK_PATTERN,
    SERVICENOW_NUMBER_LABEL,
    SERVICENOW_SYS_ID_LABEL,
    NormalizedAlert,
    Severity,
)

MAX_ALERTS = 10000
CSV_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "source",
    "severity",
    "link",
    "metric",
    "value",
    "summary",
)
_LINK_RE = re.compile(LINK_PATTERN)
_LINK_TAG = re.compile(r"\blink:([A-Za-z0-9_.:]+-[A-Za-z0-9_.:]+)")
_DD_TITLE_STATE = re.compile(r"^\s*\[(?P<state>[^\]]+)\]")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)

_SEVERITY: dict[str, Severity] = {
    **dict.fromkeys(("critical", "crit", "p1", "emergency", "fatal", "disaster"), "critical"),
    **dict.fromkeys(("high", "major", "error", "page", "p2", "down"), "high"),
    **dict.fromkeys(("medium", "warning", "warn", "minor", "p3", "moderate", "degraded"), "medium"),
    **dict.fromkeys(("low", "p4", "p5"), "low"),
    **dict.fromkeys(
        ("info", "informational", "ok", "success", "none", "notice", "debug", "indeterminate"),
        "info",
    ),
}
_FIRING = {
    "firing",
    "raised",
    "triggered",
    "re-triggered",
    "open",
    "active",
    "problem",
    "alert",
    "warn",
    "renotify",
    "down",
    "degraded",
    "true",
}
_RESOLVED = {
    "resolved",
    "cleared",
    "forced-clear",
    "recovered",
    "ok",
    "closed",
    "inactive",
    "clear",
    "up",
    "false",
    "success",
}


class SourceError(ValueError):
    """The body can never be accepted; the message names the field or row at fault."""


def severity(value: Any, default: Severity) -> Severity:
    if value is None or value == "":
        return default
    return _SEVERITY.get(str(value).strip().lower(), default)


def status_of(value: Any, where: str) -> str:
    text = str(value).strip().lower()
    if text in _FIRING:
        return "firing"
    if text in _RESOLVED:
        return "resolved"
    raise SourceError(f"{where}: unknown alert state {value!r}")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(
        "\x1f".join("" if p is None else str(p) for p in parts).encode()
    ).hexdigest()[:32]


def parse_time(value: Any, where: str) -> datetime | None:
    """ISO 8601 text or epoch seconds/milliseconds; Alertmanager's zero time is None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SourceError(f"{where}: not a time: {value!r}")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = float(value)
        if number > 1e11:
            number /= 1000.0
        return datetime.fromtimestamp(number, UTC)
    if not isinstance(value, str):
        raise SourceError(f"{where}: not a time: {value!r}")
    text = value.strip()
    if text.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"{where}: not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(value: Any) -> float | None:
    """Skylight durations: ISO 8601 (``PT5M``) or milliseconds."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = _ISO_DURATION.match(str(value).strip())
    if not match:
        return None
    d, h, m, s = (float(match.group(k) or 0) for k in "dhms")
    return timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()


def number(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SourceError(f"{where}: not a number: {value!r}") from None


def _labels(data: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        if value is None or isinstance(value, dict | list):
            continue
        out[str(key)] = str(value)
    return out


def _items(body: Any, where: str, keys: Iterable[str] = ()) -> list[Any]:
    if isinstance(body, list):
        items = body
    elif isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), list):
                items = body[key]
                break
        else:
            items = [body]
    else:
        raise SourceError(f"{where}: expected a JSON object or a list of objects")
    if not items:
        raise SourceError(f"{where}: no alerts in the body")
    if len(items) > MAX_ALERTS:
        raise SourceError(f"{where}: at most {MAX_ALERTS} alerts per request")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SourceError(f"{where}[{i}]: expected an object, got {type(item).__name__}")
    return items


def _build(where: str, **fields: Any) -> NormalizedAlert:
    try:
        return NormalizedAlert(**fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SourceError(f"{where}: {loc}: {err['msg']}") from None


def _link_or_node(name: str, topo: TopologyView) -> tuple[str | None, str | None]:
    if _LINK_RE.match(name) and name.count("-") == 1:
        return topo.canonical(name), None
    if name in topo.links:
        return name, None
    return None, name


def host_or_node(node: str | None, topo: TopologyView) -> tuple[str | None, str | None]:
    """``(node, host)``: a name the topology knows is a network node, any other is a host
    (a server, service or database: a host ticket for runbooks, not the network loop).

    Only monitoring tools' names go through here; a network controller (PCA, CNC) names
    network elements, so its unknown node stays a node (and is discarded for having no links).
    """
    if node is None or topo.links_of_node(node):
        return node, None
    return None, node


# --- PCA / Skylight -------------------------------------------------------------------------


def parse_pca(body: Any, topo: TopologyView) -> list[NormalizedAlert]:
    """Skylight alert webhooks: one alert, a list, or ``{"alerts"|"data": [...]}``."""
    out = []
    for i, item in enumerate(_items(body, "pca", ("alerts", "data"))):
        where = f"pca alert {i}"
        state = item.get("alertState")
        if state is None:
            raise SourceError(f"{where}: alertState is required (raised, cleared, forced-clear)")
        state = str(state).lower()
        if state not in ("raised", "cleared", "forced-clear", "error"):
            raise SourceError(
                f"{where}: alertState {state!r} is not raised/cleared/forced-clear/error"
            )
        obj = item.get("objectName")
        if not isinstance(obj, str) or not obj:
            raise SourceError(f"{where}: objectName (the link, e.g. pe1-pe2) is required")
        link, node = _link_or_node(obj, topo)
        metric = item.get("metric")
        meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        labels = _labels(meta)
        for key in ("policyName", "policyType", "policyId", "direction", "tenantId", "objectId"):
            if item.get(key) is not None:
                labels[key] = str(item[key])
        labels["alertState"] = state
        triggered = number(item.get("triggeredValue"), f"{where}: triggeredValue")
        threshold = number(item.get("value"), f"{where}: value")
        start = parse_time(item.get("startTimestamp"), f"{where}: startTimestamp")
        end = parse_time(item.get("endTimestamp"), f"{where}: endTimestamp")
        processed = parse_time(item.get("processedTimestamp"), f"{where}: processedTimestamp")
        direction = item.get("direction") or ""
        default_sev: Severity = "info" if state == "error" else "high"
        summary = (
            f"{item.get('policyName') or 'PCA policy'}: {metric or 'metric'} {direction} "
            f"{triggered if triggered is not None else '?'} vs threshold "
            f"{threshold if threshold is not None else '?'} on {obj}"
        ).replace("  ", " ")
        out.append(
            _build(
                where,
                source="pca",
                link=link,
                node=node,
                status="firing" if state in ("raised", "error") else "resolved",
                severity=severity(item.get("severity") or meta.get("severity"), default_sev),
                metric=metric,
                value=triggered,
                threshold=threshold,
                summary=summary,
                labels=labels,
                fingerprint=fingerprint(
                    "pca",
                    item.get("tenantId"),
                    item.get("policyId"),
                    item.get("objectId") or obj,
                    metric,
                    direction,
                ),
                starts_at=start,
                ends_at=end,
                timestamp=processed or (end if state != "raised" else None) or start,
                duration_s=parse_duration(item.get("timeInViolation") or item.get("duration")),
                external_id=str(item["alertId"]) if item.get("alertId") is not None else None,
            )
        )
    return out


# --- CNC alarms and service health ------------------------------------------------------------


def _norm_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys without YANG module prefixes, lower case, ``_`` as ``-``."""
    return {k.split(":")[-1].lower().replace("_", "-"): v for k, v in data.items()}


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) not in (None, ""):
            return data[key]
    return None


def parse_cnc(body: Any, topo: TopologyView) -> list[NormalizedAlert]:
    """Crosswork alarms (one, a list, ``{"alarms": [...]}``) and service-health notifications.

    A RESTCONF notification wrapper (``ietf-restconf:notification`` with ``eventTime``) is
    unwrapped. A service-health notification yields one alert per topology link its symptoms
    name; an alarm names a link, an interface of a node, or just a node (a node-level alarm).
    """
    out: list[NormalizedAlert] = []
    for i, raw in enumerate(_items(body, "cnc", ("alarms", "notifications", "alarm"))):
        where = f"cnc item {i}"
        item = _norm_keys(raw)
        event_time = None
        if "notification" in item and isinstance(item["notification"], dict):
            note = _norm_keys(item["notification"])
            event_time = note.pop("eventtime", None) or note.pop("event-time", None)
            inner = [v for v in note.values() if isinstance(v, dict)]
            if not inner:
                raise SourceError(f"{where}: the notification carries no content")
            item = _norm_keys(inner[0])
        elif isinstance(item.get("alarm"), dict):
            item = _norm_keys(item["alarm"])
        if "health" in item or "service-health" in item:
            out.extend(_cnc_service_health(item, topo, where, event_time))
        else:
            out.append(_cnc_alarm(item, topo, where, event_time))
    return out


def _cnc_service_health(
    item: dict[str, Any], topo: TopologyView, where: str, event_time: Any
) -> list[NormalizedAlert]:
    health = str(_first(item, "health", "service-health") or "").lower()
    service = _first(item, "service-id", "service-name", "name", "vpn-id")
    if service is None:
        raise SourceError(f"{where}: a service-health notification needs the service name")
    if health not in ("down", "degraded", "up", "healthy"):
        raise SourceError(f"{where}: health {health!r} is not Down/Degraded/Up")
    symptoms = item.get("symptoms") or []
    text = json.dumps(symptoms) + " " + str(item.get("description") or "")
    links = [str(item["link"])] if item.get("link") else topo.links_in_text(text)
    when = parse_time(_first(item, "timestamp", "event-time") or event_time, f"{where}: timestamp")
    status = "resolved" if health in ("up", "healthy") else "firing"
    default: Severity = "high" if health == "down" else "medium"
    labels = {"service": str(service), "health": health, "kind": "service-health"}
    targets: list[tuple[str | None, str | None]] = [(topo.canonical(x), None) for x in links]
    if not targets:
        targets = [(None, None)]
    return [
        _build(
            where,
            source="cnc",
            link=link,
            node=node,
            status=status,
            severity=severity(item.get("severity"), default),
            metric="service-health",
            summary=f"Service {service} {health}: " + "; ".join(str(s) for s in symptoms)[:500],
            labels=labels,
            fingerprint=fingerprint("cnc-health", service, link),
            timestamp=when,
        )
        for link, node in targets
    ]


def _cnc_alarm(
    item: dict[str, Any], topo: TopologyView, where: str, event_time: Any
) -> NormalizedAlert:
    node = _first(item, "node", "node-id", "device", "device-name", "host-name", "ne-name")
    iface = _first(item, "interface", "interface-name", "if-name", "port")
    obj = _first(item, "link", "link-id", "object", "object-name", "source")
    link: str | None = None
    if isinstance(obj, str) and obj:
        maybe_link, maybe_node = _link_or_node(obj, topo)
        link = maybe_link
        node = node or maybe_node
    if link is None and node and iface:
        link = topo.interfaces.get(f"{node}:{iface}")
    if link is None and node is None:
        raise SourceError(f"{where}: an alarm must name a link, an interface of a node, or a node")
    state = _first(item, "state", "status", "alarm-state", "condition")
    sev_raw = item.get("severity")
    if state is None:
        state = "cleared" if str(sev_raw).lower() == "cleared" else "raised"
    status = status_of(state, where)
    alarm_id = _first(item, "alarm-id", "id", "alarm-key")
    kind = _first(item, "type", "alarm-type", "event-type", "probable-cause") or "alarm"
    labels = {"kind": "alarm", "alarm_type": str(kind)}
    if node:
        labels["node"] = str(node)
    if iface:
        labels["interface"] = str(iface)
    return _build(
        where,
        source="cnc",
        link=link,
        node=None if link else str(node),
        status=status,
        severity=severity(None if str(sev_raw).lower() == "cleared" else sev_raw, "high"),
        metric=str(kind),
        summary=str(_first(item, "description", "text", "message", "alarm-text") or kind),
        labels=labels,
        fingerprint=fingerprint("cnc-alarm", alarm_id or (kind, node, iface, link)),
        timestamp=parse_time(
            _first(item, "timestamp", "event-time", "raise-time", "last-update") or event_time,
            f"{where}: timestamp",
        ),
        external_id=str(alarm_id) if alarm_id is not None else None,
    )


# --- Prometheus Alertmanager webhook v4 -------------------------------------------------------


def resolve_labels(labels: Mapping[str, str], topo: TopologyView) -> tuple[str | None, str | None]:
    """A link from ``link`` (or ``objectName``), else node+interface or node+peer; else a node."""
    for key in ("link", "link_id", "objectName", "object_name"):
        if labels.get(key):
            return _link_or_node(labels[key], topo)
    # node_exporter's filesystem series (those with ``mountpoint``/``fstype``) call the block
    # device ``device`` (``/dev/sda1``, ``tmpfs``): there it names no host, ``instance`` does.
    keys: tuple[str, ...] = ("node", "device", "hostname", "host", "instance")
    if labels.get("mountpoint") or labels.get("fstype"):
        keys = tuple(k for k in keys if k != "device")
    node = next((labels[k] for k in keys if labels.get(k)), None)
    if node and ":" in node and not node.startswith("["):
        node = node.rsplit(":", 1)[0] if node.rsplit(":", 1)[1].isdigit() else node
    if node:
        for key in ("interface", "ifName", "ifname", "ifDescr", "port"):
            if labels.get(key):
                link = topo.interfaces.get(f"{node}:{labels[key]}")
                if link:
                    return link, None
        for key in ("peer", "neighbor", "remote_node", "peer_node"):
            if labels.get(key):
                return topo.canonical(f"{node}-{labels[key]}"), None
        return None, node
    return None, None


def parse_alertmanager(body: Any, topo: TopologyView) -> list[NormalizedAlert]:
    if not isinstance(body, dict):
        raise SourceError("alertmanager: expected the webhook JSON object (version 4)")
    version = body.get("version")
    if version is not None and str(version) != "4":
        raise SourceError(f"alertmanager: webhook version {version!r} is not supported (only 4)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise SourceError("alertmanager: alerts must be a non-empty list")
    common = _labels(body.get("commonLabels"))
    out = []
    for i, item in enumerate(_items(alerts, "alertmanager.alerts")):
        where = f"alertmanager alerts[{i}]"
        labels = _labels(item.get("labels"))
        if not labels:
            raise SourceError(f"{where}: labels are required")
        annotations = _labels(item.get("annotations"))
        status = status_of(item.get("status") or body.get("status") or "firing", where)
        link, node = resolve_labels(labels, topo)
        node, host = host_or_node(node, topo)
        starts = parse_time(item.get("startsAt"), f"{where}: startsAt")
        ends = parse_time(item.get("endsAt"), f"{where}: endsAt")
        out.append(
            _build(
                where,
                source="alertmanager",
                link=link,
                node=node,
                host=host,
                status=status,
                severity=severity(labels.get("severity") or common.get("severity"), "medium"),
                metric=labels.get("alertname"),
                value=number(annotations.get("value"), f"{where}: annotations.value"),
                threshold=number(annotations.get("threshold"), f"{where}: annotations.threshold"),
                summary=annotations.get("summary")
                or annotations.get("description")
                or labels.get("alertname", ""),
                labels=labels,
                annotations=annotations,
                fingerprint=str(
                    item.get("fingerprint") or fingerprint("am", sorted(labels.items()))
                ),
                starts_at=starts,
                ends_at=ends,
                timestamp=ends if status == "resolved" else None,
                external_id=item.get("generatorURL") or None,
            )
        )
    return out


# --- Datadog -----------------------------------------------------------------------------------


def _dd_tags(value: Any) -> dict[str, str]:
    tags: list[str] = value if isinstance(value, list) else str(value or "").split(",")
    out: dict[str, str] = {}
    for tag in tags:
        tag = str(tag).strip()
        if not tag:
            continue
        key, sep, val = tag.partition(":")
        out[key] = val if sep else "true"
    return out


def parse_datadog(body: Any, topo: TopologyView) -> list[NormalizedAlert]:
    """Datadog's default webhook body and ServiceNow's extended sample (``alert_*`` fields)."""
    out = []
    for i, item in enumerate(_items(body, "datadog")):
        where = f"datadog item {i}"
        title = str(item.get("alert_title") or item.get("title") or "")
        transition = item.get("alert_transition")
        if transition in (None, "", "$ALERT_TRANSITION"):
            match = _DD_TITLE_STATE.match(str(item.get("title") or ""))
            transition = match.group("state") if match else None
        if transition is None:
            raise SourceError(
                f"{where}: no alert_transition and no [Triggered]/[Recovered] title to read it from"
            )
        transition = str(transition).strip()
        lowered = transition.lower()
        if lowered.startswith("p") and lowered[1:].isdigit():
            lowered = "triggered"
        if lowered in ("no data", "nodata"):
            lowered = "warn"
        status = status_of(lowered, where)
        tags = _dd_tags(item.get("tags"))
        scope = str(item.get("alert_scope") or "")
        text = " ".join(
            [
                scope,
                title,
                str(item.get("body") or ""),
                ",".join(f"{k}:{v}" for k, v in tags.items()),
            ]
        )
        link: str | None = None
        node: str | None = None
        if tags.get("link"):
            link, node = _link_or_node(tags["link"], topo)
        elif (m := _LINK_TAG.search(text)) is not None:
            link = topo.canonical(m.group(1))
        else:
            host = item.get("host_name") or item.get("hostname") or tags.get("host")
            if host and host not in ("$HOSTNAME",):
                labels_for = {
                    "node": str(host),
                    **{k: v for k, v in tags.items() if k in ("interface", "peer")},
                }
                link, node = resolve_labels(labels_for, topo)
        node, host = host_or_node(node, topo)
        alert_type = str(item.get("alert_type") or "").lower()
        sev_src = item.get("alert_priority") or item.get("priority")
        sev = severity(sev_src, severity(alert_type if status == "firing" else None, "medium"))
        if str(sev_src or "").lower() in ("normal", "low") and alert_type:
            sev = severity(alert_type, "medium")
        alert_id = item.get("alert_id") or item.get("aggreg_key")
        org = item.get("org") if isinstance(item.get("org"), dict) else {}
        base_title = _DD_TITLE_STATE.sub("", title).strip()
        labels = {**tags, "transition": transition}
        if item.get("alert_metric"):
            labels["metric"] = str(item["alert_metric"])
        value = number(item.get("alert_value") or item.get("value"), f"{where}: value")
        out.append(
            _build(
                where,
                source="datadog",
                link=link,
                node=node,
                host=host,
                status=status,
                severity=sev,
                metric=str(item.get("alert_metric") or "") or None,
                value=value,
                threshold=number(item.get("threshold"), f"{where}: threshold"),
                summary=base_title or str(item.get("body") or "")[:300],
                labels=labels,
                annotations={"description": str(item["body"])[:4000]} if item.get("body") else {},
                fingerprint=fingerprint(
                    "datadog", org.get("id"), alert_id or base_title, scope, link
                ),
                timestamp=parse_time(
                    item.get("last_updated") or item.get("date"), f"{where}: date"
                ),
                external_id=str(item.get("id")) if item.get("id") not in (None, "") else None,
            )
        )
    return out


# --- ServiceNow incidents (a Business Rule or Flow posting the record) -----------------------

SNOW_PRIORITY_SEVERITY: dict[int, Severity] = {
    1: "critical",
    2: "high",
    3: "medium",
    4: "low",
    5: "low",
}
"""ServiceNow priority → CXM severity. 5 (Planning) is ``low``, not ``info``: the correlator
discards a firing ``info`` alert, and a ticket someone opened is never noise to discard."""
SNOW_PRIORITY: dict[tuple[int, int], int] = {
    (1, 1): 1,
    (1, 2): 2,
    (1, 3): 3,
    (2, 1): 2,
    (2, 2): 3,
    (2, 3): 4,
    (3, 1): 3,
    (3, 2): 4,
    (3, 3): 5,
}
"""ServiceNow's default priority lookup (impact, urgency) → priority, for a record posted
without its priority."""
SNOW_STATES: dict[str, int] = {
    "new": 1,
    "in progress": 2,
    "in_progress": 2,
    "on hold": 3,
    "on_hold": 3,
    "resolved": 6,
    "closed": 7,
    "canceled": 8,
    "cancelled": 8,
}
SNOW_ENDED = frozenset({6, 7, 8})
"""Resolved, Closed, Canceled: such a record is never a new ticket (it clears its host's)."""
_SYS_ID = re.compile(r"^[0-9a-fA-F]{32}$")
_CHOICE = re.compile(r"^\s*(-?\d+)\b")


def _snow_value(value: Any, *, display: bool = False) -> Any:
    """A field as the Table API gives it: plain, or ``{value, display_value}`` (the record
    read with ``sysparm_display_value=all``); ``display`` prefers the display value."""
    if isinstance(value, dict):
        first, second = ("display_value", "value") if display else ("value", "display_value")
        return value.get(first) if value.get(first) not in (None, "") else value.get(second)
    return value


def _snow_choice(value: Any, field: str, where: str, allowed: range) -> int | None:
    """A numeric choice: ``1``, ``"1"``, ``"1 - Critical"`` or ``{value, display_value}``."""
    raw = _snow_value(value)
    if raw is None or raw == "":
        return None
    match = None if isinstance(raw, bool) else _CHOICE.match(str(raw))
    number = int(match.group(1)) if match else None
    if number is None or number not in allowed:
        raise SourceError(
            f"{where}: {field} {raw!r} is not one of {allowed.start}..{allowed.stop - 1}"
        )
    return number


def servicenow_severity(item: Mapping[str, Any], where: str = "servicenow") -> Severity:
    """``priority`` (1 Critical … 5 Planning), else ServiceNow's own lookup of ``impact`` and
    ``urgency`` (a missing one counts as 3, ServiceNow's default), else ``medium``."""
    priority = _snow_choice(item.get("priority"), "priority", where, range(1, 6))
    if priority is None:
        impact = _snow_choice(item.get("impact"), "impact", where, range(1, 4))
        urgency = _snow_choice(item.get("urgency"), "urgency", where, range(1, 4))
        if impact is None and urgency is None:
            return "medium"
        priority = SNOW_PRIORITY[(impact or 3, urgency or 3)]
    return SNOW_PRIORITY_SEVERITY[priority]


def _snow_state(value: Any, where: str) -> int:
    """The incident state's code; a record posted without one is New."""
    raw = _snow_value(value)
    if raw is None or raw == "":
        return 1
    if isinstance(raw, bool):
        raise SourceError(f"{where}: state {raw!r} is not an incident state")
    text = str(raw).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    code = SNOW_STATES.get(text.lower())
    if code is None:
        raise SourceError(
            f"{where}: state {raw!r} is not an incident state (a code such as 1, or New, "
            "In Progress, On Hold, Resolved, Closed, Canceled)"
        )
    return code


def _snow_text(item: Mapping[str, Any], field: str, where: str, limit: int) -> str:
    raw = item.get(field)
    if isinstance(raw, dict) and not {"value", "display_value"} & raw.keys():
        raise SourceError(f"{where}: {field} must be text (or {{display_value, value}})")
    value = _snow_value(raw, display=True)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise SourceError(f"{where}: {field} must be text (or {{display_value, value}})")
    return str(value).strip()[:limit]


def _snow_host(item: Mapping[str, Any], where: str) -> str:
    """The record's host: ``u_host`` or ``host``, else the configuration item's name."""
    for field in ("u_host", "host"):
        name = _snow_text(item, field, where, 200)
        if name:
            return _snow_name(name, field, where)
    ci = item.get("cmdb_ci")
    name = _snow_text(item, "cmdb_ci", where, 200)
    if not name:
        raise SourceError(
            f"{where}: no host: set u_host (or host), or cmdb_ci to the configuration item "
            "(its name, or {display_value, value})"
        )
    if _SYS_ID.match(name) and not (isinstance(ci, dict) and ci.get("display_value")):
        raise SourceError(
            f"{where}: cmdb_ci {name!r} is a reference, not a name: post its display value "
            "(current.cmdb_ci.getDisplayValue()) or {display_value, value}"
        )
    return _snow_name(name, "cmdb_ci", where)


def _snow_name(name: str, field: str, where: str) -> str:
    if len(name) > 128 or any(c.isspace() for c in name):
        raise SourceError(
            f"{where}: {field} {name!r} is not a host name (no spaces, at most 128 characters)"
        )
    return name


def parse_servicenow(body: Any, topo: TopologyView) -> list[NormalizedAlert]:
    """Incident records as a ServiceNow Business Rule or Flow posts them: one record, a list,
    or the Table API's ``{"result": ...}``.

    Each becomes a ticket about its host (``u_host``/``host``, else ``cmdb_ci``), or about a
    link or node when the topology knows that name (a network incident), like the monitoring
    sources' hosts. The record's ``sys_id`` is the fingerprint (so a resent record is a
    duplicate) and, with its ``number``, a label the ticket carries to notify, which then
    updates this record instead of creating another. A Resolved, Closed or Canceled record
    is a clear, never a new ticket.
    """
    if isinstance(body, dict) and isinstance(body.get("result"), dict | list):
        body = body["result"]
    out = []
    for i, item in enumerate(_items(body, "servicenow", ("records", "incidents"))):
        where = f"servicenow record {i}"
        sys_id = str(_snow_value(item.get("sys_id")) or "").strip()
        if not sys_id:
            raise SourceError(f"{where}: sys_id is required (the incident record's sys_id)")
        if not _SYS_ID.match(sys_id):
            raise SourceError(f"{where}: sys_id {sys_id!r} is not a sys_id (32 hex digits)")
        number = _snow_text(item, "number", where, 41)
        if len(number) > 40 or any(c.isspace() for c in number):
            raise SourceError(f"{where}: number {number!r} is not an incident number")
        state = _snow_state(item.get("state"), where)
        severity_of = servicenow_severity(item, where)
        name = _snow_host(item, where)
        link: str | None = None
        node: str | None = None
        host: str | None = None
        canonical = topo.canonical(name) if _LINK_RE.match(name) else name
        if canonical in topo.links:
            link = canonical
        else:
            node, host = host_or_node(name, topo)
        description = _snow_text(item, "description", where, 20000)
        title = _snow_text(item, "short_description", where, 500)
        title = title or description.partition("\n")[0][:500] or f"ServiceNow {number or sys_id}"
        labels = _labels(item.get("labels") if isinstance(item.get("labels"), dict) else None)
        for key, value in item.items():
            # the incident table's custom fields (u_path → path): values a runbook may read
            if key.startswith("u_") and key != "u_host" and len(key) > 2:
                plain = _snow_value(value, display=True)
                if plain not in (None, "") and not isinstance(plain, dict | list):
                    labels.setdefault(key[2:], str(plain))
        for field in ("category", "subcategory"):
            text = _snow_text(item, field, where, 200)
            if text:
                labels[field] = text
        if item.get("cmdb_ci") not in (None, ""):
            labels["cmdb_ci"] = _snow_text(item, "cmdb_ci", where, 200)
        labels[SERVICENOW_SYS_ID_LABEL] = sys_id
        if number:
            labels[SERVICENOW_NUMBER_LABEL] = number
        labels["servicenow_state"] = str(state)
        out.append(
            _build(
                where,
                source="servicenow",
                link=link,
                node=node,
                host=host,
                status="resolved" if state in SNOW_ENDED else "firing",
                severity=severity_of,
                summary=title,
                labels=labels,
                annotations={"description": description} if description else {},
                fingerprint=f"servicenow-{sys_id.lower()}",
                starts_at=parse_time(_snow_value(item.get("opened_at")), f"{where}: opened_at"),
                external_id=number or sys_id,
            )
        )
    return out


# --- generic JSON with a field mapping -------------------------------------------------------


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def parse_generic(
    body: Any, topo: TopologyView, mapping: Mapping[str, str], items_path: str | None
) -> list[NormalizedAlert]:
    if items_path:
        body = _dig(body, items_path)
        if body is None:
            raise SourceError(
                f"generic: nothing at {items_path!r} (CXM_CORRELATOR_GENERIC_ITEMS_PATH)"
            )
    out = []
    for i, item in enumerate(_items(body, "generic")):
        where = f"generic item {i}"
        got = {field: _dig(item, path) for field, path in mapping.items()}
        link, node = (None, None)
        if got.get("link"):
            link, node = _link_or_node(str(got["link"]), topo)
        elif got.get("node"):
            node = str(got["node"])
        elif got.get("host"):
            node = str(got["host"])
        host = None
        if link is None:
            node, host = host_or_node(node, topo)
        labels = got.get("labels") if isinstance(got.get("labels"), dict) else {}
        status = status_of(got.get("status") or "firing", where)
        out.append(
            _build(
                where,
                source="generic",
                link=link,
                node=node,
                host=host,
                status=status,
                severity=severity(got.get("severity"), "medium"),
                metric=None if got.get("metric") is None else str(got["metric"]),
                value=number(got.get("value"), f"{where}: value"),
                threshold=number(got.get("threshold"), f"{where}: threshold"),
                summary=str(got.get("summary") or ""),
                labels=_labels(labels),
                fingerprint=None if got.get("fingerprint") is None else str(got["fingerprint"]),
                timestamp=parse_time(got.get("timestamp"), f"{where}: timestamp"),
            )
        )
    return out


# --- CSV ----------------------------------------------------------------------------------------


def parse_csv(text: str, topo: TopologyView) -> list[NormalizedAlert]:
    """Header ``timestamp,source,severity,link,metric,value,summary``; extra columns are labels.

    An optional ``status`` column (firing/resolved, raised/cleared) is read as the state and
    ``threshold`` as the threshold; any other extra column becomes a label. A row with an
    empty ``link`` and a ``host`` column is about that host (a host ticket); ``description``
    is its description.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SourceError(
            f"csv: missing columns: {', '.join(missing)} (header must have {','.join(CSV_COLUMNS)})"
        )
    reader.fieldnames = header
    out: list[NormalizedAlert] = []
    for row in reader:
        line = reader.line_num
        where = f"csv row {line}"
        if None in row:
            raise SourceError(f"{where}: more values than columns")
        values = {k: (v or "").strip() for k, v in row.items()}
        host = values.get("host") or None
        if not values["link"] and host is None:
            raise SourceError(f"{where}: link is empty (or give the row a host column)")
        if values["link"] and not _LINK_RE.match(values["link"]):
            raise SourceError(f"{where}: link {values['link']!r} is not node-node (e.g. pe1-pe2)")
        sev_raw = values["severity"].lower()
        if sev_raw and sev_raw not in _SEVERITY:
            raise SourceError(f"{where}: severity {values['severity']!r} is unknown")
        extra = {
            k: v
            for k, v in values.items()
            if k not in CSV_COLUMNS and k not in ("status", "threshold") and v
        }
        status = status_of(values.get("status") or "firing", where)
        stamp = parse_time(values["timestamp"], f"{where}: timestamp")
        if stamp is None:
            raise SourceError(f"{where}: timestamp is empty")
        link = topo.canonical(values["link"]) if values["link"] else None
        node = None
        if link is None:
            node, host = host_or_node(host, topo)
        description = values.get("description", "")
        out.append(
            _build(
                where,
                source=values["source"] or "csv",
                link=link,
                node=node,
                host=host if link is None else None,
                annotations={"description": description} if description else {},
                status=status,
                severity=severity(sev_raw, "medium"),
                metric=values["metric"] or None,
                value=number(values["value"], f"{where}: value"),
                threshold=number(values.get("threshold"), f"{where}: threshold"),
                summary=values["summary"],
                labels=extra,
                fingerprint=fingerprint("csv", values["source"], link or host, values["metric"]),
                timestamp=stamp,
                starts_at=stamp,
            )
        )
        if len(out) > MAX_ALERTS:
            raise SourceError(f"csv: at most {MAX_ALERTS} rows per file")
    if not out:
        raise SourceError("csv: the file has a header but no rows")
    return out


Parser = Callable[[Any, TopologyView], list[NormalizedAlert]]
PARSERS: dict[str, Parser] = {
    "pca": parse_pca,
    "cnc": parse_cnc,
    "alertmanager": parse_alertmanager,
    "datadog": parse_datadog,
    "servicenow": parse_servicenow,
}

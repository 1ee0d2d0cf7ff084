"""Sample payloads shaped like each tool's public documentation, with times set to 'now'."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def skylight(
    now: datetime,
    link: str = "pe1-pe2",
    state: str = "raised",
    triggered: float = 85.0,
    threshold: float = 50.0,
    metric: str = "delay-avg",
    policy: str = "sla-delay",
    violation_ms: int = 300000,
) -> dict[str, Any]:
    """A Skylight (PCA) alert webhook body: identity, measurement, state and timing fields."""
    return {
        "tenantId": "2f4a1c8e-tenant",
        "policyId": f"policy-{policy}",
        "policyName": "SLA delay gold",
        "policyType": "micro-tca",
        "objectId": f"obj-{link}",
        "objectName": link,
        "metric": metric,
        "direction": "sd",
        "value": threshold,
        "triggeredValue": triggered,
        "baseline": 12.0,
        "alertState": state,
        "startTimestamp": ms(now),
        "endTimestamp": ms(now) if state != "raised" else None,
        "processedTimestamp": ms(now),
        "duration": "PT5M",
        "timeInViolation": violation_ms,
        "topology": ["pe1", "pe2"],
        "metadata": {"region": "west"},
    }


def alertmanager_v4(
    now: datetime, alerts: list[dict[str, Any]], status: str = "firing"
) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) body from prometheus.io's configuration docs."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="LinkLatencyHigh"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "cxm-correlator",
        "groupLabels": {"alertname": "LinkLatencyHigh"},
        "commonLabels": {"alertname": "LinkLatencyHigh", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    }


def am_alert(
    now: datetime,
    labels: dict[str, str],
    status: str = "firing",
    fingerprint: str = "c1e2a1b9f0d2c3e4",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "LinkLatencyHigh", "severity": "critical", **labels},
        "annotations": {"summary": "Latency above SLA", "value": "92", "threshold": "50"},
        "startsAt": now.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z"
        if status == "firing"
        else now.isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=latency_ms+%3E+50",
        "fingerprint": fingerprint,
    }


def datadog_default(
    now: datetime, title: str = "[Triggered] Link latency high on link:pe2-pe3"
) -> dict[str, Any]:
    """Datadog's default webhook body ($EVENT_MSG, $LAST_UPDATED, ... filled in)."""
    return {
        "body": "%%%\nLatency avg > 50 ms on link:pe2-pe3\n%%%",
        "last_updated": str(ms(now)),
        "event_type": "query_alert_monitor",
        "title": title,
        "date": str(ms(now)),
        "org": {"id": "123456", "name": "ACME Networks"},
        "id": "7293847261034",
    }


def datadog_servicenow(now: datetime, transition: str = "Triggered") -> dict[str, Any]:
    """ServiceNow's Datadog sample payload: the default body plus the alert_* fields."""
    return {
        **datadog_default(now, title=f"[{transition}] Packet loss on pe1-pe2"),
        "alert_id": "98765432",
        "alert_metric": "network.link.packets_lost_pct",
        "alert_priority": "P2",
        "alert_transition": transition,
        "alert_status": "Packet loss above 1% on link:pe1-pe2",
        "alert_title": "Packet loss on pe1-pe2",
        "alert_type": "error" if transition == "Triggered" else "success",
        "host_name": "pe1",
        "priority": "normal",
        "tags": "env:prod,link:pe1-pe2,team:noc",
        "alert_scope": "link:pe1-pe2",
    }

"""PCA (Skylight) alerts: the payload the lab pushes, and a worker that delivers them in order.

A real PCA posts one webhook per alert state change of a monitored object. The lab does the
same for each link whose metrics cross (or fall back under) a threshold of its one alerting
policy: one ``raised`` when the link starts violating, one ``cleared`` when it stops.
Timestamps are epoch milliseconds and durations milliseconds, as Skylight sends them.

Delivery is one background worker over a queue, so alerts arrive in the order they happened;
failures are logged and retried with backoff and never reach the code that raised the alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from services.lab.network import LinkCondition, LinkMetrics, Thresholds, utcnow
from services.lab.topology import LabLink
from shared.logs import get_logger

log = get_logger(__name__)

POLICY_ID = "cxm-lab-link-sla"
POLICY_NAME = "CXM lab link SLA"
SEVERITY_BY_METRIC = {
    "packets-lost-pct": "critical",
    "delay-avg": "major",
    "delay-var-avg": "minor",
}


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


METRIC_VENDOR = "accedian-twamp"
OBJECT_TYPE = "twamp-sf"
ROUND_TRIP = "2"


def _number(value: float) -> str:
    """A threshold as PCA writes it: a string, without a trailing ``.0``."""
    return f"{value:g}"


def alerting_policies(thresholds: Thresholds, tenant_id: str) -> dict[str, Any]:
    """``GET /api/v2/policies/alerting`` (JSON:API): one micro-TCA policy, a condition per metric.

    Metric ids are those of the metrics API (``delayAvg``, ``delayVarAvg``, ``packetsLostPct``),
    measured round trip (direction ``"2"``); values are strings, as PCA sends them.
    """

    def condition(metric: str, value: float, severity: str) -> dict[str, Any]:
        def side(comparator: str) -> dict[str, Any]:
            return {
                "metric": {
                    "id": metric,
                    "vendor": METRIC_VENDOR,
                    "objectType": [OBJECT_TYPE],
                    "direction": [ROUND_TRIP],
                },
                "comparator": comparator,
                "value": _number(value),
                "duration": "PT1M",
            }

        return {"severity": severity, "triggersOn": side("gt"), "recoversOn": side("lte")}

    return {
        "data": [
            {
                "type": "alertPolicies",
                "id": POLICY_ID,
                "attributes": {
                    "tenantId": tenant_id,
                    "policyName": POLICY_NAME,
                    "policyType": "micro-tca",
                    "enabled": True,
                    "conditions": [
                        condition("delayAvg", thresholds.delay_ms, "major"),
                        condition("delayVarAvg", thresholds.jitter_ms, "minor"),
                        condition("packetsLostPct", thresholds.loss_pct, "critical"),
                    ],
                },
            }
        ],
        "meta": {"total": 1},
    }


def build_alert(
    *,
    link: LabLink,
    state: str,
    violation: tuple[str, float, float],
    metrics: LinkMetrics,
    condition: LinkCondition | None,
    raised_at: datetime,
    tenant_id: str,
) -> dict[str, Any]:
    """A Skylight webhook alert for ``link`` (its ``objectName`` is the link id)."""
    metric, threshold, triggered = violation
    now = utcnow()
    elapsed_ms = max(0, epoch_ms(now) - epoch_ms(raised_at))
    return {
        "tenantId": tenant_id,
        "policyId": POLICY_ID,
        "policyName": POLICY_NAME,
        "policyType": "micro-tca",
        "objectId": f"mo-{link.link_id}",
        "objectName": link.link_id,
        "metric": metric,
        "direction": "rt",
        "value": threshold,
        "triggeredValue": triggered,
        "alertState": state,
        "severity": SEVERITY_BY_METRIC.get(metric, "major"),
        "startTimestamp": epoch_ms(raised_at),
        "endTimestamp": epoch_ms(now) if state == "cleared" else None,
        "processedTimestamp": epoch_ms(now),
        "duration": elapsed_ms,
        "timeInViolation": elapsed_ms,
        "topology": [link.source, link.destination],
        "metadata": {
            "link": link.link_id,
            "source": link.source,
            "destination": link.destination,
            "delay-avg": metrics.delay_ms,
            "delay-var-avg": metrics.jitter_ms,
            "packets-lost-pct": metrics.loss_pct,
            "oper-status": "down" if condition is not None and condition.down else "up",
            "generator": "cxm-lab",
        },
    }


@dataclass
class PushStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    """The last alerts generated (delivered or not), newest last, for /lab/state."""


class AlertPusher:
    """Delivers alerts to the correlator's PCA webhook, in order, retrying with backoff."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        url: str,
        token: str | None,
        enabled: bool,
        retries: int,
        backoff_s: float,
    ):
        self.client = client
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.enabled = enabled
        self.retries = retries
        self.backoff_s = backoff_s
        self.stats = PushStats()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="lab-alert-pusher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def push(self, alert: dict[str, Any]) -> None:
        """Queue an alert; returns at once whatever becomes of the delivery."""
        self.stats.recent = [*self.stats.recent[-49:], alert]
        if not self.enabled:
            return
        self.stats.queued += 1
        self._queue.put_nowait(alert)

    async def drain(self) -> None:
        """Wait until every queued alert was delivered or given up on (tests, shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: dict[str, Any]) -> None:
        key = f"pca-{alert['objectName']}-{alert['alertState']}-{alert['startTimestamp']}"
        headers = {**self.headers, "Idempotency-Key": key, "X-Trace-Id": uuid.uuid4().hex}
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            final = attempt >= self.retries
            try:
                response = await self.client.post(self.url, json=alert, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    self.stats.delivered += 1
                    return
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    final = True  # the correlator refused it; retrying cannot help
            self.stats.last_error = error
            if final:
                break
            log.warning(
                "pca alert delivery failed; retrying",
                link=alert["objectName"],
                state=alert["alertState"],
                attempt=attempt + 1,
                error=error,
            )
            await asyncio.sleep(delay)
            delay *= 2
        self.stats.failed += 1
        log.error(
            "pca alert not delivered",
            link=alert["objectName"],
            state=alert["alertState"],
            url=self.url,
            error=self.stats.last_error,
        )

"""Deliver one notification: route it, render it, send each channel with retries, log and
report every outcome. A channel that fails is reported, never raised: the incident goes on;
one that fails transiently is redelivered in the background, in order per incident."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notify import store
from services.notify.channels import (
    ChannelError,
    EmailChannel,
    Sent,
    ServiceNowClient,
    WebexChannel,
)
from services.notify.routing import route
from services.notify.settings import CHANNELS, Channel, NotifySettings
from services.notify.templates import Rendered, render
from shared.contracts import AUDIT_EVENT
from shared.logs import get_logger
from shared.mesh import backoff_delay
from shared.models import AuditEvent, Notify, NotifyResult, utcnow
from shared.outbox import Outbox

log = get_logger(__name__)

SNOW_IMPACT_URGENCY: dict[str, tuple[str, str]] = {
    "critical": ("1", "1"),
    "high": ("1", "2"),
    "medium": ("2", "2"),
    "low": ("3", "3"),
    "info": ("3", "3"),
}
"""Routing level → ServiceNow (impact, urgency); the priority lookup makes 1/1 a P1."""

ALWAYS_SERVICENOW: tuple[Channel, ...] = ("servicenow",)
"""A ticket that came from ServiceNow keeps its record up to date whatever its level."""

REDELIVERY_CONCURRENCY = 8
"""(incident, channel) pairs redelivered at once: a slow channel does not hold up the others,
and a restart with a long backlog does not open hundreds of connections at once."""


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.deliveries = Counter(
            "cxm_notify_deliveries",
            "Notification outcomes per channel",
            ["channel", "status"],
            registry=registry,
        )
        self.attempts = Counter(
            "cxm_notify_attempts",
            "Delivery attempts per channel",
            ["channel", "outcome"],
            registry=registry,
        )
        self.backlog = Gauge(
            "cxm_notify_retry_backlog",
            "Deliveries waiting to be retried per channel",
            ["channel"],
            registry=registry,
        )


@dataclass
class Channels:
    webex: WebexChannel | None = None
    servicenow: ServiceNowClient | None = None
    email: EmailChannel | None = None

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Channels:
        return cls(
            webex=WebexChannel(settings) if settings.webex_configured else None,
            servicenow=ServiceNowClient(settings) if settings.servicenow_configured else None,
            email=EmailChannel(settings) if settings.email_configured else None,
        )

    async def aclose(self) -> None:
        if self.servicenow is not None:
            await self.servicenow.aclose()


class Notifier:
    """Routes, sends, retries, logs and reports; one per app, owned by its lifespan.

    A channel still failing transiently after the in-call retries is not given up: its row
    turns ``retrying`` and a background loop redelivers it with backoff until it is sent, fails
    for good or grows too old. Deliveries of one (incident, channel) go out in order: a new one
    waits behind an older one still being retried, so ServiceNow sees create, notes, resolve.
    """

    def __init__(
        self,
        *,
        settings: NotifySettings,
        engine: AsyncEngine,
        outbox: Outbox,
        channels: Channels,
        metrics: NotifyMetrics,
        console_url: str | None,
        scaled: Callable[[float], float] = lambda seconds: seconds,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.settings = settings
        self.engine = engine
        self.outbox = outbox
        self.channels = channels
        self.metrics = metrics
        self.console_url = console_url
        self.scaled = scaled
        self.sleep = sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(REDELIVERY_CONCURRENCY)
        # Held only while in use, so the map does not grow with every incident ever seen.
        self._locks: weakref.WeakValueDictionary[tuple[str | None, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-redelivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def notify(self, payload: Notify, *, key: str) -> NotifyResult:
        level, routed = route(
            payload.severity,
            payload.tier,
            self.settings.notify_routing,
            always=ALWAYS_SERVICENOW if servicenow_ref(payload) else (),
            only=payload.channels,
        )
        message = render(payload, console_url=self.console_url)
        if payload.incident_id:
            await store.update_mapping(
                self.engine,
                payload.incident_id,
                last_status=_str(payload.details.get("status")),
                last_phase=_str(payload.details.get("phase")),
            )
        outcomes = await asyncio.gather(
            *(self._deliver(channel, payload, message, key) for channel in routed)
        )
        return NotifyResult(
            incident_id=payload.incident_id,
            event=payload.event,
            template=message.kind,
            level=level,
            channels=dict(zip(routed, outcomes, strict=True)),
        )

    async def _deliver(
        self, channel: Channel, payload: Notify, message: Rendered, key: str
    ) -> dict[str, Any]:
        async with self._lock(payload.incident_id, channel):
            row = await store.claim(
                self.engine,
                key=key,
                channel=channel,
                incident_id=payload.incident_id,
                event=payload.event,
            )
            if row["status"] in ("sent", "retrying"):
                # Same idempotency key and channel, already delivered or queued for redelivery:
                # the sender's retry after a partial failure or a crash must not send it twice.
                return _answer_of(row)
            if not self.settings.configured(channel):
                return await self._finish(
                    row, payload, status="skipped", attempts=0, error="not configured"
                )
            ahead = await store.waiting_before(self.engine, row["id"], payload.incident_id, channel)
            if ahead is not None:
                reason = f"queued behind delivery {ahead} of the same incident, being retried"
                queued = await self._finish(
                    row, payload, status="retrying", attempts=0, error=reason, due=utcnow()
                )
                return queued | {"status": "queued", "reason": reason}
            attempts, outcome = await self._try(channel, payload, message, key)
            return await self._record(row, payload, attempts, outcome)

    async def _try(
        self, channel: Channel, payload: Notify, message: Rendered, key: str
    ) -> tuple[int, Sent | ChannelError]:
        """Send, retrying transient failures in the call; the attempts made and the outcome."""
        attempts = 0
        while True:
            attempts += 1
            outcome = await self._attempt(channel, payload, message, key, attempts)
            if isinstance(outcome, Sent) or not outcome.transient:
                return attempts, outcome
            if attempts > self.settings.notify_retries:
                return attempts, outcome  # not given up: _record queues it for redelivery
            delay = min(
                self.settings.notify_backoff_max_s,
                self.settings.notify_backoff_s * 2 ** (attempts - 1),
            )
            await self.sleep(max(delay, min(outcome.retry_after or 0.0, 60.0)))

    async def _attempt(
        self, channel: Channel, payload: Notify, message: Rendered, key: str, attempt: int
    ) -> Sent | ChannelError:
        try:
            sent = await self._send_once(channel, payload, message, key)
        except ChannelError as exc:
            self.metrics.attempts.labels(channel, "transient" if exc.transient else "final").inc()
            log.warning(
                "notification attempt failed",
                channel=channel,
                incident_id=payload.incident_id,
                attempt=attempt,
                transient=exc.transient,
                error=str(exc),
            )
            return exc
        self.metrics.attempts.labels(channel, "ok").inc()
        return sent

    async def _record(
        self, row: dict[str, Any], payload: Notify, attempts: int, outcome: Sent | ChannelError
    ) -> dict[str, Any]:
        """Log and report a try's outcome; a transient failure is retried later, not given up."""
        if isinstance(outcome, Sent):
            return await self._finish(row, payload, status="sent", attempts=attempts, sent=outcome)
        error = str(outcome)
        max_age = timedelta(seconds=self.scaled(self.settings.notify_redelivery_max_age_s))
        if not outcome.transient or utcnow() - row["created_at"] >= max_age:
            status = "abandoned" if outcome.transient else "failed"
            return await self._finish(row, payload, status=status, attempts=attempts, error=error)
        cap = self.scaled(self.settings.notify_redelivery_backoff_max_s)
        base = self.scaled(self.settings.notify_redelivery_backoff_s)
        delay = max(
            backoff_delay(min(attempts - 1, 32), base=base, cap=cap),
            min(outcome.retry_after or 0.0, cap),
        )
        return await self._finish(
            row,
            payload,
            status="retrying",
            attempts=attempts,
            error=error,
            due=utcnow() + timedelta(seconds=delay),
        )

    async def _finish(
        self,
        row: dict[str, Any],
        payload: Notify,
        *,
        status: str,
        attempts: int,
        error: str | None = None,
        sent: Sent | None = None,
        due: datetime | None = None,
    ) -> dict[str, Any]:
        """Log the row's new state; report it unless the row was already waiting to be retried
        (a redelivery that fails again changes only its schedule)."""
        channel: Channel = row["channel"]
        external_id = sent.external_id if sent else None
        await store.finish(
            self.engine,
            row["id"],
            status=status,
            attempts=attempts,
            error=error,
            external_id=external_id,
            next_attempt_at=due,
            payload=payload.model_dump(mode="json") if status == "retrying" else None,
        )
        result: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "external_id": external_id,
            "error": error,
            **(sent.info if sent else {}),
        }
        if due is not None:
            result["next_attempt_at"] = due.isoformat()
            if row["status"] == "retrying":
                return result
            self.wake()
        self.metrics.deliveries.labels(channel, status).inc()
        await self.outbox.put(
            AUDIT_EVENT,
            AuditEvent(
                event_type="notification_sent",
                incident_id=payload.incident_id,
                source_agent="notify",
                details={
                    "channel": channel,
                    "status": status,
                    "event": payload.event,
                    "severity": payload.severity,
                    "tier": payload.tier,
                    "attempts": attempts,
                    "external_id": external_id,
                    "error": error,
                },
            ),
            key=f"notify-audit:{row['dedup_key']}:{channel}:{status}",
            incident_id=payload.incident_id,
        )
        return result

    # --- redelivery --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # Cleared before the pass, not after: a row queued during the pass wakes the next.
            self._wake.clear()
            try:
                wait = await self.redeliver_due()
            except Exception:  # the loop must survive a database hiccup; it is logged
                log.exception("notification redelivery pass failed")
                wait = self.scaled(self.settings.notify_redelivery_backoff_s)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def redeliver_due(self) -> float:
        """Retry every (incident, channel) whose oldest waiting delivery is due; return the
        seconds until the next one is."""
        pairs = await store.retrying_pairs(self.engine)
        waits = await asyncio.gather(*(self._redeliver_pair(*pair) for pair in pairs))
        backlog = await store.backlog(self.engine)
        for channel in CHANNELS:
            self.metrics.backlog.labels(channel).set(backlog.get(channel, 0))
        idle = self.scaled(self.settings.notify_redelivery_backoff_max_s)
        return min([idle, *(w for w in waits if w is not None)])

    async def _redeliver_pair(self, incident_id: str | None, channel: str) -> float | None:
        """Oldest first; stop at the first delivery that is not due (or failed again)."""
        async with self._slots:
            while True:
                async with self._lock(incident_id, channel):
                    row = await store.next_retrying(self.engine, incident_id, channel)
                    if row is None:
                        return None
                    wait = (row["next_attempt_at"] - utcnow()).total_seconds()
                    if wait > 0:
                        return wait
                    await self._redeliver(row)

    async def _redeliver(self, row: dict[str, Any]) -> None:
        try:
            payload = Notify.model_validate(row["payload"])
        except ValidationError as exc:
            error = f"stored notification unreadable: {exc}"
            await store.finish(
                self.engine, row["id"], status="failed", attempts=row["attempts"], error=error
            )
            return
        message = render(payload, console_url=self.console_url)
        attempts = row["attempts"] + 1
        outcome = await self._attempt(row["channel"], payload, message, row["dedup_key"], attempts)
        await self._record(row, payload, attempts, outcome)

    def _lock(self, incident_id: str | None, channel: str) -> asyncio.Lock:
        """One delivery at a time per (incident, channel), so they land in order."""
        lock = self._locks.get((incident_id, channel))
        if lock is None:
            lock = self._locks[(incident_id, channel)] = asyncio.Lock()
        return lock

    async def _send_once(
        self, channel: Channel, payload: Notify, message: Rendered, key: str
    ) -> Sent:
        if channel == "webex" and self.channels.webex is not None:
            return await self.channels.webex.send(message)
        if channel == "email" and self.channels.email is not None:
            return await self.channels.email.send(message, key=key, incident_id=payload.incident_id)
        if channel == "servicenow" and self.channels.servicenow is not None:
            return await self._servicenow(self.channels.servicenow, payload, message)
        raise ChannelError(f"{channel} is not configured", transient=False)

    async def _servicenow(
        self, client: ServiceNowClient, payload: Notify, message: Rendered
    ) -> Sent:
        """Create the ServiceNow incident once per CXM incident (or adopt the one the ticket
        came from), then update, hold or resolve it."""
        if not payload.incident_id:
            raise ChannelError("a ServiceNow incident needs a CXM incident_id", transient=False)
        mapping = await store.mapping_for(self.engine, payload.incident_id)
        ref = servicenow_ref(payload)
        created_now = False
        if mapping is None and ref is not None:
            # The ticket came from this record: it is the one to update, never a second one.
            other = await store.mapping_by_ref(self.engine, sys_id=ref.sys_id, number=None)
            if other is not None:
                raise ChannelError(
                    f"ServiceNow {ref.number or ref.sys_id} already follows CXM incident "
                    f"{other['incident_id']}",
                    transient=False,
                )
            await store.save_mapping(
                self.engine,
                incident_id=payload.incident_id,
                sys_id=ref.sys_id,
                number=ref.number,
                state=None,
            )
            mapping = await store.mapping_for(self.engine, payload.incident_id)
            assert mapping is not None
        elif mapping is None:
            # A create whose answer was lost left an incident behind: find it, do not duplicate.
            found = await client.find_by_correlation(payload.incident_id)
            record = found or await client.create(self._create_fields(payload, message))
            created_now = found is None
            await store.save_mapping(
                self.engine,
                incident_id=payload.incident_id,
                sys_id=str(record["sys_id"]),
                number=_str(record.get("number")),
                state=_str(record.get("state")),
            )
            mapping = await store.mapping_for(self.engine, payload.incident_id)
            assert mapping is not None
        sys_id: str = mapping["sys_id"]
        number = mapping["number"]
        action = "created"
        if message.kind == "review":
            # Manual review: a person looks before it is resolved. On Hold says so in
            # ServiceNow's own terms; the note says why.
            fields: dict[str, Any] = {"state": "3"}
            if self.settings.servicenow_hold_reason:
                fields["hold_reason"] = self.settings.servicenow_hold_reason
            if not created_now:
                fields["work_notes"] = message.work_note
            await client.update(sys_id, fields)
            await store.update_mapping(self.engine, payload.incident_id, state="3")
            action = "on_hold"
        elif message.kind == "closed":
            if str(payload.details.get("resolution", "")).lower() == "escalated":
                await client.update(sys_id, {"work_notes": message.work_note})
                action = "updated"
            else:
                await client.update(
                    sys_id,
                    {
                        "state": "6",
                        "close_code": self.settings.servicenow_close_code,
                        "close_notes": message.work_note,
                    },
                )
                await store.update_mapping(
                    self.engine, payload.incident_id, state="6", resolved_by_cxm=True
                )
                action = "resolved"
        elif not created_now:
            fields = {"work_notes": message.work_note}
            if message.kind == "escalation":
                fields["urgency"] = "1"
            if ref is not None and mapping["state"] in (None, "1") and _works_on(payload, message):
                # CXM took the record up (a runbook runs, or it escalated): In Progress
                fields["state"] = "2"
            await client.update(sys_id, fields)
            if "state" in fields:
                await store.update_mapping(self.engine, payload.incident_id, state=fields["state"])
            action = "updated"
        return Sent(external_id=sys_id, info={"number": number, "action": action})

    def _create_fields(self, payload: Notify, message: Rendered) -> dict[str, Any]:
        level, _ = route(payload.severity, payload.tier, self.settings.notify_routing)
        impact, urgency = SNOW_IMPACT_URGENCY[level]
        fields: dict[str, Any] = {
            "short_description": message.subject[:160],
            "description": message.text,
            "impact": impact,
            "urgency": urgency,
            "category": self.settings.servicenow_category,
            "correlation_id": payload.incident_id,
            "correlation_display": "CXM",
            "work_notes": message.work_note,
        }
        if self.settings.servicenow_assignment_group:
            fields["assignment_group"] = self.settings.servicenow_assignment_group
        if self.settings.servicenow_caller_id:
            fields["caller_id"] = self.settings.servicenow_caller_id
        return fields


@dataclass(frozen=True)
class ServiceNowRef:
    """The ServiceNow record a ticket came from (``Notify.details["servicenow"]``)."""

    sys_id: str
    number: str | None


def servicenow_ref(payload: Notify) -> ServiceNowRef | None:
    """The record the notification's ticket came from, if it did; a malformed one is none."""
    raw = payload.details.get("servicenow")
    if not isinstance(raw, dict):
        return None
    sys_id, number = raw.get("sys_id"), raw.get("number")
    if not isinstance(sys_id, str) or not 0 < len(sys_id) <= 64:
        return None
    return ServiceNowRef(sys_id, number if isinstance(number, str) and number else None)


def _works_on(payload: Notify, message: Rendered) -> bool:
    """A notification saying CXM is working on the ticket: a session started, or escalated."""
    return message.kind == "escalation" or payload.details.get("status") == "in_progress"


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _answer_of(row: dict[str, Any]) -> dict[str, Any]:
    """The answer for a delivery this key already made (or queued) on this channel."""
    due = row["next_attempt_at"]
    return {
        "status": row["status"],
        "attempts": row["attempts"],
        "external_id": row["external_id"],
        "error": row["error"],
        "next_attempt_at": due.isoformat() if due else None,
        "duplicate": True,
    }

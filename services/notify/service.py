"""Deliver one notification: route it, render it, send each channel with retries, log and
report every outcome. A channel that fails is reported, never raised: the incident goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
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
from services.notify.settings import Channel, NotifySettings
from services.notify.templates import Rendered, render
from shared.logs import get_logger
from shared.models import AuditEvent, Notify
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
    """Routes, sends, retries, logs and reports; one per app, owned by its lifespan."""

    def __init__(
        self,
        *,
        settings: NotifySettings,
        engine: AsyncEngine,
        outbox: Outbox,
        channels: Channels,
        metrics: NotifyMetrics,
        console_url: str | None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.settings = settings
        self.engine = engine
        self.outbox = outbox
        self.channels = channels
        self.metrics = metrics
        self.console_url = console_url
        self.sleep = sleep

    async def notify(self, payload: Notify, *, key: str) -> dict[str, Any]:
        level, routed = route(payload.severity, payload.tier, self.settings.notify_routing)
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
        return {
            "incident_id": payload.incident_id,
            "event": payload.event,
            "template": message.kind,
            "level": level,
            "channels": dict(zip(routed, outcomes, strict=True)),
        }

    async def _deliver(
        self, channel: Channel, payload: Notify, message: Rendered, key: str
    ) -> dict[str, Any]:
        previous = await store.claim(
            self.engine,
            key=key,
            channel=channel,
            incident_id=payload.incident_id,
            event=payload.event,
        )
        if previous is not None and previous["status"] == "sent":
            # Same idempotency key, channel already delivered: a retry after a partial
            # failure or a crash must not send it twice.
            return {
                "status": "sent",
                "attempts": previous["attempts"],
                "external_id": previous["external_id"],
                "duplicate": True,
            }
        if not self.settings.configured(channel):
            return await self._finish(
                channel, payload, key, status="skipped", attempts=0, error="not configured"
            )
        attempts = 0
        error: str | None = None
        sent: Sent | None = None
        for attempt in range(1 + self.settings.notify_retries):
            attempts = attempt + 1
            try:
                sent = await self._send_once(channel, payload, message, key)
            except ChannelError as exc:
                error = str(exc)
                self.metrics.attempts.labels(
                    channel, "transient" if exc.transient else "final"
                ).inc()
                log.warning(
                    "notification attempt failed",
                    channel=channel,
                    incident_id=payload.incident_id,
                    attempt=attempts,
                    transient=exc.transient,
                    error=error,
                )
                if not exc.transient or attempt == self.settings.notify_retries:
                    break
                delay = min(
                    self.settings.notify_backoff_max_s,
                    self.settings.notify_backoff_s * 2**attempt,
                )
                await self.sleep(max(delay, min(exc.retry_after or 0.0, 60.0)))
                continue
            self.metrics.attempts.labels(channel, "ok").inc()
            break
        if sent is None:
            return await self._finish(
                channel, payload, key, status="failed", attempts=attempts, error=error
            )
        return await self._finish(
            channel,
            payload,
            key,
            status="sent",
            attempts=attempts,
            external_id=sent.external_id,
            info=sent.info,
        )

    async def _finish(
        self,
        channel: Channel,
        payload: Notify,
        key: str,
        *,
        status: str,
        attempts: int,
        error: str | None = None,
        external_id: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        await store.finish(
            self.engine,
            key=key,
            channel=channel,
            status=status,
            attempts=attempts,
            error=error,
            external_id=external_id,
        )
        self.metrics.deliveries.labels(channel, status).inc()
        result: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "external_id": external_id,
            "error": error,
            **(info or {}),
        }
        await self.outbox.put(
            "audit",
            "audit_event",
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
            key=f"notify-audit:{key}:{channel}:{status}",
            incident_id=payload.incident_id,
        )
        return result

    async def _send_once(
        self, channel: Channel, payload: Notify, message: Rendered, key: str
    ) -> Sent:
        if channel == "webex":
            assert self.channels.webex is not None
            return await self.channels.webex.send(message)
        if channel == "email":
            assert self.channels.email is not None
            return await self.channels.email.send(message, key=key, incident_id=payload.incident_id)
        return await self._servicenow(payload, message)

    async def _servicenow(self, payload: Notify, message: Rendered) -> Sent:
        """Create the ServiceNow incident once per CXM incident, then update or resolve it."""
        client = self.channels.servicenow
        assert client is not None
        if not payload.incident_id:
            raise ChannelError("a ServiceNow incident needs a CXM incident_id", transient=False)
        mapping = await store.mapping_for(self.engine, payload.incident_id)
        created_now = False
        if mapping is None:
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
        if message.kind == "closed":
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
            fields: dict[str, Any] = {"work_notes": message.work_note}
            if message.kind == "escalation":
                fields["urgency"] = "1"
            await client.update(sys_id, fields)
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


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)

"""Notification agent: Webex, ServiceNow and Email delivery routed by severity and tier.

Task ``notify`` (``shared.models.Notify``) answers 200 with one result per routed channel;
``GET /api/v1/deliveries`` is the delivery log; ``POST /api/v1/servicenow/webhook`` takes
ServiceNow's changes back into CXM. Outcomes are audited through the outbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Query

from services.notify import store
from services.notify.service import Channels, Notifier, NotifyMetrics
from services.notify.settings import NotifySettings
from services.notify.webhook import router as webhook_router
from shared.agent import AgentSpec, EngineDep, TaskContext
from shared.contracts import NOTIFY
from shared.models import Notify, NotifyResult
from shared.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["deliveries"])


@router.get("/deliveries")
async def deliveries(
    engine: EngineDep,
    incident_id: str | None = None,
    channel: str | None = None,
    status: str | None = None,
    limit: int = Query(default=500, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """The delivery log: one row per (notification, channel), oldest first."""
    return await store.list_deliveries(
        engine, incident_id=incident_id, channel=channel, status=status, limit=limit
    )


@asynccontextmanager
async def _resources(app: FastAPI) -> AsyncIterator[None]:
    notify_settings: NotifySettings = app.state.notify_settings
    settings: Settings = app.state.settings
    channels = Channels.from_settings(notify_settings)
    notifier = Notifier(
        settings=notify_settings,
        engine=app.state.engine,
        outbox=app.state.outbox,
        channels=channels,
        metrics=app.state.notify_metrics,
        console_url=notify_settings.console_url or settings.io_url,
        scaled=settings.scaled,
    )
    app.state.notifier = notifier
    notifier.start()
    try:
        yield
    finally:
        await notifier.stop()
        await channels.aclose()


def build_spec() -> AgentSpec:
    """A fresh spec per app: nothing is built at import."""
    spec = AgentSpec(
        name="notify",
        title="Notification",
        description="Webex, ServiceNow and Email delivery routed by severity and tier",
        migrations=store.MIGRATIONS,
        resources=_resources,
        outbox=True,
    )
    spec.include_router(router)
    spec.include_router(webhook_router)

    @spec.serve(NOTIFY)
    async def notify(payload: Notify, ctx: TaskContext) -> NotifyResult:
        notifier: Notifier = ctx.state.notifier
        return await notifier.notify(payload, key=ctx.idempotency_key or f"task:{ctx.task_id}")

    return spec


def create_app(
    settings: Settings,
    notify_settings: NotifySettings | None = None,
    *,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The agent; ``notify_settings`` default to the environment; tests pass a mesh transport."""
    app = build_spec().create_app(settings, mesh_transport=mesh_transport)
    app.state.notify_settings = notify_settings or NotifySettings()
    app.state.notify_metrics = NotifyMetrics(app.state.metrics.registry)
    return app

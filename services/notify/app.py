"""Notification agent: Webex, ServiceNow and Email delivery routed by severity and tier."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="notify",
    title="Notification",
    description="Webex, ServiceNow and Email delivery routed by severity and tier",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

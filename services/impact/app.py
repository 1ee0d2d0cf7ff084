"""Service Impact agent: Affected services and SLA tiers from CNC service health."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="impact",
    title="Service Impact",
    description="Affected services and SLA tiers from CNC service health",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

"""Restoration Monitor agent: SLA recovery checks, hold timers, gradual cutover, cleanup."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="restore",
    title="Restoration Monitor",
    description="SLA recovery checks, hold timers, gradual cutover, cleanup",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

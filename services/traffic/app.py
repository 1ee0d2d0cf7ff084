"""Traffic Analytics agent: Link utilisation, demand matrix, congestion prediction."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="traffic",
    title="Traffic Analytics",
    description="Link utilisation, demand matrix, congestion prediction",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

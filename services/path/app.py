"""Path Computation agent: Topology knowledge graph and constrained shortest paths."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="path",
    title="Path Computation",
    description="Topology knowledge graph and constrained shortest paths",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

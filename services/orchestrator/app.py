"""Orchestrator agent: LangGraph incident state machine, approvals, timers."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="orchestrator",
    title="Orchestrator",
    description="LangGraph incident state machine, approvals, timers",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

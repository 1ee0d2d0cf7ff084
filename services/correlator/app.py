"""Event Correlator agent: ingestion, dedup, correlation, dampening, silences, triage."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="correlator",
    title="Event Correlator",
    description="Ingestion, dedup, correlation, flap dampening, silences, false-positive triage",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

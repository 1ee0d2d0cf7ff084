"""Audit agent: Durable, verifiable event log, search and compliance reports."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="audit",
    title="Audit",
    description="Durable, verifiable event log, search and compliance reports",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

"""Tunnel Provisioning agent: SR-MPLS, SRv6 and RSVP-TE protection tunnels via the CNC PCE."""

from __future__ import annotations

from fastapi import FastAPI

from shared.agent import AgentSpec
from shared.settings import Settings

spec = AgentSpec(
    name="tunnel",
    title="Tunnel Provisioning",
    description="SR-MPLS, SRv6 and RSVP-TE protection tunnels via the CNC PCE",
)


def create_app(settings: Settings) -> FastAPI:
    return spec.create_app(settings)

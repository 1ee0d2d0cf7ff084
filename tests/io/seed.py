"""The seed incident told in full, for tests that need a realistic amount of it: the tasks the
orchestrator sends IO from phase 2 to the close, and what the audit agent answers for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.models import utcnow
from tests.io.fakes import INCIDENT, TUNNEL_PATH, closed, seed_phases, status


def seed_flow(incident: str = INCIDENT) -> list[dict[str, Any]]:
    """The seed incident from the first phase change to its close, as the orchestrator sends it:
    impact, path, tunnel, steering, a dozen SLA checks, the cutover steps, cleanup and close."""
    tunnel = "sr-policy-pe1-pe4-protect-001"
    services = [f"svc-{n:03d}" for n in range(1, 16)]
    flow = seed_phases(incident)
    flow.append(
        status(
            incident,
            "steering",
            "5",
            f"Traffic steered onto {tunnel}, monitoring SLA",
            traffic_steered=True,
            tunnel_id=tunnel,
            service_ids=services,
            not_steered=[],
        )
    )
    for check in range(1, 13):
        flow.append(
            status(
                incident,
                "monitoring",
                "6",
                f"SLA check {check}: within SLA, hold timer running",
                within_sla=True,
                links={
                    "pe1-pe2": {"delay_ms": 14.2, "loss_pct": 0.0, "jitter_ms": 1.1},
                    "pe2-pe3": {"delay_ms": 13.9, "loss_pct": 0.0, "jitter_ms": 0.9},
                },
                hold_until=utcnow().isoformat(),
                checks=check,
            )
        )
    for step, (protection, original) in enumerate(((75, 25), (50, 50), (25, 75), (0, 100)), 1):
        flow.append(
            status(
                incident,
                "restoring",
                "7",
                f"Cutover {protection}/{original} (protection/original)",
                step=step,
                steps=4,
                protection_pct=protection,
                original_pct=original,
                within_sla=True,
                applied=services,
                reverted=[],
                tunnel_id=tunnel,
            )
        )
    flow.append(
        status(
            incident,
            "restoring",
            "7",
            f"Traffic back on the original path; tunnel {tunnel} removed",
            tunnel_id=tunnel,
            cleanup=True,
            protection_pct=0,
            original_pct=100,
        )
    )
    flow.append(closed(incident))
    return flow


def seed_audit(incident: str = INCIDENT) -> list[dict[str, Any]]:
    """The audit agent's answer for the seed flow: ~30 events whose details are long JSON."""
    now = utcnow()
    services = [f"svc-{n:03d}" for n in range(1, 16)]
    kinds: list[tuple[str, str, dict[str, Any]]] = [
        ("incident_created", "event_correlator", {"links": ["pe1-pe2", "pe2-pe3"], "alerts": 2}),
        ("state_change", "orchestrator", {"from": "new", "to": "assessing", "phase": "2"}),
        (
            "impact_assessed",
            "orchestrator",
            {"services": services, "services_by_tier": {"platinum": 2, "gold": 5, "silver": 8}},
        ),
        (
            "path_computed",
            "orchestrator",
            {
                "path": TUNNEL_PATH,
                "links": ["pe1-p1", "p1-pe4", "pe4-p2", "p2-pe3"],
                "avoid_links": ["pe1-pe2", "pe2-pe3"],
                "constraints": {"metric": "delay", "max_delay_ms": 40, "exclude_srlg": [101]},
            },
        ),
        (
            "tunnel_provisioned",
            "orchestrator",
            {
                "tunnel_id": "sr-policy-pe1-pe4-protect-001",
                "binding_sid": 24001,
                "segment_list": [16001, 16011, 16004, 16012, 16003],
                "path": TUNNEL_PATH,
            },
        ),
        ("traffic_steered", "orchestrator", {"service_ids": services, "not_steered": []}),
    ]
    events: list[dict[str, Any]] = []
    for n in range(30):
        kind, agent, details = kinds[n % len(kinds)]
        events.append(
            {
                "seq": n + 1,
                "hash": f"{n:064x}",
                "event_type": kind,
                "incident_id": incident,
                "source_agent": agent,
                "occurred_at": (now + timedelta(seconds=n)).isoformat(),
                "details": {**details, "step": n + 1},
            }
        )
    return events

"""Issue 17's protection sweep, short: real topologies, real processes, outcomes by reason.

``bench/sweep.py`` fails several disjoint single links, one after the other, on every SNDlib
network and 50 Topology Zoo networks; this runs the same code on three networks with two faults
each, so that ``make test`` catches a regression in how incidents end, not only in how they
start:

- ``sndlib/polska``: the small national network the issue's first sweep resolved entirely;
- ``sndlib/nobel-eu``: larger (28 nodes), with SRv6 and RSVP-TE regions around the core, so
  the groups' ends do not all share every TE technology;
- ``topozoo/Aarnet``: a Topology Zoo graph, which has no demand matrix (the lab samples the
  services), with long-haul links across Australia.

The percentages of the full sweep (every SNDlib network, 50 Zoo ones) are in
docs/benchmarks.md. Asserted here: every incident ends, none in a failed operation, every
no-path escalation is confirmed by an independent search, the issue's goal (at least 90 %
resolved where the link's ends stay connected without it) and every hurt service steered
onto a protection policy. The whole mesh starts once; between networks only the lab restarts
(see ``bench.sweep``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.sweep import NOT_AN_OPERATION, sweep

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-sweep"), pytest.mark.timeout(900)]

NETWORKS = ["sndlib/polska", "sndlib/nobel-eu", "topozoo/Aarnet"]
FAULTS = 2
TARGET_PCT = 90.0
"""The issue's goal: where a failed link's ends stay connected without it, ≥ 90 % resolve."""


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return sweep(
        NETWORKS,
        faults=FAULTS,
        env={"CXM_TIME_SCALE": "0.02", "CXM_LOG_LEVEL": "WARNING"},
        network_timeout_s=400.0,
    )


def test_every_fault_opens_an_incident_that_ends(result: dict[str, Any]) -> None:
    errors = [n for n in result["networks"] if "error" in n or "skipped" in n]
    assert not errors, errors
    totals = result["totals"]
    assert totals["faults"] == FAULTS * len(NETWORKS), totals
    assert totals["incidents"] == totals["faults"], totals
    assert totals["timed_out"] == 0, totals


def test_no_incident_ends_in_a_failed_operation(result: dict[str, Any]) -> None:
    failed = [
        (n["network"], o["link"], o["errors"], o["message"])
        for n in result["networks"]
        for o in n.get("outcomes", [])
        if any(code not in NOT_AN_OPERATION for code in o["errors"])
    ]
    assert not failed, failed


def test_every_no_path_escalation_is_verified(result: dict[str, Any]) -> None:
    """A plain graph search under the same constraints agrees that no path existed."""
    totals = result["totals"]
    detail = [
        (n["network"], o["link"], o["no_path_checks"], o["message"])
        for n in result["networks"]
        for o in n.get("outcomes", [])
        if o["reason"] == "no_path"
    ]
    assert totals["no_path_unchecked"] == 0, detail
    assert totals["no_path_contradicted"] == 0, detail
    assert totals["no_path_verified"] == totals["no_path_checks"], detail


def test_resolved_share_meets_the_goal(result: dict[str, Any]) -> None:
    pct = result["totals"]["resolved_pct_where_connected"]
    assert pct is not None and pct >= TARGET_PCT, result["totals"]


def test_every_hurt_service_is_protected(result: dict[str, Any]) -> None:
    """Resolved is not enough: an incident resolves once the link recovers, protected or not."""
    totals = result["totals"]
    assert totals["services_protected"] == totals["services_hurt"] > 0, totals

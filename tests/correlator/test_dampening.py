"""RFC 2439-style dampening: a flapping link is suppressed, then reused after decay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.correlator.conftest import AUTH
from tests.correlator.payloads import skylight


async def _pca(h: Any, link: str, state: str = "raised") -> dict[str, Any]:
    r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, link, state=state))
    assert r.status_code == 202, r.text
    entry: dict[str, Any] = r.json()["alerts"][0]
    return entry


async def test_flap_before_emission_starts_incident_dampened_then_resumes(harness: Any) -> None:
    async with harness() as h:
        first = await _pca(h, "pe1-pe2")
        h.clock.advance(0.5)
        assert (await _pca(h, "pe1-pe2", "cleared"))["disposition"] == "correlated"
        h.clock.advance(0.5)
        third = await _pca(h, "pe1-pe2")
        assert third["disposition"] == "dampened"
        assert third["incident_id"] == first["incident_id"]
        await h.elapse(2.5)
        (start,) = await h.delivered("orchestrator", "start_incident")
        until = datetime.fromisoformat(start["dampened_until"])
        # penalty ≈ 2000 decays to the reuse threshold 750 after ≈ 60 s * log2(2000/750) ≈ 85 s
        assert 80 < (until - h.clock.now).total_seconds() < 90
        # More alerts while suppressed are dampened, not new incidents.
        h.clock.advance(1)
        assert (await _pca(h, "pe1-pe2", "cleared"))["disposition"] == "dampened"
        h.clock.advance(1)
        assert (await _pca(h, "pe1-pe2"))["disposition"] == "dampened"
        # Flapping on extends the dampening: the orchestrator hears the later end.
        extend = (await h.delivered("orchestrator", "incident_signal"))[0]
        assert extend["signal"] == "dampen"
        assert datetime.fromisoformat(extend["until"]) > until
        await h.elapse(30)
        await h.flush()
        assert all(s["signal"] == "dampen" for s in h.peers.of("orchestrator", "incident_signal"))
        await h.elapse(400)  # past the maximum suppression, whatever the penalty
        await h.flush()
        signals = h.peers.of("orchestrator", "incident_signal")
        assert signals[-1]["signal"] == "resume"
        assert signals[-1]["incident_id"] == first["incident_id"]


async def test_open_incident_gets_dampen_signal_and_resume_after_decay(harness: Any) -> None:
    async with harness() as h:
        first = await _pca(h, "pe2-pe3")
        await h.elapse(3.1)
        await h.delivered("orchestrator", "start_incident")
        await _pca(h, "pe2-pe3", "cleared")
        damp = await _pca(h, "pe2-pe3")
        assert damp["disposition"] == "dampened"
        signals = await h.delivered("orchestrator", "incident_signal", 2)
        (signal,) = [s for s in signals if s["signal"] == "dampen"]
        assert signal["incident_id"] == first["incident_id"] and signal["links"] == ["pe2-pe3"]
        assert signal["until"]
        corr = h.corr
        assert corr.flaps["pe2-pe3"].suppressed
        await h.elapse(60)  # penalty 2000 → 1000: still above reuse (750)
        assert corr.flaps["pe2-pe3"].suppressed
        await h.elapse(30)  # → ≈ 707 < 750: reusable
        assert not corr.flaps["pe2-pe3"].suppressed
        signals = await h.delivered("orchestrator", "incident_signal", 3)
        assert [s["signal"] for s in signals] == ["cleared", "dampen", "resume"]
        # Flapping straight after reuse suppresses again (RFC 2439); a quiet link does not.
        await h.elapse(300)
        assert (await _pca(h, "pe2-pe3", "cleared"))["disposition"] == "correlated"


def test_penalty_math_follows_rfc2439() -> None:
    from datetime import UTC, timedelta

    from services.correlator.dampening import DampeningParams, LinkFlapState

    p = DampeningParams(
        penalty=1000, half_life_s=900, suppress=2000, reuse=750, max_suppress_s=3600
    )
    assert p.ceiling == 750 * 2**4
    t0 = datetime(2026, 1, 19, 10, 30, tzinfo=UTC)
    s = LinkFlapState(link="pe1-pe2")
    assert s.record(True, t0, p) is False  # first state: not a flap
    assert s.record(False, t0, p) is False  # 1000
    assert s.record(True, t0, p) is True  # 2000 → suppressed
    assert abs(s.decayed(t0 + timedelta(seconds=900), p) - 1000) < 1e-6
    assert not s.reusable(t0 + timedelta(seconds=900), p)
    later = t0 + timedelta(seconds=900 * 1.5)
    assert s.reusable(later, p)


async def test_related_links_flapping_again_share_one_dampened_incident(harness: Any) -> None:
    """After their incident closed, two links with a common node flap on: one incident."""
    async with harness() as h:
        first = await _pca(h, "pe1-pe2")
        await _pca(h, "pe2-pe3")
        await h.elapse(3.1)
        await h.delivered("orchestrator", "start_incident")
        h.clock.advance(1)
        await _pca(h, "pe1-pe2", "cleared")
        await _pca(h, "pe2-pe3", "cleared")
        closed = {
            "incident_id": first["incident_id"],
            "resolution": "escalated",
            "degraded_links": ["pe1-pe2", "pe2-pe3"],
        }
        r = await h.client.post(
            "/a2a/tasks", json={"task_type": "incident_closed", "payload": closed}, headers=AUTH
        )
        assert r.json()["result"]["closed"] is True
        h.clock.advance(1)
        again = [await _pca(h, "pe1-pe2"), await _pca(h, "pe2-pe3")]
        assert [a["disposition"] for a in again] == ["dampened", "dampened"]
        assert again[0]["incident_id"] != first["incident_id"]
        assert again[1]["incident_id"] == again[0]["incident_id"]
        await h.elapse(3.1)
        (_, start) = await h.delivered("orchestrator", "start_incident", 2)
        assert sorted(start["degraded_links"]) == ["pe1-pe2", "pe2-pe3"]
        assert start["dampened_until"]

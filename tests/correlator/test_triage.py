"""False-positive triage: the transparent classifier, auto-close, and the LLM refinement."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx

from services.correlator.triage import Evidence, classify
from tests.correlator.conftest import AUTH
from tests.correlator.payloads import skylight

LLM = "http://llm.test/v1"


def test_classifier_is_transparent() -> None:
    blip = classify(Evidence(values=[(45.0, 50.0)], fingerprints=1, sources=1, links=1))
    assert blip.classification == "false_positive" and blip.confidence >= 0.8
    assert any("below its threshold" in r for r in blip.reasons)
    real = classify(
        Evidence(
            values=[(120.0, 50.0), (90.0, 50.0)],
            fingerprints=2,
            sources=2,
            links=2,
            durations_s=[600],
        )
    )
    assert real.classification == "true_positive" and real.confidence >= 0.9
    unsure = classify(Evidence(values=[(60.0, 50.0)], fingerprints=1, sources=1, links=1))
    assert unsure.classification == "uncertain"


async def test_false_positive_auto_closes(harness: Any) -> None:
    async with harness() as h:
        r = await h.post(
            "/api/v1/tickets/webhook/pca",
            skylight(h.clock.now, "pe1-pe4", triggered=45.0, violation_ms=8000),
        )
        incident = r.json()["alerts"][0]["incident_id"]
        await h.elapse(3.1)
        (closed,) = await h.delivered("io", "ticket_closed")
        tasks = [t for a, t, _ in h.peers.tasks if a == "io"]
        assert tasks == ["new_ticket", "ticket_closed"]
        assert closed["incident_id"] == incident
        assert closed["resolution"] == "false_positive"
        assert closed["details"]["triage"]["classification"] == "false_positive"
        assert closed["details"]["triage"]["confidence"] >= 0.8
        await h.flush()
        assert h.peers.of("orchestrator") == []
        rows = (await h.client.get("/api/v1/alerts", params={"incident_id": incident})).json()
        assert [r["disposition"] for r in rows] == ["false_positive"]
        incidents = (await h.client.get("/api/v1/incidents")).json()
        assert incidents[0]["status"] == "closed" and incidents[0]["resolution"] == "false_positive"
        # The same weak signal again soon after is recognised at once.
        h.clock.advance(5)
        r = await h.post(
            "/api/v1/tickets/webhook/pca",
            skylight(h.clock.now, "pe1-pe4", triggered=44.0, policy="other", violation_ms=5000),
        )
        entry = r.json()["alerts"][0]
        assert entry["disposition"] == "false_positive" and entry["incident_id"] == incident


async def test_blip_cleared_within_group_wait_is_false_positive(harness: Any) -> None:
    async with harness() as h:
        await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "p9-p10"))
        h.clock.advance(1)
        await h.post(
            "/api/v1/tickets/webhook/pca", skylight(h.clock.now, "p9-p10", state="cleared")
        )
        await h.elapse(2.5)
        (closed,) = await h.delivered("io", "ticket_closed")
        assert any("transient blip" in r for r in closed["details"]["triage"]["reasons"])


def _chat(content: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(content)},
                    "finish_reason": "stop",
                }
            ],
        },
    )


async def test_llm_refines_the_verdict(harness: Any) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{LLM}/chat/completions").mock(
            return_value=_chat(
                {
                    "classification": "false_positive",
                    "confidence": 0.91,
                    "reasons": ["known probe artefact on this link"],
                }
            )
        )
        async with harness(llm_base_url=LLM, llm_api_key="sk-test", llm_model="m1") as h:
            await h.post(
                "/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe4", triggered=60)
            )
            await h.elapse(3.1)
            (closed,) = await h.delivered("io", "ticket_closed")
        triage = closed["details"]["triage"]
        assert triage["method"] == "llm" and triage["confidence"] == 0.91
        assert triage["classifier"]["classification"] == "true_positive"  # overridden
        sent = json.loads(route.calls.last.request.content)
        assert sent["model"] == "m1" and sent["response_format"] == {"type": "json_object"}
        assert route.calls.last.request.headers["authorization"] == "Bearer sk-test"


async def test_llm_failure_keeps_the_classifier(harness: Any) -> None:
    with respx.mock() as mock:
        mock.post(f"{LLM}/chat/completions").mock(return_value=httpx.Response(500))
        async with harness(llm_base_url=LLM) as h:
            await h.post(
                "/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe4", triggered=60)
            )
            await h.elapse(3.1)
            (start,) = await h.delivered("orchestrator", "start_incident")
        assert start["triage"]["method"] == "classifier"
        assert any("LLM refinement unavailable" in r for r in start["triage"]["reasons"])


async def test_recurrence_after_a_confirmed_incident_is_not_a_flap(harness: Any) -> None:
    """Raise, clear and raise again look like a flap; after a resolved incident they are not.

    The same weak second alert would otherwise score +1 for "flapped recently" and close
    automatically (p ≈ 0.88); a link that degrades again soon after a real incident is sick.
    """
    weak: dict[str, Any] = {"triggered": 60.0, "violation_ms": 20000}
    async with harness() as h:
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe4", **weak))
        first = r.json()["alerts"][0]["incident_id"]
        await h.elapse(3.1)
        (started,) = await h.delivered("orchestrator", "start_incident")
        assert started["incident_id"] == first
        h.clock.advance(20)
        await h.post(
            "/api/v1/tickets/webhook/pca",
            skylight(h.clock.now, "pe1-pe4", state="cleared", **weak),
        )
        closed = {"incident_id": first, "resolution": "resolved", "degraded_links": ["pe1-pe4"]}
        r = await h.client.post(
            "/a2a/tasks", json={"task_type": "incident_closed", "payload": closed}, headers=AUTH
        )
        assert r.json()["result"]["closed"] is True

        h.clock.advance(150)  # penalty ≈ 1300 after this raise: below suppress, still history
        r = await h.post("/api/v1/tickets/webhook/pca", skylight(h.clock.now, "pe1-pe4", **weak))
        again = r.json()["alerts"][0]
        assert again["disposition"] == "new_incident" and again["incident_id"] != first
        await h.elapse(3.1)
        starts = await h.delivered("orchestrator", "start_incident", count=2)
        assert starts[1]["incident_id"] == again["incident_id"]
        triage = starts[1]["triage"]
        assert triage["classification"] != "false_positive"
        assert any(f"confirmed incident {first}" in reason for reason in triage["reasons"])
        assert not any("flapped" in reason for reason in triage["reasons"])

"""False-positive triage (seed 000): false_positive | true_positive | uncertain, with a confidence.

The default classifier is transparent: each piece of evidence adds a named weight to the
log-odds that the incident is a false positive, and every weight that applied is returned as
a reason. Evidence: the alerts already cleared (a blip), magnitude against the threshold,
how long the violation lasted, the link's flap history, corroboration by other alerts,
sources and links, and a maintenance window that just ended. An OpenAI-compatible model can
refine the verdict; if it fails, the classifier's verdict stands and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, ValidationError

from shared.logs import get_logger

log = get_logger(__name__)

Classification = Literal["false_positive", "true_positive", "uncertain"]
PRIOR_LOG_ODDS = -0.5
"""Most alerts that survive dedup, silences and dampening are real."""


class Triage(BaseModel):
    classification: Classification
    confidence: float = Field(ge=0, le=1)
    reasons: list[str]
    method: Literal["classifier", "llm"] = "classifier"
    fp_probability: float = Field(ge=0, le=1)
    classifier: dict[str, Any] | None = None
    """With ``method == "llm"``: the classifier's own verdict, kept for comparison."""


@dataclass
class Evidence:
    """What the correlator knows about an incident when it is about to be emitted."""

    values: list[tuple[float | None, float | None]] = field(default_factory=list)
    """(measured value, threshold) of each firing alert."""
    durations_s: list[float] = field(default_factory=list)
    fingerprints: int = 0
    sources: int = 0
    links: int = 0
    all_cleared: bool = False
    flap_changes: int = 0
    maintenance_recent: list[str] = field(default_factory=list)
    severity: str = "medium"
    recurs_after: list[str] = field(default_factory=list)
    """Incidents on the same links, closed as real (resolved or escalated) within the window."""


def classify(ev: Evidence) -> Triage:
    factors: list[tuple[float, str]] = []
    if ev.all_cleared:
        factors.append(
            (3.5, "every alert cleared before the incident was emitted: a transient blip")
        )
    ratios = [v / t for v, t in ev.values if v is not None and t not in (None, 0)]
    if ratios:
        worst = max(ratios)
        if worst < 1.0:
            factors.append((2.0, f"measured value below its threshold (ratio {worst:.2f})"))
        elif worst < 1.1:
            factors.append((1.0, f"marginal threshold crossing (ratio {worst:.2f})"))
        elif worst >= 2.0:
            factors.append((-1.5, f"far above threshold (ratio {worst:.2f})"))
        elif worst >= 1.5:
            factors.append((-1.0, f"well above threshold (ratio {worst:.2f})"))
    if ev.durations_s:
        longest = max(ev.durations_s)
        if longest < 30:
            factors.append((1.0, f"violation lasted only {longest:.0f}s"))
        elif longest >= 300:
            factors.append((-1.0, f"violation sustained for {longest:.0f}s"))
    if ev.recurs_after:
        # The state changes of a real incident's raise and clear are not a flap: a link that
        # degrades again soon after one is more likely sick than noisy.
        factors.append((-1.5, f"recurs soon after confirmed incident {', '.join(ev.recurs_after)}"))
    elif ev.flap_changes >= 2:
        factors.append((1.0, f"link flapped recently ({ev.flap_changes} state changes)"))
    if ev.sources >= 2:
        factors.append((-1.5, f"corroborated by {ev.sources} sources"))
    if ev.links >= 2:
        factors.append((-1.0, f"{ev.links} related links degraded together"))
    elif ev.fingerprints >= 2:
        factors.append((-0.5, f"{ev.fingerprints} distinct alerts on the link"))
    elif ev.fingerprints <= 1 and ev.sources <= 1:
        factors.append((0.5, "a single uncorroborated alert"))
    if ev.maintenance_recent:
        factors.append((1.5, f"maintenance window just ended ({', '.join(ev.maintenance_recent)})"))
    if ev.severity == "critical":
        factors.append((-0.5, "critical severity"))
    logit = PRIOR_LOG_ODDS + sum(w for w, _ in factors)
    p = 1.0 / (1.0 + math.exp(-logit))
    reasons = [f"{'+' if w > 0 else ''}{w:g} {text}" for w, text in factors] or [
        "no evidence either way"
    ]
    if p >= 0.6:
        return Triage(
            classification="false_positive",
            confidence=round(p, 3),
            reasons=reasons,
            fp_probability=round(p, 3),
        )
    if p <= 0.35:
        return Triage(
            classification="true_positive",
            confidence=round(1 - p, 3),
            reasons=reasons,
            fp_probability=round(p, 3),
        )
    return Triage(
        classification="uncertain",
        confidence=round(1 - 2 * abs(p - 0.5), 3),
        reasons=reasons,
        fp_probability=round(p, 3),
    )


class _LlmVerdict(BaseModel):
    classification: Classification
    confidence: float = Field(ge=0, le=1)
    reasons: list[str] = Field(default_factory=list)


SYSTEM_PROMPT = (
    "You triage network alerts for a service provider's NOC. Given an incident (links, alerts, "
    "flap history, maintenance) and a rule-based verdict, decide whether it is a false positive. "
    'Answer only JSON: {"classification": "false_positive"|"true_positive"|"uncertain", '
    '"confidence": 0..1, "reasons": [short strings]}.'
)


async def refine(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    model: str,
    api_key: str | None,
    incident: dict[str, Any],
    verdict: Triage,
    timeout_s: float,
) -> Triage:
    """Ask an OpenAI-compatible chat endpoint to refine the verdict; keep ours if it cannot."""
    body = {
        "model": model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": json.dumps(
                    {"incident": incident, "rule_verdict": verdict.model_dump()}, default=str
                ),
            },
        ],
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await http.post(
            f"{base_url.rstrip('/')}/chat/completions",
            json=body,
            headers=headers,
            timeout=timeout_s,
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        answer = _LlmVerdict.model_validate(json.loads(content))
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError, ValidationError) as exc:
        log.warning("LLM triage refinement failed; the classifier's verdict stands", error=str(exc))
        return verdict.model_copy(
            update={
                "reasons": [*verdict.reasons, f"LLM refinement unavailable: {type(exc).__name__}"]
            }
        )
    p = (
        answer.confidence
        if answer.classification == "false_positive"
        else (1 - answer.confidence if answer.classification == "true_positive" else 0.5)
    )
    return Triage(
        classification=answer.classification,
        confidence=answer.confidence,
        reasons=[
            *answer.reasons,
            f"classifier said {verdict.classification} ({verdict.confidence})",
        ],
        method="llm",
        fp_probability=round(p, 3),
        classifier=verdict.model_dump(),
    )

"""Runbook matching quality on a labelled set of tickets, as JSON.

    python -m bench.runbook_matching [--data bench/data/runbook_tickets.jsonl]

The tickets (``bench/data/runbook_tickets.jsonl``) are written the way they arrive:
Alertmanager summaries with their labels, ServiceNow short descriptions and descriptions,
Datadog titles, e-mails with typos, other languages' phrasing; each names the runbook of the
shipped library that should fix it, or ``none`` for NOC noise no runbook should take (a
report request, a maintenance notice, a link flap, a SAN volume, ...).

Figures, all over the shipped library with a fixed, made-up run history (some runbooks
popular, one poor, most new) so the history and recency factors are exercised:

- ``top1``/``top3``: among tickets that have a runbook, is it first / in the three offered.
- ``none``: precision and recall of ``none_likely`` against the ``none`` label, and
  ``end_to_end``: share of all tickets answered right (the right runbook not flagged
  ``none_likely``, or ``none_likely`` on a ``none`` ticket).
- ``calibration``: of the top matches that ``may_auto_run`` would start (per severity;
  critical never), the share that is the right runbook; and a reliability table (top-1
  confidence bins: count, mean confidence, share correct) with its expected calibration error.
- ``ablation``: the same figures with each text factor alone and with each factor removed.
  History and recency only scale textual relevance, so "alone" they cannot rank.
- ``weights``, the embedding model and its load time, and wall time per match.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.orchestrator.runbooks.catalog import DEFAULT_LIBRARY_DIR, load_directory
from services.orchestrator.runbooks.matching import (
    Embedder,
    Matcher,
    MatchSettings,
    RunStats,
    TicketText,
    load_embedder,
    may_auto_run,
)
from shared.models import utcnow

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "runbook_tickets.jsonl"
NOW = utcnow()
HISTORY: dict[str, RunStats] = {
    # Popular and reliable: the kind of runbook a history bias would push everywhere.
    "systemd-service-failed": RunStats(
        successes=180, runs=200, last_success_at=NOW - timedelta(hours=3)
    ),
    "http-health-endpoint-failing": RunStats(
        successes=45, runs=50, last_success_at=NOW - timedelta(days=1)
    ),
    "linux-disk-full": RunStats(successes=30, runs=40, last_success_at=NOW - timedelta(days=2)),
    # Often run, often failing.
    "k8s-pod-crashloop": RunStats(successes=4, runs=12, last_success_at=NOW - timedelta(days=90)),
    # Too few runs to count.
    "bgp-session-down": RunStats(successes=1, runs=1, last_success_at=NOW - timedelta(days=5)),
}


def load_tickets(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ticket_text(row: dict[str, Any]) -> TicketText:
    return TicketText(
        title=row["title"],
        description=row.get("description", ""),
        labels=row.get("labels", {}),
        severity=row.get("severity", "medium"),
        host=row.get("host"),
    )


def evaluate(
    matcher: Matcher, rows: list[dict[str, Any]], history: dict[str, RunStats]
) -> dict[str, Any]:
    """Every figure for one matcher over ``rows``."""
    top1 = top3 = with_runbook = 0
    tp = fp = fn = 0
    end_to_end = 0
    auto_total = auto_right = 0
    bins: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    per_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses: list[dict[str, Any]] = []
    times: list[float] = []
    for row in rows:
        ticket = ticket_text(row)
        started = time.perf_counter()
        result = matcher.match(ticket, history=history, now=NOW)
        times.append(time.perf_counter() - started)
        expected = row["expected"]
        best = result.matches[0]
        ids = [m.runbook_id for m in result.matches]
        right = expected != "none" and best.runbook_id == expected
        if expected != "none":
            with_runbook += 1
            top1 += right
            top3 += expected in ids
        if result.none_likely and expected == "none":
            tp += 1
        elif result.none_likely:
            fp += 1
        elif expected == "none":
            fn += 1
        answered_right = (expected == "none" and result.none_likely) or (
            right and not result.none_likely
        )
        end_to_end += answered_right
        per_source[row["source"]][0] += answered_right
        per_source[row["source"]][1] += 1
        if not answered_right and len(misses) < 40:
            misses.append(
                {
                    "id": row["id"],
                    "expected": expected,
                    "got": "none" if result.none_likely else best.runbook_id,
                    "confidence": best.confidence,
                    "title": row["title"][:70],
                }
            )
        if may_auto_run(best, ticket.severity, settings=matcher.settings)[0]:
            auto_total += 1
            auto_right += right
        bins[min(int(best.confidence * 5), 4)].append((best.confidence, right))
    table = []
    ece = 0.0
    for b in range(5):
        items = bins.get(b, [])
        if not items:
            continue
        mean_conf = statistics.fmean(c for c, _ in items)
        accuracy = sum(r for _, r in items) / len(items)
        ece += len(items) / len(rows) * abs(mean_conf - accuracy)
        table.append(
            {
                "bin": f"{b / 5:.1f}-{(b + 1) / 5:.1f}",
                "count": len(items),
                "mean_confidence": round(mean_conf, 3),
                "share_correct": round(accuracy, 3),
            }
        )
    return {
        "tickets": len(rows),
        "with_runbook": with_runbook,
        "top1": round(top1 / with_runbook, 4),
        "top3": round(top3 / with_runbook, 4),
        "none": {
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "flagged": tp + fp,
            "none_tickets": tp + fn,
        },
        "end_to_end": round(end_to_end / len(rows), 4),
        "calibration": {
            "auto_run_eligible": auto_total,
            "auto_run_share_correct": round(auto_right / auto_total, 4) if auto_total else None,
            "reliability": table,
            "expected_calibration_error": round(ece, 4),
        },
        "per_source_end_to_end": {k: round(v[0] / v[1], 3) for k, v in sorted(per_source.items())},
        "ms_per_match": {
            "mean": round(statistics.fmean(times) * 1000, 3),
            "p95": round(sorted(times)[int(0.95 * (len(times) - 1))] * 1000, 3),
        },
        "misses": misses,
    }


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "top1": figures["top1"],
        "top3": figures["top3"],
        "none_precision": figures["none"]["precision"],
        "none_recall": figures["none"]["recall"],
        "end_to_end": figures["end_to_end"],
        "auto_run_share_correct": figures["calibration"]["auto_run_share_correct"],
    }


def ablation(
    docs: list[Any], embedder: Embedder, base: MatchSettings, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each text factor alone and each factor removed, other settings unchanged."""
    zero = {
        "semantic": "weight_semantic",
        "keyword": "weight_keyword",
        "history": "weight_history",
        "recency": "weight_recency",
    }
    variants: dict[str, dict[str, float]] = {
        "semantic_alone": {"weight_keyword": 0, "weight_history": 0, "weight_recency": 0},
        "keyword_alone": {"weight_semantic": 0, "weight_history": 0, "weight_recency": 0},
    }
    for factor, field in zero.items():
        variants[f"without_{factor}"] = {field: 0}
    out: dict[str, Any] = {}
    for name, change in variants.items():
        settings = base.model_copy(update=change)
        matcher = Matcher(docs, embedder=embedder, settings=settings)
        out[name] = summary(evaluate(matcher, rows, HISTORY))
    out["history_alone"] = out["recency_alone"] = (
        "not a ranker by design: history and recency only scale textual relevance"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    rows = load_tickets(args.data)
    docs = load_directory(DEFAULT_LIBRARY_DIR)
    embedder = load_embedder()
    settings = MatchSettings()
    started = time.perf_counter()
    matcher = Matcher(docs, embedder=embedder, settings=settings)
    build_ms = (time.perf_counter() - started) * 1000
    figures = evaluate(matcher, rows, HISTORY)
    report = {
        "library": {"runbooks": len(docs), "dir": str(DEFAULT_LIBRARY_DIR)},
        "data": str(args.data),
        "model": embedder.name,
        "model_load_seconds": round(embedder.load_seconds, 3),
        "matcher_build_ms": round(build_ms, 2),
        "weights": settings.model_dump(),
        "with_history": figures,
        "without_history": summary(evaluate(matcher, rows, {})),
        "ablation": ablation(docs, embedder, settings, rows),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

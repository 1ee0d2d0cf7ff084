"""Fuzzing (issue 15): schemathesis against every agent's OpenAPI, at least 1,000 cases each.

The ten agents and the lab run in-process over ASGI with their dependencies faked, every case
authenticated (the mesh token; on IO's user API the bootstrap admin's token); see
tests/fuzz/harness.py. Each case is checked for an answer in the 5xx range and for conformance
to the operation's documented response schema. Prints one JSON document: cases, 5xx and
schema violations per agent, with the first failing case of each operation and a curl line
that reproduces it. Exits 1 when any agent answered 5xx.

    python -m bench.fuzz [--cases 1000] [--agents io,audit] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tests.fuzz.harness import AGENTS, fuzz_agent, running_mesh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1000, help="at least this many per agent")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    agents = [a for a in args.agents.split(",") if a]
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        parser.error(f"unknown agents {unknown}; known: {', '.join(AGENTS)}")
    # The agents log every refused request; the report is the output.
    logging.disable(logging.CRITICAL)

    started = time.monotonic()
    per_agent: dict[str, Any] = {}
    with running_mesh() as mesh:
        for agent in agents:
            report = fuzz_agent(mesh, agent, min_cases=args.cases, seed=args.seed)
            per_agent[agent] = report.summary()
            print(
                f"{agent}: {report.cases} cases, {len(report.server_errors)} 5xx",
                file=sys.stderr,
                flush=True,
            )
    result = {
        "bench": "fuzz",
        "min_cases_per_agent": args.cases,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "total_cases": sum(a["cases"] for a in per_agent.values()),
        "total_5xx": sum(a["5xx"] for a in per_agent.values()),
        "total_schema_violations": sum(a["schema_violations"] for a in per_agent.values()),
        "agents": per_agent,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["total_5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())

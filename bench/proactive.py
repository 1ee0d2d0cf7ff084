"""Proactive congestion mitigation (issue 14): link overload with the proactive flow off and on.

Runs the ten agents and the lab as real processes on an SNDlib network with its demand matrix
(default ``sndlib/abilene``) twice in one run: once with Traffic Analytics' watcher off
(``CXM_TRAFFIC_PROACTIVE_ENABLED=false``: only the reactive SLA flow acts, once PCA sees loss
and delay) and once on. Each time the lab's ``busy-hour`` scenario ramps every service's traffic
toward a peak (``--peak-pct``: the busiest link's native load at the top) and back, and the
bench polls ``GET /lab/topology`` every ``--poll-s`` and integrates, over every link:

- overload minutes: time a link carried more than 90 % of its capacity (``load_pct``);
- SLA-violation minutes: time a link was out of SLA as the lab's PCA reports it (``alerting``);

and reads from IO the proactive tickets, the shifts (traffic moved off a link: each steering,
and each move back onto the tunnels after a failed return) and the returns. Lab seconds are real
seconds; minutes here are real minutes of the compressed busy hour (CXM's timers run at
``--time-scale``). Prints one JSON document.

    python -m bench.proactive [--topology sndlib/abilene] [--peak-pct 110] [--time-scale 0.02]
                              [--before DIR]

``--before DIR`` (a worktree of an earlier commit) runs every mode on that code first, then on
this checkout, in the same run, and adds ``before`` and ``after`` documents side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.closed_loop import started_mesh
from tests.support import ROOT, Mesh

OVERLOAD_PCT = 90.0


def busy_hour(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "peak_pct": args.peak_pct,
        "up_s": args.up_s,
        "hold_s": args.hold_s,
        "down_s": args.down_s,
        "gap_s": args.gap_s,
        "repeat": 1,
    }


def measure(m: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    """Play one busy hour and integrate overload and SLA violation over every link."""
    lab = m.url("lab")
    overload_s: dict[str, float] = {}
    violation_s: dict[str, float] = {}
    peak: dict[str, float] = {}
    native_peak: dict[str, float] = {}
    with httpx.Client(timeout=30) as http:
        started = http.post(f"{lab}/lab/scenarios/busy-hour", json=busy_hour(args))
        started.raise_for_status()
        period = args.gap_s + args.up_s + args.hold_s + args.down_s
        end = time.monotonic() + period + args.settle_s
        last = time.monotonic()
        while time.monotonic() < end:
            body = http.get(f"{lab}/lab/topology").json()
            now = time.monotonic()
            dt, last = now - last, now
            for link in body["links"]:
                name = link["link_id"]
                load = float(link["load_pct"])
                peak[name] = max(peak.get(name, 0.0), load)
                native_peak[name] = max(native_peak.get(name, 0.0), float(link["native_pct"]))
                if load > OVERLOAD_PCT:
                    overload_s[name] = overload_s.get(name, 0.0) + dt
                if link.get("alerting"):
                    violation_s[name] = violation_s.get(name, 0.0) + dt
            time.sleep(args.poll_s)
        io = http.get(
            f"{m.url('io')}/api/v1/tickets", headers={"Authorization": f"Bearer {m.io_token}"}
        ).json()
        tickets = [t for t in io if t.get("proactive")]
        shifts = returns = grown = escalated = 0
        open_left = 0
        links_of: dict[str, list[str]] = {}
        for t in tickets:
            detail = http.get(
                f"{m.url('io')}/api/v1/tickets/{t['incident_id']}",
                headers={"Authorization": f"Bearer {m.io_token}"},
            ).json()
            updates = [e["payload"] for e in detail["events"] if e["task_type"] == "status_update"]
            # a shift: traffic moved off the link (the first steering, and each move back onto
            # the policies after a failed return); a shift that grew is still one shift
            shifts += max((int(u["details"].get("shifts") or 0) for u in updates), default=0)
            grown += sum("shift grew" in u["message"] for u in updates)
            returns += sum(bool(u["details"].get("cleanup")) for u in updates)
            escalated += t["status"] == "escalated"
            links_of[t["incident_id"]] = t.get("degraded_links") or []
            open_left += t["status"] not in ("closed", "escalated")
    return {
        "overload_minutes": round(sum(overload_s.values()) / 60, 3),
        "sla_violation_minutes": round(sum(violation_s.values()) / 60, 3),
        "links_overloaded": len(overload_s),
        "links_out_of_sla": len(violation_s),
        "busiest_link_peak_pct": round(max(peak.values(), default=0.0), 1),
        "tickets": len(io),
        "proactive_tickets": len(tickets),
        "proactive_open_at_end": open_left,
        "shifts": shifts,
        "shifts_grown": grown,
        "returns": returns,
        "proactive_escalated": escalated,
        # the links overloaded longest: how long, their peak measured and native load
        "worst_links": {
            name: {
                "overload_s": round(seconds, 1),
                "peak_pct": round(peak[name], 1),
                "native_peak_pct": round(native_peak[name], 1),
            }
            for name, seconds in sorted(overload_s.items(), key=lambda kv: -kv[1])[:5]
        },
        "incident_links": links_of,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", default="sndlib/abilene")
    parser.add_argument("--time-scale", default="0.02")
    parser.add_argument("--peak-pct", type=float, default=110.0)
    parser.add_argument("--up-s", type=float, default=90.0)
    parser.add_argument("--hold-s", type=float, default=60.0)
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--gap-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=30.0, help="measured after the ramp")
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument(
        "--env", action="append", default=[], metavar="CXM_NAME=VALUE", help="extra setting"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each run's data and logs under this dir"
    )
    parser.add_argument("--modes", default="off,on", help="which runs: off, on or both")
    parser.add_argument(
        "--before", type=Path, default=None, help="a checkout of the code before, run first"
    )
    args = parser.parse_args(argv)
    env = {
        "CXM_LAB_TOPOLOGY": args.topology,
        "CXM_TIME_SCALE": args.time_scale,
        "CXM_LOG_LEVEL": "WARNING",
        "CXM_LAB_SCENARIO_DURATION_S": "100000",
        # samples every 1 s of real time; forecasts 30 s ahead (both scaled from the defaults)
        "CXM_TRAFFIC_SAMPLE_INTERVAL_S": "50",
        "CXM_TRAFFIC_SAMPLE_MIN_INTERVAL_S": "0.5",
        "CXM_PATH_MEASUREMENT_MIN_TTL_S": "0.5",  # path reads loads on the same clock
        "CXM_TRAFFIC_FORECAST_HORIZON_S": "1500",
        **dict(item.split("=", 1) for item in args.env),
    }
    result: dict[str, Any] = {
        "topology": args.topology,
        "time_scale": float(args.time_scale),
        "busy_hour": busy_hour(args),
        "overload_threshold_pct": OVERLOAD_PCT,
    }
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.before is None:
        result.update(run_modes(args, env, modes, ROOT, "this checkout"))
    else:
        result["before"] = {"code": str(args.before)}
        result["before"].update(run_modes(args, env, modes, args.before, "before"))
        result["after"] = {"code": str(ROOT)}
        result["after"].update(run_modes(args, env, modes, ROOT, "after"))
    print(json.dumps(result, indent=2))
    return 0


def run_modes(
    args: argparse.Namespace, env: dict[str, str], modes: list[str], code: Path, label: str
) -> dict[str, Any]:
    """Each mode (watcher off, on) on a fresh mesh run from ``code``; the reductions."""
    out: dict[str, Any] = {}
    for mode, enabled in (("off", "false"), ("on", "true")):
        if mode not in modes:
            continue
        with tempfile.TemporaryDirectory(prefix=f"cxm-bench-proactive-{mode}-") as tmp:
            where = args.keep / label / mode if args.keep else Path(tmp) / "mesh"
            mode_env = {**env, "CXM_TRAFFIC_PROACTIVE_ENABLED": enabled}
            with started_mesh(where, mode_env, args.start_timeout, code=code) as m:
                out[mode] = measure(m, args)
        print(f"bench: {label}: proactive {mode}: {out[mode]}", file=sys.stderr)
    if "off" in out and "on" in out:
        off, on = out["off"]["overload_minutes"], out["on"]["overload_minutes"]
        out["overload_reduction_pct"] = round(100 * (1 - on / off), 1) if off else None
        off_sla = out["off"]["sla_violation_minutes"]
        on_sla = out["on"]["sla_violation_minutes"]
        out["sla_violation_reduction_pct"] = (
            round(100 * (1 - on_sla / off_sla), 1) if off_sla else None
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())

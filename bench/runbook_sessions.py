"""Runbook sessions at load: N sessions of M SSH steps each, concurrently, against one sshd.

Issue #11. Starts Debian's OpenSSH server on a free loopback port (as the tests do,
``tests/runbooks/sshd.py``) and the audit, IO and orchestrator agents as real processes
(``cxm agent NAME``, SQLite, free loopback ports). Through IO's REST API, as a person would,
it registers the SSH key as a credential, the server as a connection and a runbook of M SSH
steps (M-1 main steps and one postcheck, each ``sleep 0.05; echo step N on <host>``), opens N
tickets for the same host and starts one session per ticket, all at once. The frequency
guard would refuse the fourth session on one host within the hour, so the bench raises
``CXM_RUNBOOK_SESSION_LIMIT`` above N. It waits until every session has ended.

Figures (one JSON document):

- ``cxm``: wall time from the first start request to the last step's ``finished_at``,
  sessions per minute; per step, ``step_ms`` (the step's ``finished_at - started_at`` as the
  session records it: the ``running`` checkpoint, the attempt claim, the channel, the
  command, the audit outbox), ``overhead_ms`` (``step_ms`` minus the command's own time
  below) and ``overhead_vs_floor_ms`` (``step_ms`` minus the floor's median command time at
  the same concurrency, which the machine's contention inflates for both); ``cycle_ms``,
  from one step's finish to the next one's (everything a step costs, graph nodes and
  checkpoints included) and its overhead; the orchestrator's resident memory
  (``VmRSS`` of its process, sampled every 0.2 s: before the sessions, the maximum, at the
  end); and the sessions that did not complete, with their reason.
- ``command_ms``: the same command run directly over one asyncssh connection, one at a time
  (the command's own time, on a pseudo-terminal as the connector runs it).
- ``floor``: the same N*M commands over one plain asyncssh connection with a semaphore of the
  orchestrator's effective concurrency (``min(CXM_MAX_CONCURRENT_RUNS,
  CXM_RUNBOOK_SSH_MAX_SESSIONS)``: a session runs in one of the runner's slots, and one SSH
  connection carries at most that many channels): what the same work costs without CXM.

    python -m bench.runbook_sessions [--sessions 50] [--steps 10] [--env CXM_NAME=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import httpx

from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.settings import OrchestratorSettings
from shared.settings import AGENT_PORTS
from tests.runbooks.sshd import Sshd, sshd
from tests.support import Mesh, free_port, mesh_env

HOST = "bench-host"
RUNBOOK = "bench-ssh-steps"
COMMAND = "sleep 0.05; echo step {n} on {host}"
AGENTS = ("audit", "io", "orchestrator")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _stats(values: list[float]) -> dict[str, float | None]:
    """p50/p95/max of millisecond figures, rounded to 0.1 ms."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
        "max": round(ordered[-1], 1),
    }


class RssSampler:
    """``VmRSS`` of one process, read from ``/proc/<pid>/status`` every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read_kb())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def document(steps: int) -> dict[str, Any]:
    """``steps - 1`` main steps and one postcheck, each a short SSH command."""

    def step(n: int) -> dict[str, Any]:
        return {
            "name": f"step {n}",
            "connector": "ssh",
            "connection": "{{ticket.host}}",
            "command": COMMAND.format(n=n, host="{{ticket.host}}"),
            "timeout_s": 30,
            "expect": {"exit_code": 0, "contains": f"step {n} on"},
        }

    return {
        "id": RUNBOOK,
        "title": "Benchmark: short SSH commands",
        "description": "each step sleeps 50 ms on the host and prints a line",
        "keywords": ["bench"],
        "steps": {
            "main": [step(n) for n in range(1, steps)],
            "postchecks": [step(steps)],
        },
        "rollback": [],
    }


async def _connect(server: Sshd) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        server.port,
        username=server.user,
        client_keys=[asyncssh.import_private_key(server.client_key)],
        known_hosts=asyncssh.import_known_hosts(server.host_key_line + "\n"),
        config=[],
        agent_path=None,
    )


async def _command(conn: asyncssh.SSHClientConnection, n: int) -> float:
    """One command on a pseudo-terminal, as the connector runs it; its duration in ms."""
    started = time.perf_counter()
    result = await conn.run(COMMAND.format(n=n, host=HOST), term_type="dumb", check=True)
    if f"step {n} on" not in str(result.stdout):
        raise RuntimeError(f"unexpected output: {result.stdout!r}")
    return (time.perf_counter() - started) * 1000


async def baseline_and_floor(
    server: Sshd, commands: int, concurrency: int, steps: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The command's own time (one at a time), then all the commands with a semaphore."""
    async with await _connect(server) as conn:
        await _command(conn, 0)  # warm up
        alone = [await _command(conn, n) for n in range(1, 11)]
        slots = asyncio.Semaphore(concurrency)

        async def one(n: int) -> float:
            async with slots:
                return await _command(conn, n % steps + 1)

        started = time.perf_counter()
        durations = await asyncio.gather(*(one(n) for n in range(commands)))
        wall = time.perf_counter() - started
    command_ms = {"runs": len(alone), **_stats(alone)}
    floor = {
        "commands": commands,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "commands_per_s": round(commands / wall, 1),
        "sessions_per_minute_equivalent": round(commands / steps / wall * 60, 1),
        "command_ms": _stats(list(durations)),
    }
    return command_ms, floor


async def run_sessions(m: Mesh, server: Sshd, sessions: int, steps: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {m.io_token}"}
    mesh_auth = {"Authorization": f"Bearer {m.token}"}
    limits = httpx.Limits(max_connections=sessions + 10)
    async with httpx.AsyncClient(
        base_url=m.url("io"), headers=admin, timeout=120, limits=limits
    ) as io:
        created = await io.post(
            "/api/v1/credentials",
            json={
                "name": "bench-key",
                "kind": "ssh_key",
                "username": server.user,
                "secret": server.client_key,
            },
        )
        created.raise_for_status()
        connection = {
            "name": HOST,
            "environment": "dev",
            "connector": "ssh",
            "host": "127.0.0.1",
            "port": server.port,
            "credential": "bench-key",
            "host_key": server.host_key_line,
        }
        (await io.post("/api/v1/connections", json=connection)).raise_for_status()
        tested = (await io.post(f"/api/v1/connections/{HOST}/test")).json()
        if not tested["ok"]:
            raise RuntimeError(f"connection test failed: {tested}")
        (await io.post("/api/v1/runbooks", json=document(steps))).raise_for_status()
        incidents = [f"INC-2026-{7000 + i}" for i in range(sessions)]
        for incident_id in incidents:
            opened = await io.post(
                "/a2a/tasks",
                json={
                    "task_type": "new_ticket",
                    "payload": {
                        "incident_id": incident_id,
                        "severity": "high",
                        "summary": f"Benchmark ticket {incident_id} on {HOST}",
                        "host": HOST,
                    },
                },
                headers=mesh_auth,
            )
            opened.raise_for_status()

        with RssSampler(m.procs["orchestrator"].pid) as rss:
            rss_before = rss.read_kb()
            started = time.time()
            answers = await asyncio.gather(
                *(
                    io.post(
                        f"/api/v1/tickets/{incident_id}/runbook-sessions",
                        json={"runbook_id": RUNBOOK},
                    )
                    for incident_id in incidents
                )
            )
            started_s = time.time() - started
            refused = [a.text[:300] for a in answers if a.status_code != 201]
            pending = {a.json()["session_id"] for a in answers if a.status_code == 201}
            views: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 600
            while pending and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                for session_id in sorted(pending):
                    view = (await io.get(f"/api/v1/runbook-sessions/{session_id}")).json()
                    if view["final"]:
                        views[session_id] = view
                        pending.discard(session_id)
            polled_s = time.time() - started
            rss_end = rss.read_kb()
        rss_max = max([*rss.samples, rss_end])

    step_ms: list[float] = []
    cycle_ms: list[float] = []
    last_finish = started
    failures: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}
    for session_id, view in views.items():
        outcome = (view.get("verification") or {}).get("outcome", "none")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if view["status"] != "completed":
            failures.append(
                {"session_id": session_id, "status": view["status"], "reason": view["reason"]}
            )
        previous: float | None = None
        for step in view["steps"]:
            if not (step.get("started_at") and step.get("finished_at")):
                continue
            begin, end = _ts(step["started_at"]), _ts(step["finished_at"])
            step_ms.append((end - begin) * 1000)
            if previous is not None:
                cycle_ms.append((end - previous) * 1000)
            previous = end
            last_finish = max(last_finish, end)
    wall = last_finish - started
    done = len(views) - len(failures)
    return {
        "started": len(answers) - len(refused),
        "refused": refused,
        "completed": done,
        "timed_out": sorted(pending),
        "outcomes": outcomes,
        "failures": failures[:10],
        "start_requests_s": round(started_s, 2),
        "wall_s": round(wall, 2),
        "polled_wall_s": round(polled_s, 2),
        "sessions_per_minute": round(done / wall * 60, 1) if wall > 0 else None,
        "steps_run": len(step_ms),
        "step_ms": _stats(step_ms),
        "cycle_ms": _stats(cycle_ms),
        "_step_ms": step_ms,
        "_cycle_ms": cycle_ms,
        "orchestrator_rss_mb": {
            "before": round(rss_before / 1024, 1),
            "max": round(rss_max / 1024, 1),
            "end": round(rss_end / 1024, 1),
            "samples": len(rss.samples),
        },
    }


@contextmanager
def agents(data_dir: Path, extra_env: dict[str, str]) -> Iterator[Mesh]:
    """Audit, IO and the orchestrator as real processes, as ``tests.support.mesh`` starts
    them, with a longer wait for health: the orchestrator loads the matching model at start,
    which takes a while on a busy machine."""
    ports = {name: free_port() for name in AGENT_PORTS}
    data_dir.mkdir(parents=True, exist_ok=True)
    m = Mesh(data_dir, mesh_env(data_dir, ports, extra_env), ports)
    try:
        for name in AGENTS:
            m.start(name)
        m.wait_healthy(AGENTS, timeout=300)
        yield m
    finally:
        for name in list(m.procs):
            m.stop(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10, help="per session (at least 2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CXM_NAME=VALUE",
        help="extra setting for every process, e.g. CXM_MAX_CONCURRENT_RUNS=16 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.steps < 2:
        parser.error("--sessions must be at least 1 and --steps at least 2")
    extra = dict(item.split("=", 1) for item in args.env)
    env = {
        "CXM_LOG_LEVEL": "WARNING",
        "CXM_RUNBOOK_SESSION_LIMIT": str(args.sessions + 1),
        **extra,
    }
    runs = int(
        env.get(
            "CXM_MAX_CONCURRENT_RUNS",
            OrchestratorSettings.model_fields["max_concurrent_runs"].default,
        )
    )
    channels = int(
        env.get(
            "CXM_RUNBOOK_SSH_MAX_SESSIONS",
            RunbookSettings.model_fields["ssh_max_sessions"].default,
        )
    )
    concurrency = min(runs, channels)
    commands = args.sessions * args.steps
    load = os.getloadavg()  # the machine may be busy with other work: say so
    with (
        tempfile.TemporaryDirectory(prefix="cxm-bench-") as tmp,
        sshd(Path(tmp) / "sshd", max_sessions=max(10, channels)) as server,
    ):
        command_ms, floor = asyncio.run(
            baseline_and_floor(server, commands, concurrency, args.steps)
        )
        with agents(Path(tmp) / "mesh", env) as m:
            cxm = asyncio.run(run_sessions(m, server, args.sessions, args.steps))
    command_p50 = command_ms["p50"] or 0.0
    step_ms, cycle_ms = cxm.pop("_step_ms"), cxm.pop("_cycle_ms")
    cxm["overhead_ms"] = _stats([v - command_p50 for v in step_ms])
    cxm["cycle_overhead_ms"] = _stats([v - command_p50 for v in cycle_ms])
    # Under concurrency the command itself slows down (sshd forks a shell per channel on the
    # same busy cores); the floor pays that too, so this is CXM's own share.
    floor_p50 = floor["command_ms"]["p50"] or 0.0
    cxm["overhead_vs_floor_ms"] = _stats([v - floor_p50 for v in step_ms])
    print(
        json.dumps(
            {
                "benchmark": "runbook_sessions",
                "sessions": args.sessions,
                "steps_per_session": args.steps,
                "steps": commands,
                "command": COMMAND.format(n="N", host=HOST),
                "database": "sqlite",
                "max_concurrent_runs": runs,
                "ssh_max_sessions": channels,
                "env": extra,
                "load_average_before": [round(v, 2) for v in load],
                "command_ms": command_ms,
                "cxm": cxm,
                "floor": floor,
            },
            indent=2,
        )
    )
    return 0 if cxm["completed"] == args.sessions else 1


if __name__ == "__main__":
    sys.exit(main())

"""The orchestrator with N open incidents parked on timers and approvals, and its restart.

Issue #5: "1,000 open incidents, most waiting on timers or approvals: the orchestrator's
memory, and the time to resume them all after a restart".

Starts the fake peers (``tests/orchestrator/fake_peers.py``, one process playing impact, path,
tunnel, restore, notify, audit, IO and correlator) with the SLA never recovering, and the
orchestrator as a real process (``python -m cxm.cli agent orchestrator``, SQLite under a
temporary ``CXM_DATA_DIR``, free loopback ports, ``CXM_TIME_SCALE=1``). The approval policy
asks for a human before ``provision`` on ``critical`` incidents only; a share
(``--approval-share``) of the incidents is critical, so those park on an approval that expires
in a day, and the rest steer and park on the SLA poll (one hour, monitoring gives up after a
day). Nothing fires during the run.

It then sends N ``start_incident`` tasks (bounded concurrency), waits until all N are parked
(``GET /api/v1/incidents?open_only=true``: a ``timer`` of kind ``timer`` or ``approval``),
reads the process's VmRSS/VmHWM/Threads from ``/proc/<pid>/status`` idle and with N parked,
SIGKILLs the orchestrator, starts it again and measures the time until it is healthy and until
every incident has been looked at again by the runner (its row rewritten after the restart)
and is parked, plus the RSS afterwards. Prints one JSON document; exits 1 with a message on
stderr when something does not converge in time.

With ``--databases sqlite,postgres`` (the default) the same run is made once per database,
one after the other, and the document has both side by side (``runs``): on PostgreSQL the
orchestrator's checkpoints and incident rows go to a throwaway cluster of Debian's server
(``tests.support.postgres_server``, fsync on, as a user would run it), and the cluster's CPU
(every backend) is reported next to the orchestrator's.

    python -m bench.orchestrator_scale [--incidents 1000] [--approval-share 0.5]
                                       [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.closed_loop import cpu_ticks
from shared.settings import AGENT_PORTS
from tests.support import ROOT, Mesh, create_database, free_port, mesh_env, postgres_cluster

DAY_S = 86400
POLL_S = 0.5
"""Interval of the bench's polls of the incident list (each poll costs the orchestrator too)."""


class NotConverged(Exception):
    """Something did not reach the expected state within its bound."""


def until(what: str, predicate: Callable[[], Any], timeout: float, interval: float) -> Any:
    """Poll ``predicate`` until it is truthy; NotConverged after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise NotConverged(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")


# --- the process we watch ------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, Any]:
    """VmRSS/VmHWM (MiB), threads and open file descriptors of a live process."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()

    def mib(key: str) -> float:
        return round(int(fields[key].split()[0]) / 1024, 1)

    return {
        "rss_mib": mib("VmRSS"),
        "hwm_mib": mib("VmHWM"),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(rest[11]) + int(rest[12])) / ticks


def wait_idle(pid: int, timeout: float, busy_share: float = 0.05, window: float = 1.0) -> float:
    """Wait until the process uses less than ``busy_share`` of a core over ``window``.

    Returns the seconds it took; outbox deliveries and the runner's last syncs finish first,
    so the RSS read afterwards is the resting figure.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < busy_share * window:
            return round(time.monotonic() - started, 2)
    raise NotConverged(f"orchestrator still busy after {timeout:.0f}s")


# --- the fake peers ------------------------------------------------------------------------


class Peers:
    """The fake-peers process and its control API."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(data_dir / "peers.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.orchestrator.fake_peers", str(self.port)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise NotConverged(f"fake peers exited with {self.proc.returncode}")
            try:
                return self.http.get("/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until("fake peers healthy", healthy, timeout=30, interval=0.1)

    def set(self, **knobs: Any) -> None:
        self.http.post("/control", json=knobs).raise_for_status()

    def calls(self) -> dict[str, Any]:
        stats = self.http.get("/control/stats").json()
        return {"tunnels_created": stats["tunnels_created"], "calls": stats["calls"]}

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --- the orchestrator ----------------------------------------------------------------------


def orchestrator_env(
    data_dir: Path, peer_port: int, log_level: str, database_url: str | None = None
) -> tuple[Mesh, int]:
    ports = {name: peer_port for name in AGENT_PORTS}
    port = free_port()
    ports["orchestrator"] = port
    extra = {
        **({"CXM_DATABASE_URL": database_url} if database_url else {}),
        "CXM_TIME_SCALE": "1",
        "CXM_LOG_LEVEL": log_level,
        # critical incidents wait for a human before provisioning; the others steer
        "CXM_APPROVAL_POLICY": json.dumps([{"action": "provision", "severities": ["critical"]}]),
        "CXM_APPROVAL_TIMEOUT_S": str(DAY_S),
        "CXM_SLA_POLL_S": "3600",
        "CXM_MONITOR_TIMEOUT_S": str(DAY_S),
    }
    return Mesh(data_dir, mesh_env(data_dir, ports, extra), ports), port


def start_payload(i: int, critical: bool) -> dict[str, Any]:
    return {
        "incident_id": f"INC-BENCH-{i:05d}",
        "severity": "critical" if critical else "high",
        "summary": f"bench incident {i}",
        "degraded_links": [f"pe1-pe{2 + i % 3}"],
    }


def critical_flags(n: int, share: float) -> list[bool]:
    """Spread round(n * share) critical incidents evenly over the n."""
    return [int((i + 1) * share) > int(i * share) for i in range(n)]


async def open_incidents(
    url: str, token: str, payloads: list[dict[str, Any]], concurrency: int, timeout: float
) -> list[float]:
    """Send every ``start_incident``; returns each answer's latency in seconds."""
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        limits=limits,
    ) as client:

        async def one(payload: dict[str, Any]) -> None:
            async with slots:
                started = time.monotonic()
                response = await client.post(
                    "/a2a/tasks", json={"task_type": "start_incident", "payload": payload}
                )
                if response.status_code != 200:
                    raise NotConverged(
                        f"start_incident {payload['incident_id']}: "
                        f"{response.status_code} {response.text[:300]}"
                    )
                latencies.append(time.monotonic() - started)

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(one(p) for p in payloads))
        except TimeoutError:
            raise NotConverged(
                f"only {len(latencies)}/{len(payloads)} start_incident answered in {timeout:.0f}s"
            ) from None
    return latencies


class Incidents:
    """Reads the orchestrator's incident list and tells which incidents are parked."""

    def __init__(self, url: str, token: str, ids: set[str]) -> None:
        # the orchestrator's REST, like every agent's, asks for the mesh token
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.ids = ids
        self.last: dict[str, Any] = {}

    def rows(self) -> list[dict[str, Any]]:
        try:
            response = self.http.get("/api/v1/incidents", params={"open_only": "false"})
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        rows: list[dict[str, Any]] = response.json()["incidents"]
        return [r for r in rows if r["incident_id"] in self.ids]

    def parked(self, since: datetime | None = None) -> bool:
        """All incidents wait on a timer or approval (and were rewritten after ``since``)."""
        rows = self.rows()
        kinds: Counter[str] = Counter()
        stale = 0
        for row in rows:
            if row["final"]:
                raise NotConverged(
                    f"{row['incident_id']} closed ({row['status']}): "
                    f"{row.get('close_reason')} {row.get('last_error')}"
                )
            if row["last_error"]:
                kinds["error"] += 1
            timer = row["timer"]
            kinds[timer["kind"] if timer else f"running:{row['status']}"] += 1
            if since is not None and datetime.fromisoformat(row["updated_at"]) < since:
                stale += 1
        self.last = {"rows": len(rows), "by_kind": dict(kinds), "not_resumed": stale}
        return (
            len(rows) == len(self.ids)
            and kinds["timer"] + kinds["approval"] == len(self.ids)
            and stale == 0
        )

    def summary(self) -> dict[str, Any]:
        rows = self.rows()
        return {
            "waiting": dict(Counter(r["timer"]["kind"] for r in rows if r["timer"])),
            "reasons": dict(Counter(r["timer"]["reason"] for r in rows if r["timer"])),
            "statuses": dict(Counter(r["status"] for r in rows)),
        }


def run(
    args: argparse.Namespace,
    data_dir: Path,
    database_url: str | None = None,
    database_pid: int | None = None,
) -> dict[str, Any]:
    """One run on SQLite (``database_url`` None) or on the PostgreSQL cluster given, whose
    server process ``database_pid`` (and its backends) is charged as ``database_cpu_s``."""
    n: int = args.incidents

    def db_cpu() -> float:
        if database_pid is None:
            return 0.0
        return cpu_ticks({"db": database_pid})["db"] / os.sysconf("SC_CLK_TCK")

    flags = critical_flags(n, args.approval_share)
    payloads = [start_payload(i, critical) for i, critical in enumerate(flags)]
    bound = args.timeout
    peers = Peers(data_dir)
    mesh: Mesh | None = None
    try:
        peers.wait_healthy()
        peers.set(sla_default=False)  # monitoring never sees the SLA recover
        mesh, _ = orchestrator_env(data_dir, peers.port, args.log_level, database_url)
        mesh.start("orchestrator")
        mesh.wait_healthy(["orchestrator"])
        pid = mesh.procs["orchestrator"].pid
        wait_idle(pid, timeout=60)
        idle = proc_status(pid)

        incidents = Incidents(
            mesh.url("orchestrator"), mesh.token, {p["incident_id"] for p in payloads}
        )
        load_before = os.getloadavg()
        cpu_open, peers_cpu_open = cpu_seconds(pid), cpu_seconds(peers.proc.pid)
        db_cpu_open = db_cpu()
        started = time.monotonic()
        latencies = asyncio.run(
            open_incidents(mesh.url("orchestrator"), mesh.token, payloads, args.concurrency, bound)
        )
        answered_s = time.monotonic() - started
        progress(f"{n} start_incident answered in {answered_s:.1f}s")

        def parked_now() -> bool:
            done = incidents.parked()
            progress(f"  {time.monotonic() - started:7.1f}s {incidents.last}")
            return done

        until("all incidents parked", parked_now, timeout=bound, interval=POLL_S)
        parked_s = time.monotonic() - started
        cpu_open = cpu_seconds(pid) - cpu_open
        peers_cpu_open = cpu_seconds(peers.proc.pid) - peers_cpu_open
        db_cpu_open = db_cpu() - db_cpu_open
        progress(f"{n} parked in {parked_s:.1f}s, orchestrator CPU {cpu_open:.1f}s")
        settle_s = wait_idle(pid, timeout=bound)
        loaded = proc_status(pid)
        before = peers.calls()
        shape = incidents.summary()

        # --- SIGKILL and restart -----------------------------------------------------------
        killed_at = datetime.now(UTC)
        mesh.stop("orchestrator", kill=True)
        db_cpu_restart = db_cpu()
        restarted = time.monotonic()
        mesh.start("orchestrator")
        mesh.wait_healthy(["orchestrator"], timeout=bound)
        healthy_s = time.monotonic() - restarted
        pid = mesh.procs["orchestrator"].pid
        progress(f"restarted: healthy in {healthy_s:.1f}s")

        def resumed_now() -> bool:
            done = incidents.parked(since=killed_at)
            progress(f"  {time.monotonic() - restarted:7.1f}s {incidents.last}")
            return done

        until("all incidents resumed and parked", resumed_now, timeout=bound, interval=POLL_S)
        resumed_s = time.monotonic() - restarted
        cpu_restart = cpu_seconds(pid)  # the new process: start-up and resuming all N
        db_cpu_restart = db_cpu() - db_cpu_restart
        resume_settle_s = wait_idle(pid, timeout=bound)
        after = proc_status(pid)
        after_calls = peers.calls()
        log_tail = mesh.log("orchestrator")
        load_after = os.getloadavg()
    finally:
        if mesh is not None:
            for name in list(mesh.procs):
                mesh.stop(name)
        peers.stop()

    latencies.sort()
    peer_calls_delta = {
        k: v - before["calls"].get(k, 0)
        for k, v in after_calls["calls"].items()
        if v != before["calls"].get(k, 0)
    }
    return {
        "benchmark": "orchestrator_scale",
        "parameters": {
            "incidents": n,
            "approval_share": args.approval_share,
            "critical_incidents": sum(flags),
            "concurrency": args.concurrency,
            "checkpointer": "postgres" if database_url else "sqlite",
            "max_concurrent_runs": 8,
            "time_scale": 1,
            "cpus": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "open": {
            "answered_s": round(answered_s, 2),
            "start_incident_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "start_incident_max_ms": round(latencies[-1] * 1000, 1),
            "all_parked_s": round(parked_s, 2),
            "parked_per_s": round(n / parked_s, 1),
            "idle_after_s": settle_s,
            "orchestrator_cpu_s": round(cpu_open, 2),
            "orchestrator_cpu_ms_per_incident": round(cpu_open * 1000 / n, 1),
            "orchestrator_core_share": round(cpu_open / parked_s, 2),
            "peers_cpu_s": round(peers_cpu_open, 2),
            "database_cpu_s": round(db_cpu_open, 2),
            "database_cpu_ms_per_incident": round(db_cpu_open * 1000 / n, 1),
            "parked": shape,
        },
        "process_idle": idle,
        "process_parked": loaded,
        "rss_per_incident_kib": round((loaded["rss_mib"] - idle["rss_mib"]) * 1024 / n, 1),
        "restart": {
            "healthy_s": round(healthy_s, 2),
            "all_resumed_s": round(resumed_s, 2),
            "resumed_per_s": round(n / max(resumed_s - healthy_s, 1e-9), 1),
            "idle_after_s": resume_settle_s,
            "orchestrator_cpu_s_incl_startup": round(cpu_restart, 2),
            "database_cpu_s": round(db_cpu_restart, 2),
            "process_resumed": after,
            "peer_calls_during_restart": peer_calls_delta,
        },
        "peers": after_calls,
        "orchestrator_errors_in_log": sum(
            1 for line in log_tail.splitlines() if "error" in line.lower()
        ),
    }


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--approval-share", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16, help="start_incident in flight")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="bound of each phase, in seconds"
    )
    parser.add_argument("--log-level", default="WARNING", help="the orchestrator's CXM_LOG_LEVEL")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs, databases)")
    parser.add_argument(
        "--databases",
        default="sqlite,postgres",
        help="comma-separated, run one after the other: sqlite, postgres",
    )
    args = parser.parse_args(argv)
    if args.incidents < 1 or not 0.0 <= args.approval_share <= 1.0:
        parser.error("--incidents must be >= 1 and --approval-share within [0, 1]")
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not databases or set(databases) - {"sqlite", "postgres"}:
        parser.error("--databases takes sqlite and/or postgres")
    runs: dict[str, Any] = {}
    for database in databases:
        tmp = tempfile.mkdtemp(prefix=f"cxm-bench-orch-{database}-")
        progress(f"--- {database}")
        try:
            with ExitStack() as stack:
                url: str | None = None
                server_pid: int | None = None
                if database == "postgres":
                    # its own directory: the server runs as ``postgres``, which cannot
                    # enter the bench's private data dir
                    pg = Path(tempfile.mkdtemp(prefix="cxm-bench-pg-"))
                    stack.callback(shutil.rmtree, pg, ignore_errors=True)
                    dsn, server_pid = stack.enter_context(postgres_cluster(pg, fsync=True))
                    url = asyncio.run(create_database(dsn, prefix="bench_orch"))
                runs[database] = run(args, Path(tmp), url, server_pid)
        except NotConverged as exc:
            print(f"bench: did not converge: {exc} (data dir {tmp})", file=sys.stderr)
            return 1
        except AssertionError as exc:  # tests.support.Mesh reports a dead or unhealthy agent
            print(f"bench: orchestrator failed: {exc} (data dir {tmp})", file=sys.stderr)
            return 1
        if args.keep:
            runs[database]["data_dir"] = tmp
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {"benchmark": "orchestrator_scale", "runs": runs}
    if len(runs) == 2:
        result["postgres_vs_sqlite"] = {
            "parked_per_s": _ratio(runs, "open", "parked_per_s"),
            "orchestrator_cpu_ms_per_incident": _ratio(
                runs, "open", "orchestrator_cpu_ms_per_incident"
            ),
            "restart_resumed_per_s": _ratio(runs, "restart", "resumed_per_s"),
        }
    print(json.dumps(result, indent=2))
    return 0


def _ratio(runs: dict[str, Any], part: str, name: str) -> float | None:
    """postgres / sqlite of one figure."""
    base = runs["sqlite"][part][name]
    return round(runs["postgres"][part][name] / base, 2) if base else None


if __name__ == "__main__":
    sys.exit(main())

"""Correlator vs the real Prometheus Alertmanager, side by side on the same load.

Starts Debian's ``prometheus-alertmanager`` and the correlator exactly as users run it
(``python -m cxm.cli agent correlator``, its peers IO, orchestrator and audit stood in by a
cheap server answering 200 so the outbox delivers) on loopback ports with temporary data
directories, then drives both with the same load generator: ``wrk`` (2 threads, a Lua script
building the POST bodies, fixed duration) when installed, else a bounded async httpx client.
Two loads: single-alert POSTs and 100-alert batches (Alertmanager's ``/api/v2/alerts`` vs the
correlator's ``/api/v1/alerts``). Every alert is distinct (a unique ``instance`` label) on one
of 50 links, so neither side can shortcut by deduplicating: the correlator correlates each one
into its link's incident. Prints both rates, the correlator/Alertmanager ratios, the
correlator's disposition mix and its outbox backlog as JSON.

    python -m bench.correlator_vs_alertmanager [--duration 10] [--connections 32]
        [--batch-connections 16] [--client auto|wrk|httpx]

The correlator answers only after each alert is persisted (SQLite, WAL) with its disposition;
Alertmanager keeps alerts in memory. Everything shares the machine's cores: the load
generator, the server under test, and (for the correlator) the stand-in peers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-mesh-token"
LINKS = [f"n{i}-n{i + 1}" for i in range(50)]
BATCH = 100
WRK_THREADS = 2

# One Lua state per wrk thread: each builds its own distinct alerts (thread id + counter), so
# no two alerts in a run share labels. ``done`` prints the summary as one JSON line.
WRK_SCRIPT = r"""
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  kind, size, prefix = args[1], tonumber(args[2]), args[3]
  headers = {["Content-Type"] = "application/json"}
  if args[4] and args[4] ~= "" then headers["Authorization"] = "Bearer " .. args[4] end
  n = 0
end

local function alert(i)
  local a = i % 50
  local link = "n" .. a .. "-n" .. (a + 1)
  local instance = prefix .. "-" .. tid .. "-" .. i
  if kind == "am" then
    return '{"labels":{"alertname":"BenchLatency","link":"' .. link .. '","instance":"'
      .. instance .. '","severity":"high"},"annotations":{"summary":"latency above SLA",'
      .. '"value":"92","threshold":"50"}}'
  end
  return '{"source":"bench","link":"' .. link .. '","severity":"high","metric":"BenchLatency",'
    .. '"value":92,"threshold":50,"labels":{"instance":"' .. instance .. '"}}'
end

function request()
  local parts = {}
  for k = 1, size do
    n = n + 1
    parts[k] = alert(n)
  end
  return wrk.format("POST", nil, headers, "[" .. table.concat(parts, ",") .. "]")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
      .. '"timeout":%d,"p50_ms":%.2f,"p99_ms":%.2f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def am_alert(tag: str, i: int) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "BenchLatency",
            "link": LINKS[i % len(LINKS)],
            "instance": f"{tag}-{i}",
            "severity": "high",
        },
        "annotations": {"summary": "latency above SLA", "value": "92", "threshold": "50"},
    }


def cxm_alert(tag: str, i: int) -> dict[str, Any]:
    return {
        "source": "bench",
        "link": LINKS[i % len(LINKS)],
        "severity": "high",
        "metric": "BenchLatency",
        "value": 92,
        "threshold": 50,
        "labels": {"instance": f"{tag}-{i}"},
    }


# --- load generators ------------------------------------------------------------------------


def run_wrk(
    script: Path,
    url: str,
    *,
    kind: str,
    size: int,
    tag: str,
    connections: int,
    duration: float,
    token: str,
) -> dict[str, Any]:
    """One fixed-duration wrk run; the Lua ``done`` hook's JSON summary."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
            "--",
            kind,
            str(size),
            tag,
            token,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^WRK (\{.*\})$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    stats: dict[str, Any] = json.loads(match.group(1))
    return stats


async def run_httpx(
    url: str,
    make: Callable[[str, int], dict[str, Any]],
    *,
    size: int,
    tag: str,
    connections: int,
    duration: float,
    token: str,
) -> dict[str, Any]:
    """The fallback: ``connections`` async workers posting for ``duration`` seconds."""
    counter = itertools.count()
    requests = failures = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            nonlocal requests, failures
            while time.perf_counter() < deadline:
                body = [make(tag, next(counter)) for _ in range(size)]
                r = await client.post(url, json=body)
                requests += 1
                if r.status_code >= 300:
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"requests": requests, "duration_us": int(elapsed * 1e6), "status": failures}


def start_alertmanager(binary: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "am.yml"
    config.write_text(
        "route:\n  receiver: blackhole\n  group_by: [alertname, link]\n"
        "receivers:\n  - name: blackhole\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "am.log").open("wb"),
    )
    return proc, f"http://127.0.0.1:{port}"


async def sink(port: int) -> None:
    """Stand-in peers (IO, orchestrator, audit, CNC): accept every request with 200 at once."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                body = b'{"task_id": "sink", "task_type": "sink", "result": {}}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.correlator_vs_alertmanager", "--sink", str(port)], cwd=ROOT
    )
    return proc, port


def start_correlator(
    tmp: Path, peers_port: int, code: Path = ROOT
) -> tuple[subprocess.Popen[bytes], str]:
    """The correlator as users run it, from the source tree ``code`` (``--before``: another)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    env["PYTHONPATH"] = str(code)
    env.update(
        CXM_DATA_DIR=str(tmp / "cxm"),
        CXM_MESH_TOKEN=TOKEN,
        CXM_CORRELATOR__PORT=str(port),
        CXM_LOG_LEVEL="WARNING",
        CXM_LAB_URL=f"http://127.0.0.1:{peers_port}",
        CXM_IO_URL=f"http://127.0.0.1:{peers_port}",
        CXM_ORCHESTRATOR_URL=f"http://127.0.0.1:{peers_port}",
        CXM_AUDIT_URL=f"http://127.0.0.1:{peers_port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxm.cli", "agent", "correlator"],
        env=env,
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "correlator.log").open("wb"),
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {proc.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def _py_spy() -> str:
    """py-spy from PATH or next to this interpreter (the virtualenv's bin)."""
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def correlator_db(tmp: Path) -> dict[str, Any]:
    """The correlator's disposition counts and its undelivered outbox rows, read from SQLite."""
    path = tmp / "cxm" / "correlator.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        mix = dict(db.execute("SELECT disposition, count(*) FROM corr_alerts GROUP BY 1"))
        backlog = db.execute(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND dead = 0"
        ).fetchone()[0]
    return {"dispositions": mix, "outbox_pending": backlog}


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


async def drain(tmp: Path, timeout: float = 120) -> float:
    """Wait until the correlator's outbox delivered everything; return the seconds it took."""
    started = time.perf_counter()
    for _ in range(int(timeout / 0.2)):
        if not correlator_db(tmp)["outbox_pending"]:
            break
        await asyncio.sleep(0.2)
    return round(time.perf_counter() - started, 1)


async def measure(
    name: str,
    url: str,
    kind: str,
    args: argparse.Namespace,
    token: str,
    tmp: Path,
    pid: int | None = None,
) -> dict[str, Any]:
    """Warm-up, then single-alert POSTs, then 100-alert batches, each for ``args.duration``."""

    async def run(tag: str, size: int, connections: int, duration: float) -> dict[str, Any]:
        if args.client == "wrk":
            script = tmp / "bench.lua"
            script.write_text(WRK_SCRIPT)
            return await asyncio.to_thread(
                run_wrk,
                script,
                url,
                kind=kind,
                size=size,
                tag=tag,
                connections=connections,
                duration=duration,
                token=token,
            )
        make = am_alert if kind == "am" else cxm_alert
        return await run_httpx(
            url,
            make,
            size=size,
            tag=tag,
            connections=connections,
            duration=duration,
            token=token,
        )

    def profile(phase: str) -> subprocess.Popen[bytes] | None:
        if not args.py_spy or pid is None:
            return None
        out = Path(args.py_spy) / f"{name}-{phase}.txt"  # collapsed stacks, for flamegraph.pl
        out.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [
                *(_py_spy(), "record", "--format", "raw", "-p", str(pid), "-o", str(out)),
                *("-d", f"{int(args.duration)}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    await run("warm", 1, args.connections, 2)
    await run("warmb", BATCH, args.batch_connections, 2)
    if kind == "cxm":
        await asyncio.sleep(1)  # requests still in flight when wrk stopped
        await drain(tmp)
    result: dict[str, Any] = {}
    for phase, size, connections in (
        ("single", 1, args.connections),
        ("batch", BATCH, args.batch_connections),
    ):
        before = correlator_db(tmp)["dispositions"] if kind == "cxm" else {}
        spy = profile(phase)
        stats = await run(phase, size, connections, args.duration)
        if spy is not None:
            spy.wait()
        seconds = stats["duration_us"] / 1e6
        entry: dict[str, Any] = {
            "posts_per_s": round(stats["requests"] / seconds, 1),
            "alerts_per_s": round(stats["requests"] * size / seconds, 1),
            "connections": connections,
            "errors": sum(stats.get(k, 0) for k in ("connect", "read", "write", "status")),
        }
        if "p50_ms" in stats:
            entry["latency_ms"] = {"p50": stats["p50_ms"], "p99": stats["p99_ms"]}
        if kind == "cxm":
            db = correlator_db(tmp)
            entry["dispositions"] = _diff(db["dispositions"], before)
            entry["outbox_pending_at_end"] = db["outbox_pending"]
            entry["outbox_drain_s"] = await drain(tmp)
        result[phase] = entry
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _absolute(path: str) -> Path:
    return Path(path).resolve()


async def one_round(
    binary: str, tmp: Path, args: argparse.Namespace, codes: dict[str, Path]
) -> dict[str, Any]:
    """Alertmanager, then each correlator source tree, one server alone at a time: an idle
    Alertmanager holding a run's alerts still burns CPU (its dispatcher and GC), which the
    correlator should not have to share, and back."""
    await asyncio.to_thread(tmp.mkdir, parents=True)
    am_proc, am_url = start_alertmanager(binary, tmp)
    try:
        await wait_ready(f"{am_url}/-/ready", am_proc)
        am = await measure("alertmanager", f"{am_url}/api/v2/alerts", "am", args, "", tmp)
    finally:
        stop(am_proc)
    out: dict[str, Any] = {"alertmanager": am}
    for name, code in codes.items():
        own = tmp / name
        own.mkdir()
        sink_proc, sink_port = start_sink()
        cxm_proc, cxm_url = start_correlator(own, sink_port, code)
        try:
            await wait_ready(f"{cxm_url}/health", cxm_proc)
            out[name] = await measure(
                name, f"{cxm_url}/api/v1/alerts", "cxm", args, TOKEN, own, cxm_proc.pid
            )
        finally:
            stop(cxm_proc)
            stop(sink_proc)
    out["ratio"] = {
        name: {
            "single": round(out[name]["single"]["posts_per_s"] / am["single"]["posts_per_s"], 3),
            "batch": round(out[name]["batch"]["alerts_per_s"] / am["batch"]["alerts_per_s"], 3),
        }
        for name in codes
    }
    if "before" in codes:
        out["speedup"] = {
            phase: round(
                out["correlator"][phase]["alerts_per_s"] / out["before"][phase]["alerts_per_s"], 2
            )
            for phase in ("single", "batch")
        }
    return out


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--connections", type=int, default=32, help="for single-alert POSTs")
    parser.add_argument("--batch-connections", type=int, default=16, help="for 100-alert POSTs")
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--py-spy", metavar="DIR", help="record the correlator's flame graphs")
    parser.add_argument(
        "--before",
        metavar="DIR",
        type=_absolute,
        help="also run the correlator from this source tree (the previous code, e.g. "
        "`git archive <commit> | tar -x -C DIR`), interleaved with the current one",
    )
    parser.add_argument("--rounds", type=int, default=1, help="Alertmanager/before/after rounds")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        await sink(args.sink)
        return 0
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "httpx"
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        print(json.dumps({"error": "prometheus-alertmanager not installed"}))
        return 1
    codes = {"correlator": ROOT}
    if args.before:
        codes = {"before": args.before, "correlator": ROOT}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cxm-bench-") as tmpdir:
        for n in range(args.rounds):
            rounds.append(await one_round(binary, Path(tmpdir) / f"round{n}", args, codes))
    result: dict[str, Any] = {
        "benchmark": "correlator_vs_alertmanager",
        "params": {
            "client": args.client,
            "threads": WRK_THREADS if args.client == "wrk" else 1,
            "duration_s": args.duration,
            "batch_size": BATCH,
            "links": len(LINKS),
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "before": str(codes["before"]) if "before" in codes else None,
        },
        **rounds[-1],
    }
    if args.rounds > 1:
        result["rounds"] = rounds
        result["ratio_median"] = {
            name: {
                phase: statistics.median(r["ratio"][name][phase] for r in rounds)
                for phase in ("single", "batch")
            }
            for name in codes
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Correlator vs the real Prometheus Alertmanager, side by side on the same load.

Starts Debian's ``prometheus-alertmanager`` and the correlator (``python -m shared.cli agent
correlator``) on free loopback ports with temporary data directories, then drives both with the
same bounded async httpx load: single-alert POSTs, and 100-alert batches (Alertmanager's
``/api/v2/alerts`` vs the correlator's ``/api/v1/alerts``). Every alert is distinct (a unique
``instance`` label) on one of 50 links, so neither side can shortcut by deduplicating. Prints
the rates and the correlator/Alertmanager ratios as JSON.

    python -m bench.correlator_vs_alertmanager [--single 3000] [--batches 200] [--concurrency 32]

The correlator answers only after each alert is persisted (SQLite, WAL) with its disposition;
Alertmanager keeps alerts in memory. The client is one Python process on the same machine, so
both rates are bounded by it as well; the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-mesh-token"
LINKS = [f"n{i}-n{i + 1}" for i in range(50)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def am_alert(i: int) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "BenchLatency",
            "link": LINKS[i % len(LINKS)],
            "instance": f"probe-{i}",
            "severity": "high",
        },
        "annotations": {"summary": "latency above SLA", "value": "92", "threshold": "50"},
        "startsAt": datetime.now(UTC).isoformat(),
    }


def cxm_alert(i: int) -> dict[str, Any]:
    return {
        "source": "bench",
        "link": LINKS[i % len(LINKS)],
        "severity": "high",
        "metric": "BenchLatency",
        "value": 92,
        "threshold": 50,
        "labels": {"instance": f"probe-{i}"},
    }


async def load(
    url: str,
    make: Callable[[int], list[dict[str, Any]]],
    *,
    requests: int,
    concurrency: int,
    headers: dict[str, str],
    counter: itertools.count[int],
) -> tuple[float, int]:
    """Send ``requests`` POSTs with ``concurrency`` workers; return (seconds, failures)."""
    todo = iter(range(requests))
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:

        async def worker() -> None:
            nonlocal failures
            for _ in todo:
                body = make(next(counter))
                r = await client.post(url, json=body)
                if r.status_code >= 300:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, failures


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


def start_correlator(tmp: Path, peers_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
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
        [sys.executable, "-m", "shared.cli", "agent", "correlator"],
        env=env,
        cwd=ROOT,
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


async def measure(
    name: str,
    url: str,
    make_one: Callable[[int], dict[str, Any]],
    args: argparse.Namespace,
    headers: dict[str, str],
) -> dict[str, Any]:
    counter = itertools.count()
    await load(
        url,
        lambda i: [make_one(i)],
        requests=200,
        concurrency=args.concurrency,
        headers=headers,
        counter=counter,
    )  # warm-up
    single_s, single_fail = await load(
        url,
        lambda i: [make_one(i)],
        requests=args.single,
        concurrency=args.concurrency,
        headers=headers,
        counter=counter,
    )
    batch_s, batch_fail = await load(
        url,
        lambda i: [make_one(i * 100 + k) for k in range(100)],
        requests=args.batches,
        concurrency=min(args.concurrency, 8),
        headers=headers,
        counter=counter,
    )
    return {
        "single_posts_per_s": round(args.single / single_s, 1),
        "batch_alerts_per_s": round(args.batches * 100 / batch_s, 1),
        "failures": single_fail + batch_fail,
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=3000, help="single-alert POSTs")
    parser.add_argument("--batches", type=int, default=200, help="100-alert POSTs")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        await sink(args.sink)
        return 0
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        print(json.dumps({"error": "prometheus-alertmanager not installed"}))
        return 1
    with tempfile.TemporaryDirectory(prefix="cxm-bench-") as tmpdir:
        tmp = Path(tmpdir)
        am_proc, am_url = start_alertmanager(binary, tmp)
        sink_proc, sink_port = start_sink()
        cxm_proc, cxm_url = start_correlator(tmp, sink_port)
        try:
            await wait_ready(f"{am_url}/-/ready", am_proc)
            await wait_ready(f"{cxm_url}/health", cxm_proc)
            am = await measure("alertmanager", f"{am_url}/api/v2/alerts", am_alert, args, {})
            cxm = await measure(
                "correlator",
                f"{cxm_url}/api/v1/alerts",
                cxm_alert,
                args,
                {"Authorization": f"Bearer {TOKEN}"},
            )
        finally:
            for proc in (am_proc, cxm_proc, sink_proc):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result = {
        "benchmark": "correlator_vs_alertmanager",
        "params": {
            "single_posts": args.single,
            "batches": args.batches,
            "batch_size": 100,
            "concurrency": args.concurrency,
            "links": len(LINKS),
            "cpus": os.cpu_count(),
        },
        "alertmanager": am,
        "correlator": cxm,
        "ratio": {
            "single": round(cxm["single_posts_per_s"] / am["single_posts_per_s"], 3),
            "batch": round(cxm["batch_alerts_per_s"] / am["batch_alerts_per_s"], 3),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Test helpers: run an agent in-process with its lifespan, run real processes, run PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from fastapi import FastAPI

from shared.agent import RouteTable, access_of, route_table
from shared.contracts import CONTRACTS
from shared.settings import AGENT_PORTS

ROOT = Path(__file__).resolve().parent.parent


PORT_RANGE = (20000, 32000)
"""Below the kernel's ephemeral range (32768-60999 here)."""
_handed_out: set[int] = set()


def _worker_ports() -> range:
    """This pytest-xdist worker's share of ``PORT_RANGE`` (all of it outside xdist).

    Workers draw from disjoint slices: a port one worker found free and handed to a server it
    starts a moment later cannot be bound first by the other worker's servers (the sweep's
    restore agent lost its port that way, CI of 2026-11-30).
    """
    low, high = PORT_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (high - low) // max(count, 1)
    start = low + size * (index % max(count, 1))
    return range(start, start + size)


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, never one handed out before.

    Port 0 would hand out an ephemeral port, the same range every outgoing connection of the
    parallel tests draws from, so a server started a moment later could find it taken. A port
    is not handed out twice in one process (a server given it may not have bound it yet), and
    each xdist worker has its own slice of the range.
    """
    ports = _worker_ports()
    for _ in range(500):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {ports.start}-{ports.stop - 1}")


class MeshAuth(httpx.Auth):
    """What a peer agent sends: the app's mesh token, on the routes that ask for it only.

    A request that already carries ``Authorization`` keeps it, and routes with their own auth
    (IO's user tokens, webhooks, the lab) get nothing added, so tests of those see exactly what
    they send. A test that checks the mesh token itself passes ``auth=httpx.Auth()`` (a no-op)
    on the request (``tests/foundation/test_route_auth.py`` uses bare clients throughout).
    """

    def __init__(self, app: FastAPI):
        self.app = app
        self.table: RouteTable | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = getattr(self.app.state.settings, "mesh_token", None)
        if token and "authorization" not in request.headers:
            if self.table is None:
                self.table = route_table(self.app)
            scope = {
                "type": "http",
                "method": request.method,
                "path": request.url.path,
                "root_path": "",
                "headers": [],
            }
            if access_of(self.table, scope) is None:
                request.headers["Authorization"] = f"Bearer {token}"
        yield request


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client that talks to it in-process.

    The client calls as a peer agent would (:class:`MeshAuth`).
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", auth=MeshAuth(app)
        ) as client:
            yield client


@contextmanager
def http_server(port: int, handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A plain HTTP server on loopback in a thread, for a fake a real process calls (ServiceNow,
    Webex, a runbook's HTTP target); shut down and closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


T = TypeVar("T")


def wait_until(fn: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    """Poll ``fn`` from synchronous code (a test driving real processes) until it answers
    something truthy; fail naming ``what`` and the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}")


async def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll an (async) predicate until it returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


_SINGLE_OF_BATCH = {c.batch.task_type: c.task_type for c in CONTRACTS if c.batch is not None}


def unbatched(body: Any, key: str | None) -> list[tuple[dict[str, Any], str | None]]:
    """A task envelope as the single tasks it stands for, each with its idempotency key: an
    outbox batch (``audit_events``) is one ``audit_event`` per item; anything else, itself.
    For fake peers that record what they were sent, task by task."""
    if not isinstance(body, dict) or body.get("task_type") not in _SINGLE_OF_BATCH:
        return [(body, key)]
    single = _SINGLE_OF_BATCH[body["task_type"]]
    return [
        ({**body, "task_type": single, "payload": item["payload"]}, item["key"])
        for item in body["payload"]["items"]
    ]


@dataclass
class Mesh:
    """Real agent processes on free ports, as ``cxm agent NAME`` runs them."""

    data_dir: Path
    env: dict[str, str]
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    code: Path = ROOT
    """Source tree the agents run from (their working directory: ``python -m`` puts it first
    on ``sys.path``, ahead of the editable install); a bench's ``--before`` passes another."""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def token(self) -> str:
        return self.env["CXM_MESH_TOKEN"]

    def start(self, name: str) -> None:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "cxm.cli", "agent", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.code,
        )

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wait_healthy(self, names: Sequence[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            name = pending[0]
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                if httpx.get(f"{self.url(name)}/health", timeout=1).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if pending:
            raise AssertionError(
                f"not healthy in {timeout}s: {pending}\n" + "\n".join(self.log(n) for n in pending)
            )

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @property
    def mesh_auth(self) -> dict[str, str]:
        """The header a peer sends: agents' REST (incidents, alerts, audit) asks for it."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def io_token(self) -> str:
        """The IO console's bootstrap admin token (IO's REST API does not take the mesh token)."""
        return (self.data_dir / "io-admin-token").read_text().strip()

    def client(self) -> httpx.Client:
        """An operator's client: IO's admin token (the lab's control API needs none)."""
        return httpx.Client(headers={"Authorization": f"Bearer {self.io_token}"}, timeout=10)


def mesh_env(
    data_dir: Path, ports: dict[str, int], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for a mesh on the given ports, isolated under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    env.update(
        CXM_DATA_DIR=str(data_dir),
        CXM_MESH_TOKEN="test-mesh-token",
        CXM_TIME_SCALE="0.02",
        CXM_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    for name, port in ports.items():
        env[f"CXM_{name.upper()}__PORT"] = str(port)
        env[f"CXM_{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
    env.update(extra or {})
    return env


@contextmanager
def mesh(
    data_dir: Path,
    names: Sequence[str] = tuple(AGENT_PORTS),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Mesh]:
    """Start ``names`` as real processes on free ports; stop them all afterwards."""
    ports = {name: free_port() for name in AGENT_PORTS}
    data_dir.mkdir(parents=True, exist_ok=True)
    m = Mesh(data_dir, mesh_env(data_dir, ports, extra_env), ports)
    try:
        for name in names:
            m.start(name)
        m.wait_healthy(names)
        yield m
    finally:
        for name in list(m.procs):
            m.stop(name)


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server binary from Debian's postgresql package."""
    for version in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
        path = f"/usr/lib/postgresql/{version}/bin/{tool}"
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"PostgreSQL's {tool} not found: apt-get install postgresql")


@contextmanager
def postgres_server(base: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port (fsync off); yields its DSN."""
    with postgres_cluster(base) as (dsn, _):
        yield dsn


@contextmanager
def postgres_cluster(base: Path, *, fsync: bool = False) -> Iterator[tuple[str, int]]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields its DSN and the pid
    whose process tree is the server (benches charge its CPU). Tests turn fsync off; a bench
    that compares with SQLite keeps it on, as a user would.

    The server refuses to run as root, so as root the cluster belongs to the ``postgres``
    user that Debian's package creates.
    """
    data = base / "pgdata"
    sock = base / "pgsock"
    data.mkdir(parents=True)
    sock.mkdir()
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *prefix,
            pg_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(sock),
            "-c",
            f"fsync={'on' if fsync else 'off'}",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        time.sleep(0.3)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


async def create_database(dsn: str, *, prefix: str) -> str:
    """A fresh database named ``<prefix>_<random>`` on the test PostgreSQL server; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


async def drop_database(dsn: str, url: str) -> None:
    """Drop the database ``url`` names, sessions still on it included."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()

"""``cxm up``: start every process of the mesh, wait until each is healthy, keep them alive.

Each agent runs as its own process (``cxm agent NAME``, exactly what compose runs), in its own
session so that Ctrl-C reaches only the supervisor, which then stops the children in order.
A child that dies is restarted: at once (0.5 s) when it had been serving (killed, or crashed
at work), with a capped exponential backoff when it dies before serving (a crash loop). When
no mesh token is configured, one is generated once and kept in ``var/mesh-token`` so that the
mesh is authenticated by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from cxm.secrets import MESH_TOKEN, ensure_secret
from shared.settings import AGENT_PORTS, Settings, load_settings

RESTART_BACKOFF_MAX_S = 30.0


def ensure_mesh_token(settings: Settings) -> str:
    """The configured mesh token, or one generated once and kept with owner-only permissions
    (the same file ``cxm secrets init`` writes)."""
    if settings.mesh_token:
        return settings.mesh_token
    token, _ = ensure_secret(Path(settings.data_dir) / MESH_TOKEN)
    return token


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (so a server of ours may bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Child:
    """One supervised process and the task pumping its output."""

    def __init__(self, name: str, env: dict[str, str], width: int):
        self.name = name
        self.env = env
        self.prefix = f"{name:<{width}} | ".encode()
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cxm.cli",
            "agent",
            self.name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    async def pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            sys.stdout.buffer.write(self.prefix + line)
            sys.stdout.flush()

    async def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def wait_healthy(url: str, deadline: float) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return False


async def supervise(names: Sequence[str], *, health_timeout_s: float = 90.0) -> int:
    settings = load_settings()
    ports = {n: load_settings(n).port or AGENT_PORTS[n] for n in names}
    busy = [f"{n} ({ports[n]})" for n in names if not port_free(settings.host, ports[n])]
    if busy:
        print(
            f"cxm: ports already in use: {', '.join(busy)}; is another mesh running?",
            file=sys.stderr,
        )
        return 1
    env = dict(os.environ, CXM_MESH_TOKEN=ensure_mesh_token(settings), PYTHONUNBUFFERED="1")
    width = max(len(n) for n in names)
    children = {name: Child(name, env, width) for name in names}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def keep_alive(child: Child) -> None:
        backoff = 0.5
        while not stopping.is_set():
            started = time.monotonic()
            await child.start()
            assert child.proc is not None
            # A child that served (answered /health) and then died was killed or crashed at
            # work: back in 0.5 s. Only one that dies before serving backs off (a crash loop).
            served = asyncio.create_task(
                wait_healthy(settings.url_of(child.name), started + health_timeout_s)
            )
            await child.pump()
            code = await child.proc.wait()
            served.cancel()
            await asyncio.gather(served, return_exceptions=True)
            was_serving = served.done() and not served.cancelled() and served.result() is True
            if stopping.is_set():
                return
            if code == 1 and time.monotonic() - started < 2 and child.restarts == 0:
                print(
                    f"cxm: {child.name} failed to start (exit {code}); see its log above",
                    file=sys.stderr,
                )
            child.restarts += 1
            backoff = (
                0.5
                if was_serving or time.monotonic() - started > 60
                else min(backoff * 2, RESTART_BACKOFF_MAX_S)
            )
            print(
                f"cxm: {child.name} exited with {code}; restarting in {backoff:.1f}s "
                f"(restart #{child.restarts})",
                file=sys.stderr,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await stopping.wait()

    began = time.monotonic()
    runners = [asyncio.create_task(keep_alive(c)) for c in children.values()]
    deadline = began + health_timeout_s
    results = await asyncio.gather(*(wait_healthy(settings.url_of(n), deadline) for n in names))
    unhealthy = [n for n, ok in zip(names, results, strict=True) if not ok]
    if unhealthy and not stopping.is_set():
        print(
            f"cxm: not healthy after {health_timeout_s:.0f}s: {', '.join(unhealthy)}",
            file=sys.stderr,
        )
    elif not stopping.is_set():
        print(
            f"cxm: {len(names)} processes healthy in {time.monotonic() - began:.1f}s. "
            f"Console: {settings.io_url}/  (mesh token in {settings.data_dir}/mesh-token)",
            flush=True,
        )
    await stopping.wait()
    print("cxm: stopping", file=sys.stderr, flush=True)
    await asyncio.gather(*(c.stop() for c in children.values()))
    for runner in runners:
        runner.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    return 0

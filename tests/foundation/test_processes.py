"""Real processes: `cxm up` supervises eleven of them; the a2a-sdk client discovers every agent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, new_data_part
from a2a.types.a2a_pb2 import Message, Role, SendMessageRequest, TaskState

from shared.settings import AGENT_PORTS, AGENTS
from tests.support import ROOT, free_port, mesh_env

pytestmark = pytest.mark.xdist_group("processes")


def _children(pid: int, name: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", f"cxm.cli agent {name}$"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def supervised(tmp_path: Path):  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in AGENT_PORTS}
    env = mesh_env(tmp_path, ports)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxm.cli", "up"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (tmp_path / "up.log").read_text(errors="replace")
        if "processes healthy" in text:
            break
        assert proc.poll() is None, text[-3000:]
        time.sleep(0.2)
    else:
        _stop(proc)
        pytest.fail("mesh not healthy:\n" + (tmp_path / "up.log").read_text()[-3000:])
    yield proc, ports, env, tmp_path / "up.log"
    _stop(proc)
    log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``cxm up`` and every agent it started, even when it no longer answers.

    The agents run in sessions of their own (a Ctrl-C in the terminal must reach only the
    supervisor), so killing the supervisor alone would leave them running after the test.
    """
    if proc.poll() is not None:
        return
    children = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_cxm_up_discovery_restart_and_clean_stop(supervised) -> None:  # type: ignore[no-untyped-def]
    proc, ports, env, log = supervised
    assert "11 processes healthy" in log.read_text()
    io_token = (Path(env["CXM_DATA_DIR"]) / "io-admin-token").read_text().strip()
    asyncio.run(_discover_every_agent_and_send_io_a_ticket(ports, env["CXM_MESH_TOKEN"], io_token))
    _kill_one_and_see_it_restarted(proc, ports, log)

    # SIGTERM stops everything cleanly
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for name in AGENT_PORTS:
        assert not _children(proc.pid, name)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", ports[name])) != 0, f"{name} still listening"


async def _discover_every_agent_and_send_io_a_ticket(
    ports: dict[str, int], token: str, io_token: str
) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        # every agent: both card paths, the same card, one skill per task type
        for name in AGENTS:
            base = f"http://127.0.0.1:{ports[name]}"
            legacy = (await http.get(f"{base}/.well-known/agent.json")).json()
            card = await A2ACardResolver(http, base).get_agent_card()
            assert card.name == legacy["name"] == f"cxm-{name}"
            assert card.skills, f"{name} lists no skills"
            assert card.supported_interfaces[0].url.startswith(base)
            health = (await http.get(f"{base}/health")).json()
            assert health == {"status": "ok", "agent": name, "version": health["version"]}
        # the SDK's own client sends the IO agent a new_ticket over JSON-RPC
        io = f"http://127.0.0.1:{ports['io']}"
        card = await A2ACardResolver(http, io).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        payload = {
            "incident_id": "INC-2026-0042",
            "severity": "high",
            "summary": "SLA degradation detected on pe1-pe2",
            "degraded_links": ["pe1-pe2"],
        }
        message = Message(
            role=Role.ROLE_USER,
            message_id=uuid.uuid4().hex,
            parts=[new_data_part({"task_type": "new_ticket", "payload": payload})],
        )
        tasks = [r.task async for r in client.send_message(SendMessageRequest(message=message))]
        assert tasks[-1].status.state == TaskState.TASK_STATE_COMPLETED
        assert get_data_parts(tasks[-1].artifacts[0].parts) == [
            {"incident_id": "INC-2026-0042", "stored": True}
        ]
        operator = {"Authorization": f"Bearer {io_token}"}
        ticket = (await http.get(f"{io}/api/v1/tickets/INC-2026-0042", headers=operator)).json()
        assert ticket["degraded_links"] == ["pe1-pe2"]
        # a wrong payload over JSON-RPC fails the task with the field named
        bad = Message(
            role=Role.ROLE_USER,
            message_id=uuid.uuid4().hex,
            parts=[new_data_part({"task_type": "new_ticket", "payload": {}})],
        )
        failed = [r.task async for r in client.send_message(SendMessageRequest(message=bad))]
        assert failed[-1].status.state == TaskState.TASK_STATE_FAILED
        assert "payload.incident_id" in failed[-1].status.message.parts[0].text


def _kill_one_and_see_it_restarted(
    proc: subprocess.Popen[bytes], ports: dict[str, int], log: Path
) -> None:
    [victim] = _children(proc.pid, "path")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = _children(proc.pid, "path")
        if pids and pids != [victim]:
            try:
                if httpx.get(f"http://127.0.0.1:{ports['path']}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    else:
        pytest.fail("path was not restarted:\n" + log.read_text()[-2000:])
    assert "path exited with" in log.read_text()


def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = mesh_env(tmp_path, {"io": port})
        for argv in (["agent", "io"], ["up", "--only", "io"]):
            out = subprocess.run(
                [sys.executable, "-m", "cxm.cli", *argv],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 1
            assert "already in use" in out.stderr
            assert str(port) in out.stderr
            assert "Traceback" not in out.stderr + out.stdout
            assert len(out.stderr.strip().splitlines()) == 1

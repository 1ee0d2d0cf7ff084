"""The local connector (real processes on this host), and what the pool does for every step:
missing connections, actions on the wrong kind of connection."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from services.orchestrator.runbooks.actions import DbQuery, LocalCommand, SshCommand
from services.orchestrator.runbooks.inventory import ConnectionCreate
from tests.runbooks.helpers import Runbooks, processes
from tests.support import wait_for


def marker() -> str:
    return f"300.{uuid.uuid4().int % 10**9:09d}"


async def _gone(pattern: str) -> bool:
    return not await processes(pattern)


async def test_runs_a_program(runbooks: Runbooks) -> None:
    out = await runbooks.pool.run(
        None, LocalCommand(("sh", "-c", "echo out; echo err >&2; exit 5"))
    )
    assert out.exit_code == 5 and out.output == "out\nerr\n" and out.error is None
    assert out.duration_s > 0


async def test_arguments_are_never_a_shell(runbooks: Runbooks, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("still here")
    pwned = tmp_path / "pwned"
    value = f"x; rm -f {canary}; touch {pwned} $(touch {pwned}) `touch {pwned}`"
    out = await runbooks.pool.run(None, LocalCommand(("echo", value)))
    assert out.output == value + "\n" and out.exit_code == 0
    assert canary.read_text() == "still here" and not pwned.exists()


async def test_timeout_kills_the_process_group(runbooks: Runbooks) -> None:
    first, second = marker(), marker()
    argv = ("sh", "-c", f"echo started; sleep {first} & sleep {second}; wait")
    task = asyncio.create_task(runbooks.pool.run(None, LocalCommand(argv), timeout_s=2))
    await wait_for(lambda: processes(f"sleep {first}"), timeout=10)
    out = await task
    assert out.timed_out and out.exit_code is None and out.output == "started\n"
    assert out.error is not None and out.error.startswith("timeout:")
    # The background child too, not only the shell the step started.
    await wait_for(lambda: _gone(first), timeout=10)
    await wait_for(lambda: _gone(second), timeout=10)


async def test_cancelled_step_kills_its_process(runbooks: Runbooks) -> None:
    tag = marker()
    task = asyncio.create_task(runbooks.pool.run(None, LocalCommand(("sleep", tag))))
    await wait_for(lambda: processes(f"sleep {tag}"), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: _gone(tag), timeout=10)


async def test_environment_withheld(runbooks: Runbooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXM_RUNBOOK_CREDENTIAL_KEY", "leaky-key-value")
    monkeypatch.setenv("SOME_TOKEN", "leaky-token-value")
    out = await runbooks.pool.run(None, LocalCommand(("env",)))
    assert out.exit_code == 0
    names = {line.split("=", 1)[0] for line in out.output.splitlines()}
    assert "PATH" in names
    assert "leaky" not in out.output and "CXM_RUNBOOK_CREDENTIAL_KEY" not in names


async def test_program_not_found(runbooks: Runbooks) -> None:
    out = await runbooks.pool.run(None, LocalCommand(("no-such-program-cxm",)))
    assert out.exit_code == 127 and out.error is not None and "no-such-program-cxm" in out.error


async def test_output_is_capped(runbooks: Runbooks) -> None:
    cap = runbooks.settings.output_cap_bytes
    out = await runbooks.pool.run(None, LocalCommand(("head", "-c", "100000", "/dev/zero")))
    assert out.exit_code == 0
    assert out.output == "\0" * cap + f"\n[output truncated: {100000 - cap} more bytes]"


async def test_missing_and_mismatched_connections(runbooks: Runbooks) -> None:
    pool = runbooks.pool
    missing = await pool.run("nowhere", SshCommand("true"))
    assert missing.error == "missing_connection: no connection named 'nowhere' in the inventory"
    assert not missing.transient
    unnamed = await pool.run(None, DbQuery("SELECT 1"))
    assert unnamed.error is not None and unnamed.error.startswith("missing_connection:")

    await runbooks.inventory.create(
        ConnectionCreate(name="here", environment="dev", connector="local")
    )
    wrong = await pool.run("here", SshCommand("true"))
    assert wrong.error is not None and wrong.error.startswith("invalid:")
    assert "local connection" in wrong.error
    named = await pool.run("here", LocalCommand(("true",)))
    assert named.exit_code == 0 and named.error is None

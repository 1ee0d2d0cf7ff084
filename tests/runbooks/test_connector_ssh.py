"""The SSH connector against a real OpenSSH server (Debian's sshd on a loopback port).

Host keys are always verified, failures say what failed, a timeout kills the remote command,
one connection carries many commands within MaxSessions, and ticket values quoted with
``shlex.quote`` run nothing.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.orchestrator.runbooks.actions import SshCommand, StepOutput
from services.orchestrator.runbooks.inventory import ConnectionCreate
from services.orchestrator.runbooks.vault import CredentialCreate
from tests.runbooks.helpers import Runbooks, processes
from tests.runbooks.sshd import Sshd, host_key_line, keygen, sshd
from tests.support import free_port, wait_for

pytestmark = pytest.mark.xdist_group("sshd")

PASSWORD = "ssh-password-never-logged-91c2"


def said(out: StepOutput, expected: str) -> bool:
    """Whether the command's own output is ``expected``.

    The login shell runs the account's rc files first, and on these machines root's
    ``.bashrc`` (pyenv) can print a warning when several sessions start at once: that
    text would come before the command's, never after it.
    """
    return out.output.endswith(expected) and (
        out.output == expected or out.output[: -len(expected)].endswith("\n")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for the module, with OpenSSH's default MaxSessions of 10."""
    with sshd(tmp_path_factory.mktemp("sshd"), max_sessions=10) as running:
        yield running


@dataclass
class Lab:
    runbooks: Runbooks
    server: Sshd
    tmp: Path

    async def connection(self, name: str, **fields: object) -> None:
        values: dict[str, object] = {
            "name": name,
            "environment": "dev",
            "connector": "ssh",
            "host": "127.0.0.1",
            "port": self.server.port,
            "credential": "lab-key",
            "host_key": self.server.host_key_line,
        }
        values.update(fields)
        await self.runbooks.inventory.create(ConnectionCreate.model_validate(values))

    async def run(self, connection: str, command: str, timeout_s: float = 30) -> StepOutput:
        return await self.runbooks.pool.run(connection, SshCommand(command), timeout_s=timeout_s)


@pytest.fixture
async def lab(runbooks: Runbooks, server: Sshd, tmp_path: Path) -> AsyncIterator[Lab]:
    await runbooks.vault.create(
        CredentialCreate(
            name="lab-key",
            kind="ssh_key",
            username=server.user,
            secret=SecretStr(server.client_key),
        )
    )
    lab = Lab(runbooks, server, tmp_path)
    await lab.connection("lab")
    yield lab


async def test_runs_a_command(lab: Lab) -> None:
    pool = lab.runbooks.pool
    out = await pool.run("lab", SshCommand("echo out; echo err >&2; printf 'a\\nb\\n'"))
    assert out.error is None and out.exit_code == 0
    assert said(out, "out\nerr\na\nb\n")  # one stream, no CR/LF from the terminal
    failed = await pool.run("lab", SshCommand("echo nope; exit 3"))
    assert failed.exit_code == 3 and said(failed, "nope\n") and not failed.transient
    # A command that reads its input gets end-of-input, not a hang until the timeout.
    assert said(await pool.run("lab", SshCommand("cat; echo eof"), timeout_s=10), "eof\n")


async def test_connection_test_logs_in(lab: Lab) -> None:
    connection = await lab.runbooks.inventory.get("lab")
    assert connection is not None
    result = await lab.runbooks.pool.test(connection)
    assert result.ok, result.detail
    assert "OpenSSH" in result.detail and lab.server.user in result.detail


async def test_wrong_host_key_refused(lab: Lab) -> None:
    _, other_public = keygen(lab.tmp / "impostor", "impostor")
    await lab.connection("impostor", host_key=host_key_line(lab.server.port, other_public))
    before = lab.server.accepted_logins()
    out = await lab.run("impostor", f"touch {lab.tmp / 'ran'}")
    assert out.error is not None and out.error.startswith("host_key:")
    assert "does not match" in out.error and not out.transient
    assert not (lab.tmp / "ran").exists() and lab.server.accepted_logins() == before
    connection = await lab.runbooks.inventory.get("impostor")
    assert connection is not None
    tested = await lab.runbooks.pool.test(connection)
    assert not tested.ok and tested.kind == "host_key"


async def test_missing_host_key_refused(lab: Lab) -> None:
    await lab.connection("unverified", host_key=None)
    out = await lab.run("unverified", "true")
    assert out.error is not None and out.error.startswith("host_key:")
    assert "no host_key" in out.error and "ssh-keyscan" in out.error


async def test_auth_failures(lab: Lab, log_text: Callable[[], str]) -> None:
    stranger, _ = keygen(lab.tmp / "stranger", "stranger")
    vault = lab.runbooks.vault
    await vault.create(
        CredentialCreate(
            name="stranger", kind="ssh_key", username=lab.server.user, secret=SecretStr(stranger)
        )
    )
    await vault.create(
        CredentialCreate(
            name="pw", kind="password", username=lab.server.user, secret=SecretStr(PASSWORD)
        )
    )
    await lab.connection("by-key", credential="stranger")
    await lab.connection("by-password", credential="pw")
    for name in ("by-key", "by-password"):
        out = await lab.run(name, "true")
        assert out.error is not None and out.error.startswith("auth:"), out.error
        assert not out.transient
        connection = await lab.runbooks.inventory.get(name)
        assert connection is not None
        tested = await lab.runbooks.pool.test(connection)
        assert tested.kind == "auth" and PASSWORD not in tested.detail
    logged = log_text()
    assert "credential unlocked" in logged
    assert PASSWORD not in logged and stranger.splitlines()[1] not in logged


async def test_missing_credential(lab: Lab) -> None:
    await lab.connection("keyless", credential="not-in-vault")
    out = await lab.run("keyless", "true")
    assert out.error is not None and out.error.startswith("missing_credential:")
    assert "not-in-vault" in out.error


async def test_refused_port(lab: Lab) -> None:
    bare_key = lab.server.host_key_line.split(" ", 1)[1]  # the inventory adds host and port
    await lab.connection("closed", port=free_port(), host_key=bare_key)
    out = await lab.run("closed", "true")
    assert out.error is not None and out.error.startswith("refused:") and out.transient
    connection = await lab.runbooks.inventory.get("closed")
    assert connection is not None
    assert (await lab.runbooks.pool.test(connection)).kind == "refused"


async def test_unresolvable_name(lab: Lab) -> None:
    line = lab.server.host_key_line.split(" ", 1)[1]  # the bare key: the inventory adds the host
    await lab.connection("nxdomain", host="no-such-host.invalid", port=22, host_key=line)
    out = await lab.run("nxdomain", "true")
    assert out.error is not None and out.error.startswith("dns:"), out.error
    assert "no-such-host.invalid" in out.error and not out.transient


async def test_timeout_kills_the_remote_command(lab: Lab) -> None:
    marker = f"300.{uuid.uuid4().int % 10**9:09d}"  # a sleep no other process runs
    task = asyncio.create_task(
        lab.run("lab", f"echo started; sleep {marker}; echo never", timeout_s=3)
    )
    await wait_for(lambda: processes(f"sleep {marker}"), timeout=10)
    out = await task
    assert out.timed_out and out.exit_code is None
    assert out.error is not None and out.error.startswith("timeout:")
    assert "started" in out.output and "never" not in out.output
    await wait_for(lambda: _gone(f"sleep {marker}"), timeout=10)
    # The connection is still good for the next step.
    assert said(await lab.run("lab", "echo next"), "next\n")


async def test_cancelled_step_kills_the_remote_command(lab: Lab) -> None:
    marker = f"300.{uuid.uuid4().int % 10**9:09d}"
    task = asyncio.create_task(lab.run("lab", f"sleep {marker}", timeout_s=60))
    await wait_for(lambda: processes(f"sleep {marker}"), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: _gone(f"sleep {marker}"), timeout=10)


async def test_without_a_terminal(lab: Lab) -> None:
    await lab.connection("plain", options={"pty": False})
    out = await lab.run("plain", "cat; echo out; echo err >&2; exit 2")
    assert out.exit_code == 2 and said(out, "out\nerr\n")


async def _gone(marker: str) -> bool:
    return not await processes(marker)


async def test_one_connection_many_bounded_channels(lab: Lab) -> None:
    """25 commands at once over one connection on a server that allows 10 sessions."""
    before = lab.server.accepted_logins()
    outs = await asyncio.gather(*(lab.run("lab", f"sleep 0.3; echo n={i}") for i in range(25)))
    assert [o.error for o in outs] == [None] * 25
    assert all(said(out, f"n={i}\n") for i, out in enumerate(outs)), [o.output for o in outs]
    assert lab.server.accepted_logins() == before + 1

    # The control: above the server's MaxSessions the server refuses sessions, so the bound
    # is what made the 25 succeed.
    await lab.connection("greedy", options={"max_sessions": 20})
    greedy = await asyncio.gather(*(lab.run("greedy", "sleep 3; echo ok") for _ in range(20)))
    refused = [o for o in greedy if o.error is not None]
    assert refused and all(str(o.error).startswith("channel:") and o.transient for o in refused)
    assert all(said(o, "ok\n") for o in greedy if o.error is None)


async def test_reconnects_when_the_server_drops_the_connection(lab: Lab) -> None:
    assert said(await lab.run("lab", "echo one"), "one\n")
    before = lab.server.accepted_logins()
    # Kill this login's sshd session process: the server side of the connection goes away.
    dropped = await lab.run("lab", "kill -9 $PPID", timeout_s=10)
    assert dropped.exit_code != 0 or dropped.error is not None
    out = await lab.run("lab", "echo two")
    assert out.error is None and said(out, "two\n")
    assert lab.server.accepted_logins() == before + 1


async def test_quoted_ticket_value_runs_nothing(lab: Lab) -> None:
    canary = lab.tmp / "canary"
    canary.mkdir()
    (canary / "keep").write_text("still here")
    pwned = lab.tmp / "pwned"
    value = f"x; rm -rf {canary}; touch {pwned} && $(touch {pwned}) `touch {pwned}` '\""
    out = await lab.run("lab", f"echo {shlex.quote(value)}")
    assert out.error is None and out.exit_code == 0
    assert said(out, value + "\n")
    assert (canary / "keep").read_text() == "still here"
    assert not pwned.exists()


async def test_output_is_capped(lab: Lab) -> None:
    cap = lab.runbooks.settings.output_cap_bytes
    out = await lab.run("lab", "head -c 200000 /dev/zero | tr '\\0' a; echo; exit 4")
    assert out.exit_code == 4  # the rest was drained, so the command finished
    kept, marker = out.output.split("\n[output truncated: ")
    assert len(kept) == cap and kept.endswith("a" * (cap // 2))
    kept_a = len(kept) - len(kept.rstrip("a"))  # any rc-file noise came first
    assert marker == f"{200001 - kept_a} more bytes]"


async def test_credential_use_is_audited(lab: Lab) -> None:
    await lab.runbooks.pool.run(
        "lab", SshCommand("true"), context={"session_id": "s-1", "step": "check"}
    )
    use = lab.runbooks.uses[-1]
    assert (use.credential, use.connection, use.connector, use.purpose) == (
        "lab-key",
        "lab",
        "ssh",
        "run",
    )
    assert use.action == "true" and use.context == {"session_id": "s-1", "step": "check"}


async def test_closing_the_pool_closes_the_connection(
    runbooks: Runbooks, lab: Lab, server: Sshd
) -> None:
    assert said(await lab.run("lab", "echo up"), "up\n")
    disconnects = server.log_text().count("Disconnected from user")
    await runbooks.pool.__aexit__(None, None, None)
    await wait_for(lambda: server.log_text().count("Disconnected from user") > disconnects)

"""Local steps: a program and its arguments on the orchestrator's host, never through a shell.

Each ticket value is one ``argv`` element, so nothing in it is interpreted. The program runs
in a session of its own, so a timeout (or a cancelled session) kills everything it started,
not just the program: SIGTERM to the group, SIGKILL after the grace period. It sees only the
environment variables ``CXM_RUNBOOK_LOCAL_ENV`` names, never the orchestrator's secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, ClassVar

from shared.logs import get_logger

from ..actions import Action, LocalCommand, StepOutput
from .base import CappedOutput, InvalidAction, Unlock

if TYPE_CHECKING:
    from ..inventory import ConnectionRead
    from ..settings import RunbookSettings

log = get_logger(__name__)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group outlives its leader when a child is still running: that is what to kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


class LocalConnector:
    name: ClassVar[str] = "local"

    def __init__(self, settings: RunbookSettings, unlock: Unlock) -> None:
        self._settings = settings

    async def run(
        self, connection: ConnectionRead | None, action: Action, *, timeout_s: float
    ) -> StepOutput:
        if not isinstance(action, LocalCommand) or not action.argv:
            raise InvalidAction("a local step needs a program and its arguments")
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            proc = await asyncio.create_subprocess_exec(
                *action.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._settings.local_environment(),
                start_new_session=True,
            )
        except FileNotFoundError:
            return StepOutput(
                error=f"program not found: {action.argv[0]!r}",
                exit_code=127,
                duration_s=time.monotonic() - started,
            )
        except PermissionError:
            return StepOutput(
                error=f"program not executable: {action.argv[0]!r}",
                exit_code=126,
                duration_s=time.monotonic() - started,
            )
        assert proc.stdout is not None
        out = CappedOutput(self._settings.output_cap_bytes)
        timed_out = False
        try:
            async with asyncio.timeout_at(deadline):
                # Until EOF: a background child holding stdout keeps the step running, as in
                # a shell; the deadline bounds it.
                while chunk := await proc.stdout.read(65536):
                    out.feed(chunk)
                await proc.wait()
        except TimeoutError:
            timed_out = True
        finally:
            # A timeout, or the session cancelled: nothing the step started may outlive it.
            if timed_out or proc.returncode is None:
                await self._kill(proc)
        if timed_out:
            log.info("local command timed out", program=action.argv[0], timeout_s=timeout_s)
            return StepOutput(
                output=out.text(),
                timed_out=True,
                error="timeout: the command did not finish in time and was killed",
                duration_s=time.monotonic() - started,
            )
        return StepOutput(
            output=out.text(), exit_code=proc.returncode, duration_s=time.monotonic() - started
        )

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self._settings.kill_grace_s)
        # Also when the leader obeyed: a child that ignores SIGTERM is still in the group.
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def test(self, connection: ConnectionRead) -> str:
        return "local steps run on the orchestrator's host"

    async def forget(self, *, connection: str | None = None, credential: str | None = None) -> None:
        return None

    async def aclose(self) -> None:
        return None

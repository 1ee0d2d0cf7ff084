"""Per-policy batches: one task for every policy of an incident step, each answered in place.

An incident has one protection policy per group of services, and the orchestrator sends one
task per step for all of them (restore's ``cutover_policies``/``cleanup_policies``, tunnel's
``provision_tunnels``/``steer_policies``) so that what the policies share is read once. Each
policy is worked on as a *part* that carries its own ``error``: the exception its own
single-policy task would have failed with. The batch reports that error for that policy
alone (:func:`failure`), and the single form (a batch of one) raises it.

A passing CNC failure (busy, unreachable) is not a policy's answer: it fails the whole task
(:func:`retry_transient`, 503, nothing recorded under the task's idempotency key), so the
caller retries it whole, as it retried the single task. Every batch is written so that doing
it again changes nothing that was already done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Protocol, TypeVar

from shared.errors import SouthboundError, TaskFailed
from shared.models import PolicyFailure

POLICIES_AT_ONCE = 8
"""One batch's policies whose CNC writes are in flight at once (the orchestrator sent this
many single-policy calls at a time before it sent batches)."""


class Part(Protocol):
    """One policy of a batch: whatever it holds, and what it failed with (None: not failed)."""

    error: TaskFailed | SouthboundError | None


P = TypeVar("P", bound=Part)


async def each(
    parts: Sequence[P], work: Callable[[P], Awaitable[None]], *, at_once: int = POLICIES_AT_ONCE
) -> None:
    """``work`` on every part still without an error, ``at_once`` at a time; a part's CNC
    failure (or its own ``TaskFailed``) becomes its ``error``, the others go on."""
    gate = asyncio.Semaphore(at_once)

    async def one(part: P) -> None:
        async with gate:
            try:
                await work(part)
            except (TaskFailed, SouthboundError) as exc:
                part.error = exc

    await asyncio.gather(*(one(p) for p in parts if p.error is None))


def rounds(parts: Sequence[P], key: Callable[[P], Hashable]) -> list[list[P]]:
    """``parts`` in rounds that never hold two parts of one key: a key's parts keep their
    request order, one round after the other, as if each had been its own task."""
    out: list[list[P]] = []
    seen: dict[Hashable, int] = {}
    for part in parts:
        n = seen[key(part)] = seen.get(key(part), -1) + 1
        if n == len(out):
            out.append([])
        out[n].append(part)
    return out


def retry_transient(parts: Iterable[Part]) -> None:
    """A part that failed for a passing reason (CNC busy, unreachable) fails the batch
    (503, nothing recorded under its key), so the caller retries it whole."""
    for part in parts:
        if isinstance(part.error, SouthboundError) and part.error.transient:
            raise part.error


def failure(exc: TaskFailed | SouthboundError) -> PolicyFailure:
    """The ``{code, message}`` and status the single-policy task would have answered."""
    if isinstance(exc, TaskFailed):
        return PolicyFailure(code=exc.code, message=str(exc), status=exc.status)
    return PolicyFailure(code="southbound", message=str(exc), status=502)

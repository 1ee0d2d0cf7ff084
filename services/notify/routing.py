"""Which channels an event goes to: the higher of severity and tier picks a row of the matrix."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from services.notify.settings import CHANNELS, LEVELS, Channel

SEVERITY_LEVEL: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
TIER_LEVEL: dict[str, int] = {"platinum": 0, "gold": 1, "silver": 2, "bronze": 3}


def level_of(severity: str, tier: str | None) -> str:
    """The routing level: a silver incident of critical severity is routed as critical, and a
    low-severity incident that hurts a platinum service is routed as critical too."""
    rank = min(SEVERITY_LEVEL.get(severity, 2), TIER_LEVEL.get(tier or "", 4))
    return "info" if rank >= len(LEVELS) else LEVELS[rank]


def route(
    severity: str,
    tier: str | None,
    matrix: Mapping[str, Sequence[Channel]],
    *,
    always: Collection[Channel] = (),
    only: Collection[Channel] | None = None,
) -> tuple[str, list[Channel]]:
    """``(level, channels)`` in the fixed channel order; ``info`` falls back to the ``low`` row.

    ``always`` joins the level's row whatever its level (a ticket that came from ServiceNow
    keeps its own record up to date even when its severity would not create one); ``only``,
    when given, keeps just those of the result (``Notify.channels``: a runbook step's work
    note is for ServiceNow, not for Webex or Email).
    """
    level = level_of(severity, tier)
    row = matrix.get(level)
    if row is None and level == "info":
        row = matrix.get("low", ())
    wanted = set(row or ()) | set(always)
    if only is not None:
        wanted &= set(only)
    return level, [c for c in CHANNELS if c in wanted]

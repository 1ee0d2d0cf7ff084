"""RFC 2439-style flap dampening for links, with exponential decay of a penalty.

Each state change of a link after its first (degraded ↔ clear) adds a fixed penalty; the
penalty halves every half-life. Above the suppress threshold the link is dampened: its
alerts stop driving incidents until the penalty decays below the reuse threshold, or the
maximum suppression time has passed. As in RFC 2439 the penalty is capped at
``reuse * 2 ** (max_suppress / half_life)`` so no link stays dampened longer than the maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class DampeningParams:
    penalty: float
    half_life_s: float
    suppress: float
    reuse: float
    max_suppress_s: float

    @property
    def ceiling(self) -> float:
        return self.reuse * 2 ** (self.max_suppress_s / self.half_life_s)


@dataclass
class LinkFlapState:
    """One link's flap history: whether it is degraded, its penalty, and suppression."""

    link: str
    degraded: bool = False
    seen: bool = False
    penalty: float = 0.0
    updated_at: datetime | None = None
    suppressed_since: datetime | None = None
    changes: int = 0
    firing: set[str] = field(default_factory=set)
    """Fingerprints of the alerts now firing on the link; degraded while non-empty."""

    def decayed(self, now: datetime, params: DampeningParams) -> float:
        if self.updated_at is None or self.penalty <= 0:
            return self.penalty
        elapsed = max(0.0, (now - self.updated_at).total_seconds())
        return self.penalty * 0.5 ** (elapsed / params.half_life_s)

    @property
    def suppressed(self) -> bool:
        return self.suppressed_since is not None

    def record(self, degraded: bool, now: datetime, params: DampeningParams) -> bool:
        """Apply a new degraded/clear state; True when the link just became suppressed."""
        if not self.seen:
            self.seen = True
            self.degraded = degraded
            self.updated_at = now
            return False
        if degraded == self.degraded:
            return False
        self.degraded = degraded
        self.changes += 1
        self.penalty = min(self.decayed(now, params) + params.penalty, params.ceiling)
        self.updated_at = now
        if not self.suppressed and self.penalty >= params.suppress:
            self.suppressed_since = now
            return True
        return False

    def reusable(self, now: datetime, params: DampeningParams) -> bool:
        """True when a suppressed link may be used again (penalty below reuse, or max time)."""
        if self.suppressed_since is None:
            return False
        if self.decayed(now, params) < params.reuse:
            return True
        return (now - self.suppressed_since).total_seconds() >= params.max_suppress_s

    def release(self, now: datetime, params: DampeningParams) -> None:
        self.penalty = self.decayed(now, params)
        self.updated_at = now
        self.suppressed_since = None

    def reuse_at(self, now: datetime, params: DampeningParams) -> datetime:
        """When the penalty will have decayed below reuse (bounded by the maximum)."""
        penalty = self.decayed(now, params)
        wait = 0.0
        if penalty > params.reuse:
            wait = params.half_life_s * math.log2(penalty / params.reuse)
        since = self.suppressed_since or now
        latest = since + timedelta(seconds=params.max_suppress_s)
        return min(now + timedelta(seconds=wait), latest)

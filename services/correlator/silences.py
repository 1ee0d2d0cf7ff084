"""Silences and maintenance windows, with Alertmanager's label matchers (=, !=, =~, !~).

A regular-expression matcher is anchored at both ends, as in Alertmanager; a label an alert
does not carry matches as the empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

MatchOp = Literal["=", "!=", "=~", "!~"]


class Matcher(BaseModel):
    name: str = Field(min_length=1)
    value: str
    op: MatchOp = "="

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}: bad regular expression: {exc}") from None
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        given = labels.get(self.name, "")
        if self.op == "=":
            return given == self.value
        if self.op == "!=":
            return given != self.value
        hit = re.fullmatch(self.value, given) is not None
        return hit if self.op == "=~" else not hit


class SilenceCreate(BaseModel):
    matchers: list[Matcher] = Field(min_length=1)
    starts_at: datetime | None = None
    ends_at: datetime
    created_by: str = Field(min_length=1)
    comment: str = ""
    kind: Literal["silence", "maintenance"] = "silence"

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a timezone (for example a trailing Z)")
        return value


class SilenceRead(SilenceCreate):
    id: str
    starts_at: datetime
    created_at: datetime
    state: Literal["pending", "active", "expired"]


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    kind: str
    created_at: datetime

    def state(self, now: datetime) -> Literal["pending", "active", "expired"]:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def read(self, now: datetime) -> SilenceRead:
        return SilenceRead(
            id=self.id,
            matchers=self.matchers,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            created_by=self.created_by,
            comment=self.comment,
            kind=self.kind,
            created_at=self.created_at,
            state=self.state(now),
        )

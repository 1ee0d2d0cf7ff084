"""What one runbook step does on its target, with the ticket's values already filled in.

:func:`services.orchestrator.runbooks.render.render` turns a step of a runbook document and a
ticket into one of these; a connector (``connectors/``) runs it. The split is the injection
boundary: every value that came from a ticket is already quoted for the connector that will
run it (``shlex.quote`` for a remote shell, a list element for a local command, a bind
parameter for SQL, a percent-encoded path segment or a JSON value for HTTP), so a connector
never interpolates anything itself.

``display`` is what a person approving the step sees: the exact command with the values in,
and secrets masked (a connector never puts a secret into an action; credentials are resolved
by the connector from the inventory).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SshCommand:
    """One command line for the remote login shell; ticket values are ``shlex.quote``-d."""

    command: str

    @property
    def display(self) -> str:
        return self.command


@dataclass(frozen=True)
class LocalCommand:
    """A program and its arguments, run without a shell (each ticket value is one argument)."""

    argv: tuple[str, ...]

    @property
    def display(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class DbQuery:
    """SQL with bind parameters (ticket values never enter the text); ``writes`` False means
    the connector runs it in a read-only transaction."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    writes: bool = False

    @property
    def display(self) -> str:
        shown = json.dumps(dict(self.params), sort_keys=True, default=str)
        return f"{self.sql}  -- params {shown}" if self.params else self.sql


@dataclass(frozen=True)
class HttpRequest:
    """A request relative to the connection's base URL; path segments from the ticket are
    percent-encoded, the body is JSON."""

    method: str
    path: str
    body: Any = None

    @property
    def display(self) -> str:
        if self.body is None:
            return f"{self.method} {self.path}"
        return f"{self.method} {self.path} {json.dumps(self.body, sort_keys=True)}"


Action = SshCommand | LocalCommand | DbQuery | HttpRequest


@dataclass(frozen=True)
class StepOutput:
    """What running an action gave: the connector's raw result, before ``expect`` is judged.

    ``exit_code`` for commands, ``status`` for HTTP, ``rows`` for a query (also rendered into
    ``output``). ``output`` is stdout and stderr together, capped by the connector (and says
    so when cut). ``transient`` marks errors worth retrying for an idempotent step (connect
    refused, timeout before anything ran, HTTP 502/503/504); ``error`` says what failed when
    the action could not run to completion at all.
    """

    output: str = ""
    exit_code: int | None = None
    status: int | None = None
    rows: list[dict[str, Any]] | None = None
    duration_s: float = 0.0
    error: str | None = None
    transient: bool = False
    timed_out: bool = False

"""Runbook documents: the DESIGN contract as pydantic models, parsing JSON or YAML, and judging
a step's result against its ``expect``.

A document::

    {id, title, description, keywords[], labels{}, severities[],
     steps: {prechecks[], main[], postchecks[]}, rollback[]}

and a step::

    {name, connector: ssh|database|http|local, connection, command | query | request
     {method, path, body}, timeout_s, expect {exit_code?, contains?, regex?, status?},
     requires_approval, idempotent, writes}

Choices made on top of the contract:

- ``writes`` (default false) is for database steps only: a query runs in a read-only
  transaction unless the step says it writes (``DbQuery.writes``).
- A local step's ``command`` is split into argv with ``shlex.split``; no ``args`` form is
  needed because quoting in the command already groups an argument with spaces.
- ``connection`` names an inventory entry and may itself hold placeholders: the shipped
  library writes ``{{ticket.host}}`` for SSH to the host the alert is about,
  ``{{ticket.host}}-postgres`` for the PostgreSQL server on it, ``{{ticket.host}}-http``
  for its HTTP endpoint and ``kubectl-<cluster>`` for a host that runs ``kubectl``. A
  rendered connection name must match :data:`CONNECTION_NAME` (a hostname-like token), so a
  ticket cannot smuggle anything into it.

Placeholders take values from the ticket: ``{{ticket.<field>}}`` for the fields in
:data:`TICKET_FIELDS` and ``{{ticket.labels.<key>}}`` for a label, optionally with a default
written by the runbook author, ``{{ticket.labels.path | default("/var/tmp")}}``. A missing
or empty value without a default fails the rendering (``render.RenderError``). Other
``{{...}}`` text (Go templates in ``docker inspect -f '{{.State}}'``) is left alone; only
text that looks like a placeholder (``{{ticket...``, ``{{host}}``) must be a valid one.

Where a placeholder may sit is checked here, because whether a value can break out depends on
its context: in an SSH command it is ``shlex.quote``-d, which is only safe in plain word
position (not inside quotes, ``${...}``, backquotes, arithmetic, a comment, after ``$`` or a
backslash, or in a command with a here-document); in SQL it becomes a bind parameter, which
only works outside string literals, quoted identifiers and comments and with no word or
``:`` glued to it; in a local command the program itself, or anything handed to a shell or
an interpreter, may not come from the ticket.

Errors: :class:`RunbookInvalid` carries every problem with the field path and the step's
name (``steps.main[1] (name "restart nginx").timeout_s: must be > 0``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from services.orchestrator.runbooks.actions import StepOutput
from shared.errors import CxmError
from shared.models import Severity

Connector = Literal["ssh", "database", "http", "local"]
PHASES: tuple[str, ...] = ("prechecks", "main", "postchecks")
"""The phases of ``steps``, in the order they run; ``rollback`` runs when one of them fails."""

TICKET_FIELDS: dict[str, str] = {
    "id": "the ticket's id (the incident id, e.g. INC-2025-0042)",
    "title": "the alert's or ticket's title",
    "description": "the ticket's description",
    "host": "the host the alert is about (Alertmanager instance/host, Datadog host_name)",
    "service": "the service or systemd unit the alert names",
    "severity": "critical, high, medium, low or info",
    "source": "where the ticket came from (alertmanager, datadog, servicenow, csv, demo)",
    "environment": "prod, staging or dev",
}
"""Ticket fields a placeholder may name, besides ``labels.<key>``."""

CONNECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""What a connection name must look like once rendered: the inventory's own name rule (a
hostname, an IPv4 address or a slug), so a ticket value can only ever name an entry."""

ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")

_LABEL_KEY = r"[A-Za-z0-9_-]+"
_PLACEHOLDER = re.compile(
    r"""\{\{\s*ticket\.(?P<field>[A-Za-z_]+)(?:\.(?P<key>"""
    + _LABEL_KEY
    + r"""))?\s*(?:\|\s*default\(\s*(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)')\s*\)\s*)?\}\}"""
)
# Anything that starts like a placeholder must parse as one: "{{ticket.hots}}" or "{{host}}"
# is a typo, not text to keep.
_LOOKS_LIKE = re.compile(r"\{\{\s*(?:ticket\b|(?:" + "|".join([*TICKET_FIELDS, "labels"]) + r")\b)")


class RunbookError(CxmError):
    """Base of the runbook errors; ``status`` and ``code`` are what the REST API answers."""

    status: int = 422
    code: str = "runbook_error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (a field path naming the step) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RunbookInvalid(RunbookError, ValueError):
    """A runbook document that cannot be used; ``problems`` lists every reason found.

    It is a ``ValueError`` so a pydantic validator can raise it and keep it (in the error's
    ``ctx``), which is how a step's own problems reach the document-level report.
    """

    code = "runbook_invalid"

    def __init__(
        self,
        problems: Sequence[Problem],
        *,
        source: str | None = None,
        status: int = 422,
    ) -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        self.status = status
        text = "; ".join(str(p) for p in self.problems) or "invalid runbook"
        super().__init__(f"{source}: {text}" if source else f"runbook invalid: {text}")


# --- placeholders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """One ``{{ticket...}}`` in a template, with its position in that template."""

    start: int
    end: int
    text: str
    field: str
    key: str | None
    default: str | None

    @property
    def name(self) -> str:
        return f"ticket.{self.field}" + (f".{self.key}" if self.key else "")


def find_placeholders(text: str) -> tuple[list[Placeholder], list[str]]:
    """The placeholders in ``text``, and what is wrong with the ones that are not valid."""
    found: list[Placeholder] = []
    problems: list[str] = []
    for candidate in _LOOKS_LIKE.finditer(text):
        match = _PLACEHOLDER.match(text, candidate.start())
        snippet = text[candidate.start() : candidate.start() + 40].split("\n")[0]
        if match is None:
            problems.append(
                f"malformed placeholder {snippet!r}: write {{{{ticket.<field>}}}} or "
                f'{{{{ticket.labels.<key>}}}}, optionally with | default("...")'
            )
            continue
        field, key = match.group("field"), match.group("key")
        if field == "labels" and key is None:
            problems.append(f"{match.group(0)} names no label: write {{{{ticket.labels.<key>}}}}")
            continue
        if field != "labels" and (field not in TICKET_FIELDS or key is not None):
            known = ", ".join([*TICKET_FIELDS, "labels.<key>"])
            problems.append(f"{match.group(0)} is not a ticket field (known: {known})")
            continue
        default = match.group("dq") if match.group("dq") is not None else match.group("sq")
        found.append(Placeholder(match.start(), match.end(), match.group(0), field, key, default))
    return found, problems


_SHELL_BREAK = frozenset(" \t\n;&|()<>")


def shell_placeholder_problems(command: str, found: Sequence[Placeholder]) -> list[str]:
    """Placeholders of an SSH command that are not in plain word position.

    ``shlex.quote`` makes a value one literal word only where the shell would start or
    continue an unquoted word; everywhere else (inside quotes, ``${...}``, backquotes,
    ``$((...))``, a comment, after ``$`` or ``\\``, a here-document) the quote characters
    themselves lose their meaning and the value could run. ``$(...)`` starts a fresh
    context, so a placeholder there is fine.
    """
    if not found:
        return []
    starts = {p.start: p for p in found}
    problems: list[str] = []
    stack: list[str] = ["top"]
    depth: list[int] = [0]
    heredoc = False
    prev = ""
    seen: set[int] = set()
    i, n = 0, len(command)

    def push(state: str) -> None:
        stack.append(state)
        depth.append(0)

    def pop() -> None:
        if len(stack) > 1:
            stack.pop()
            depth.pop()

    where_of = {
        "sq": "inside single quotes",
        "ansi": "inside $'...' quotes",
        "dq": "inside double quotes",
        "bt": "inside backquotes",
        "brace": "inside ${...}",
        "arith": "inside $((...))",
    }
    while i < n:
        state = stack[-1]
        if i in starts:
            placeholder = starts[i]
            seen.add(i)
            where = where_of.get(state)
            if where is None and prev == "$":
                where = "right after $"
            if where is None and heredoc:
                where = "in a command with a here-document (<<)"
            if where is not None:
                problems.append(
                    f"{placeholder.text} sits {where}: write it unquoted, as its own word "
                    "(the value is shell-quoted for you)"
                )
            i, prev = placeholder.end, "}"
            continue
        c = command[i]
        if state in ("top", "cmd"):
            if c == "\\":
                if i + 1 in starts:
                    problems.append(f"{starts[i + 1].text} is escaped by a backslash")
                    seen.add(i + 1)
                i, prev = i + 2, "x"
                continue
            if c == "#" and (prev == "" or prev in _SHELL_BREAK):
                end = command.find("\n", i)
                end = n if end < 0 else end
                for start, placeholder in starts.items():
                    if i < start < end:
                        problems.append(f"{placeholder.text} sits in a comment")
                        seen.add(start)
                i = end
                continue
            if c == "$" and i + 1 in starts:
                problems.append(f"{starts[i + 1].text} sits right after $")
                seen.add(i + 1)
                i, prev = starts[i + 1].end, "}"
                continue
            if command.startswith("<<<", i):
                i, prev = i + 3, "<"
                continue
            if command.startswith("<<", i):
                heredoc = True
                i, prev = i + 2, "<"
                continue
            if command.startswith("$((", i):
                push("arith")
                i, prev = i + 3, "("
                continue
            if command.startswith("$(", i) or (c in "<>" and command.startswith("(", i + 1)):
                push("cmd")
                i, prev = i + 2, "("
                continue
            if command.startswith("${", i):
                push("brace")
                i, prev = i + 2, "{"
                continue
            if c == "'":
                push("ansi" if prev == "$" else "sq")
            elif c == '"':
                push("dq")
            elif c == "`":
                push("bt")
            elif c == "(" and state == "cmd":
                depth[-1] += 1
            elif c == ")" and state == "cmd":
                if depth[-1]:
                    depth[-1] -= 1
                else:
                    pop()
            prev = c
            i += 1
            continue
        # Inside a quoting context: only what ends it (or opens a nested one) matters.
        if c == "\\" and state in ("ansi", "dq", "bt"):
            if i + 1 in starts:
                problems.append(f"{starts[i + 1].text} is escaped by a backslash")
                seen.add(i + 1)
            i += 2
            continue
        closes = {"sq": "'", "ansi": "'", "dq": '"', "bt": "`", "brace": "}"}
        if c == closes.get(state):
            pop()
        elif state == "arith" and c == "(":
            depth[-1] += 1
        elif state == "arith" and c == ")":
            if depth[-1]:
                depth[-1] -= 1
            elif command.startswith("))", i):
                pop()
                i += 1
        elif state in ("dq", "brace", "arith") and command.startswith("$((", i):
            push("arith")
            i += 2
        elif state in ("dq", "brace", "arith") and command.startswith("$(", i):
            push("cmd")
            i += 1
        elif state in ("dq", "brace", "arith") and command.startswith("${", i):
            push("brace")
            i += 1
        elif state in ("dq", "brace") and c == "`":
            push("bt")
        elif state == "brace" and c in "'\"":
            push("sq" if c == "'" else "dq")
        prev = c
        i += 1
    if len(stack) > 1:
        problems.append(
            "the command has unbalanced quotes or brackets, so the placeholders' context "
            "cannot be checked"
        )
    # A placeholder the scan stepped over (inside an escape it did not expect) is unchecked,
    # and unchecked is refused.
    problems.extend(
        f"{p.text}: its shell context could not be checked" for p in found if p.start not in seen
    )
    return problems


def sql_placeholder_problems(sql: str, found: Sequence[Placeholder]) -> list[str]:
    """Placeholders of a query that cannot become a bind parameter where they are.

    ``:p0`` is a bind parameter only outside string literals, quoted identifiers and
    comments, and only with no word character or ``:`` on either side (``{{x}}::int`` would
    read as the text ``:p0::int``; write ``CAST({{x}} AS text)``).
    """
    if not found:
        return []
    starts = {p.start: p for p in found}
    problems: list[str] = []
    state, block_depth, tag = "normal", 0, ""
    seen: set[int] = set()
    i, n = 0, len(sql)
    where_of = {
        "str": "inside a string literal",
        "estr": "inside a string literal",
        "ident": "inside a quoted identifier",
        "line": "in a comment",
        "block": "in a comment",
        "dollar": "inside a dollar-quoted string",
    }
    while i < n:
        if i in starts:
            placeholder = starts[i]
            seen.add(i)
            if state != "normal":
                problems.append(
                    f"{placeholder.text} sits {where_of[state]}: write it bare, it becomes a "
                    "bind parameter"
                )
            else:
                before = sql[i - 1] if i else " "
                after = sql[placeholder.end] if placeholder.end < n else " "
                if before == ":" or before.isalnum() or before == "_":
                    problems.append(f"{placeholder.text} is glued to {before!r} before it")
                if after == ":" or after.isalnum() or after == "_":
                    problems.append(
                        f"{placeholder.text} is glued to {after!r} after it (to cast, write "
                        "CAST({{...}} AS type))"
                    )
            i = placeholder.end
            continue
        c = sql[i]
        if state == "normal":
            if c == "'":
                before = sql[i - 1] if i else " "
                before2 = sql[i - 2] if i > 1 else " "
                escaped = before in "eE" and not (before2.isalnum() or before2 == "_")
                state = "estr" if escaped else "str"
            elif c == '"':
                state = "ident"
            elif sql.startswith("--", i):
                state = "line"
            elif sql.startswith("/*", i):
                state, block_depth = "block", 1
                i += 1
            elif c == "$" and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                match = re.match(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
                if match:
                    state, tag = "dollar", match.group(0)
                    i += len(tag) - 1
        elif state in ("str", "estr"):
            if c == "\\" and state == "estr":
                i += 1
            elif c == "'":
                if sql.startswith("''", i):
                    i += 1
                else:
                    state = "normal"
        elif state == "ident":
            if c == '"':
                if sql.startswith('""', i):
                    i += 1
                else:
                    state = "normal"
        elif state == "line":
            if c == "\n":
                state = "normal"
        elif state == "block":
            if sql.startswith("/*", i):
                block_depth += 1
                i += 1
            elif sql.startswith("*/", i):
                block_depth -= 1
                i += 1
                if block_depth == 0:
                    state = "normal"
        elif state == "dollar" and sql.startswith(tag, i):
            state = "normal"
            i += len(tag) - 1
        i += 1
    problems.extend(
        f"{p.text}: its SQL context could not be checked" for p in found if p.start not in seen
    )
    return problems


# Programs that would treat an argument as code: a ticket value handed to one of them is
# parsed again, which is exactly the injection a local step must not allow.
_INTERPRETER_NAMES = (
    "sh bash dash zsh ksh mksh fish csh tcsh busybox python python3 perl ruby node php lua "
    "awk gawk mawk sed ssh su eval xargs watch script"
)
_INTERPRETERS = frozenset(_INTERPRETER_NAMES.split())


def local_placeholder_problems(command: str, found: Sequence[Placeholder]) -> list[str]:
    """What keeps a local command from becoming argv with each placeholder one argument."""
    if "\ue000" in command or "\ue001" in command:
        return ["must not contain the characters U+E000 or U+E001 (used to mark placeholders)"]
    argv, problems = split_local(command, found)
    if problems or not found:
        return problems
    for index, token in enumerate(argv):
        if "\ue000" not in token:
            continue
        if index == 0:
            problems.append("the program to run cannot come from the ticket")
            continue
        shells = [t for t in argv[:index] if PurePosixPath(t).name in _INTERPRETERS]
        if shells:
            problems.append(
                f"argument {index} holds a ticket value and is handed to {shells[0]!r}, which "
                "would parse it as code"
            )
    return problems


def split_local(command: str, found: Sequence[Placeholder]) -> tuple[list[str], list[str]]:
    """``shlex.split`` the command with each placeholder first replaced by a sentinel
    (``\\ue000<n>\\ue001``, private-use characters) so a placeholder written with spaces
    inside its braces still lands in one argument."""
    masked, last = [], 0
    for index, placeholder in enumerate(found):
        masked.append(command[last : placeholder.start])
        masked.append(f"\ue000{index}\ue001")
        last = placeholder.end
    masked.append(command[last:])
    try:
        argv = shlex.split("".join(masked))
    except ValueError as exc:
        return [], [f"cannot be split into arguments: {exc}"]
    if not argv:
        return [], ["is empty"]
    return argv, []


# --- models --------------------------------------------------------------------------------


class _Model(BaseModel):
    # An unknown key is a typo ("comand") that would otherwise be silently ignored.
    model_config = ConfigDict(extra="forbid")


class Expect(_Model):
    """What a step's result must show; unset means the connector's default (see :func:`judge`)."""

    exit_code: int | None = Field(default=None, ge=0, le=255)
    contains: str | None = Field(default=None, min_length=1)
    regex: str | None = Field(default=None, min_length=1)
    status: int | None = Field(default=None, ge=100, le=599)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class Request(_Model):
    """An HTTP step's request, relative to the connection's base URL; the body is JSON."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(min_length=1)
    body: Any = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Step(_Model):
    """One step: where it runs (``connector``, ``connection``), what it runs, and how its
    result is judged."""

    name: str = Field(min_length=1, max_length=200)
    connector: Connector
    connection: str | None = None
    command: str | None = None
    query: str | None = None
    request: Request | None = None
    writes: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    """Seconds the action may take; unset means the connector pool's default."""
    expect: Expect = Field(default_factory=Expect)
    requires_approval: bool = False
    idempotent: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Step:
        problems = step_problems(self)
        if problems:
            raise RunbookInvalid(problems)
        return self

    def templates(self) -> Iterator[tuple[str, str]]:
        """Every text of the step that may hold placeholders, with its field path."""
        if self.connection is not None:
            yield "connection", self.connection
        if self.command is not None:
            yield "command", self.command
        if self.query is not None:
            yield "query", self.query
        if self.request is not None:
            yield "request.path", self.request.path
            yield from _body_strings(self.request.body, "request.body")


def _body_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """The string values of a JSON body (keys are not templates), with their paths."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _body_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _body_strings(item, f"{path}[{index}]")


def _body_keys(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}.{key}", str(key)
            yield from _body_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _body_keys(item, f"{path}[{index}]")


_ACTION_FIELD: dict[str, str] = {
    "ssh": "command",
    "local": "command",
    "database": "query",
    "http": "request",
}


def step_problems(step: Step) -> list[Problem]:
    """Everything wrong with one step, with paths relative to the step."""
    problems: list[Problem] = []
    wanted = _ACTION_FIELD[step.connector]
    given = {
        "command": step.command is not None,
        "query": step.query is not None,
        "request": step.request is not None,
    }
    if not given[wanted]:
        problems.append(Problem(wanted, f"required for a {step.connector} step"))
    for other, present in given.items():
        if present and other != wanted:
            problems.append(
                Problem(other, f"not used by a {step.connector} step (it takes {wanted})")
            )
    for text_field in ("command", "query"):
        text = getattr(step, text_field)
        if text is not None and not text.strip():
            problems.append(Problem(text_field, "must not be empty"))
    if step.connector == "local":
        if step.connection is not None:
            problems.append(
                Problem("connection", "a local step runs on the orchestrator and names none")
            )
    elif step.connection is None or not step.connection.strip():
        problems.append(Problem("connection", f"required for a {step.connector} step"))
    if step.writes and step.connector != "database":
        problems.append(Problem("writes", "only a database step can say it writes"))
    if step.expect.exit_code is not None and step.connector not in ("ssh", "local"):
        problems.append(Problem("expect.exit_code", f"a {step.connector} step has no exit code"))
    if step.expect.status is not None and step.connector != "http":
        problems.append(Problem("expect.status", "only an http step has a status"))
    if step.request is not None and step.connector == "http":
        path = step.request.path
        if not path.startswith("/") or path.startswith("//"):
            problems.append(
                Problem("request.path", "must start with one / (relative to the base URL)")
            )
        if step.request.body is not None and step.request.method in ("GET", "HEAD"):
            problems.append(Problem("request.body", f"a {step.request.method} sends no body"))
        try:
            json.dumps(step.request.body)
        except (TypeError, ValueError) as exc:
            problems.append(Problem("request.body", f"must be JSON: {exc}"))
        for path, key in _body_keys(step.request.body, "request.body"):
            if _LOOKS_LIKE.search(key):
                problems.append(Problem(path, "a JSON key cannot hold a placeholder"))
    for path, text in step.templates():
        found, bad = find_placeholders(text)
        problems.extend(Problem(path, message) for message in bad)
        if path == "command" and step.connector == "ssh":
            context = shell_placeholder_problems(text, found)
        elif path == "command" and step.connector == "local":
            context = local_placeholder_problems(text, found)
        elif path == "query":
            context = sql_placeholder_problems(text, found)
        else:
            context = []
        problems.extend(Problem(path, message) for message in context)
    return problems


class Steps(_Model):
    prechecks: list[Step] = Field(default_factory=list)
    main: list[Step] = Field(min_length=1)
    postchecks: list[Step] = Field(default_factory=list)


class RunbookDocument(_Model):
    """A runbook as the contract has it (see the module docstring)."""

    id: str
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    keywords: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    severities: list[Severity] = Field(default_factory=list)
    steps: Steps
    rollback: list[Step] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(
                "must be a lowercase slug of a-z, 0-9, '.', '_' and '-' (at most 64 "
                "characters, starting and ending with a letter or digit)"
            )
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        if any(not keyword.strip() for keyword in value):
            raise ValueError("a keyword must not be empty")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> RunbookDocument:
        first: dict[str, str] = {}
        problems: list[Problem] = []
        for phase, index, step in self.iter_steps():
            where = step_path(phase, index, step.name)
            if step.name in first:
                problems.append(Problem(f"{where}.name", f"duplicate of {first[step.name]}"))
            else:
                first[step.name] = where
        if problems:
            raise RunbookInvalid(problems)
        return self

    def iter_steps(self) -> Iterator[tuple[str, int, Step]]:
        """Every step with its phase (``prechecks``, ``main``, ``postchecks``, ``rollback``)."""
        for phase in PHASES:
            for index, step in enumerate(getattr(self.steps, phase)):
                yield phase, index, step
        for index, step in enumerate(self.rollback):
            yield "rollback", index, step

    def placeholders(self) -> list[Placeholder]:
        """Every placeholder of every step (the ticket fields this runbook reads)."""
        return [
            placeholder
            for _phase, _index, step in self.iter_steps()
            for _path, text in step.templates()
            for placeholder in find_placeholders(text)[0]
        ]


def step_path(phase: str, index: int, name: str | None) -> str:
    """``steps.main[1] (name "restart nginx")``: where a step sits, for messages."""
    base = f"rollback[{index}]" if phase == "rollback" else f"steps.{phase}[{index}]"
    return f"{base} (name {json.dumps(name)})" if name else base


# --- parsing -------------------------------------------------------------------------------

_JSON_TYPES = frozenset({"application/json", "text/json"})
_YAML_TYPES = frozenset({"application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml"})


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (two ``command:`` keys would silently keep the
    second) and aliases of anything but a scalar (nested aliases expand exponentially)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and not isinstance(node, yaml.ScalarNode):
                raise yaml.composer.ComposerError(
                    None, None, "an alias may only repeat a scalar", event.start_mark
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(exc: Any) -> str:
    """``duplicate key 'id' at line 2 column 1`` rather than PyYAML's multi-line text."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        context = getattr(exc, "context", None)
        where = f"line {mark.line + 1} column {mark.column + 1}"
        return f"{problem} at {where}" + (f" ({context})" if context else "")
    return " ".join(str(exc).split())


def parse_runbook(body: bytes | str, content_type: str) -> RunbookDocument:
    """A document from a request body: JSON, or YAML for ``application/yaml``, ``text/yaml``
    or ``application/x-yaml`` (parameters such as ``; charset=utf-8`` are ignored).

    Raises :class:`RunbookInvalid` listing every problem (status 415 for another type).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    is_json = media in _JSON_TYPES or media.endswith("+json")
    is_yaml = media in _YAML_TYPES or media.endswith("+yaml")
    if not (is_json or is_yaml):
        raise RunbookInvalid(
            [
                Problem(
                    "",
                    f"unsupported content type {content_type!r}: send application/json or "
                    "application/yaml",
                )
            ],
            status=415,
        )
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunbookInvalid([Problem("", f"not UTF-8: {exc}")]) from None
    else:
        text = body
    data: Any
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunbookInvalid(
                [Problem("", f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
            ) from None
    else:
        try:
            data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise RunbookInvalid([Problem("", f"not valid YAML: {_yaml_error(exc)}")]) from None
    return validate_runbook(data)


def validate_runbook(data: Any) -> RunbookDocument:
    """A document from already-parsed data; raises :class:`RunbookInvalid`."""
    if not isinstance(data, Mapping):
        kind = "nothing" if data is None else type(data).__name__
        raise RunbookInvalid([Problem("", f"a runbook is a mapping of fields, got {kind}")])
    try:
        return RunbookDocument.model_validate(data)
    except ValidationError as exc:
        raise RunbookInvalid(_problems_from(exc, data)) from None


def _problems_from(error: ValidationError, data: Any) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        base = _format_loc(tuple(item["loc"]), data)
        nested = (item.get("ctx") or {}).get("error")
        if isinstance(nested, RunbookInvalid):
            for problem in nested.problems:
                joined = f"{base}.{problem.path}" if base and problem.path else base or problem.path
                problems.append(Problem(joined, problem.message))
        else:
            problems.append(Problem(base, _message(item)))
    return problems


def _format_loc(loc: tuple[Any, ...], data: Any) -> str:
    """``('steps', 'main', 1, 'timeout_s')`` → ``steps.main[1] (name "x").timeout_s``, with
    the name read from the raw input (the step did not validate, so there is no model)."""
    text, node = "", data
    for position, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            parent = loc[:position]
            is_step = parent == ("rollback",) or (
                len(parent) == 2 and parent[0] == "steps" and parent[1] in PHASES
            )
            if is_step and isinstance(node, Mapping) and isinstance(node.get("name"), str):
                text += f" (name {json.dumps(node['name'])})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return text


def _message(item: Mapping[str, Any]) -> str:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    bounds = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", ">="),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "<="),
    }
    if kind in bounds:
        key, op = bounds[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    message = str(item["msg"])
    message = message.removeprefix("Value error, ")
    return message.replace("Input should be", "must be")


# --- judging a result ------------------------------------------------------------------------


def judge(expect: Expect | None, output: StepOutput) -> tuple[bool, str]:
    """Whether a step's result meets ``expect``, and why (or why not).

    Defaults when ``expect`` says nothing: a command must exit 0, an HTTP answer must be 2xx,
    a query must complete without an error. A timeout or an error that kept the action from
    completing always fails. ``contains`` is a substring and ``regex`` a ``re.search`` (with
    ``re.MULTILINE``) of the output.
    """
    want = expect or Expect()
    if output.timed_out:
        return False, f"timed out after {output.duration_s:.1f}s" + (
            f": {output.error}" if output.error else ""
        )
    if output.error is not None:
        return False, f"did not complete: {output.error}"
    reasons: list[str] = []
    if output.exit_code is not None or want.exit_code is not None:
        expected = want.exit_code if want.exit_code is not None else 0
        if output.exit_code != expected:
            got = "no exit code" if output.exit_code is None else f"exit code {output.exit_code}"
            return False, f"{got}, expected {expected}"
        reasons.append(f"exit code {output.exit_code}")
    if output.status is not None or want.status is not None:
        if want.status is not None:
            if output.status != want.status:
                return False, f"HTTP {output.status}, expected {want.status}"
        elif output.status is None or not 200 <= output.status < 300:
            return False, f"HTTP {output.status}, expected 2xx"
        reasons.append(f"HTTP {output.status}")
    if output.rows is not None:
        reasons.append(f"{len(output.rows)} row(s)")
    if want.contains is not None:
        if want.contains not in output.output:
            return False, f"output does not contain {want.contains!r}"
        reasons.append(f"output contains {want.contains!r}")
    if want.regex is not None:
        if re.search(want.regex, output.output, re.MULTILINE) is None:
            return False, f"output does not match /{want.regex}/"
        reasons.append(f"output matches /{want.regex}/")
    return True, "; ".join(reasons) or "completed"

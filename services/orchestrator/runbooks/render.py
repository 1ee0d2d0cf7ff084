"""Rendering one runbook step for one ticket: the injection boundary.

A ticket's values come from outside (an alert's labels, a ServiceNow field someone typed), so
each one is put into the step the only way its connector cannot misread:

- ``ssh``: ``shlex.quote``-d into the command line, at positions the document check allows
  (plain word position: see :func:`documents.shell_placeholder_problems`), so the remote
  POSIX shell sees one literal word.
- ``local``: the command is split into argv with ``shlex.split`` *before* substitution and a
  token holding a placeholder becomes one argv element; no shell ever runs.
- ``database``: each placeholder becomes a bind parameter (``:p0``, ``:p1`` … in
  ``DbQuery.params``, the same placeholder reusing its parameter); values never enter the SQL.
- ``http``: in the path each value is percent-encoded with ``quote(value, safe="")`` (so a
  ``/`` or ``?`` in it stays inside its segment; ``.`` and ``..`` are refused because a client
  would collapse them); in the body a string that is exactly one placeholder becomes the
  value itself, and a placeholder inside longer text becomes part of that JSON string.

``{{ticket.id}}`` reads ``ticket["id"]`` and falls back to ``ticket["incident_id"]`` (the
orchestrator's name for it); ``{{ticket.labels.<key>}}`` reads ``ticket["labels"][key]``. A
value that is missing, ``None`` or blank uses the placeholder's default or fails with
:class:`RenderError` naming the placeholder and the step. Only scalars (text, numbers,
booleans) are values; a NUL character is refused everywhere (no shell, argv or SQL text can
carry one).

The connection is rendered by :func:`render_connection`: values go in verbatim, and the name
must then match :data:`documents.CONNECTION_NAME`, so it can only ever name an inventory entry.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any
from urllib.parse import quote

from services.orchestrator.runbooks.actions import (
    Action,
    DbQuery,
    HttpRequest,
    LocalCommand,
    SshCommand,
)
from services.orchestrator.runbooks.documents import (
    CONNECTION_NAME,
    Placeholder,
    RunbookDocument,
    RunbookError,
    Step,
    find_placeholders,
    local_placeholder_problems,
    shell_placeholder_problems,
    split_local,
    sql_placeholder_problems,
)

Value = str | int | float | bool
_SENTINEL = re.compile("\ue000([0-9]+)\ue001")


class RenderError(RunbookError):
    """A step could not be rendered for this ticket; ``step`` and ``placeholder`` say where."""

    code = "render_failed"

    def __init__(self, message: str, *, step: str, placeholder: str | None = None) -> None:
        super().__init__(f'step "{step}": {message}')
        self.step = step
        self.placeholder = placeholder


LABEL_FALLBACKS: dict[str, tuple[str, ...]] = {
    "host": ("host", "hostname", "host_name", "instance", "node"),
    "service": ("service", "unit", "name", "app", "container", "service_name"),
}
"""Alert labels that carry a ticket's host or service when the ticket itself does not say
(Alertmanager's ``instance``, node_exporter's systemd ``name``, Datadog's ``host_name``)."""


def _from_labels(ticket: Mapping[str, Any], field: str) -> str | None:
    """The first label of :data:`LABEL_FALLBACKS` the ticket has; ``instance`` loses its port
    (``db1:9100`` is the host ``db1``, ``[2001:db8::1]:9100`` is ``2001:db8::1``)."""
    labels = ticket.get("labels")
    if not isinstance(labels, Mapping):
        return None
    for name in LABEL_FALLBACKS.get(field, ()):
        value = labels.get(name)
        if isinstance(value, str) and value.strip():
            if name == "instance":
                host, _, port = value.rpartition(":")
                if host and port.isdigit():
                    value = host
                value = value.removeprefix("[").removesuffix("]")
            return value.strip()
    return None


def ticket_value(ticket: Mapping[str, Any], placeholder: Placeholder, *, step: str) -> Value:
    """The ticket's value for ``placeholder`` (or its default); raises :class:`RenderError`."""
    value: Any
    if placeholder.field == "labels":
        labels = ticket.get("labels")
        value = labels.get(placeholder.key) if isinstance(labels, Mapping) else None
    elif placeholder.field == "id":
        value = ticket.get("id")
        if value is None:
            value = ticket.get("incident_id")
    else:
        value = ticket.get(placeholder.field)
        if value is None or (isinstance(value, str) and not value.strip()):
            value = _from_labels(ticket, placeholder.field)
    if isinstance(value, Enum):
        value = value.value
    if value is None or (isinstance(value, str) and not value.strip()):
        if placeholder.default is not None:
            return placeholder.default
        raise RenderError(
            f"{{{{{placeholder.name}}}}} has no value in the ticket and no default",
            step=step,
            placeholder=placeholder.name,
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise RenderError(
            f"{{{{{placeholder.name}}}}} is {value}, not a usable number",
            step=step,
            placeholder=placeholder.name,
        )
    if not isinstance(value, str | int | float | bool):
        raise RenderError(
            f"{{{{{placeholder.name}}}}} is a {type(value).__name__}, not text or a number",
            step=step,
            placeholder=placeholder.name,
        )
    if isinstance(value, str) and "\x00" in value:
        raise RenderError(
            f"{{{{{placeholder.name}}}}} contains a NUL character",
            step=step,
            placeholder=placeholder.name,
        )
    return value


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _placeholders(step: Step, text: str, field: str) -> list[Placeholder]:
    found, problems = find_placeholders(text)
    if problems:
        raise RenderError(f"{field}: {'; '.join(problems)}", step=step.name)
    return found


def _refuse(step: Step, field: str, problems: Sequence[str]) -> None:
    # The document check already refused these; a step built without validation
    # (model_construct) must not get past the boundary either.
    if problems:
        raise RenderError(f"{field}: {'; '.join(problems)}", step=step.name)


def render(step: Step, ticket: Mapping[str, Any]) -> Action:
    """The action ``step`` performs for ``ticket``, every ticket value quoted for its connector.

    Raises :class:`RenderError` for a missing value or a placeholder the step cannot take.
    """
    if step.connector == "ssh":
        return SshCommand(command=_render_ssh(step, ticket))
    if step.connector == "local":
        return LocalCommand(argv=_render_local(step, ticket))
    if step.connector == "database":
        sql, params = _render_sql(step, ticket)
        return DbQuery(sql=sql, params=params, writes=step.writes)
    return _render_http(step, ticket)


def _render_ssh(step: Step, ticket: Mapping[str, Any]) -> str:
    command = step.command or ""
    found = _placeholders(step, command, "command")
    _refuse(step, "command", shell_placeholder_problems(command, found))
    parts: list[str] = []
    last = 0
    for placeholder in found:
        parts.append(command[last : placeholder.start])
        parts.append(shlex.quote(_text(ticket_value(ticket, placeholder, step=step.name))))
        last = placeholder.end
    parts.append(command[last:])
    return "".join(parts)


def _render_local(step: Step, ticket: Mapping[str, Any]) -> tuple[str, ...]:
    command = step.command or ""
    found = _placeholders(step, command, "command")
    _refuse(step, "command", local_placeholder_problems(command, found))
    argv, problems = split_local(command, found)
    _refuse(step, "command", problems)
    texts = [_text(ticket_value(ticket, p, step=step.name)) for p in found]
    # One pass of re.sub: a value is never scanned again, so a value that happens to contain
    # the sentinel characters stays literal.
    return tuple(_SENTINEL.sub(lambda m: texts[int(m.group(1))], token) for token in argv)


def _render_sql(step: Step, ticket: Mapping[str, Any]) -> tuple[str, dict[str, Value]]:
    query = step.query or ""
    found = _placeholders(step, query, "query")
    _refuse(step, "query", sql_placeholder_problems(query, found))
    names: dict[tuple[str, str | None], str] = {}
    params: dict[str, Value] = {}
    parts: list[str] = []
    last = 0
    for placeholder in found:
        key = (placeholder.name, placeholder.default)
        if key not in names:
            names[key] = f"p{len(names)}"
            params[names[key]] = ticket_value(ticket, placeholder, step=step.name)
        parts.append(query[last : placeholder.start])
        parts.append(f":{names[key]}")
        last = placeholder.end
    parts.append(query[last:])
    return "".join(parts), params


def _render_http(step: Step, ticket: Mapping[str, Any]) -> HttpRequest:
    request = step.request
    if request is None:
        raise RenderError("an http step needs a request", step=step.name)
    path = request.path
    parts: list[str] = []
    last = 0
    for placeholder in _placeholders(step, path, "request.path"):
        text = _text(ticket_value(ticket, placeholder, step=step.name))
        if text in (".", ".."):
            raise RenderError(
                f"{{{{{placeholder.name}}}}} is {text!r}, which a URL would read as a dot segment",
                step=step.name,
                placeholder=placeholder.name,
            )
        parts.append(path[last : placeholder.start])
        parts.append(quote(text, safe=""))
        last = placeholder.end
    parts.append(path[last:])
    body = _render_body(step, request.body, ticket)
    return HttpRequest(method=request.method, path="".join(parts), body=body)


def _render_body(step: Step, value: Any, ticket: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        found = _placeholders(step, value, "request.body")
        if len(found) == 1 and found[0].start == 0 and found[0].end == len(value):
            return ticket_value(ticket, found[0], step=step.name)
        parts: list[str] = []
        last = 0
        for placeholder in found:
            parts.append(value[last : placeholder.start])
            parts.append(_text(ticket_value(ticket, placeholder, step=step.name)))
            last = placeholder.end
        parts.append(value[last:])
        return "".join(parts)
    if isinstance(value, Mapping):
        return {key: _render_body(step, item, ticket) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_body(step, item, ticket) for item in value]
    return value


def render_connection(step: Step, ticket: Mapping[str, Any]) -> str | None:
    """The inventory name the step runs against (None for a local step).

    ``connection`` may hold placeholders (``{{ticket.host}}``, ``{{ticket.host}}-postgres``);
    the result must look like a connection name, so a ticket cannot point it anywhere else.
    """
    if step.connection is None:
        return None
    template = step.connection
    parts: list[str] = []
    last = 0
    for placeholder in _placeholders(step, template, "connection"):
        parts.append(template[last : placeholder.start])
        parts.append(_text(ticket_value(ticket, placeholder, step=step.name)))
        last = placeholder.end
    parts.append(template[last:])
    name = "".join(parts).strip()
    if not CONNECTION_NAME.match(name):
        raise RenderError(
            f"connection {name!r} (from {template!r}) is not a valid connection name",
            step=step.name,
        )
    return name


def missing_values(document: RunbookDocument, ticket: Mapping[str, Any]) -> list[str]:
    """The placeholders of ``document`` this ticket cannot fill (no value and no default),
    each once, so a session can say up front what the ticket lacks."""
    missing: list[str] = []
    for placeholder in document.placeholders():
        try:
            ticket_value(ticket, placeholder, step="")
        except RenderError:
            if placeholder.name not in missing:
                missing.append(placeholder.name)
    return missing

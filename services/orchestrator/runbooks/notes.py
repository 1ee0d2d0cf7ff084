"""What a runbook session tells the external ticket (ServiceNow) about each step, and the
reference that ties a ticket to the ServiceNow record it came from.

A step's note says what ran and how it ended: phase, name, status, exit code, times, why it
failed, and the last lines of its output. The output is what the target printed, and a work
note leaves CXM for a system with its own readers, so the tail is masked first
(:func:`redact`): private keys, ``password=``/``token:`` style values, bearer and basic
credentials, passwords in URLs, AWS access keys, JWTs and long base64 lines. Credentials from
CXM's vault never reach a target as text (keys and passwords go to the connector, not into
commands), so what can leak is only what the target itself prints; the masking is a guard
against a runbook that prints a configuration file, not a licence to print secrets.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from shared.models import SERVICENOW_NUMBER_LABEL, SERVICENOW_SYS_ID_LABEL

TAIL_LINES = 10
TAIL_CHARS = 600
MASK = "[redacted]"

_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?"
    r"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
    re.DOTALL,
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*", re.DOTALL)
_PEM_END = re.compile(r"^.*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----", re.DOTALL)
_SECRET_KEYS = (
    r"[\w.-]*(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credentials?)[\w.-]*"
)
_ASSIGNMENT = re.compile(rf"(?i)(\b{_SECRET_KEYS}[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)")
_AUTHORIZATION = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|digest|token|negotiate)\s+)?)[^\s\"',;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+):[^@\s/]+@")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_JWT = re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/]{40,}={0,2}$", re.MULTILINE)


def redact(text: str) -> str:
    """``text`` with what looks like a secret masked (see the module's docstring)."""
    text = _PEM_BLOCK.sub(MASK, text)
    # a key cut by the output cap: its start or its end may be all that is left
    text = _PEM_BEGIN.sub(MASK, text)
    text = _PEM_END.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _ASSIGNMENT.sub(rf"\1{MASK}", text)
    text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _AWS_KEY.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    return _BASE64_LINE.sub(MASK, text)


def output_tail(output: str, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of a step's output, masked.

    Masking runs on the whole kept output before it is cut, so a secret that spans the cut
    (a private key's body) is recognised whole."""
    kept = redact(output).rstrip()
    tail = "\n".join(kept.splitlines()[-lines:])
    if len(tail) > chars:
        tail = "…" + tail[-(chars - 1) :]
    return tail


def servicenow_ref(ticket: dict[str, Any]) -> dict[str, str] | None:
    """``{sys_id, number}`` of the ServiceNow record the ticket came from, if it did (the
    correlator's ``servicenow`` source labels the ticket with them)."""
    labels = ticket.get("labels") or {}
    sys_id = labels.get(SERVICENOW_SYS_ID_LABEL) if isinstance(labels, dict) else None
    if not isinstance(sys_id, str) or not sys_id:
        return None
    ref = {"sys_id": sys_id}
    number = labels.get(SERVICENOW_NUMBER_LABEL)
    if isinstance(number, str) and number:
        ref["number"] = number
    return ref


def step_note(record: dict[str, Any], *, position: int, total: int) -> str:
    """The work note for one step that has ended (or whose outcome is unknown)."""
    status = record.get("status")
    head = f"{record['phase']} · {record['name']} (step {position} of {total}): {status}"
    if record.get("exit_code") is not None:
        head += f" (exit {record['exit_code']})"
    lines = [head]
    if record.get("connection"):
        lines.append(f"on {record['connection']}")
    timing = _timing(record.get("started_at"), record.get("finished_at"))
    if timing:
        lines.append(timing)
    if record.get("reason") and status not in ("completed", "pending"):
        lines.append(f"why: {redact(str(record['reason']))}")
    tail = output_tail(str(record.get("output") or ""))
    if tail:
        lines += ["output (last lines):", tail]
    return "\n".join(lines)


def _timing(started: Any, finished: Any) -> str:
    if not isinstance(started, str) or not started:
        return f"finished {finished}" if isinstance(finished, str) and finished else ""
    if not isinstance(finished, str) or not finished:
        return f"started {started}"
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"started {started}, finished {finished} ({seconds:.1f} s)"

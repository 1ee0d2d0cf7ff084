"""A runbook step's work note for ServiceNow: what ran and how it ended, and the tail of its
output with anything that looks like a secret masked before it leaves CXM."""

from __future__ import annotations

import pytest

from services.orchestrator.runbooks.notes import (
    MASK,
    output_tail,
    redact,
    servicenow_ref,
    step_note,
)

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDt1Z5cV0dXg9SvYlVqWb2r3b5k0f3kq2gq3n8f0G1yVAAAAJgAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("db_password=Hunter2-xyz", "Hunter2-xyz"),
        ('{"api_key": "k-123456789"}', "k-123456789"),
        ("token: ghp_abcdefghijklmnop", "ghp_abcdefghijklmnop"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("curl -H 'Authorization: Bearer abc.def.ghi123'", "abc.def.ghi123"),
        ("reached postgres://app:s3cr3t@db-01:5432/app", "s3cr3t"),
        ("aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "dozjg"),
        (f"found a key:\n{KEY}\ndone", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUA"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked, masked
    assert MASK in masked


def test_plain_output_is_left_alone() -> None:
    text = "Filesystem /data 94% used\nbasic connectivity ok\n15 files older than 7 days"
    assert redact(text) == text


def test_a_key_cut_by_the_output_cap_is_masked_on_either_side() -> None:
    """The session keeps the last 8,192 characters: a key's BEGIN line may be gone, and the
    note's tail may start in the middle of it."""
    body, end = KEY.split("\n", 1)[1].rsplit("\n", 1)
    cut = f"{body}\n{end}\nafter the key"
    assert "QyNTUxOQ" not in output_tail(cut)
    assert output_tail(cut).endswith("after the key")
    started = f"before\n{KEY.rsplit(chr(10), 1)[0]}"
    assert output_tail(started) == f"before\n{MASK}"


def test_the_tail_is_the_last_lines_and_capped() -> None:
    output = "\n".join(f"line {i}" for i in range(40)) + "\n"
    assert output_tail(output).splitlines() == [f"line {i}" for i in range(30, 40)]
    long = output_tail("no space left " * 400)
    assert len(long) == 600 and long.startswith("…")
    assert output_tail("") == ""


def test_step_note() -> None:
    record = {
        "name": "delete old files",
        "phase": "main",
        "status": "failed",
        "exit_code": 1,
        "connection": "web-03",
        "started_at": "2026-03-01T14:26:16+00:00",
        "finished_at": "2026-03-01T14:26:18.500000+00:00",
        "reason": "exit code 1, expected 0",
        "output": "rm: cannot remove 'x': Read-only file system\npassword=oops",
    }
    note = step_note(record, position=5, total=7)
    assert note.splitlines() == [
        "main · delete old files (step 5 of 7): failed (exit 1)",
        "on web-03",
        "started 2026-03-01T14:26:16+00:00, finished 2026-03-01T14:26:18.500000+00:00 (2.5 s)",
        "why: exit code 1, expected 0",
        "output (last lines):",
        "rm: cannot remove 'x': Read-only file system",
        f"password={MASK}",
    ]


def test_servicenow_ref_from_the_ticket_labels() -> None:
    labels = {"servicenow_sys_id": "46d44a5fa9fe198101a78787e40d8f5d", "servicenow_number": "INC1"}
    assert servicenow_ref({"labels": labels}) == {
        "sys_id": "46d44a5fa9fe198101a78787e40d8f5d",
        "number": "INC1",
    }
    assert servicenow_ref({"labels": {"alertname": "X"}}) is None
    assert servicenow_ref({}) is None

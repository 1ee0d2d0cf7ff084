"""A step's output never carries the credential the step used, whatever the target echoes."""

from __future__ import annotations

from services.orchestrator.runbooks.actions import StepOutput
from services.orchestrator.runbooks.connectors import SECRET_MASK, _masked, secret_fragments

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def test_the_secret_and_each_line_of_a_key_are_masked() -> None:
    fragments = secret_fragments(KEY)
    assert fragments[0] == KEY.strip()
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE" in fragments
    out = _masked(
        StepOutput(
            output="cat id:\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n",
            error=f"bad key {KEY}",
            rows=[{"line": "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE", "n": 1}],
        ),
        fragments,
    )
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE" not in f"{out.output}{out.error}{out.rows}"
    assert out.output == f"cat id:\n{SECRET_MASK}\n"
    assert out.rows == [{"line": SECRET_MASK, "n": 1}]


def test_a_token_echoed_in_a_header_is_masked_and_the_rest_kept() -> None:
    out = _masked(
        StepOutput(output='{"status": "healthy", "seen": "Bearer tok-123456"}', status=200),
        secret_fragments("tok-123456"),
    )
    assert out.output == f'{{"status": "healthy", "seen": "Bearer {SECRET_MASK}"}}'
    assert out.status == 200
    assert _masked(StepOutput(output="ab ab"), secret_fragments("ab")).output == "ab ab"

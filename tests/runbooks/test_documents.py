"""Runbook documents: parsing JSON and YAML, every problem reported with its field path and
step name, where a placeholder may sit for each connector, and judging a step's result."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from services.orchestrator.runbooks.actions import StepOutput
from services.orchestrator.runbooks.documents import (
    Expect,
    RunbookDocument,
    RunbookInvalid,
    find_placeholders,
    judge,
    parse_runbook,
    validate_runbook,
)


def ssh_step(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "connector": "ssh",
        "connection": "{{ticket.host}}",
        "command": command,
        **extra,
    }


def document(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "nginx-down",
        "title": "nginx down",
        "description": "nginx.service failed on a web host",
        "keywords": ["nginx", "service down"],
        "labels": {"alertname": "NodeSystemdServiceFailed"},
        "severities": ["high"],
        "steps": {
            "prechecks": [ssh_step("check nginx", "systemctl is-active nginx")],
            "main": [
                ssh_step("restart nginx", "systemctl restart nginx", requires_approval=True),
                ssh_step("show status", "systemctl status nginx"),
            ],
            "postchecks": [ssh_step("nginx active", "systemctl is-active nginx")],
        },
        "rollback": [ssh_step("stop nginx", "systemctl stop nginx")],
    }
    base.update(overrides)
    return base


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(RunbookInvalid) as caught:
        validate_runbook(data)
    return [str(p) for p in caught.value.problems]


def with_step(step: dict[str, Any], phase: str = "main") -> dict[str, Any]:
    data = document()
    data["steps"][phase] = [step]
    return data


# --- parsing --------------------------------------------------------------------------------


def test_yaml_and_json_give_the_same_document() -> None:
    data = document()
    from_json = parse_runbook(json.dumps(data).encode(), "application/json")
    from_yaml = parse_runbook(yaml.safe_dump(data), "application/yaml; charset=utf-8")
    for media in ("text/yaml", "application/x-yaml", "APPLICATION/YAML"):
        assert parse_runbook(yaml.safe_dump(data), media) == from_yaml
    assert from_json == from_yaml
    assert from_json.steps.main[0].requires_approval is True
    assert from_json.steps.main[1].requires_approval is False
    assert [s.name for _p, _i, s in from_json.iter_steps()] == [
        "check nginx",
        "restart nginx",
        "show status",
        "nginx active",
        "stop nginx",
    ]


def test_unsupported_content_type_is_415() -> None:
    with pytest.raises(RunbookInvalid) as caught:
        parse_runbook(b"id: x", "text/plain")
    assert caught.value.status == 415
    assert "application/yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "media", "expected"),
    [
        (b"{", "application/json", "not valid JSON at line 1 column 2"),
        (b"id: a\nid: b\n", "application/yaml", "duplicate key 'id' at line 2 column 1"),
        (b"a: &x [1]\nb: *x\n", "application/yaml", "an alias may only repeat a scalar"),
        (b"- 1\n", "application/yaml", "a runbook is a mapping of fields, got list"),
        (b"", "application/yaml", "a runbook is a mapping of fields, got nothing"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
    ],
)
def test_unparsable_bodies_say_why(body: bytes, media: str, expected: str) -> None:
    with pytest.raises(RunbookInvalid) as caught:
        parse_runbook(body, media)
    assert expected in str(caught.value)
    assert caught.value.status == 422


def test_a_scalar_alias_is_fine() -> None:
    text = yaml.safe_dump(document()).replace(
        "title: nginx down", "title: &t nginx down\ndescription: *t"
    )
    text = text.replace("description: nginx.service failed on a web host\n", "")
    assert parse_runbook(text, "application/yaml").description == "nginx down"


def test_problem_names_the_field_and_the_step() -> None:
    data = document()
    data["steps"]["main"][1]["timeout_s"] = 0
    with pytest.raises(RunbookInvalid) as caught:
        validate_runbook(data)
    assert [str(p) for p in caught.value.problems] == [
        'steps.main[1] (name "show status").timeout_s: must be > 0'
    ]
    problem = caught.value.problems[0]
    assert problem.path == 'steps.main[1] (name "show status").timeout_s'
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("runbook invalid: steps.main[1]")


def test_every_problem_is_reported_at_once() -> None:
    data = document(id="Not A Slug", severities=["urgent"], extra_field=1)
    data["steps"]["prechecks"][0]["comand"] = "typo"
    data["steps"]["main"][0]["expect"] = {"regex": "(unclosed"}
    data["steps"]["postchecks"][0]["connector"] = "telnet"
    data["rollback"][0]["query"] = "select 1"
    found = problems_of(data)
    assert found[0].startswith("id: must be a lowercase slug")
    assert "severities[0]: must be one of 'critical', 'high', 'medium', 'low' or 'info'" in found
    assert 'steps.prechecks[0] (name "check nginx").comand: unknown field' in found
    assert any(
        p.startswith('steps.main[0] (name "restart nginx").expect.regex: invalid regular')
        for p in found
    )
    assert any(
        p.startswith('steps.postchecks[0] (name "nginx active").connector: must be one of')
        for p in found
    )
    assert (
        'rollback[0] (name "stop nginx").query: not used by a ssh step (it takes command)' in found
    )
    assert "extra_field: unknown field" in found


def test_main_must_have_a_step_and_steps_are_required() -> None:
    assert "steps.main: must have at least 1 item(s)" in problems_of(
        document(steps={"prechecks": [], "main": []})
    )
    assert problems_of({"id": "x", "title": "t"}) == ["steps: required"]


def test_step_names_are_unique_across_phases() -> None:
    data = document()
    data["rollback"][0]["name"] = "restart nginx"
    assert problems_of(data) == [
        'rollback[0] (name "restart nginx").name: duplicate of steps.main[0] (name "restart nginx")'
    ]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"name": "s", "connector": "ssh", "connection": "h"},
            ["command: required for a ssh step"],
        ),
        (
            {"name": "s", "connector": "database", "connection": "db", "command": "ls"},
            [
                "query: required for a database step",
                "command: not used by a database step (it takes query)",
            ],
        ),
        (
            {"name": "s", "connector": "http", "connection": "api", "query": "select 1"},
            [
                "request: required for a http step",
                "query: not used by a http step (it takes request)",
            ],
        ),
        (
            {"name": "s", "connector": "local", "connection": "h", "command": "true"},
            ["connection: a local step runs on the orchestrator and names none"],
        ),
        (
            {"name": "s", "connector": "ssh", "command": "true"},
            ["connection: required for a ssh step"],
        ),
        (
            {"name": "s", "connector": "ssh", "connection": "h", "command": "  "},
            ["command: must not be empty"],
        ),
        (
            {"name": "s", "connector": "ssh", "connection": "h", "command": "x", "writes": True},
            ["writes: only a database step can say it writes"],
        ),
        (
            {
                "name": "s",
                "connector": "ssh",
                "connection": "h",
                "command": "x",
                "expect": {"status": 200},
            },
            ["expect.status: only an http step has a status"],
        ),
        (
            {
                "name": "s",
                "connector": "database",
                "connection": "db",
                "query": "select 1",
                "expect": {"exit_code": 0},
            },
            ["expect.exit_code: a database step has no exit code"],
        ),
        (
            {
                "name": "s",
                "connector": "http",
                "connection": "api",
                "request": {"method": "get", "path": "health", "body": {"a": 1}},
            },
            [
                "request.path: must start with one / (relative to the base URL)",
                "request.body: a GET sends no body",
            ],
        ),
        (
            {
                "name": "s",
                "connector": "http",
                "connection": "api",
                "request": {"method": "POST", "path": "/x", "body": {"{{ticket.host}}": 1}},
            },
            ["request.body.{{ticket.host}}: a JSON key cannot hold a placeholder"],
        ),
    ],
)
def test_a_step_fits_its_connector(step: dict[str, Any], expected: list[str]) -> None:
    prefix = 'steps.main[0] (name "s").'
    assert problems_of(with_step(step)) == [prefix + p for p in expected]


def test_database_steps_are_read_only_unless_they_say_so() -> None:
    step = {"name": "q", "connector": "database", "connection": "db", "query": "select 1"}
    doc = validate_runbook(with_step(step))
    assert doc.steps.main[0].writes is False
    doc = validate_runbook(with_step({**step, "writes": True}))
    assert doc.steps.main[0].writes is True


def test_http_method_is_upper_cased() -> None:
    step = {"name": "h", "connector": "http", "connection": "api", "request": {"path": "/x"}}
    assert validate_runbook(with_step(step)).steps.main[0].request.method == "GET"  # type: ignore[union-attr]
    step["request"] = {"method": "delete", "path": "/x"}
    assert validate_runbook(with_step(step)).steps.main[0].request.method == "DELETE"  # type: ignore[union-attr]


# --- placeholders ---------------------------------------------------------------------------


def test_placeholders_are_parsed_with_defaults() -> None:
    found, problems = find_placeholders(
        'a {{ticket.host}} b {{ ticket.labels.path | default("/var/tmp") }} '
        "{{ticket.labels.x|default('y z')}} {{ticket.id}}"
    )
    assert problems == []
    assert [(p.name, p.default) for p in found] == [
        ("ticket.host", None),
        ("ticket.labels.path", "/var/tmp"),
        ("ticket.labels.x", "y z"),
        ("ticket.id", None),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ticket.hostname}}", "is not a ticket field"),
        ("{{ticket.host.x}}", "is not a ticket field"),
        ("{{ticket.labels}}", "names no label"),
        ("{{host}}", "malformed placeholder '{{host}}'"),
        ("{{ labels.path }}", "malformed placeholder"),
        ("{{ticket.host}", "malformed placeholder"),
        ("{{ticket.host | default(/x)}}", "malformed placeholder"),
    ],
)
def test_bad_placeholders_are_refused(text: str, expected: str) -> None:
    found, problems = find_placeholders(text)
    assert found == []
    assert len(problems) == 1 and expected in problems[0]
    step = {"name": "s", "connector": "ssh", "connection": "h", "command": f"echo {text}"}
    assert any(expected in p for p in problems_of(with_step(step)))


def test_other_templates_are_left_alone() -> None:
    command = "docker inspect -f '{{.State.Status}} {{json .Config}}' {{ticket.labels.container}}"
    found, problems = find_placeholders(command)
    assert problems == [] and [p.name for p in found] == ["ticket.labels.container"]
    step = {"name": "s", "connector": "ssh", "connection": "h", "command": command}
    validate_runbook(with_step(step))


SHELL_REFUSED = [
    ("echo '{{ticket.host}}'", "inside single quotes"),
    ('echo "{{ticket.host}}"', "inside double quotes"),
    ("echo \"x $(echo '{{ticket.host}}')\"", "inside single quotes"),
    ("echo `ls {{ticket.host}}`", "inside backquotes"),
    ("echo ${x:-{{ticket.host}}}", "inside ${...}"),
    ("echo $(( {{ticket.host}} + 1 ))", "inside $((...))"),
    ("echo ${{ticket.host}}", "right after $"),
    ("echo $'{{ticket.host}}'", "inside $'...' quotes"),
    ("echo \\{{ticket.host}}", "escaped by a backslash"),
    ('echo "\\{{ticket.host}}"', "escaped by a backslash"),
    ("true # {{ticket.host}}", "in a comment"),
    ("cat <<EOF\n{{ticket.host}}\nEOF", "here-document"),
    ("echo 'unbalanced {{ticket.host}}", "inside single quotes"),
]


@pytest.mark.parametrize(("command", "expected"), SHELL_REFUSED)
def test_ssh_placeholders_only_in_word_position(command: str, expected: str) -> None:
    step = {"name": "s", "connector": "ssh", "connection": "h", "command": command}
    found = problems_of(with_step(step))
    assert any(expected in p for p in found), found
    assert all(p.startswith('steps.main[0] (name "s").command: ') for p in found)


@pytest.mark.parametrize(
    "command",
    [
        "df -h {{ticket.host}}",
        'd={{ticket.labels.path}}; du -sh -- "$d"',
        "echo pre{{ticket.host}}post",
        "echo $(ls {{ticket.host}})",
        'echo "$(ls {{ticket.host}})"',
        "echo a#{{ticket.host}}",
        "case x in a) echo {{ticket.host}} ;; esac",
        "cat <<<{{ticket.host}}",
        "echo '{{.Go}}' {{ticket.host}} # a comment after it",
    ],
)
def test_ssh_placeholders_in_word_position_are_accepted(command: str) -> None:
    step = {"name": "s", "connector": "ssh", "connection": "h", "command": command}
    validate_runbook(with_step(step))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select '{{ticket.host}}'", "inside a string literal"),
        ("select E'\\{{ticket.host}}'", "could not be checked"),
        ('select "{{ticket.host}}"', "inside a quoted identifier"),
        ("select 1 -- {{ticket.host}}\n", "in a comment"),
        ("select /* {{ticket.host}} */ 1", "in a comment"),
        ("select $$ {{ticket.host}} $$", "inside a dollar-quoted string"),
        ("select {{ticket.host}}::int", "glued to ':' after it"),
        ("select x{{ticket.host}}", "glued to 'x' before it"),
        ("select {{ticket.host}}abc", "glued to 'a' after it"),
    ],
)
def test_sql_placeholders_must_become_bind_parameters(query: str, expected: str) -> None:
    step = {"name": "q", "connector": "database", "connection": "db", "query": query}
    found = problems_of(with_step(step))
    assert any(expected in p for p in found), found


def test_sql_placeholders_in_expressions_are_accepted() -> None:
    query = (
        "select 'it''s', \"col\" from t -- {{.not_ours}}\n"
        "where a = {{ticket.host}} and b = CAST({{ticket.labels.n}} AS text) /* c */"
    )
    step = {"name": "q", "connector": "database", "connection": "db", "query": query}
    validate_runbook(with_step(step))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("{{ticket.labels.tool}} --version", "the program to run cannot come from the ticket"),
        ('sh -c "echo {{ticket.host}}"', "handed to 'sh'"),
        ("/usr/bin/env bash -c {{ticket.host}}", "handed to 'bash'"),
        ("ssh jump {{ticket.host}}", "handed to 'ssh'"),
        ("echo 'unclosed {{ticket.host}}", "cannot be split into arguments"),
    ],
)
def test_local_placeholders_never_reach_a_shell(command: str, expected: str) -> None:
    step = {"name": "l", "connector": "local", "command": command}
    found = problems_of(with_step(step))
    assert any(expected in p for p in found), found


# --- judging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "output", "ok", "reason"),
    [
        (None, StepOutput(exit_code=0), True, "exit code 0"),
        (None, StepOutput(exit_code=1), False, "exit code 1, expected 0"),
        (Expect(exit_code=3), StepOutput(exit_code=3), True, "exit code 3"),
        (Expect(exit_code=3), StepOutput(exit_code=0), False, "exit code 0, expected 3"),
        (None, StepOutput(status=204), True, "HTTP 204"),
        (None, StepOutput(status=503), False, "HTTP 503, expected 2xx"),
        (Expect(status=404), StepOutput(status=404), True, "HTTP 404"),
        (Expect(status=200), StepOutput(status=201), False, "HTTP 201, expected 200"),
        (None, StepOutput(rows=[{"a": 1}]), True, "1 row(s)"),
        (None, StepOutput(rows=[]), True, "0 row(s)"),
        (None, StepOutput(error="connection refused"), False, "did not complete"),
        (
            None,
            StepOutput(exit_code=0, error="killed", timed_out=True, duration_s=5.04),
            False,
            "timed out after 5.0s: killed",
        ),
        (
            Expect(contains="active"),
            StepOutput(exit_code=0, output="ActiveState=active\n"),
            True,
            "output contains 'active'",
        ),
        (
            Expect(contains="active"),
            StepOutput(exit_code=0, output="inactive"[2:].upper()),
            False,
            "does not contain 'active'",
        ),
        (
            Expect(regex=r"^Leap status\s*: Normal$"),
            StepOutput(exit_code=0, output="Ref\nLeap status     : Normal\nx"),
            True,
            "matches",
        ),
        (
            Expect(regex=r"one minute: ([0-9]|[1-6][0-9])%"),
            StepOutput(exit_code=0, output="CPU utilization for one minute: 93%;"),
            False,
            "does not match",
        ),
        (
            Expect(contains="ok"),
            StepOutput(exit_code=2, output="ok"),
            False,
            "exit code 2, expected 0",
        ),
        (None, StepOutput(output="something"), True, "completed"),
    ],
)
def test_judge(expect: Expect | None, output: StepOutput, ok: bool, reason: str) -> None:
    verdict, why = judge(expect, output)
    assert verdict is ok
    assert reason in why


def test_documents_round_trip_through_json() -> None:
    doc = validate_runbook(document())
    again = RunbookDocument.model_validate(json.loads(doc.model_dump_json()))
    assert again == doc
    changed = copy.deepcopy(document())
    changed["steps"]["main"][0]["timeout_s"] = 30
    assert validate_runbook(changed) != doc

"""Rendering is the injection boundary: hostile ticket values are run for real through a POSIX
shell, a program's argv, SQLite and an HTTP client, and must arrive as literal data."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks.actions import DbQuery, HttpRequest, LocalCommand, SshCommand
from services.orchestrator.runbooks.documents import (
    RunbookDocument,
    Step,
    find_placeholders,
    validate_runbook,
)
from services.orchestrator.runbooks.render import (
    RenderError,
    missing_values,
    render,
    render_connection,
    ticket_value,
)
from shared.db import make_engine


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A file a successful injection would create, and a directory it would delete.

    A blank value is not among the payloads: it counts as "no value" (see the default tests).
    """
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("still here")
    return tmp_path / "canary"


def payloads(canary: Path) -> list[str]:
    victim = canary.parent / "victim"
    return [
        "x; rm -rf /",
        f"x; rm -rf {victim}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"x\ntouch {canary}\n",
        f"'; touch {canary}; '",
        f'"; touch {canary}; "',
        f"x' && touch {canary} && echo '",
        "' OR 1=1 --",
        f"x && touch {canary}",
        f"x | tee {canary}",
        f"x > {canary}",
        "${IFS}$HOME",
        "* ~root ?",
        "--help",
        "\\",
        "a  b\tc",
        "ünïcødé ✓",
    ]


def assert_untouched(canary: Path) -> None:
    assert not canary.exists(), "an injected command ran"
    assert (canary.parent / "victim" / "keep").read_text() == "still here"


def step(**fields: Any) -> Step:
    return Step.model_validate({"name": "the step", **fields})


def ssh(command: str) -> Step:
    return step(connector="ssh", connection="{{ticket.host}}", command=command)


# --- ssh: shlex.quote into the command line --------------------------------------------------

SHELL_TEMPLATES = [
    ("printf '%s' {{ticket.labels.v}} > {out}", "{value}"),
    ("printf '%s' pre{{ticket.labels.v}}post > {out}", "pre{value}post"),
    ("v={{ticket.labels.v}}\nprintf '%s' \"$v\" > {out}", "{value}"),
    ("printf '%s' \"$(printf '%s' {{ticket.labels.v}})\" > {out}", "{stripped}"),
    ("for a in {{ticket.labels.v}}; do printf '%s' \"$a\"; done > {out}", "{value}"),
]


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
@pytest.mark.parametrize(("template", "expected"), SHELL_TEMPLATES)
def test_ssh_values_arrive_literally(
    shell: str, template: str, expected: str, tmp_path: Path, canary: Path
) -> None:
    out = tmp_path / "out"
    for value in payloads(canary):
        command = template.replace("{out}", str(out))
        action = render(ssh(command), {"host": "h", "labels": {"v": value}})
        assert isinstance(action, SshCommand)
        # The way sshd runs it: the login shell with -c and the whole command line.
        done = subprocess.run([shell, "-c", action.command], capture_output=True, timeout=10)
        assert done.returncode == 0, (value, done.stderr)
        want = expected.replace("{value}", value).replace("{stripped}", value.rstrip("\n"))
        assert out.read_bytes().decode() == want, value
        assert_untouched(canary)


def test_ssh_display_is_the_command_with_quoted_values() -> None:
    action = render(ssh("df -h {{ticket.labels.path}}"), {"labels": {"path": "/var/log; reboot"}})
    assert action.display == "df -h '/var/log; reboot'"
    plain = render(ssh("ping -c 1 {{ticket.host}}"), {"host": "10.0.0.1"})
    assert plain.display == "ping -c 1 10.0.0.1"


def test_ssh_refuses_a_step_that_skipped_validation() -> None:
    # model_construct skips the document check: the boundary checks again.
    unchecked = Step.model_construct(
        name="raw", connector="ssh", connection="h", command="echo '{{ticket.host}}'"
    )
    with pytest.raises(RenderError, match="inside single quotes"):
        render(unchecked, {"host": "x'; touch /tmp/p; '"})


# --- local: argv, never a shell --------------------------------------------------------------


async def run_argv(argv: tuple[str, ...]) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _err = await proc.communicate()
    return proc.returncode or 0, out


async def test_local_values_are_single_arguments(canary: Path) -> None:
    template = "printf '[%s]' {{ticket.labels.v}} --opt={{ticket.labels.v}} \"two words\""
    for value in payloads(canary):
        action = render(step(connector="local", command=template), {"labels": {"v": value}})
        assert isinstance(action, LocalCommand)
        assert action.argv == ("printf", "[%s]", value, f"--opt={value}", "two words")
        code, out = await run_argv(action.argv)
        assert code == 0
        assert out.decode() == f"[{value}][--opt={value}][two words]"
        assert_untouched(canary)


async def test_local_placeholder_with_spaces_inside_its_braces_is_one_argument() -> None:
    action = render(
        step(connector="local", command='printf %s {{ ticket.labels.v | default("a b") }}'),
        {"labels": {}},
    )
    assert action == LocalCommand(argv=("printf", "%s", "a b"))


def test_local_sentinel_lookalikes_in_values_stay_literal() -> None:
    tricky = "\ue0001\ue001"
    action = render(
        step(connector="local", command="echo {{ticket.host}} {{ticket.service}}"),
        {"host": tricky, "service": "svc"},
    )
    assert action == LocalCommand(argv=("echo", tricky, "svc"))


def test_local_refuses_a_shell_even_unvalidated() -> None:
    unchecked = Step.model_construct(
        name="raw", connector="local", connection=None, command="sh -c {{ticket.host}}"
    )
    with pytest.raises(RenderError, match="handed to 'sh'"):
        render(unchecked, {"host": "touch /tmp/p"})


# --- database: bind parameters ----------------------------------------------------------------


@pytest.fixture
async def hosts_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'hosts.db'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE hosts (name TEXT NOT NULL)"))
        await conn.execute(sa.text("CREATE TABLE seen (value TEXT NOT NULL)"))
        await conn.execute(sa.text("INSERT INTO hosts VALUES ('web-01'), ('web-02')"))
    yield engine
    await engine.dispose()


async def test_sql_values_are_bind_parameters(hosts_db: AsyncEngine, canary: Path) -> None:
    select = step(
        connector="database",
        connection="db",
        query="SELECT name FROM hosts WHERE name = {{ticket.host}} ORDER BY name",
    )
    insert = step(
        connector="database",
        connection="db",
        writes=True,
        query="INSERT INTO seen (value) VALUES ({{ticket.host}})",
    )
    hostile = [*payloads(canary), "x'; DROP TABLE hosts; --", "web-01' OR '1'='1"]
    for value in hostile:
        action = render(select, {"host": value})
        assert isinstance(action, DbQuery)
        assert action.sql == "SELECT name FROM hosts WHERE name = :p0 ORDER BY name"
        assert action.params == {"p0": value} and action.writes is False
        assert value not in action.sql
        async with hosts_db.connect() as conn:
            rows = (await conn.execute(sa.text(action.sql), dict(action.params))).all()
        assert rows == []  # no payload matched every row (or dropped the table)
        written = render(insert, {"host": value})
        assert isinstance(written, DbQuery) and written.writes is True
        async with hosts_db.begin() as conn:
            await conn.execute(sa.text(written.sql), dict(written.params))
    async with hosts_db.connect() as conn:
        names = (await conn.execute(sa.text("SELECT name FROM hosts ORDER BY name"))).all()
        seen = [r[0] for r in (await conn.execute(sa.text("SELECT value FROM seen"))).all()]
    assert [r[0] for r in names] == ["web-01", "web-02"]
    assert seen == hostile
    good = render(select, {"host": "web-02"})
    async with hosts_db.connect() as conn:
        rows = (await conn.execute(sa.text(good.sql), dict(good.params))).all()  # type: ignore[union-attr]
    assert [r[0] for r in rows] == ["web-02"]


def test_sql_reuses_a_parameter_for_the_same_placeholder() -> None:
    action = render(
        step(
            connector="database",
            connection="db",
            query=(
                "SELECT 1 WHERE ({{ticket.labels.db | default('')}} = '' OR d = "
                "{{ticket.labels.db | default('')}}) AND n < {{ticket.labels.n}} "
                "AND s = {{ticket.severity}}"
            ),
        ),
        {"labels": {"n": 5}, "severity": "high"},
    )
    assert action == DbQuery(
        sql="SELECT 1 WHERE (:p0 = '' OR d = :p0) AND n < :p1 AND s = :p2",
        params={"p0": "", "p1": 5, "p2": "high"},
    )


# --- http: percent-encoded path segments, JSON body values ------------------------------------


def http_step(path: str, body: Any = None, method: str = "POST") -> Step:
    return step(
        connector="http",
        connection="api",
        request={"method": method, "path": path, "body": body},
    )


async def test_http_values_stay_in_their_segment_and_their_json_value(canary: Path) -> None:
    received: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    template = http_step(
        "/api/v1/hosts/{{ticket.host}}/silence?reason={{ticket.title}}",
        {
            "host": "{{ticket.host}}",
            "note": "alert on {{ticket.host}}",
            "count": "{{ticket.labels.count}}",
            "tags": ["{{ticket.severity}}", 3, None],
        },
    )
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test/base") as client:
        for value in [*payloads(canary), "a/b/../../admin", "x?admin=1#frag", "%2e%2e"]:
            ticket = {"host": value, "title": "t&u=v", "severity": "high", "labels": {"count": 7}}
            action = render(template, ticket)
            assert isinstance(action, HttpRequest)
            response = await client.request(action.method, action.path, json=action.body)
            assert response.status_code == 200
            sent = received[-1]
            segments = sent.url.raw_path.split(b"?")[0].split(b"/")
            assert segments[:4] == [b"", b"base", b"api", b"v1"]
            assert segments[4] == b"hosts" and segments[6] == b"silence"
            assert httpx.URL(f"http://x/{segments[5].decode()}").path == f"/{value}"
            assert sent.url.params.get("reason") == "t&u=v"
            assert list(sent.url.params.keys()) == ["reason"]
            assert json.loads(sent.content) == {
                "host": value,
                "note": f"alert on {value}",
                "count": 7,
                "tags": ["high", 3, None],
            }
    assert_untouched(canary)


@pytest.mark.parametrize("value", [".", ".."])
def test_http_refuses_dot_segments(value: str) -> None:
    with pytest.raises(RenderError, match="dot segment"):
        render(http_step("/hosts/{{ticket.host}}", method="GET"), {"host": value})


# --- values, defaults, missing values, connections ---------------------------------------------


def test_missing_value_names_the_placeholder_and_the_step() -> None:
    with pytest.raises(RenderError) as caught:
        render(ssh("du -sh {{ticket.labels.path}}"), {"host": "h", "labels": {"other": "x"}})
    assert str(caught.value) == (
        'step "the step": {{ticket.labels.path}} has no value in the ticket and no default'
    )
    assert caught.value.placeholder == "ticket.labels.path"
    assert caught.value.step == "the step"
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("ticket", "expected"),
    [
        ({"labels": {"path": "/srv/x"}}, "du -sh /srv/x"),
        ({"labels": {}}, "du -sh /var/tmp"),
        ({}, "du -sh /var/tmp"),
        ({"labels": {"path": "  "}}, "du -sh /var/tmp"),
        ({"labels": {"path": None}}, "du -sh /var/tmp"),
        ({"labels": "not a mapping"}, "du -sh /var/tmp"),
    ],
)
def test_defaults_fill_missing_and_blank_values(ticket: dict[str, Any], expected: str) -> None:
    template = ssh('du -sh {{ticket.labels.path | default("/var/tmp")}}')
    assert render(template, ticket) == SshCommand(command=expected)


def test_ticket_id_falls_back_to_incident_id() -> None:
    template = step(connector="local", command="echo {{ticket.id}}")
    assert render(template, {"incident_id": "INC-2025-0042"}).display == "echo INC-2025-0042"
    assert render(template, {"id": "T-1", "incident_id": "INC-1"}).display == "echo T-1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "is a dict, not text or a number"),
        (["a"], "is a list, not text or a number"),
        ("a\x00b", "contains a NUL character"),
        (float("nan"), "not a usable number"),
    ],
)
def test_values_must_be_scalars(value: Any, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(ssh("echo {{ticket.host}}"), {"host": value})


def test_numbers_and_booleans_render_as_text_or_json() -> None:
    assert render(ssh("echo {{ticket.host}}"), {"host": 42}).display == "echo 42"
    assert render(ssh("echo {{ticket.host}}"), {"host": True}).display == "echo true"
    action = render(http_step("/x", {"v": "{{ticket.host}}"}), {"host": False})
    assert action == HttpRequest(method="POST", path="/x", body={"v": False})


def test_connection_names_an_inventory_entry_or_fails() -> None:
    template = step(connector="ssh", connection="{{ticket.host}}-postgres", command="true")
    assert render_connection(template, {"host": "db-01"}) == "db-01-postgres"
    for hostile in ["x; rm -rf /", "../etc", "a b", "$(id)", "-oProxyCommand=x", "a\nb"]:
        with pytest.raises(RenderError, match="is not a valid connection name"):
            render_connection(template, {"host": hostile})
    literal = step(connector="database", connection="core-db", query="select 1")
    assert render_connection(literal, {}) == "core-db"
    assert render_connection(step(connector="local", command="true"), {"host": "h"}) is None
    with pytest.raises(RenderError, match="no value in the ticket"):
        render_connection(template, {})


def test_missing_values_lists_what_a_ticket_lacks() -> None:
    doc: RunbookDocument = validate_runbook(
        {
            "id": "x",
            "title": "x",
            "steps": {
                "prechecks": [
                    {
                        "name": "a",
                        "connector": "ssh",
                        "connection": "{{ticket.host}}",
                        "command": "echo {{ticket.labels.peer}} "
                        "{{ticket.labels.vrf | default('default')}}",
                    }
                ],
                "main": [
                    {
                        "name": "b",
                        "connector": "ssh",
                        "connection": "{{ticket.host}}",
                        "command": "echo {{ticket.labels.peer}} {{ticket.service}}",
                    }
                ],
            },
        }
    )
    assert missing_values(doc, {"labels": {}}) == [
        "ticket.host",
        "ticket.labels.peer",
        "ticket.service",
    ]
    assert (
        missing_values(doc, {"host": "r1", "service": "frr", "labels": {"peer": "10.0.0.1"}}) == []
    )


@pytest.mark.parametrize(
    ("labels", "field", "expected"),
    [
        ({"instance": "db1:9100"}, "host", "db1"),
        ({"instance": "[2001:db8::1]:9100"}, "host", "2001:db8::1"),
        ({"host_name": "web-3"}, "host", "web-3"),
        ({"name": "nginx.service"}, "service", "nginx.service"),
        ({"service": "api", "name": "other"}, "service", "api"),
    ],
)
def test_host_and_service_come_from_alert_labels_when_the_ticket_lacks_them(
    labels: dict[str, str], field: str, expected: str
) -> None:
    """The correlator keeps an alert's labels; ``{{ticket.host}}``/``{{ticket.service}}``
    must still render for an Alertmanager or Datadog ticket, and never from a wrong label."""
    [placeholder], _ = find_placeholders(f"{{{{ticket.{field}}}}}")
    assert ticket_value({"labels": labels}, placeholder, step="s") == expected
    with pytest.raises(RenderError):
        ticket_value({"labels": {"job": "node"}}, placeholder, step="s")

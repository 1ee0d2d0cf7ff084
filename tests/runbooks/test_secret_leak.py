"""No secret leaves the vault: a whole session with a password and a private key, on real
processes, then every log line, API answer, database row and audit event is searched.

IO, the orchestrator, audit and notify run as ``cxm agent NAME`` processes at DEBUG on SQLite
under one data dir, against Debian's real OpenSSH server (``tests/runbooks/sshd.py``). Two
credentials are created through IO's REST API (an ed25519 private key, and a password the
server refuses, which is the session's error path), with a connection on each. The runbook
runs a precheck and an approved step with the key, a step with the password that fails, and a
rollback with the key. Every GET endpoint is read afterwards, errors are provoked on purpose
(a duplicate credential, an invalid one, a connection test that fails), and the key is rotated.

Searched for: the password, the private key text, its base64 body and a 24-character slice
of its middle, and every Fernet key the vault held (before and after the rotation), in:
every file of the data dir byte for byte except the vault's own key file, every row of every
table of every SQLite database there, every answer the test received, and the audit agent's
events. The credentials were provably used (``credential_used`` audit events name each one
for the session's steps, and sshd logged the key login and the refused password), so the
search cannot pass because nothing happened.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.runbooks.process_mesh import Console, console, session_mesh
from tests.runbooks.sshd import sshd
from tests.support import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("runbook-processes"),
    pytest.mark.timeout(300),
]

INCIDENT = "INC-2026-0901"
KEY_FILE = "runbook-credentials.key"


def key_body(private_key: str) -> str:
    """The base64 body of an OpenSSH private key, without its armour lines or newlines."""
    return "".join(line for line in private_key.splitlines() if not line.startswith("-----"))


def ssh_step(name: str, connection: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "connector": "ssh", "connection": connection, "command": command, **extra}


def dump_sqlite(path: Path) -> tuple[list[bytes], int]:
    """Every value of every row of every table of a SQLite file, as bytes; and the row count."""
    values: list[bytes] = []
    rows = 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                rows += 1
                for value in row:
                    if isinstance(value, bytes):
                        values.append(value)
                    elif value is not None:
                        values.append(str(value).encode())
    finally:
        db.close()
    return values, rows


async def test_a_whole_session_leaks_no_secret(tmp_path: Path) -> None:
    password = f"Pw-{uuid.uuid4().hex}-never-shown"
    data = tmp_path / "mesh"
    with (
        sshd(tmp_path / "sshd") as server,
        session_mesh(
            data,
            ("audit", "notify", "io", "orchestrator"),
            CXM_LOG_LEVEL="DEBUG",
            CXM_APPROVAL_TIMEOUT_S="100000",
        ) as m,
    ):
        async with console(m) as http:
            io = Console(m, http)
            await run_the_session(io, server, password)
            await read_everything(io)
            # the vault's keys: the one it started with and the one the rotation made
            keys_before = (data / KEY_FILE).read_text().split()
            await io.call("POST", "/api/v1/credentials/rotate-key")
            keys_after = (data / KEY_FILE).read_text().split()
            await io.call("POST", "/api/v1/connections/sshd-key/test")  # decrypts under the new key
            events = await io.audit_events()
        sshd_log = server.log_text()

    # --- the credentials were used: the search below is not vacuous ------------------------
    uses = [e["details"] for e in events if e["event_type"] == "credential_used"]
    by_credential = {(u["credential"], u.get("step")) for u in uses if u.get("session_id")}
    assert ("ops-key", "who is there") in by_credential
    assert ("ops-key", "apply the fix") in by_credential
    assert ("ops-key", "undo") in by_credential
    assert ("ops-password", "log in with the password") in by_credential
    assert all(u.get("incident_id") == INCIDENT for u in uses if u.get("session_id"))
    assert "Accepted publickey for " in sshd_log
    assert "Failed password for " in sshd_log  # the server was sent the password and refused it
    assert len(set(keys_before + keys_after)) >= 2

    client_key = server.client_key
    body = key_body(client_key)
    middle = body[len(body) // 2 - 12 : len(body) // 2 + 12]
    secrets = {
        "password": password,
        "private key": client_key.strip(),
        "private key body": body,
        "private key middle": middle,
        **{f"fernet key {i}": key for i, key in enumerate(dict.fromkeys(keys_before + keys_after))},
    }
    # every key line of the private key too, in case something re-wrapped or split it
    for i, line in enumerate(client_key.splitlines()):
        if not line.startswith("-----") and len(line) >= 20:
            secrets[f"private key line {i}"] = line

    # --- every place a secret could end up ---------------------------------------------------
    places: dict[str, list[bytes]] = {}
    files = [p for p in sorted(data.rglob("*")) if p.is_file() and p.name != KEY_FILE]
    for path in files:
        places[f"file {path.relative_to(data)}"] = [path.read_bytes()]
    databases = [p for p in files if p.suffix == ".db"]
    total_rows = 0
    for path in databases:
        values, rows = dump_sqlite(path)
        total_rows += rows
        places[f"rows of {path.name}"] = values
    answers = io.answers
    places["API answers"] = [a.encode() for a in answers]
    places["audit events"] = [repr(e).encode() for e in events]
    log_lines = sum(len(path.read_bytes().splitlines()) for path in files if path.suffix == ".log")

    # the search reaches what it claims to: things that are meant to be there are found
    def seen(text: str, where: str) -> bool:
        return any(text.encode() in blob for blob in places[where])

    assert seen(server.host_key_line, "rows of orchestrator.db")  # the connection's row
    assert seen("applied on web-03", "rows of io.db")  # the step's output, in the ticket
    assert seen("applied on web-03", "API answers")
    assert seen("ops-password", "audit events")
    assert seen("ops-password", "file orchestrator.log")

    found = [
        f"{what} in {where}"
        for where, blobs in places.items()
        for what, secret in secrets.items()
        if any(secret.encode() in blob for blob in blobs)
    ]
    assert not found, found

    # the search covered what it says it did
    assert {p.name for p in files if p.suffix == ".log"} >= {
        "audit.log",
        "notify.log",
        "io.log",
        "orchestrator.log",
    }
    assert {p.name for p in databases} >= {"audit.db", "io.db", "orchestrator.db"}
    assert log_lines > 100 and total_rows > 50 and len(answers) > 25 and len(events) > 20
    print(  # the figures searched, shown with pytest -s
        f"searched {len(secrets)} secrets in {len(files)} files ({log_lines} log lines), "
        f"{total_rows} rows of {len(databases)} databases, {len(answers)} API answers, "
        f"{len(events)} audit events"
    )


async def run_the_session(io: Console, server: Any, password: str) -> None:
    """Credentials, connections and a runbook through IO; a session approved, failed, rolled
    back and escalated."""
    await io.call(
        "POST",
        "/api/v1/credentials",
        json={
            "name": "ops-key",
            "kind": "ssh_key",
            "username": server.user,
            "secret": server.client_key,
        },
        expect=201,
    )
    await io.call(
        "POST",
        "/api/v1/credentials",
        json={
            "name": "ops-password",
            "kind": "password",
            "username": server.user,
            "secret": password,
        },
        expect=201,
    )
    # errors on purpose: a duplicate name and an invalid kind, each carrying a secret
    await io.call(
        "POST",
        "/api/v1/credentials",
        json={
            "name": "ops-password",
            "kind": "password",
            "username": server.user,
            "secret": password,
        },
        expect=409,
    )
    await io.call(
        "POST",
        "/api/v1/credentials",
        json={"name": "bad", "kind": "telepathy", "secret": password},
        expect=422,
    )
    await io.call(
        "POST",
        "/api/v1/credentials",
        json={
            "name": "bad",
            "kind": "ssh_key",
            "username": server.user,
            "secret": password,
            "extra": server.client_key,
        },
        expect=422,
    )
    for name, credential in (("sshd-key", "ops-key"), ("sshd-password", "ops-password")):
        await io.call(
            "POST",
            "/api/v1/connections",
            json={
                "name": name,
                "environment": "dev",
                "connector": "ssh",
                "host": "127.0.0.1",
                "port": server.port,
                "credential": credential,
                "host_key": server.host_key_line,
            },
            expect=201,
        )
    tested = await io.json("POST", "/api/v1/connections/sshd-key/test")
    assert tested["ok"] is True, tested
    refused = await io.json("POST", "/api/v1/connections/sshd-password/test")
    assert refused["ok"] is False, refused

    document = {
        "id": "leak-check",
        "title": "Free disk space on a host",
        "description": "every connector path that touches a secret",
        "keywords": ["disk"],
        "steps": {
            "prechecks": [
                ssh_step(
                    "who is there",
                    "sshd-key",
                    "id -un",
                    idempotent=True,
                    expect={"contains": server.user},
                ),
            ],
            "main": [
                ssh_step(
                    "apply the fix",
                    "sshd-key",
                    "echo applied on {{ticket.host}}",
                    requires_approval=True,
                    expect={"contains": "applied on web-03"},
                ),
                ssh_step("log in with the password", "sshd-password", "echo never"),
            ],
            "postchecks": [ssh_step("check", "sshd-key", "echo ok")],
        },
        "rollback": [ssh_step("undo", "sshd-key", "echo rolled back")],
    }
    await io.call("POST", "/api/v1/runbooks", json=document, expect=201)
    await io.ticket(INCIDENT, host="web-03")
    session_id = await io.start(INCIDENT, "leak-check")

    approval = await io.pending(INCIDENT)
    assert approval["action"] == "runbook_step"
    assert approval["details"]["command"] == "echo applied on web-03"
    await io.call("GET", f"/api/v1/approvals/{approval['approval_id']}")
    await io.call(
        "POST", f"/api/v1/approvals/{approval['approval_id']}/approve", json={"notes": "go"}
    )
    done = await io.settled(session_id)
    assert done["status"] == "failed", done
    got = [(s["name"], s["status"]) for s in done["steps"]]
    assert got == [
        ("who is there", "completed"),
        ("apply the fix", "completed"),
        ("log in with the password", "failed"),
        ("check", "skipped"),
        ("undo", "completed"),
    ], got
    assert done["verification"]["outcome"] == "escalated"
    ticket = await io.closed_ticket(INCIDENT)
    assert ticket["status"] == "escalated"

    async def audited() -> bool:
        events = await io.audit_events(incident_id=INCIDENT)
        kinds = [e["event_type"] for e in events]
        return "runbook_session" in kinds and kinds.count("credential_used") >= 4

    await wait_for(audited, timeout=60, interval=0.2)


async def read_everything(io: Console) -> None:
    """Every GET endpoint, about what the session touched (``io`` keeps the answers)."""
    m = io.m
    before = len(io.answers)
    session_id = (await io.ticket_view(INCIDENT)).get("runbook_session_id")
    for path in (
        "/api/v1/credentials",
        "/api/v1/connections",
        "/api/v1/connections?environment=dev",
        "/api/v1/runbooks",
        "/api/v1/runbooks/leak-check",
        "/api/v1/runbooks/leak-check?version=1",
        "/api/v1/approvals",
        "/api/v1/approvals?status=all",
        "/api/v1/tickets",
        f"/api/v1/tickets/{INCIDENT}",
        f"/api/v1/tickets/{INCIDENT}/audit",
        f"/api/v1/tickets/{INCIDENT}/runbook-matches",
        "/api/v1/stats",
        "/api/v1/auth/me",
        "/api/v1/users",
        "/health",
    ):
        await io.call("GET", path, expect=None)
    for approval in await io.json("GET", "/api/v1/approvals", params={"status": "all"}):
        await io.call("GET", f"/api/v1/approvals/{approval['approval_id']}")
        session_id = session_id or approval["details"].get("session_id")
    assert session_id
    await io.call("GET", f"/api/v1/runbook-sessions/{session_id}")
    audit = m.url("audit")
    for url in (
        f"{audit}/api/v1/audit/events?limit=5000",
        f"{audit}/api/v1/audit/events?q=secret",
        f"{audit}/api/v1/audit/events?event_type=credential_used",
        f"{audit}/api/v1/audit/reports/incident/{INCIDENT}",
        f"{audit}/api/v1/audit/reports/incident/{INCIDENT}?format=csv",
        f"{audit}/api/v1/audit/verify",
    ):
        await io.call("GET", url, expect=None, headers=io.mesh_auth())
    orchestrator = m.url("orchestrator")
    for url in (
        f"{orchestrator}/api/v1/incidents",
        f"{orchestrator}/api/v1/incidents/{INCIDENT}",
        f"{orchestrator}/health",
        f"{m.url('notify')}/health",
    ):
        await io.call("GET", url, expect=None, headers=io.mesh_auth())
    assert len(io.answers) - before > 25

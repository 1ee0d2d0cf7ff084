"""No secret leaves CXM: the whole mesh on real processes, run with known secrets, searched.

The mesh runs as compose runs it: ``cxm secrets init`` writes the mesh token and the database
password into files (given distinctive values here), and every agent reads them through
``CXM_MESH_TOKEN_FILE`` / ``CXM_DATABASE_PASSWORD_FILE``. Every agent keeps its data in its own
database on a real PostgreSQL server that checks the password (SCRAM; the role cannot log in
without it). The lab accepts the CNC and PCA passwords given to it; ServiceNow, Webex and the
HTTP service the runbook talks to are one small HTTP server in the test that records every call
(Webex answers 503 once, so an error path runs too; the runbook's service echoes the credential
it was sent, so the step's output must be masked).

The test drives the seed's network incident through the lab (degrade, protect, recover, close)
and one host ticket whose runbook calls that HTTP service with a token credential stored
through IO's API, plus a few requests that fail with a secret in them. Then it searches every
agent's log, every HTTP answer it saw, the audit agent's events and every agent's ``/metrics``
for each secret (and the Basic-auth form of the ServiceNow login): none may appear.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from shared.settings import AGENT_PORTS, AGENTS
from tests.support import ROOT, Mesh, free_port, http_server, mesh_env, postgres_server, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-secrets"), pytest.mark.timeout(600)]

T = TypeVar("T")
RUN = uuid.uuid4().hex[:10]
SEED_LINKS = ["pe1-pe2", "pe2-pe3"]
HOST = "leak-01"
RUNBOOK_ID = "leakprobe-status"
DB_ROLE = "cxm_app"
SNOW_USER = "cxm.leaktest"
SECRETS = {
    "mesh token": f"MESHTOKEN-{RUN}-x7",
    "database password": f"DBPASSWORD-{RUN}-q2",
    "CNC password": f"CNCPASSWORD-{RUN}-k9",
    "PCA password": f"PCAPASSWORD-{RUN}-m4",
    "Webex token": f"WEBEXTOKEN-{RUN}-z3",
    "ServiceNow password": f"SNOWPASSWORD-{RUN}-v8",
    "ServiceNow webhook secret": f"SNOWHOOK-{RUN}-r5",
    "runbook credential": f"CREDSECRET-{RUN}-b6",
}
RUNBOOK = f"""
id: {RUNBOOK_ID}
title: Leakprobe status endpoint failing - ask the service for its status
description: For tickets "leakprobe status endpoint failing on a host"; asks its status API.
keywords: [leakprobe, status endpoint]
severities: [critical, high, medium, low]
steps:
  prechecks:
    - name: ask the status endpoint
      connector: http
      connection: "{{{{ticket.host}}}}-http"
      timeout_s: 10
      idempotent: true
      request: {{method: GET, path: /status}}
      expect: {{status: 200, contains: healthy}}
  main:
    - name: ask again
      connector: http
      connection: "{{{{ticket.host}}}}-http"
      timeout_s: 10
      idempotent: true
      request: {{method: GET, path: /status}}
      expect: {{status: 200, contains: healthy}}
  postchecks:
    - name: verify the status
      connector: http
      connection: "{{{{ticket.host}}}}-http"
      timeout_s: 10
      idempotent: true
      request: {{method: GET, path: /status}}
      expect: {{status: 200, contains: healthy}}
"""


# --- ServiceNow, Webex and the runbook's HTTP service, faked at the HTTP layer ------------------


@dataclass
class Outside:
    """Every request the outside world received: method, path, headers, body."""

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    webex_failed_once: bool = False

    def to(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"].startswith(prefix)]


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    port = free_port()
    fake = Outside(url=f"http://127.0.0.1:{port}")
    table = "/api/now/table/incident"
    status_auth = f"Bearer {SECRETS['runbook credential']}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode(errors="replace") if length else ""
            call = {
                "method": self.command,
                "path": self.path.split("?", 1)[0],
                "query": self.path.partition("?")[2],
                "authorization": self.headers.get("Authorization", ""),
                "body": raw,
            }
            with fake.lock:
                fake.calls.append(call)
            return call

        def _handle(self) -> None:
            call = self._record()
            path = call["path"]
            if path == "/status":
                if call["authorization"] != status_auth:
                    return self._send(401, {"error": "unauthorized"})
                # a careless service that echoes what it was sent: CXM must mask it in the
                # step's output, the session, the audit and the ServiceNow work notes
                return self._send(200, {"status": "healthy", "seen": call["authorization"]})
            if path == "/v1/messages":
                with fake.lock:
                    first = not fake.webex_failed_once
                    fake.webex_failed_once = True
                if first:
                    return self._send(503, {"message": "Service Unavailable", "trackingId": "t"})
                return self._send(
                    200,
                    {
                        "id": uuid.uuid4().hex,
                        "roomId": "leak-room",
                        "markdown": "ok",
                        "created": "2026-01-01T00:00:00.000Z",
                    },
                )
            if path.startswith(table):
                return self._servicenow(call)
            return self._send(404, {"error": "no such path"})

        def _servicenow(self, call: dict[str, Any]) -> None:
            body = json.loads(call["body"]) if call["body"] else {}
            sys_id = call["path"].removeprefix(table).strip("/")
            with fake.lock:
                if call["method"] == "GET":
                    wanted = call["query"].partition("correlation_id%3D")[2].partition("&")[0]
                    wanted = wanted or call["query"].partition("correlation_id=")[2]
                    found = [r for r in fake.records.values() if r["correlation_id"] == wanted]
                    return self._send(200, {"result": found})
                if call["method"] == "POST":
                    n = len(fake.records) + 1
                    record = {
                        **body,
                        "sys_id": f"{n:032x}",
                        "number": f"INC{n:07d}",
                        "state": "1",
                        "correlation_id": body.get("correlation_id", ""),
                    }
                    fake.records[record["sys_id"]] = record
                    return self._send(201, {"result": record})
                existing = fake.records.get(sys_id)
                if existing is None:
                    return self._send(404, {"error": {"message": "No Record found"}})
                existing.update({k: v for k, v in body.items() if k != "work_notes"})
                return self._send(200, {"result": existing})

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    with http_server(port, Handler):
        yield fake


# --- PostgreSQL that checks the password --------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A PostgreSQL server where ``cxm_app`` logs in with the password only; yields host:port.

    One database per agent, as ``deploy/postgres-init.sql`` makes them. The cluster lives
    outside pytest's temporary root, which the ``postgres`` user cannot enter.
    """
    if not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="cxm-leak-pg-"))
    try:
        with postgres_server(base) as dsn:
            hba = base / "pgdata" / "pg_hba.conf"
            rule = f"host all {DB_ROLE} 127.0.0.1/32 scram-sha-256\n"
            hba.write_text(rule + hba.read_text())

            async def prepare() -> None:
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute("SET password_encryption = 'scram-sha-256'")
                    password = SECRETS["database password"]
                    await conn.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD '{password}'")
                    for agent in AGENTS:
                        await conn.execute(f"CREATE DATABASE cxm_{agent} OWNER {DB_ROLE}")
                    await conn.execute("SELECT pg_reload_conf()")
                finally:
                    await conn.close()
                host = dsn.split("@", 1)[1].rsplit("/", 1)[0]
                # the rule is live: without the password the role is refused
                with pytest.raises(asyncpg.InvalidPasswordError):
                    await asyncpg.connect(f"postgresql://{DB_ROLE}:wrong@{host}/cxm_io")

            asyncio.run(prepare())
            yield dsn.split("@", 1)[1].rsplit("/", 1)[0]
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the mesh -----------------------------------------------------------------------------------


@dataclass
class Seen:
    """Every HTTP answer the test received (and what it asked), to search afterwards."""

    answers: list[tuple[str, str]] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.answers.append(
            (
                f"{response.request.method} {response.request.url} → {response.status_code}",
                f"{response.headers}\n{response.text}",
            )
        )

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
            event_hooks={"response": [self.hook]},
        )


@dataclass
class Stack:
    m: Mesh
    outside: Outside
    seen: Seen
    mesh_http: httpx.Client
    admin: httpx.Client
    alice: httpx.Client
    secrets_dir: Path

    def io(self, path: str) -> str:
        return f"{self.m.url('io')}{path}"

    def ticket(self, incident_id: str) -> dict[str, Any]:
        r = self.alice.get(self.io(f"/api/v1/tickets/{incident_id}"))
        if r.status_code == 404:
            return {}
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def closed(self, incident_id: str, timeout: float = 180.0) -> dict[str, Any]:
        def event() -> dict[str, Any] | None:
            events = self.ticket(incident_id).get("events") or []
            found = [e["payload"] for e in events if e["task_type"] == "ticket_closed"]
            return found[-1] if found else None

        return wait_until(event, f"ticket_closed for {incident_id}", timeout)


def init_secrets(directory: Path) -> None:
    """What compose's one-shot ``secrets`` service runs, with the operator's own values."""
    env = {k: v for k, v in mesh_env(directory, {}).items() if not k.startswith("CXM_")}
    env["CXM_MESH_TOKEN"] = SECRETS["mesh token"]
    env["CXM_DATABASE_PASSWORD"] = SECRETS["database password"]
    done = subprocess.run(
        [sys.executable, "-m", "cxm.cli", "secrets", "init", "--dir", str(directory)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (directory / "mesh-token").read_text() == SECRETS["mesh token"]
    assert not any(s in done.stdout + done.stderr for s in SECRETS.values())


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, outside: Outside, database: str
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("leak")
    data = base / "mesh"
    data.mkdir()
    secrets_dir = base / "secrets"
    init_secrets(secrets_dir)
    runbooks = base / "runbooks"
    runbooks.mkdir()
    (runbooks / f"{RUNBOOK_ID}.yaml").write_text(RUNBOOK)

    ports = {name: free_port() for name in AGENT_PORTS}
    env = mesh_env(
        data,
        ports,
        {
            "CXM_TIME_SCALE": "0.02",
            "CXM_MESH_TOKEN_FILE": str(secrets_dir / "mesh-token"),
            "CXM_DATABASE_PASSWORD_FILE": str(secrets_dir / "db-password"),
            "CXM_LOG_LEVEL": "DEBUG",
            # the test, not the lab's timer, decides when the links recover
            "CXM_LAB_SCENARIO_DURATION_S": "100000",
            "CXM_CORRELATOR_GROUP_WAIT_S": "50",
            "CXM_APPROVAL_TIMEOUT_S": "100000",
            "CXM_CNC_PASSWORD": SECRETS["CNC password"],
            "CXM_PCA_PASSWORD": SECRETS["PCA password"],
            "CXM_WEBEX_ACCESS_TOKEN": SECRETS["Webex token"],
            "CXM_WEBEX_ROOM_ID": "leak-room",
            "CXM_WEBEX_BASE_URL": f"{outside.url}/v1/",
            "CXM_SERVICENOW_URL": outside.url,
            "CXM_SERVICENOW_USERNAME": SNOW_USER,
            "CXM_SERVICENOW_PASSWORD": SECRETS["ServiceNow password"],
            "CXM_SERVICENOW_WEBHOOK_SECRET": SECRETS["ServiceNow webhook secret"],
            "CXM_RUNBOOKS_DIR": str(runbooks),
        },
    )
    del env["CXM_MESH_TOKEN"]  # only the file, as in compose
    for agent in AGENTS:
        env[f"CXM_{agent.upper()}__DATABASE_URL"] = f"postgresql://{DB_ROLE}@{database}/cxm_{agent}"
    m = Mesh(data, env, ports)
    seen = Seen()
    try:
        for name in AGENT_PORTS:
            m.start(name)
        m.wait_healthy(list(AGENT_PORTS), timeout=240)
        with (
            seen.client(SECRETS["mesh token"]) as mesh_http,
            seen.client(m.io_token) as admin,
        ):
            # alice's token is handed out once, by design: that answer is not searched
            with httpx.Client(timeout=15) as quiet:
                r = quiet.post(
                    f"{m.url('io')}/api/v1/users",
                    json={"username": "alice", "role": "operator"},
                    headers={"Authorization": f"Bearer {m.io_token}"},
                )
            assert r.status_code == 201, r.text
            with seen.client(r.json()["token"]) as alice:
                yield Stack(m, outside, seen, mesh_http, admin, alice, secrets_dir)
    finally:
        for name in list(m.procs):
            m.stop(name)


# --- the flows ------------------------------------------------------------------------------------


def register_target(stack: Stack) -> None:
    """The runbook's HTTP service: a token credential and a connection, through IO's API."""
    r = stack.admin.post(
        stack.io("/api/v1/credentials"),
        json={"name": "leak-token", "kind": "token", "secret": SECRETS["runbook credential"]},
    )
    assert r.status_code == 201, r.text
    r = stack.admin.post(
        stack.io("/api/v1/connections"),
        json={
            "name": f"{HOST}-http",
            "environment": "prod",
            "connector": "http",
            "url": stack.outside.url,
            "credential": "leak-token",
        },
    )
    assert r.status_code == 201, r.text
    tested = stack.admin.post(stack.io(f"/api/v1/connections/{HOST}-http/test")).json()
    assert tested["ok"] is True, tested


def provoke_errors(stack: Stack) -> None:
    """Requests that fail while carrying a secret: the error answers must not echo it."""
    secret = SECRETS["runbook credential"]
    bad_kind = stack.admin.post(
        stack.io("/api/v1/credentials"),
        json={"name": "leak-bad", "kind": "certificate", "secret": secret},
    )
    assert 400 <= bad_kind.status_code < 500, bad_kind.text
    twice = stack.admin.post(
        stack.io("/api/v1/credentials"),
        json={"name": "leak-token", "kind": "token", "secret": secret},
    )
    assert 400 <= twice.status_code < 500, twice.text
    not_json = stack.admin.post(
        stack.io("/api/v1/credentials"),
        content=f'{{"name": "leak-broken", "kind": "token", "secret": "{secret}"',
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= not_json.status_code < 500, not_json.text
    # the mesh token where IO wants a person's, and a webhook with a wrong signature
    wrong = stack.mesh_http.get(stack.io("/api/v1/tickets"))
    assert wrong.status_code == 401, wrong.text
    hook = stack.mesh_http.post(
        f"{stack.m.url('notify')}/api/v1/servicenow/webhook",
        json={"sys_id": "x"},
        headers={"Authorization": "Bearer not-the-secret"},
    )
    assert 400 <= hook.status_code < 500, hook.text


def network_incident(stack: Stack) -> str:
    lab = stack.m.url("lab")
    assert stack.mesh_http.post(f"{lab}/lab/scenarios/sla-degradation").status_code < 300

    def ticket() -> str | None:
        rows = stack.alice.get(stack.io("/api/v1/tickets")).json()
        mine = [t for t in rows if set(SEED_LINKS) <= set(t["degraded_links"])]
        return str(mine[0]["incident_id"]) if mine else None

    incident = wait_until(ticket, "the seed's ticket", 120)

    def steered() -> bool:
        events = stack.ticket(incident).get("events") or []
        return any(e["payload"].get("phase") == "5" for e in events)

    wait_until(steered, "traffic steered", 180)
    for link in SEED_LINKS:
        assert stack.mesh_http.post(f"{lab}/lab/links/{link}/recover").status_code < 300
    closed = stack.closed(incident)
    assert closed["resolution"] == "resolved", closed
    return incident


def host_ticket(stack: Stack) -> str:
    r = stack.mesh_http.post(
        f"{stack.m.url('correlator')}/api/v1/tickets/demo/ticket",
        json={
            "title": f"leakprobe status endpoint failing on {HOST}",
            "description": "the leakprobe service's status endpoint answers errors",
            "severity": "critical",
            "host": HOST,
            "labels": {"service": "leakprobe"},
        },
    )
    assert r.status_code == 202, r.text
    incident = str(r.json()["alerts"][0]["incident_id"])
    wait_until(lambda: stack.ticket(incident), f"ticket {incident} in IO")
    r = stack.alice.post(
        stack.io(f"/api/v1/tickets/{incident}/runbook-sessions"), json={"runbook_id": RUNBOOK_ID}
    )
    assert r.status_code == 201, r.text
    session_id = r.json()["session_id"]

    def settled() -> dict[str, Any] | None:
        for approval in stack.alice.get(
            stack.io("/api/v1/approvals"), params={"incident_id": incident}
        ).json():
            stack.alice.post(
                stack.io(f"/api/v1/approvals/{approval['approval_id']}/approve"),
                json={"notes": "fine"},
            )
        session: dict[str, Any] = stack.alice.get(
            stack.io(f"/api/v1/runbook-sessions/{session_id}")
        ).json()
        return session if session.get("final") else None

    done = wait_until(settled, f"session {session_id} ended", 180)
    assert done["status"] == "completed", done
    # the service echoed the token it was sent; the output keeps the rest, masked
    assert all("[credential redacted]" in s["output"] for s in done["steps"]), done["steps"]
    stack.closed(incident)
    return incident


# --- the search -----------------------------------------------------------------------------------


def needles(stack: Stack) -> dict[str, str]:
    found = dict(SECRETS)
    basic = f"{SNOW_USER}:{SECRETS['ServiceNow password']}".encode()
    found["ServiceNow Basic auth"] = base64.b64encode(basic).decode()
    found["IO admin token"] = stack.m.io_token
    found["alice's token"] = stack.alice.headers["Authorization"].removeprefix("Bearer ")
    key_file = stack.m.data_dir / "runbook-credentials.key"
    for i, line in enumerate(key_file.read_text().split()):
        found[f"credential key {i}"] = line
    return found


def leaks(where: str, text: str, secrets: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets.items() if value in text]


def test_no_secret_in_logs_answers_audit_or_metrics(stack: Stack) -> None:
    register_target(stack)
    provoke_errors(stack)
    network = network_incident(stack)
    host = host_ticket(stack)

    # the secrets were really used: the lab's logins, ServiceNow, Webex, the runbook's service
    status = stack.outside.to("/status")
    assert status and all(
        c["authorization"].endswith(SECRETS["runbook credential"]) for c in status
    )
    snow = stack.outside.to("/api/now/table/incident")
    assert {c["authorization"] for c in snow} == {
        f"Basic {needles(stack)['ServiceNow Basic auth']}"
    }
    webex = stack.outside.to("/v1/messages")
    assert len(webex) >= 2 and {c["authorization"] for c in webex} == {
        f"Bearer {SECRETS['Webex token']}"
    }

    secrets = needles(stack)
    found: list[str] = []
    events = stack.mesh_http.get(
        f"{stack.m.url('audit')}/api/v1/audit/events", params={"limit": 5000}
    ).json()["events"]
    assert {network, host} <= {e.get("incident_id") for e in events}
    found += leaks("the audit events", json.dumps(events), secrets)
    for name in AGENTS:  # the lab is an emulator of the outside, with no /metrics
        metrics = stack.mesh_http.get(f"{stack.m.url(name)}/metrics")
        assert metrics.status_code == 200
        found += leaks(f"{name}'s /metrics", metrics.text, secrets)
    # what CXM sent out: only the Authorization headers may carry a secret
    for call in stack.outside.calls:
        found += leaks(
            f"a {call['method']} {call['path']} body", call["body"] + call["query"], secrets
        )
    for what, text in stack.seen.answers:
        found += leaks(f"the answer to {what}", text, secrets)

    for name in list(stack.m.procs):
        stack.m.stop(name)  # shutdown logs too
    for name in AGENT_PORTS:
        log = (stack.m.data_dir / f"{name}.log").read_text(errors="replace")
        assert log.strip(), f"{name} logged nothing"
        found += leaks(f"{name}'s log", log, secrets)
    assert not found, "\n".join(found)

"""Seed 000 end to end on real processes: a disk fills, Alertmanager fires, a runbook fixes it.

Everything a user would run is real: the correlator, orchestrator, IO, audit and notify as
``cxm agent NAME`` processes (SQLite, the shipped runbook library), Debian's
``prometheus-alertmanager`` delivering its webhook to the correlator, and Debian's OpenSSH
server (``tests/runbooks/sshd.py``) that the runbook's steps log in to. ServiceNow cannot run
here, so notify's ``CXM_SERVICENOW_URL`` points at a small HTTP server in the test that speaks
the Table API (``/api/now/table/incident``: ``GET ?sysparm_query=``, ``POST``, ``PATCH``,
answers wrapped in ``result``) and records every call.

The disk that fills is real, and small: each test mounts its own 16 MiB tmpfs (we run as
root here and ``mount -t tmpfs`` works; a loop device would need ``mkfs`` and an image for
nothing more) and fills it past the runbook's 90 % threshold with files whose mtime
(``os.utime``) is 30 days old, plus one fresh file the age guard must keep. The alert's
labels carry what ``linux-disk-full`` reads (``path``, ``threshold_pct``, ``min_age_days``),
and its ``instance`` (``web-0N:9100``) becomes the ticket's host, which is the name of the
SSH connection made through IO's REST API, so ``df`` on the far side of SSH measures the
very filesystem the test filled. Nothing touches the machine's real disks; the mounts are
taken down afterwards. Without root (or without ``mount``) the module is skipped.

The paths: approved and verified (ServiceNow created, updated with work notes, resolved);
the deletion rejected (session ``rejected``, ticket escalated); the deletion failing on a
filesystem remounted read-only (rollback ran, escalated); an alert no runbook fits
(nothing runs until an operator picks one); and an incident opened in ServiceNow, posted by
its Business Rule to the correlator, run on the host and resolved on that same record (one
work note per step, never a second incident).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.settings import AGENT_PORTS
from tests.runbooks.sshd import Sshd, sshd
from tests.support import Mesh, free_port, http_server, mesh_env, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-seed000"),
    pytest.mark.timeout(400),
]

AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AGENTS = ("audit", "notify", "io", "orchestrator", "correlator")
STARTUP_S = 180.0
RUNBOOK = "linux-disk-full"
MAIN_STEP = "delete files older than the age guard"
MIB = 1024 * 1024
OLD = 30 * 86400  # seconds: well past the runbook's min_age_days of 7
SNOW_USER, SNOW_PASSWORD = "cxm.integration", "snow-test-password"
SNOW_RULE_TOKEN = "snow-business-rule-token"
T = TypeVar("T")


# --- ServiceNow's Table API, faked at the HTTP layer ------------------------------------------


@dataclass
class FakeServiceNow:
    """``/api/now/table/incident`` as documented (ServiceNow REST API reference, Table API):
    records and the calls that made them, with the basic-auth header each call carried."""

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, incident_id: str) -> list[dict[str, Any]]:
        """The calls about one CXM incident (found by the record's correlation_id)."""
        with self.lock:
            sys_ids = {s for s, r in self.records.items() if r.get("correlation_id") == incident_id}
            return [
                c
                for c in self.calls
                if c["sys_id"] in sys_ids
                or (c["method"] == "POST" and c["body"].get("correlation_id") == incident_id)
            ]

    def record(self, incident_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = [r for r in self.records.values() if r.get("correlation_id") == incident_id]
            return dict(found[0]) if found else None

    def open(self, short_description: str, **fields: Any) -> dict[str, Any]:
        """A record a person opens in ServiceNow's own UI (no API call of ours makes it)."""
        with self.lock:
            n = len(self.records) + 1
            record = {
                "sys_id": f"{0x5E0 + n:032x}",
                "number": f"INC{10000 + n:07d}",
                "state": "1",
                "short_description": short_description,
                **fields,
            }
            self.records[record["sys_id"]] = record
            return dict(record)

    def on(self, sys_id: str) -> list[dict[str, Any]]:
        """The calls made on one record (by its sys_id)."""
        with self.lock:
            return [c for c in self.calls if c["sys_id"] == sys_id]


@pytest.fixture(scope="module")
def servicenow() -> Iterator[FakeServiceNow]:
    port = free_port()
    fake = FakeServiceNow(url=f"http://127.0.0.1:{port}")
    table = "/api/now/table/incident"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            loaded: dict[str, Any] = json.loads(self.rfile.read(length)) if length else {}
            return loaded

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _log(self, method: str, sys_id: str | None, body: dict[str, Any]) -> None:
            fake.calls.append(
                {
                    "method": method,
                    "path": urlsplit(self.path).path,
                    "query": parse_qs(urlsplit(self.path).query),
                    "sys_id": sys_id,
                    "body": body,
                    "authorization": self.headers.get("Authorization", ""),
                }
            )

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            wanted = (query.get("sysparm_query") or [""])[0].removeprefix("correlation_id=")
            with fake.lock:
                self._log("GET", None, {})
                found = [
                    {k: r[k] for k in ("sys_id", "number", "state")}
                    for r in fake.records.values()
                    if r.get("correlation_id") == wanted
                ]
            self._send(200, {"result": found})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != table:
                return self._send(404, {"error": {"message": "No such table", "detail": ""}})
            body = self._body()
            with fake.lock:
                n = len(fake.records) + 1
                sys_id = f"{n:032x}"
                record = {
                    **body,
                    "sys_id": sys_id,
                    "number": f"INC{10000 + n:07d}",
                    "state": "1",
                    "sys_created_on": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                fake.records[sys_id] = record
                self._log("POST", sys_id, body)
            self._send(201, {"result": record})

        def do_PATCH(self) -> None:
            sys_id = urlsplit(self.path).path.removeprefix(f"{table}/")
            body = self._body()
            with fake.lock:
                record = fake.records.get(sys_id)
                if record is None:
                    return self._send(404, {"error": {"message": "No Record found", "detail": ""}})
                self._log("PATCH", sys_id, body)
                # work_notes is a journal field: each write adds an entry, it never replaces
                record.update({k: v for k, v in body.items() if k != "work_notes"})
                if "work_notes" in body:
                    record.setdefault("journal", []).append(body["work_notes"])
                answer = dict(record)
            self._send(200, {"result": answer})

    with http_server(port, Handler):
        yield fake


# --- a disk that really fills -----------------------------------------------------------------


@dataclass
class Disk:
    path: Path

    def usage_pct(self) -> int:
        """As ``df -P`` computes Capacity: used / (used + available), rounded up."""
        st = os.statvfs(self.path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        return -(-100 * used // (used + avail)) if used else 0

    def old_files(self) -> list[Path]:
        cutoff = time.time() - 7 * 86400
        return [p for p in self.path.rglob("*") if p.is_file() and p.stat().st_mtime < cutoff]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """A 16 MiB tmpfs, 15 MiB of it files 30 days old and 64 KiB a fresh one: ~94 % used."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "data"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        (mnt / "cache").mkdir()
        for i in range(15):
            f = mnt / "cache" / f"blob-{i:02d}.bin"
            f.write_bytes(os.urandom(MIB))
            os.utime(f, (time.time() - OLD, time.time() - OLD))
        (mnt / "fresh.log").write_bytes(b"x" * 65536)
        disk = Disk(mnt)
        assert disk.usage_pct() >= 93, disk.usage_pct()
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    m: Mesh
    server: Sshd
    snow: FakeServiceNow
    am_url: str
    http: httpx.Client
    alice: dict[str, str]

    def io(self, path: str) -> str:
        return f"{self.m.url('io')}{path}"

    def mesh_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.m.token}"}

    def fire(self, host: str, labels: dict[str, str], summary: str, description: str) -> None:
        """An alert into the real Alertmanager, which delivers it to the correlator."""
        alert = {
            "labels": {"instance": f"{host}:9100", "job": "node", **labels},
            "annotations": {"summary": summary, "description": description},
            "generatorURL": "http://prometheus.example:9090/graph",
        }
        r = self.http.post(f"{self.am_url}/api/v2/alerts", json=[alert])
        assert r.status_code == 200, r.text

    def incident_of(self, host: str) -> tuple[str, dict[str, Any]]:
        """The correlator's alert row from Alertmanager for ``host``, once it has a ticket."""

        def row() -> dict[str, Any] | None:
            rows = self.http.get(
                f"{self.m.url('correlator')}/api/v1/alerts",
                params={"source": "alertmanager"},
                headers=self.mesh_auth(),
            ).json()
            mine = [r for r in rows if r["labels"].get("instance") == f"{host}:9100"]
            return mine[0] if mine and mine[0]["incident_id"] else None

        found = wait_until(row, f"Alertmanager's alert for {host} at the correlator")
        return str(found["incident_id"]), found

    def ticket(self, incident_id: str) -> dict[str, Any]:
        r = self.http.get(self.io(f"/api/v1/tickets/{incident_id}"))
        if r.status_code == 404:
            return {}
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def matched(self, incident_id: str) -> dict[str, Any]:
        """The orchestrator's ``status_update`` with the ticket's runbook matches."""

        def update() -> dict[str, Any] | None:
            events = self.ticket(incident_id).get("events") or []
            found = [
                e["payload"]
                for e in events
                if e["task_type"] == "status_update" and "matches" in e["payload"]["details"]
            ]
            return found[0] if found else None

        return wait_until(update, f"runbook matches on {incident_id}")

    def session(self, session_id: str) -> dict[str, Any]:
        r = self.http.get(self.io(f"/api/v1/runbook-sessions/{session_id}"))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def settled(self, session_id: str) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.session(session_id))["final"] and s, f"session {session_id} ended"
        )

    def pending(self, incident_id: str) -> dict[str, Any]:
        def one() -> dict[str, Any] | None:
            rows = self.http.get(
                self.io("/api/v1/approvals"), params={"incident_id": incident_id}
            ).json()
            return rows[0] if rows else None

        return wait_until(one, f"an approval pending on {incident_id}")

    def closed(self, incident_id: str) -> dict[str, Any]:
        def event() -> dict[str, Any] | None:
            events = self.ticket(incident_id).get("events") or []
            found = [e["payload"] for e in events if e["task_type"] == "ticket_closed"]
            return found[-1] if found else None

        return wait_until(event, f"ticket_closed for {incident_id}")

    def auto_session(self, incident_id: str, auto: dict[str, Any]) -> str:
        """The session the match started by itself: severity high auto-runs at >= 0.85, and
        this alert matches linux-disk-full at about 0.9 (history cannot move it below)."""
        assert auto["started"] is True, auto
        session_id = str(self.matched(incident_id)["details"]["runbook_session_id"])
        assert self.session(session_id)["started_by"] == "cxm-auto"
        return session_id


ALERTMANAGER_CONFIG = """
route:
  receiver: cxm
  group_by: [alertname, instance]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: cxm
    webhook_configs:
      - url: {url}/api/v1/tickets/webhook/alertmanager
        send_resolved: false
        http_config:
          authorization:
            credentials: {token}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, servicenow: FakeServiceNow) -> Iterator[Stack]:
    if AM is None:
        pytest.skip("apt-get install prometheus-alertmanager")
    base = tmp_path_factory.mktemp("seed000")
    data = base / "mesh"
    data.mkdir()
    ports = {name: free_port() for name in AGENT_PORTS}
    env = mesh_env(
        data,
        ports,
        {
            "CXM_TIME_SCALE": "0.02",
            "CXM_LAB_ENABLED": "false",
            "CXM_MESH_RETRIES": "1",
            # a person decides at their pace: the scaled default (18 s) is short on a busy box
            "CXM_APPROVAL_TIMEOUT_S": "100000",
            "CXM_SERVICENOW_URL": servicenow.url,
            "CXM_SERVICENOW_USERNAME": SNOW_USER,
            "CXM_SERVICENOW_PASSWORD": SNOW_PASSWORD,
            "CXM_SERVICENOW_CATEGORY": "software",
            # the Business Rule that posts new ServiceNow incidents to the correlator
            "CXM_CORRELATOR_WEBHOOK_AUTH": json.dumps(
                {"servicenow": {"bearer_token": SNOW_RULE_TOKEN}}
            ),
        },
    )
    m = Mesh(data, env, ports)
    am_port = free_port()
    (base / "am.yml").write_text(ALERTMANAGER_CONFIG.format(url=m.url("correlator"), token=m.token))
    am_log = (base / "am.log").open("wb")
    am: subprocess.Popen[bytes] | None = None
    with sshd(base / "sshd") as server:
        try:
            for name in AGENTS:
                m.start(name)
            am = subprocess.Popen(
                [
                    AM,
                    f"--config.file={base / 'am.yml'}",
                    f"--storage.path={base / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                stdout=am_log,
                stderr=subprocess.STDOUT,
            )
            m.wait_healthy(AGENTS, timeout=STARTUP_S)
            with m.client() as http:
                am_url = f"http://127.0.0.1:{am_port}"

                def am_ready() -> bool:
                    try:
                        return http.get(f"{am_url}/-/ready").status_code == 200
                    except httpx.HTTPError:
                        return False

                wait_until(am_ready, "Alertmanager ready", timeout=60)
                alice = operator(http, m, "alice")
                register_hosts(http, m, server)
                yield Stack(m, server, servicenow, am_url, http, alice)
        finally:
            if am is not None:
                am.terminate()
                try:
                    am.wait(10)
                except subprocess.TimeoutExpired:
                    am.kill()
                    am.wait()
            am_log.close()
            for name in list(m.procs):
                m.stop(name)


def operator(http: httpx.Client, m: Mesh, username: str) -> dict[str, str]:
    """A console user with the operator role; its own token, as a person signs in."""
    r = http.post(f"{m.url('io')}/api/v1/users", json={"username": username, "role": "operator"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


HOSTS = ("web-01", "web-02", "web-03", "web-04", "web-05")
"""One host (and connection) per test: the correlator keeps one open ticket per host, and the
frequency guard counts sessions per runbook and host."""


def register_hosts(http: httpx.Client, m: Mesh, server: Sshd) -> None:
    """The SSH key as a credential and each host as a connection, through IO's REST API, as
    the runbook's convention names them (``connection: "{{ticket.host}}"``)."""
    io = m.url("io")
    r = http.post(
        f"{io}/api/v1/credentials",
        json={
            "name": "ops-key",
            "kind": "ssh_key",
            "username": server.user,
            "secret": server.client_key,
        },
    )
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    for host in HOSTS:
        r = http.post(
            f"{io}/api/v1/connections",
            json={
                "name": host,
                "environment": "prod",
                "connector": "ssh",
                "host": "127.0.0.1",
                "port": server.port,
                "credential": "ops-key",
                "host_key": server.host_key_line,
            },
        )
        assert r.status_code == 201, r.text
    tested = http.post(f"{io}/api/v1/connections/{HOSTS[0]}/test").json()
    assert tested["ok"] is True, tested


def disk_labels(disk: Disk, severity: str = "high") -> dict[str, str]:
    return {
        "alertname": "NodeFilesystemAlmostOutOfSpace",
        "severity": severity,
        "mountpoint": str(disk.path),
        "fstype": "tmpfs",
        "device": "tmpfs",
        # what linux-disk-full reads: the directory to clean, the goal, the age guard
        "path": str(disk.path),
        "threshold_pct": "90",
        "min_age_days": "7",
    }


def fire_disk_alert(stack: Stack, host: str, disk: Disk) -> str:
    stack.fire(
        host,
        disk_labels(disk),
        summary=f"Disk space low: filesystem {disk.path} on {host} is {disk.usage_pct()}% full",
        description=(
            f"Filesystem {disk.path} ({disk.usage_pct()}% used) has less than 10% space left "
            "and will soon be out of space: no space left on device."
        ),
    )
    incident, row = stack.incident_of(host)
    assert row["disposition"] == "new_incident", row
    assert row["severity"] == "high"
    assert len(row["fingerprint"]) == 16  # Alertmanager's own fingerprint
    assert row["labels"]["path"] == str(disk.path)
    return incident


def assert_disk_match(update: dict[str, Any]) -> dict[str, Any]:
    """The top match is linux-disk-full, with its four factors and an explanation."""
    details = update["details"]
    assert details["kind"] == "host"
    matches = details["matches"]
    assert 1 <= len(matches) <= 3
    best = matches[0]
    assert best["runbook_id"] == RUNBOOK, matches
    assert set(best["factors"]) == {"semantic", "keyword", "history", "recency"}
    assert all(0.0 <= v <= 1.0 for v in best["factors"].values())
    assert best["factors"]["keyword"] > 0.5, best
    assert best["explanation"]
    assert [m["confidence"] for m in matches] == sorted(
        (m["confidence"] for m in matches), reverse=True
    )
    assert details["none_likely"] is False
    auto: dict[str, Any] = details["auto_run"]
    assert auto["reason"]
    return auto


def snow_calls(stack: Stack, incident: str, what: Callable[[list[dict[str, Any]]], bool]) -> Any:
    return wait_until(
        lambda: (calls := stack.snow.of(incident)) and what(calls) and calls,
        f"ServiceNow calls for {incident}",
    )


# --- the paths ----------------------------------------------------------------------------------


def test_disk_full_is_fixed_over_ssh_and_servicenow_resolves(stack: Stack, disk: Disk) -> None:
    host = "web-01"
    incident = fire_disk_alert(stack, host, disk)

    # the host ticket in IO, matched to linux-disk-full with the factors shown
    ticket = wait_until(lambda: stack.ticket(incident), f"ticket {incident} in IO")
    assert ticket["kind"] == "host"
    new = next(e["payload"] for e in ticket["events"] if e["task_type"] == "new_ticket")
    assert new["host"] == host and new["kind"] == "host"
    assert new["labels"]["alertname"] == "NodeFilesystemAlmostOutOfSpace"
    update = stack.matched(incident)
    auto = assert_disk_match(update)
    listed = stack.http.get(stack.io(f"/api/v1/tickets/{incident}/runbook-matches")).json()
    assert listed["matches"][0]["runbook_id"] == RUNBOOK
    ticket = stack.ticket(incident)
    assert ticket["runbook_matches"][0]["runbook_id"] == RUNBOOK

    session_id = stack.auto_session(incident, auto)
    wait_until(
        lambda: stack.ticket(incident).get("runbook_session_id") == session_id,
        "the ticket names its session",
    )

    # the deletion waits for a person: the exact command, on the host's connection
    approval = stack.pending(incident)
    assert approval["action"] == "runbook_step"
    d = approval["details"]
    assert d["step"] == MAIN_STEP and d["connection"] == host
    assert str(disk.path) in d["command"]
    view = stack.session(session_id)
    assert view["status"] == "waiting_approval"
    pre = [s for s in view["steps"] if s["phase"] == "prechecks"]
    assert [s["status"] for s in pre] == ["completed"] * 4, pre
    assert "15 files older than 7 days" in pre[2]["output"], pre[2]
    assert disk.old_files(), "nothing may be deleted before the approval"

    r = stack.http.post(
        stack.io(f"/api/v1/approvals/{approval['approval_id']}/approve"),
        json={"notes": "old cache blobs, fine to delete"},
        headers=stack.alice,
    )
    assert r.status_code == 200, r.text

    done = stack.settled(session_id)
    assert done["status"] == "completed", done
    assert [s["status"] for s in done["steps"]] == ["completed"] * 7, done["steps"]
    main = next(s for s in done["steps"] if s["phase"] == "main")
    assert main["output"].startswith("freed "), main
    post = [s for s in done["steps"] if s["phase"] == "postchecks"]
    assert "threshold 90%" in post[0]["output"], post[0]
    assert done["verification"]["outcome"] == "resolved", done["verification"]
    assert done["verification"]["confidence"] >= 0.8

    # the space is really back, and the age guard kept the fresh file
    assert disk.usage_pct() < 90
    assert not disk.old_files()
    assert (disk.path / "fresh.log").exists()
    assert "Accepted publickey for " in stack.server.log_text()

    closed = stack.closed(incident)
    assert closed["resolution"] == "resolved"
    assert closed["details"]["close_reason"] == "runbook_verified"
    assert stack.ticket(incident)["status"] == "closed"

    # ServiceNow: created once (correlated to the CXM incident), work notes, then resolved
    calls = snow_calls(stack, incident, lambda c: any(x["body"].get("state") == "6" for x in c))
    assert all(c["authorization"].startswith("Basic ") for c in calls)
    creates = [c for c in calls if c["method"] == "POST"]
    assert len(creates) == 1, calls
    created = creates[0]["body"]
    assert created["correlation_id"] == incident
    assert created["impact"] == "1" and created["urgency"] == "2"  # high
    assert created["category"] == "software"
    assert RUNBOOK in created["work_notes"]
    patches = [c["body"] for c in calls if c["method"] == "PATCH"]
    notes = [p["work_notes"] for p in patches if "work_notes" in p]
    assert any(MAIN_STEP in n and "waits for an approval" in n for n in notes), notes
    resolved = patches[-1]
    assert resolved["state"] == "6" and resolved["close_code"] == "Solved (Permanently)"
    for step in done["steps"]:
        assert f"{step['name']}: completed" in resolved["close_notes"], resolved
    record = stack.snow.record(incident)
    assert record is not None and record["state"] == "6"


def test_rejected_deletion_escalates(stack: Stack, disk: Disk) -> None:
    host = "web-02"
    incident = fire_disk_alert(stack, host, disk)
    auto = assert_disk_match(stack.matched(incident))
    session_id = stack.auto_session(incident, auto)
    approval = stack.pending(incident)
    assert approval["details"]["step"] == MAIN_STEP
    r = stack.http.post(
        stack.io(f"/api/v1/approvals/{approval['approval_id']}/reject"),
        json={"notes": "those blobs are still needed"},
        headers=stack.alice,
    )
    assert r.status_code == 200, r.text

    done = stack.settled(session_id)
    assert done["status"] == "rejected", done
    by_name = {s["name"]: s for s in done["steps"]}
    assert by_name[MAIN_STEP]["status"] == "rejected"
    assert "those blobs are still needed" in by_name[MAIN_STEP]["reason"]
    assert {s["status"] for s in done["steps"] if s["phase"] == "postchecks"} == {"skipped"}
    assert not [s for s in done["steps"] if s["phase"] == "rollback"]  # nothing ran to undo
    assert done["verification"]["outcome"] == "escalated"
    assert len(disk.old_files()) == 15 and disk.usage_pct() >= 90  # untouched

    closed = stack.closed(incident)
    assert closed["resolution"] == "escalated"
    assert closed["details"]["rejected"] is True
    assert stack.ticket(incident)["status"] == "escalated"
    calls = snow_calls(
        stack,
        incident,
        lambda c: any(x["body"].get("urgency") == "1" and x["method"] == "PATCH" for x in c),
    )
    last = [c["body"] for c in calls if c["method"] == "PATCH"][-1]
    assert f"{MAIN_STEP}: rejected" in last["work_notes"], last
    assert not any(c["body"].get("state") == "6" for c in calls)  # escalated is not resolved


def test_failing_deletion_rolls_back_and_escalates(stack: Stack, disk: Disk) -> None:
    """The filesystem is remounted read-only once the prechecks have looked at it: the
    deletion really fails (EROFS), the rollback records the state, the ticket escalates."""
    host = "web-03"
    incident = fire_disk_alert(stack, host, disk)
    auto = assert_disk_match(stack.matched(incident))
    session_id = stack.auto_session(incident, auto)
    approval = stack.pending(incident)
    subprocess.run(["mount", "-o", "remount,ro", str(disk.path)], check=True)
    r = stack.http.post(
        stack.io(f"/api/v1/approvals/{approval['approval_id']}/approve"),
        json={},
        headers=stack.alice,
    )
    assert r.status_code == 200, r.text

    done = stack.settled(session_id)
    assert done["status"] == "failed", done
    main = next(s for s in done["steps"] if s["phase"] == "main")
    assert main["status"] == "failed" and main["exit_code"] != 0, main
    assert "Read-only file system" in main["output"], main
    assert {s["status"] for s in done["steps"] if s["phase"] == "postchecks"} == {"skipped"}
    rollback = [s for s in done["steps"] if s["phase"] == "rollback"]
    assert [(s["name"], s["status"]) for s in rollback] == [
        ("record usage for the hand-over", "completed")
    ]
    assert str(disk.path) in rollback[0]["output"]
    assert done["verification"]["outcome"] == "escalated"
    assert any("rollback" in r for r in done["verification"]["reasons"])
    assert len(disk.old_files()) == 15

    closed = stack.closed(incident)
    assert closed["resolution"] == "escalated"
    ticket = stack.ticket(incident)
    assert ticket["status"] == "escalated"
    errors = [e["payload"] for e in ticket["events"] if e["task_type"] == "error"]
    assert errors and errors[-1]["error_code"] == "runbook_failed"
    calls = snow_calls(
        stack,
        incident,
        lambda c: any(x["body"].get("urgency") == "1" and x["method"] == "PATCH" for x in c),
    )
    last = [c["body"] for c in calls if c["method"] == "PATCH"][-1]
    assert f"{MAIN_STEP}: failed" in last["work_notes"], last
    assert "record usage for the hand-over: completed" in last["work_notes"], last


def test_weak_match_waits_for_an_operator(stack: Stack, disk: Disk) -> None:
    """An alert no runbook clearly fits: the suggestions are shown, nothing runs, and the
    session the operator then picks runs on the host."""
    host = "web-04"
    stack.fire(
        host,
        {"alertname": "VendorProbeStatus", "severity": "high", "path": str(disk.path)},
        summary=f"Vendor probe reports status 7 on {host}",
        description="The vendor's probe returned status code 7.",
    )
    incident, row = stack.incident_of(host)
    assert row["disposition"] == "new_incident"
    update = stack.matched(incident)
    details = update["details"]
    # the decision is made before IO hears of it: no session was started, nor will one be
    assert details["auto_run"]["started"] is False, details
    assert details["runbook_session_id"] is None
    assert details["none_likely"] is True, details["matches"]
    assert details["matches"], "the top suggestions are always shown"
    assert all(m["confidence"] < 0.4 for m in details["matches"])
    ticket = stack.ticket(incident)
    assert ticket["runbook_session_id"] is None
    assert ticket["status"] not in ("in_progress", "closed")
    assert not stack.http.get(
        stack.io("/api/v1/approvals"), params={"incident_id": incident}
    ).json()

    # an operator picks linux-disk-full
    r = stack.http.post(
        stack.io(f"/api/v1/tickets/{incident}/runbook-sessions"),
        json={"runbook_id": RUNBOOK},
        headers=stack.alice,
    )
    assert r.status_code == 201, r.text
    session_id = r.json()["session_id"]
    approval = stack.pending(incident)
    view = stack.session(session_id)
    assert view["started_by"] == "alice"
    assert view["status"] == "waiting_approval"
    assert approval["details"]["started_by"] == "alice"
    r = stack.http.post(stack.io(f"/api/v1/approvals/{approval['approval_id']}/approve"), json={})
    assert r.status_code == 200, r.text
    done = stack.settled(session_id)
    assert done["status"] == "completed", done
    assert done["verification"]["outcome"] == "resolved"
    assert disk.usage_pct() < 90
    assert stack.closed(incident)["resolution"] == "resolved"


def test_an_incident_opened_in_servicenow_is_run_and_resolved_on_its_record(
    stack: Stack, disk: Disk
) -> None:
    """ServiceNow both ways: a person opens an incident in ServiceNow; its "after insert"
    Business Rule posts the record to the correlator; CXM matches and runs linux-disk-full on
    the host over SSH, writes one work note per step on that record, and resolves it with
    close code and notes. No ServiceNow incident is created; the rule firing again changes
    nothing."""
    host = "web-05"
    pct = disk.usage_pct()
    before = len(stack.snow.records)
    opened = stack.snow.open(
        f"Disk space low: filesystem {disk.path} on {host} is {pct}% full",
        priority="3",
        cmdb_ci=host,
    )
    # what the rule's REST message sends for ``current`` (the custom u_ fields are what the
    # runbook reads: the directory, the goal, the age guard)
    rule = {
        "sys_id": opened["sys_id"],
        "number": opened["number"],
        "state": "1",
        "short_description": opened["short_description"],
        "description": (
            f"Filesystem {disk.path} ({pct}% used) has less than 10% space left and will soon "
            "be out of space: no space left on device."
        ),
        # Moderate: medium, which the routing alone would not send to ServiceNow (the
        # record follows anyway), and which runs a strong match by itself whatever the
        # history the other tests left (a rejected and a failed run of linux-disk-full)
        "impact": "2",
        "urgency": "2",
        "priority": "3",
        "cmdb_ci": {"display_value": host, "value": "b0c4030ac0a800090152e7a4564ca36c"},
        "category": "software",
        "u_path": str(disk.path),
        "u_threshold_pct": "90",
        "u_min_age_days": "7",
        "labels": {"alertname": "NodeFilesystemAlmostOutOfSpace", "mountpoint": str(disk.path)},
    }
    url = f"{stack.m.url('correlator')}/api/v1/tickets/webhook/servicenow"
    wrong = stack.http.post(url, json=rule, headers=stack.mesh_auth())
    assert wrong.status_code == 401, wrong.text  # the rule's own token, not the mesh's
    auth = {"Authorization": f"Bearer {SNOW_RULE_TOKEN}"}
    bad = stack.http.post(url, json={**rule, "sys_id": opened["number"]}, headers=auth)
    assert bad.status_code == 422 and "is not a sys_id" in bad.text, bad.text
    r = stack.http.post(url, json=rule, headers=auth)
    assert r.status_code == 202, r.text
    (entry,) = r.json()["alerts"]
    assert entry["disposition"] == "new_incident", entry
    incident = entry["incident_id"]

    ticket = wait_until(lambda: stack.ticket(incident), f"ticket {incident} in IO")
    assert ticket["kind"] == "host" and ticket["severity"] == "medium"
    new = next(e["payload"] for e in ticket["events"] if e["task_type"] == "new_ticket")
    assert new["host"] == host
    assert new["labels"]["servicenow_number"] == opened["number"]
    assert new["labels"]["path"] == str(disk.path)
    session_id = stack.auto_session(incident, assert_disk_match(stack.matched(incident)))

    approval = stack.pending(incident)
    assert approval["details"]["step"] == MAIN_STEP
    r = stack.http.post(
        stack.io(f"/api/v1/approvals/{approval['approval_id']}/approve"),
        json={"notes": "approved from the ServiceNow ticket"},
        headers=stack.alice,
    )
    assert r.status_code == 200, r.text
    done = stack.settled(session_id)
    assert done["status"] == "completed", done
    assert done["verification"]["outcome"] == "resolved", done["verification"]
    assert disk.usage_pct() < 90 and (disk.path / "fresh.log").exists()
    assert stack.closed(incident)["resolution"] == "resolved"

    sys_id = opened["sys_id"]
    calls = wait_until(
        lambda: (c := stack.snow.on(sys_id)) and c[-1]["body"].get("state") == "6" and c,
        f"ServiceNow {opened['number']} resolved",
    )
    # no second incident: nothing created, nothing looked up, only PATCHes of this record
    assert len(stack.snow.records) == before + 1
    assert not [c for c in stack.snow.of(incident) if c["method"] == "POST"]
    assert {c["method"] for c in calls} == {"PATCH"}
    assert all(c["authorization"].startswith("Basic ") for c in calls)
    patches = [c["body"] for c in calls]
    assert patches[0]["state"] == "2"  # taken up: In Progress
    notes = [p["work_notes"] for p in patches if "work_notes" in p]
    steps = [n for n in notes if n.startswith("CXM runbook step: ")]
    assert len(steps) == len(done["steps"]) == 7, steps
    for note, step in zip(steps, done["steps"], strict=True):
        assert f"{step['phase']} · {step['name']} (step" in note
        assert ": completed (exit 0)" in note, note
    main = next(n for n in steps if MAIN_STEP in n)
    assert "output (last lines):" in main and "freed " in main, main
    assert any("waits for an approval" in n for n in notes), notes
    resolved = patches[-1]
    assert resolved["close_code"] == "Solved (Permanently)"
    for reason in done["verification"]["reasons"]:
        assert reason in resolved["close_notes"], reason
    assert stack.snow.records[sys_id]["state"] == "6"

    # the rule fires again (CXM's own updates, a retry): the same ticket, nothing new
    again = stack.http.post(url, json={**rule, "state": "2"}, headers=auth)
    assert again.status_code == 200, again.text
    (entry,) = again.json()["alerts"]
    assert (entry["disposition"], entry["incident_id"]) == ("duplicate", incident)
    tickets = stack.http.get(stack.io("/api/v1/tickets")).json()
    assert [t["incident_id"] for t in tickets].count(incident) == 1
    assert not [t for t in tickets if t.get("host") == host and t["incident_id"] != incident]

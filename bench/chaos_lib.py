"""Chaos on real processes (issue 15): incidents on an SNDlib network while agents die or go away.

The mesh runs under ``cxm up`` (:mod:`cxm.supervisor`), exactly as an operator starts it, with
a fake Webex on loopback as the one configured notification channel. The harness fails
disjoint links of the lab's topology in waves (one incident each), recovers each link once its
incident has steered traffic onto a protection policy, and reads how every incident ended
from IO. Meanwhile, either

- **kill mode**: every ``kill_every_s`` seconds one agent of the ten, chosen at random among
  those running, gets ``SIGKILL`` (its whole process group) and ``cxm up`` restarts it; or
- **down mode**: one agent runs outside the supervisor, is stopped (``SIGTERM``, not
  restarted) once the first wave's incidents are protected, stays down ``down_s`` seconds
  (waited for as "the orchestrator has seen it down that long", not slept), then starts again.

Then it checks what issue 15 promises: every incident ends exactly once (one
``ticket_closed`` at IO) with the outcome the same run had undisturbed (``baseline``: the same
links failed first with nothing killed, on the same mesh), none stuck, never two policies for
one incident's group at once (the lab's policy list, sampled while the run goes on), no SR
policy or RSVP-TE tunnel left at the end, every notification delivered to Webex exactly once
and the notify agent's log agreeing, and an audit chain that verifies with every incident's
final event in it, in the order the orchestrator sent (the audit's ``state_change`` statuses
for an incident match IO's ``status_update`` statuses).

Plain functions and one :class:`Chaos` context manager; ``bench/chaos.py`` prints the JSON,
``tests/e2e/test_chaos.py`` and ``tests/e2e/test_agent_down.py`` run short versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import networkx as nx

from services.lab.topology import LabTopology, build_topology
from shared.settings import AGENT_PORTS, AGENTS
from tests.support import ROOT, free_port, http_server, mesh_env

FINAL = ("closed", "escalated")
KILLABLE: tuple[str, ...] = AGENTS
"""The ten agents. The lab is not one: it emulates the network, whose state a restart of the
emulator would lose (a real network keeps its policies when a controller restarts)."""
INC_RE = re.compile(r"INC-\d{4}-\d+")
REAL_BOUND_S = 600.0
"""Real seconds an incident may monitor without recovering, and a peer may stay unreachable,
before the incident escalates, in these runs (the defaults: 3600 s scaled, 120 s)."""


# --- the outside world: a fake Webex -------------------------------------------------------


@dataclass
class FakeWebex:
    """Every message posted to Webex (``POST /v1/messages``), in arrival order."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_incident(self) -> Counter[str]:
        """Messages per incident id (read from the message text)."""
        with self.lock:
            found = [INC_RE.search(json.dumps(m)) for m in self.messages]
        return Counter(m.group(0) for m in found if m)


@contextlib.contextmanager
def fake_webex() -> Iterator[FakeWebex]:
    port = free_port()
    fake = FakeWebex(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, answer = 404, {"message": "no such path"}
            if self.path.startswith("/v1/messages"):
                with fake.lock:
                    fake.messages.append(body)
                    n = len(fake.messages)
                status = 200
                answer = {
                    "id": f"msg-{n}",
                    "roomId": body.get("roomId", "chaos-room"),
                    "markdown": body.get("markdown", ""),
                    "created": "2026-11-30T00:00:00.000Z",
                }
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with http_server(port, Handler):
        yield fake


# --- which links --------------------------------------------------------------------------


def candidate_links(topo: LabTopology) -> list[str]:
    """Links whose failure opens an incident that can be protected: they carry services and
    their ends stay connected without them (not a bridge). Busiest first, then by name."""
    graph = nx.Graph()
    graph.add_edges_from((link.source, link.destination) for link in topo.links.values())
    bridges = {frozenset(edge) for edge in nx.bridges(graph)}
    carried: Counter[str] = Counter()
    for service in topo.services.values():
        carried.update(service.path)
    links = [
        link
        for link in topo.links.values()
        if carried[link.link_id] and frozenset((link.source, link.destination)) not in bridges
    ]
    return [
        link.link_id for link in sorted(links, key=lambda ln: (-carried[ln.link_id], ln.link_id))
    ]


def plan_waves(topo: LabTopology, incidents: int, per_wave: int) -> list[list[str]]:
    """``incidents`` link faults in waves of up to ``per_wave`` links that share no node and
    no SRLG (so each opens its own incident). Links are taken round-robin from
    :func:`candidate_links`, least used first, so a long run spreads over the network."""
    candidates = candidate_links(topo)
    if not candidates:
        raise ValueError(f"{topo.name}: no link both carries a service and is not a bridge")
    used: Counter[str] = Counter()
    waves: list[list[str]] = []
    left = incidents
    while left > 0:
        wave: list[str] = []
        nodes: set[str] = set()
        srlgs: set[int] = set()
        for link_id in sorted(candidates, key=lambda lk: (used[lk], candidates.index(lk))):
            link = topo.links[link_id]
            if len(wave) >= min(per_wave, left):
                break
            if {link.source, link.destination} & nodes or srlgs.intersection(link.srlgs):
                continue
            wave.append(link_id)
            nodes.update((link.source, link.destination))
            srlgs.update(link.srlgs)
        for link_id in wave:
            used[link_id] += 1
        waves.append(wave)
        left -= len(wave)
    return waves


# --- the mesh under cxm up ------------------------------------------------------------------


@dataclass
class Incident:
    """One link fault and what became of its incident."""

    link: str
    wave: int
    phase: str
    """``baseline`` (nothing disturbed) or ``chaos``."""
    incident_id: str | None = None
    outcome: str = "no_incident"
    """resolved | escalated | closed:<resolution> | stuck | no_incident"""
    close_reason: str | None = None
    closed_events: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    """``status`` of every ``status_update`` IO received, in order."""


class Chaos:
    """``cxm up`` on a data directory of its own, the fake Webex, and the harness's clients.

    ``own`` names agents the harness runs itself (``cxm agent NAME``) instead of the
    supervisor, so that they can be stopped and stay stopped (down mode).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        network: str,
        env: dict[str, str] | None = None,
        own: tuple[str, ...] = (),
        seed: int = 15,
    ):
        self.data_dir = data_dir
        self.network = network
        self.topo = build_topology(network)
        self.own = own
        self.random = random.Random(seed)
        self.ports = {name: free_port() for name in AGENT_PORTS}
        self.extra = dict(env or {})
        self.env: dict[str, str] = {}
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.owned: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()
        self.kill_log: list[dict[str, Any]] = []
        self.policy_peaks: dict[str, int] = {}
        """Most policies seen at once per ``incident|head|end`` (a group)."""
        self.webex: FakeWebex | None = None
        self._stack = contextlib.ExitStack()
        self._http: httpx.Client | None = None

    # --- start and stop ------------------------------------------------------------------

    def __enter__(self) -> Chaos:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.webex = self._stack.enter_context(fake_webex())
        env = {
            "CXM_LAB_TOPOLOGY": self.network,
            "CXM_LOG_LEVEL": "WARNING",
            "CXM_WEBEX_ACCESS_TOKEN": "chaos-webex-token",
            "CXM_WEBEX_ROOM_ID": "chaos-room",
            "CXM_WEBEX_BASE_URL": f"{self.webex.url}/v1/",
            # the harness, not the lab's timer, decides when a link recovers
            "CXM_LAB_SCENARIO_DURATION_S": "100000",
            # link faults only: traffic moved onto protection paths must not open proactive
            # congestion incidents of its own (issue 14's flow has its own tests and bench)
            "CXM_TRAFFIC_PROACTIVE_ENABLED": "false",
            # the lab stands in for PCA, whose webhook must reach a correlator that may be
            # restarting for tens of seconds here: retry for minutes, not the lab's 7.5 s
            # (docs/reliability.md: alerts a sender gives up on are not CXM's to recover)
            "CXM_LAB_PUSH_RETRIES": "10",
            **self.extra,
        }
        self.env = mesh_env(self.data_dir, self.ports, env)
        try:
            supervised = [n for n in AGENT_PORTS if n not in self.own]
            log = open(self.data_dir / "cxm-up.log", "ab")
            self._stack.callback(log.close)
            self.supervisor = subprocess.Popen(
                [sys.executable, "-m", "cxm.cli", "up", "--only", *supervised],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
            for name in self.own:
                self.start_own(name)
            self.wait_healthy(list(AGENT_PORTS), timeout=300.0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        for name in list(self.owned):
            self.stop_own(name)
        sup = self.supervisor
        if sup is not None and sup.poll() is None:
            sup.send_signal(signal.SIGTERM)  # cxm up stops its children in order
            try:
                sup.wait(60)
            except subprocess.TimeoutExpired:
                for pid in self.children().values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                sup.kill()
                sup.wait()
        self._stack.close()

    def start_own(self, name: str) -> None:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with it
        self._stack.callback(log.close)
        self.owned[name] = subprocess.Popen(
            [sys.executable, "-m", "cxm.cli", "agent", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def stop_own(self, name: str) -> None:
        proc = self.owned.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def mesh_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['CXM_MESH_TOKEN']}"}

    @property
    def http(self) -> httpx.Client:
        """An operator's client with IO's admin token (read once IO has written it)."""
        if self._http is None:
            token = (self.data_dir / "io-admin-token").read_text().strip()
            self._http = httpx.Client(
                headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(15.0)
            )
        return self._http

    def healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            if self.supervisor is not None and self.supervisor.poll() is not None:
                raise RuntimeError(f"cxm up exited: {self.log_tail()}")
            pending = [n for n in pending if not self.healthy(n)]
            if pending:
                time.sleep(0.3)
        if pending:
            raise RuntimeError(f"not healthy in {timeout:.0f}s: {pending}\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.data_dir / "cxm-up.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- kill -9 ---------------------------------------------------------------------------

    def children(self) -> dict[str, int]:
        """The supervisor's children by agent name: ``cxm.cli agent NAME`` processes whose
        parent is ``cxm up`` (each leads its own process group)."""
        if self.supervisor is None:
            return {}
        parent = str(self.supervisor.pid)
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = stat.rsplit(")", 1)[1].split()[1]
            if ppid == parent and b"agent" in cmdline:
                name = cmdline[cmdline.index(b"agent") + 1].decode()
                found[name] = int(entry.name)
        return found

    def kill_random(self, among: tuple[str, ...] = KILLABLE) -> str | None:
        """SIGKILL one serving agent's process group, chosen at random; its name.

        Only agents that answer ``/health`` are candidates: killing one still starting would
        test the supervisor's crash-loop backoff, not the mesh."""
        alive = {n: pid for n, pid in self.children().items() if n in among and self.healthy(n)}
        if not alive:
            return None
        name = self.random.choice(sorted(alive))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(alive[name], signal.SIGKILL)
        self.kills[name] += 1
        self.kill_log.append({"agent": name, "pid": alive[name], "at": time.monotonic()})
        return name

    def restarts(self) -> dict[str, int]:
        """Restarts ``cxm up`` reported per agent (its ``restart #N`` lines)."""
        counts: Counter[str] = Counter()
        for line in self.log_tail(10_000_000).splitlines():
            found = re.search(r"cxm: (\w+) exited with .* \(restart #(\d+)\)", line)
            if found:
                counts[found.group(1)] = max(counts[found.group(1)], int(found.group(2)))
        return dict(counts)

    # --- reading the mesh (any agent may be down: None then) ------------------------------

    def get(self, url: str, **kwargs: Any) -> Any:
        try:
            response = self.http.get(url, **kwargs)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def tickets(self) -> list[dict[str, Any]] | None:
        rows = self.get(f"{self.url('io')}/api/v1/tickets", params={"limit": 5000})
        return rows if isinstance(rows, list) else None

    def ticket(self, incident_id: str) -> dict[str, Any] | None:
        body = self.get(f"{self.url('io')}/api/v1/tickets/{incident_id}")
        return body if isinstance(body, dict) else None

    def lab_state(self) -> dict[str, Any] | None:
        body = self.get(f"{self.url('lab')}/lab/state")
        return body if isinstance(body, dict) else None

    def sample_policies(self) -> list[dict[str, Any]] | None:
        """The lab's CXM policies now; records the most seen at once for each group."""
        state = self.lab_state()
        if state is None:
            return None
        policies = [
            p
            for p in [*state["sr_policies"], *state["rsvp_te_tunnels"]]
            if "CXM" in str(p.get("description") or p.get("path-name") or "")
            or p.get("sr-policy-type") != "odn"
        ]
        per_group: Counter[str] = Counter()
        for p in policies:
            owner = INC_RE.search(str(p.get("description") or p.get("path-name") or ""))
            group = f"{owner.group(0) if owner else '?'}|{p['head-end']}|{p['end-point']}"
            per_group[group] += 1
        for group, count in per_group.items():
            self.policy_peaks[group] = max(self.policy_peaks.get(group, 0), count)
        return policies

    def correlator_quiet(self) -> bool:
        rows = self.get(f"{self.url('correlator')}/api/v1/incidents", headers=self.mesh_auth)
        return isinstance(rows, list) and not [r for r in rows if r["status"] != "closed"]

    def orchestrator_incident(self, incident_id: str) -> dict[str, Any] | None:
        body = self.get(
            f"{self.url('orchestrator')}/api/v1/incidents/{incident_id}", headers=self.mesh_auth
        )
        return body if isinstance(body, dict) else None


# --- one wave ------------------------------------------------------------------------------


def _events(ticket: dict[str, Any], task_type: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ticket.get("events", []) if e["task_type"] == task_type]


def _steered(ticket: dict[str, Any]) -> bool:
    return any(str(p.get("phase")) in ("5", "6") for p in _events(ticket, "status_update"))


def _classify(incident: Incident, ticket: dict[str, Any]) -> None:
    closed = _events(ticket, "ticket_closed")
    incident.closed_events = len(closed)
    final = closed[-1] if closed else {}
    resolution = final.get("resolution") or ticket.get("resolution")
    incident.close_reason = (final.get("details") or {}).get("close_reason")
    incident.errors = [str(p.get("error_code")) for p in _events(ticket, "error")]
    incident.statuses = [str(p.get("status")) for p in _events(ticket, "status_update")]
    if resolution in ("resolved", "escalated"):
        incident.outcome = str(resolution)
    else:
        incident.outcome = f"closed:{resolution}"


def run_wave(
    chaos: Chaos,
    links: list[str],
    *,
    wave: int,
    phase: str,
    timeout_s: float,
    tick: Any = None,
    poll_s: float = 0.3,
) -> list[Incident]:
    """Degrade ``links`` at once, recover each once its incident is protected, and wait until
    every incident has ended (or ``timeout_s``). ``tick()`` runs every poll (the killer)."""
    incidents = {link: Incident(link, wave, phase) for link in links}
    deadline = time.monotonic() + timeout_s
    before: set[str] | None = None
    while before is None and time.monotonic() < deadline:
        rows = chaos.tickets()
        before = {t["incident_id"] for t in rows} if rows is not None else None
        if before is None:
            if tick:
                tick()
            time.sleep(poll_s)
    lab = chaos.url("lab")
    for link in links:
        chaos.http.post(
            f"{lab}/lab/links/{link}/degrade", json={"delay_ms": 120}
        ).raise_for_status()
    recovered: set[str] = set()
    pending = set(links)
    while pending and time.monotonic() < deadline:
        if tick:
            tick()
        chaos.sample_policies()
        rows = chaos.tickets() or []
        for row in rows:
            if before and row["incident_id"] in before:
                continue
            for link in set(row.get("degraded_links") or []) & set(links):
                if incidents[link].incident_id is None:
                    incidents[link].incident_id = row["incident_id"]
        for link in sorted(pending):
            incident_id = incidents[link].incident_id
            if incident_id is None:
                continue
            ticket = chaos.ticket(incident_id)
            if ticket is None:
                continue
            if link not in recovered and (_steered(ticket) or ticket["status"] in FINAL):
                with contextlib.suppress(httpx.HTTPError):
                    chaos.http.post(f"{lab}/lab/links/{link}/recover").raise_for_status()
                    recovered.add(link)
            if ticket["status"] in FINAL and _events(ticket, "ticket_closed"):
                _classify(incidents[link], ticket)
                pending.discard(link)
        if pending:
            time.sleep(poll_s)
    for link in pending:
        if incidents[link].incident_id is not None:
            incidents[link].outcome = "stuck"
    for link in set(links) - recovered:
        with contextlib.suppress(httpx.HTTPError):
            chaos.http.post(f"{lab}/lab/links/{link}/recover")
    return list(incidents.values())


def wait_quiet(chaos: Chaos, timeout_s: float, tick: Any = None) -> bool:
    """The correlator has no incident open (so the next wave's faults open their own)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tick:
            tick()
        if chaos.correlator_quiet():
            return True
        time.sleep(0.3)
    return False


# --- settling and the final checks ----------------------------------------------------------


def settle(chaos: Chaos, incidents: list[Incident], timeout_s: float) -> dict[str, Any]:
    """Once nothing is killed any more: wait until what was queued has been delivered (Webex
    has a message per incident, the audit has each incident's final event, no policy is
    left), then read the figures. Returns the checks' raw material."""
    ids = [i.incident_id for i in incidents if i.incident_id]
    deadline = time.monotonic() + timeout_s

    def audit_events(incident_id: str) -> list[dict[str, Any]] | None:
        body = chaos.get(
            f"{chaos.url('audit')}/api/v1/audit/events",
            params={"incident_id": incident_id, "limit": 5000},
            headers=chaos.mesh_auth,
        )
        return body["events"] if isinstance(body, dict) else None

    def ready() -> bool:
        assert chaos.webex is not None
        seen = chaos.webex.by_incident()
        if any(seen[i] < 1 for i in ids):
            return False
        policies = chaos.sample_policies()
        if policies is None or policies:
            return False
        for incident_id in ids:
            events = audit_events(incident_id)
            if not events or not _final_events(events):
                return False
        return True

    while time.monotonic() < deadline and not ready():
        time.sleep(0.5)
    # a message or an event still in flight would show up now as a duplicate: look again
    # only after the notify agent's own log says it is done (nothing pending or retrying)
    while time.monotonic() < deadline:
        rows = chaos.get(
            f"{chaos.url('notify')}/api/v1/deliveries",
            params={"limit": 5000},
            headers=chaos.mesh_auth,
        )
        if isinstance(rows, list) and not [
            r for r in rows if r.get("status") in ("pending", "retrying")
        ]:
            break
        time.sleep(0.5)
    assert chaos.webex is not None
    webex = chaos.webex.by_incident()
    deliveries = chaos.get(
        f"{chaos.url('notify')}/api/v1/deliveries",
        params={"limit": 5000, "channel": "webex"},
        headers=chaos.mesh_auth,
    )
    verify = chaos.get(f"{chaos.url('audit')}/api/v1/audit/verify", headers=chaos.mesh_auth)
    audit_final: dict[str, list[str]] = {}
    audit_order_ok: dict[str, bool] = {}
    order_detail: dict[str, dict[str, list[str]]] = {}
    for incident in incidents:
        if not incident.incident_id:
            continue
        events = audit_events(incident.incident_id) or []
        audit_final[incident.incident_id] = _final_events(events)
        # every status IO was sent is also audited as a state_change, by the same call; the
        # start is audited as "new" (IO has the correlator's new_ticket instead) and the close
        # as "closed" (IO gets ticket_closed instead)
        audited = [
            str((e.get("details") or {}).get("to"))
            for e in events
            if e["event_type"] == "state_change" and (e.get("details") or {}).get("to")
        ]
        audited = [status for status in audited if status not in ("new", "closed")]
        audit_order_ok[incident.incident_id] = _dedup_runs(audited) == _dedup_runs(
            incident.statuses
        )
        if not audit_order_ok[incident.incident_id]:
            order_detail[incident.incident_id] = {
                "io": _dedup_runs(incident.statuses),
                "audit": _dedup_runs(audited),
            }
    state = chaos.lab_state() or {}
    leftover = [
        p
        for p in [*state.get("sr_policies", []), *state.get("rsvp_te_tunnels", [])]
        if p.get("sr-policy-type") != "odn"
    ]
    per_incident_delivered: Counter[str] = Counter(
        r["incident_id"]
        for r in (deliveries or [])
        if r.get("status") == "sent" and r.get("incident_id")
    )
    return {
        "webex_by_incident": dict(webex),
        "notify_delivered_by_incident": dict(per_incident_delivered),
        "audit_verify": verify,
        "audit_final": audit_final,
        "audit_order_ok": audit_order_ok,
        "audit_order_detail": order_detail,
        "leftover_policies": leftover,
    }


def _final_events(events: list[dict[str, Any]]) -> list[str]:
    """How the audit says an incident ended: ``closed`` (a state change to closed) or
    ``escalation``, one entry per such event."""
    out: list[str] = []
    for event in events:
        if event["event_type"] == "escalation":
            out.append("escalation")
        elif (
            event["event_type"] == "state_change"
            and (event.get("details") or {}).get("to") == "closed"
        ):
            out.append("closed")
    return out


def _dedup_runs(items: list[str]) -> list[str]:
    """``a a b b a`` → ``a b a``: a status sent twice in a row is one transition."""
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def report(
    chaos: Chaos,
    baseline: list[Incident],
    disturbed: list[Incident],
    settled: dict[str, Any],
    *,
    wall_s: float,
    mode: dict[str, Any],
) -> dict[str, Any]:
    """The figures issue 15 asks for, as one JSON document."""
    expected = {(i.wave, i.link): i.outcome for i in baseline}
    compared = [i for i in disturbed if (i.wave, i.link) in expected]
    differ = [
        {
            "link": i.link,
            "incident_id": i.incident_id,
            "baseline": expected[(i.wave, i.link)],
            "got": i.outcome,
            "close_reason": i.close_reason,
            "errors": i.errors,
        }
        for i in compared
        if i.outcome != expected[(i.wave, i.link)]
    ]
    ids = [i.incident_id for i in disturbed if i.incident_id]
    webex = settled["webex_by_incident"]
    delivered = settled["notify_delivered_by_incident"]
    verify = settled["audit_verify"] or {}
    return {
        "benchmark": "chaos",
        "network": chaos.network,
        "mode": mode,
        "incidents": len(disturbed),
        "baseline_incidents": len(baseline),
        "outcomes": dict(Counter(i.outcome for i in disturbed)),
        "baseline_outcomes": dict(Counter(i.outcome for i in baseline)),
        "outcome_differs": differ,
        "no_incident": sum(i.outcome == "no_incident" for i in disturbed),
        "stuck": sum(i.outcome == "stuck" for i in disturbed),
        "closed_more_than_once": [i.incident_id for i in disturbed if i.closed_events > 1],
        "error_codes": dict(Counter(e for i in disturbed for e in i.errors)),
        "kills": dict(chaos.kills),
        "kills_total": sum(chaos.kills.values()),
        "restarts": chaos.restarts(),
        "duplicate_tunnels": {g: n for g, n in chaos.policy_peaks.items() if n > 1},
        "policy_groups_seen": len(chaos.policy_peaks),
        "leftover_policies": len(settled["leftover_policies"]),
        "notifications": {
            "webex_messages": sum(webex.get(i, 0) for i in ids),
            "lost": [i for i in ids if webex.get(i, 0) == 0],
            "duplicated": {i: webex[i] for i in ids if webex.get(i, 0) > 1},
            "notify_log_disagrees": {
                i: [webex.get(i, 0), delivered.get(i, 0)]
                for i in ids
                if webex.get(i, 0) != delivered.get(i, 0)
            },
        },
        "audit": {
            "verified": bool(verify.get("ok")),
            "events": verify.get("checked") or verify.get("events") or verify.get("count"),
            "missing_final_event": [i for i in ids if not settled["audit_final"].get(i)],
            "final_event_twice": [i for i in ids if len(settled["audit_final"].get(i, [])) > 1],
            "out_of_order": [i for i, ok in settled["audit_order_ok"].items() if not ok],
            "out_of_order_detail": settled["audit_order_detail"],
        },
        "wall_s": round(wall_s, 1),
    }


def run(
    data_dir: Path,
    *,
    network: str,
    incidents: int,
    per_wave: int,
    time_scale: float,
    kill_every_s: float | None,
    baseline: bool,
    down: str | None = None,
    down_s: float = 60.0,
    wave_timeout_s: float = 300.0,
    seed: int = 15,
    env: dict[str, str] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """One chaos run (kill mode when ``kill_every_s``, down mode when ``down``); its report."""
    started = time.monotonic()
    settings = {
        "CXM_TIME_SCALE": str(time_scale),
        # A restart costs real seconds (tens of them on two busy cores), which the time scale
        # does not shrink: the bounds on how long the world may take are set in real time,
        # for the baseline as for the chaos, so that a slow machine does not change outcomes.
        "CXM_MONITOR_TIMEOUT_S": str(round(REAL_BOUND_S / time_scale, 3)),
        "CXM_PEER_DOWN_GRACE_S": str(REAL_BOUND_S),
        **(env or {}),
    }

    def say(message: str) -> None:
        if log:
            log(f"chaos: {message} ({time.monotonic() - started:.0f} s)")

    with Chaos(
        data_dir, network=network, env=settings, own=(down,) if down else (), seed=seed
    ) as chaos:
        say(f"mesh up on {network}")
        waves = plan_waves(chaos.topo, incidents, per_wave)
        before: list[Incident] = []
        if baseline:
            for n, links in enumerate(waves):
                before += run_wave(chaos, links, wave=n, phase="baseline", timeout_s=wave_timeout_s)
                wait_quiet(chaos, 120.0)
            say(f"baseline: {dict(Counter(i.outcome for i in before))}")
        last_kill = [time.monotonic()]

        def killer() -> None:
            if kill_every_s and time.monotonic() - last_kill[0] >= kill_every_s:
                last_kill[0] = time.monotonic()
                chaos.kill_random()

        after: list[Incident] = []
        for n, links in enumerate(waves):
            if down and n == 0:
                after += _wave_with_agent_down(chaos, links, down, down_s, wave_timeout_s, say)
            else:
                after += run_wave(
                    chaos, links, wave=n, phase="chaos", timeout_s=wave_timeout_s, tick=killer
                )
            wait_quiet(chaos, 120.0, tick=killer)
            say(f"wave {n + 1}/{len(waves)}: kills so far {dict(chaos.kills)}")
        chaos.wait_healthy(list(AGENT_PORTS), timeout=300.0)
        settled = settle(chaos, after, timeout_s=240.0)
        mode: dict[str, Any] = (
            {"down": down, "down_s": down_s}
            if down
            else {"kill_every_s": kill_every_s, "per_wave": per_wave}
        )
        mode.update(
            time_scale=time_scale,
            seed=seed,
            baseline=baseline,
            monitor_timeout_real_s=REAL_BOUND_S,
            peer_down_grace_s=float(settings["CXM_PEER_DOWN_GRACE_S"]),
        )
        return report(chaos, before, after, settled, wall_s=time.monotonic() - started, mode=mode)


def _wave_with_agent_down(
    chaos: Chaos, links: list[str], agent: str, down_s: float, timeout_s: float, say: Any
) -> list[Incident]:
    """Fail ``links``; once every incident is protected, stop ``agent`` for ``down_s`` seconds
    (measured from the orchestrator's own view when it needs the agent, else the clock of
    the stopped process), start it again, and let the wave finish."""
    state: dict[str, Any] = {"stopped_at": None, "started": False}

    def tick() -> None:
        now = time.monotonic()
        if state["stopped_at"] is None:
            rows = chaos.tickets() or []
            mine = [r for r in rows if set(r.get("degraded_links") or []) & set(links)]
            if len(mine) >= len(links) and all(
                r["status"] in ("monitoring", "restoring", *FINAL) or r.get("phase") == "6"
                for r in mine
            ):
                chaos.stop_own(agent)
                state["stopped_at"] = now
                say(f"{agent} stopped")
        elif not state["started"] and now - float(state["stopped_at"] or now) >= down_s:
            chaos.start_own(agent)
            state["started"] = True
            say(f"{agent} started again")

    incidents = run_wave(chaos, links, wave=0, phase="chaos", timeout_s=timeout_s, tick=tick)
    if not state["started"]:
        if state["stopped_at"] is not None:
            chaos.start_own(agent)
        else:
            say(f"{agent} was never stopped: the wave ended before it was protected")
    chaos.wait_healthy([agent], timeout=300.0)
    return incidents

"""Alert-to-steered latency and CPU per incident of the whole mesh, for 1, 10 and 100 incidents.

Runs the ten agents and the lab as real processes on a large topohub topology (by default the
500-node Gabriel graph), degrades N links at once in the lab, and measures for each incident
the time from its PCA alert reaching the correlator (the correlator's ``received_at``) to the
IO agent receiving the phase-5 ``status_update`` (traffic steered). Both timestamps come from
the same host clock. The links of one round share no node and no SRLG, so each becomes its
own incident; each round uses fresh links. Prints one JSON document.

Once every incident of a round has steered (or ended), the round's links recover and the bench
waits until every incident has closed (the orchestrator sees the SLA back, holds, cuts back and
closes), so the next round starts on a quiet mesh.

CPU per incident (issue 16): the bench reads ``utime + stime`` (clock ticks,
``/proc/<pid>/stat``) of every process it started and their children (plus children already
reaped: ``cutime + cstime``) when the links are degraded, when every incident has steered and
when every incident has closed, and reports CPU milliseconds per incident for alert → steered
and alert → closed, per agent and for the mesh, less what each process burns idle (measured
before the first round, a rate times the span's wall time). The lab is reported apart: it
emulates the controllers (CNC, PCA) and is not CXM's cost. CPU time, unlike wall time, barely
moves when other jobs share the cores. Per incident it also reports the mesh tasks each agent
served (its ``/metrics``) and the rows each SQLite database gained.

Profiling (optional, slows the mesh, so its CPU figures are not the headline ones):
``--sql-profile`` puts a bench-only ``sitecustomize`` on every process's ``PYTHONPATH`` that
wraps ``sqlite3`` connections and counts statements and their thread CPU time by database and
table; ``--py-spy DIR`` records every process with py-spy per span and reports where each
agent's samples go (by CXM module and by the library on top of the stack).

Before/after (``--before DIR``): the whole bench runs first on a mesh started from the source
tree DIR (e.g. ``git worktree add DIR <commit>``), then on the current tree (``--after DIR``,
by default this checkout), with the same links, and ``cpu_before_after`` sets the CPU ms per
incident side by side. The agents run with the tree as their working directory (``python -m``
puts it ahead of the editable install); ``running_code`` in the JSON is the marker: the
source roots of the CXM frames ``py-spy dump`` sees in each process, checked to be the tree's.

    python -m bench.closed_loop [--topology gabriel/500/0] [--counts 1,10,100]
                                [--sql-profile] [--py-spy DIR] [--idle-s 10]
                                [--before DIR [--after DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import networkx as nx

from services.lab.topology import LabTopology, build_topology
from shared.models import TIERS
from shared.settings import AGENT_PORTS
from tests.support import ROOT, Mesh, free_port, mesh_env

LAB = "lab"
"""The lab process: it plays CNC and PCA, so its CPU is reported apart from CXM's."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINAL = ("closed", "escalated")
POLL_S = 0.3
"""Interval of the bench's polls of IO's ticket list (one request per poll, so the bench's
own load on the mesh stays small next to the incidents')."""


# --- CPU, tasks and rows of every process --------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU clock ticks: utime + stime + cutime + cstime) of every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:  # gone in between
            continue
        # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime (the comm may hold spaces and parentheses)
        fields = raw[raw.rindex(b")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def cpu_ticks(roots: dict[str, int]) -> dict[str, int]:
    """CPU ticks used so far by each named process and every descendant of it."""
    table = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    out: dict[str, int] = {}
    for name, root in roots.items():
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                total += table[pid][1]
                stack.extend(children[pid])
        out[name] = total
    return out


_TASKS = re.compile(r"^cxm_tasks_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def served_tasks(m: Mesh) -> dict[str, Counter[str]]:
    """Mesh tasks each agent has served so far, by task type (its ``/metrics``)."""
    out: dict[str, Counter[str]] = {}
    for name in m.procs:
        if name == LAB:
            continue
        counts: Counter[str] = Counter()
        try:
            text = httpx.get(f"{m.url(name)}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        for labels, value in _TASKS.findall(text):
            counts[dict(_LABEL.findall(labels)).get("task_type", "?")] += int(float(value))
        out[name] = counts
    return out


def table_rows(data_dir: Path) -> dict[str, int]:
    """Rows in every table of every SQLite database of the mesh, as ``<db>.<table>``."""
    rows: dict[str, int] = {}
    for path in sorted(data_dir.glob("*.db")):
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            continue
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in names:
                rows[f"{path.stem}.{table}"] = con.execute(
                    f'SELECT count(*) FROM "{table}"'
                ).fetchone()[0]
        except sqlite3.Error:
            pass
        finally:
            con.close()
    return rows


SQL_HOOK = r'''
"""Bench-only hook written by bench.closed_loop --sql-profile (never installed with CXM).

Wraps every sqlite3 connection this process opens (aiosqlite, SQLAlchemy and LangGraph's
saver all go through ``sqlite3.connect``) to count statements and the thread CPU time spent
in them (execute, fetch, commit) by database file and ``VERB table``, and writes the counts
to ``$CXM_BENCH_SQL_DIR/<pid>.json`` every half second.
"""
import json
import os
import re
import sqlite3
import threading
import time

_DIR = os.environ.get("CXM_BENCH_SQL_DIR")
if _DIR:
    _lock = threading.Lock()
    _stats = {}
    _keys = {}
    _TABLE = {
        "INSERT": re.compile(r"\bINTO\s+\"?(\w+)", re.I),
        "REPLACE": re.compile(r"\bINTO\s+\"?(\w+)", re.I),
        "UPDATE": re.compile(r"^\s*UPDATE\s+(?:OR\s+\w+\s+)?\"?(\w+)", re.I),
        "SELECT": re.compile(r"\bFROM\s+\"?(\w+)", re.I),
        "WITH": re.compile(r"\bFROM\s+\"?(\w+)", re.I),
        "DELETE": re.compile(r"\bFROM\s+\"?(\w+)", re.I),
    }

    def _key(sql):
        key = _keys.get(sql)
        if key is None:
            verb = (sql.split(None, 1) or ["?"])[0].upper()
            found = _TABLE[verb].search(sql) if verb in _TABLE else None
            key = f"{verb} {found.group(1)}" if found else verb
            if len(_keys) < 10000:
                _keys[sql] = key
        return key

    def _add(db, key, cpu, n=1):
        with _lock:
            entry = _stats.setdefault(db, {}).setdefault(key, [0, 0.0])
            entry[0] += n
            entry[1] += cpu

    class _Cursor(sqlite3.Cursor):
        _bench_key = "?"

        def execute(self, sql, *args):
            self._bench_key = _key(sql)
            started = time.thread_time()
            try:
                return super().execute(sql, *args)
            finally:
                _add(self.connection._bench_db, self._bench_key, time.thread_time() - started)

        def executemany(self, sql, *args):
            self._bench_key = _key(sql) + " (many)"
            started = time.thread_time()
            try:
                return super().executemany(sql, *args)
            finally:
                _add(self.connection._bench_db, self._bench_key, time.thread_time() - started)

        def _fetch(self, method, *args):
            started = time.thread_time()
            try:
                return method(*args)
            finally:
                _add(self.connection._bench_db, self._bench_key + " fetch",
                     time.thread_time() - started, 0)

        def fetchone(self):
            return self._fetch(super().fetchone)

        def fetchmany(self, *args):
            return self._fetch(super().fetchmany, *args)

        def fetchall(self):
            return self._fetch(super().fetchall)

    class _Connection(sqlite3.Connection):
        _bench_db = "?"

        def cursor(self, factory=_Cursor):
            return super().cursor(factory)

        def execute(self, sql, *args):
            cur = self.cursor()
            cur.execute(sql, *args)
            return cur

        def executemany(self, sql, *args):
            cur = self.cursor()
            cur.executemany(sql, *args)
            return cur

        def commit(self):
            started = time.thread_time()
            try:
                return super().commit()
            finally:
                _add(self._bench_db, "COMMIT", time.thread_time() - started)

    _connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        if len(args) > 4 or "factory" in kwargs:
            return _connect(database, *args, **kwargs)
        conn = _connect(database, *args, factory=_Connection, **kwargs)
        conn._bench_db = os.path.basename(str(database))
        return conn

    sqlite3.connect = connect

    def _dump():
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            time.sleep(0.5)
            with _lock:
                text = json.dumps(_stats)
            with open(path + ".tmp", "w") as fh:
                fh.write(text)
            os.replace(path + ".tmp", path)

    threading.Thread(target=_dump, name="bench-sql-dump", daemon=True).start()
'''


def sql_stats(sql_dir: Path | None, pids: dict[str, int]) -> dict[str, dict[str, list[float]]]:
    """What the ``--sql-profile`` hook has written so far: agent -> "db: VERB table" -> [n, s]."""
    out: dict[str, dict[str, list[float]]] = {}
    if sql_dir is None:
        return out
    for name, pid in pids.items():
        path = sql_dir / f"{pid}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out[name] = {f"{db}: {key}": v for db, keys in data.items() for key, v in keys.items()}
    return out


@dataclass
class Snapshot:
    """Everything the bench reads at one point of a round."""

    at: float
    ticks: dict[str, int]
    tasks: dict[str, Counter[str]]
    rows: dict[str, int]
    sql: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def snapshot(m: Mesh, sql_dir: Path | None) -> Snapshot:
    pids = {name: proc.pid for name, proc in m.procs.items()}
    at = time.monotonic()
    ticks = cpu_ticks(pids)  # first: the reads below cost the agents a little CPU
    return Snapshot(at, ticks, served_tasks(m), table_rows(m.data_dir), sql_stats(sql_dir, pids))


def idle_rates(m: Mesh, seconds: float) -> dict[str, float]:
    """CPU milliseconds per second each process burns with no incident (timers, samplers)."""
    before = cpu_ticks({name: proc.pid for name, proc in m.procs.items()})
    started = time.monotonic()
    time.sleep(seconds)
    after = cpu_ticks({name: proc.pid for name, proc in m.procs.items()})
    wall = time.monotonic() - started
    return {name: (after[name] - before[name]) * 1000 / CLK_TCK / wall for name in before}


def cpu_span(a: Snapshot, b: Snapshot, n: int, idle: dict[str, float]) -> dict[str, Any]:
    """CPU of the span a → b per incident: per agent, the mesh (agents) and the lab apart."""
    wall = b.at - a.at
    raw = {name: (b.ticks[name] - a.ticks[name]) * 1000 / CLK_TCK for name in a.ticks}
    net = {name: max(0.0, ms - idle.get(name, 0.0) * wall) for name, ms in raw.items()}
    agents = sorted((k for k in net if k != LAB), key=lambda k: -net[k])
    mesh_ms = sum(net[k] for k in agents)
    return {
        "wall_s": round(wall, 2),
        "mesh_ms_per_incident": round(mesh_ms / n, 1),
        "lab_ms_per_incident": round(net.get(LAB, 0.0) / n, 1),
        "agents_ms_per_incident": {k: round(net[k] / n, 1) for k in agents},
        "mesh_cpu_s": round(mesh_ms / 1000, 2),
        "mesh_cores": round(mesh_ms / 1000 / wall, 2) if wall > 0 else None,
        "raw_cpu_s": {k: round(v / 1000, 2) for k, v in raw.items()},
        "idle_subtracted_s": {k: round(idle.get(k, 0.0) * wall / 1000, 2) for k in raw},
    }


def tasks_span(a: Snapshot, b: Snapshot, n: int) -> dict[str, Any]:
    """Mesh tasks served per incident, per agent (total and by task type)."""
    out: dict[str, Any] = {}
    for name, after in b.tasks.items():
        delta = after - a.tasks.get(name, Counter())
        if delta:
            out[name] = {
                "total": round(sum(delta.values()) / n, 1),
                "by_type": {k: round(v / n, 1) for k, v in delta.most_common()},
            }
    return out


def rows_span(a: Snapshot, b: Snapshot, n: int) -> dict[str, float]:
    """Rows each table gained per incident (net of deletes), largest first."""
    delta = {k: v - a.rows.get(k, 0) for k, v in b.rows.items()}
    return {k: round(v / n, 1) for k, v in sorted(delta.items(), key=lambda i: -i[1]) if v}


def sql_span(a: Snapshot, b: Snapshot, n: int) -> dict[str, Any]:
    """SQLite statements and their CPU per incident, per agent (``--sql-profile``)."""
    out: dict[str, Any] = {}
    for name, after in b.sql.items():
        before = a.sql.get(name, {})
        rows = []
        for key, (count, cpu) in after.items():
            c0, s0 = before.get(key, [0, 0.0])
            if count - c0 or cpu - s0 > 0:
                rows.append((key, (count - c0) / n, (cpu - s0) * 1000 / n))
        if rows:
            rows.sort(key=lambda r: -r[2])
            out[name] = {
                "statements_per_incident": round(sum(r[1] for r in rows), 1),
                "cpu_ms_per_incident": round(sum(r[2] for r in rows), 1),
                "by_statement": {k: {"n": round(c, 1), "ms": round(s, 2)} for k, c, s in rows},
            }
    return out


# --- py-spy --------------------------------------------------------------------------------


def _py_spy() -> str:
    """py-spy from PATH or next to this interpreter (the virtualenv's bin)."""
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def start_py_spy(m: Mesh, out: Path, tag: str) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """One py-spy recorder per process (raw collapsed stacks, 50 Hz, non-blocking)."""
    out.mkdir(parents=True, exist_ok=True)
    recorders = {}
    for name, proc in m.procs.items():
        path = out / f"{name}-{tag}.txt"
        cmd = [_py_spy(), "record", "--format", "raw", "--rate", "50", "--nonblocking"]
        recorders[name] = (
            subprocess.Popen(
                [*cmd, "-p", str(proc.pid), "-o", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            path,
        )
    return recorders


def stop_py_spy(recorders: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> dict[str, Path]:
    """SIGINT every recorder (py-spy writes its file then) and wait for it."""
    for proc, _ in recorders.values():
        proc.send_signal(signal.SIGINT)
    for proc, _ in recorders.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {name: path for name, (_, path) in recorders.items()}


# Library on top of a stack (its innermost frame outside CXM's own code, or CXM's own code)
_LIBRARIES = (
    ("sitecustomize", "bench hook"),
    ("langgraph/checkpoint", "langgraph checkpoint"),
    ("ormsgpack", "langgraph checkpoint"),
    ("langgraph", "langgraph engine"),
    ("langchain_core", "langgraph engine"),
    ("aiosqlite", "sqlite (aiosqlite thread)"),
    ("sqlite3", "sqlite (aiosqlite thread)"),
    ("sqlalchemy", "sqlalchemy"),
    ("pydantic", "pydantic"),
    ("/json/", "json"),
    ("orjson", "json"),
    ("httpx", "http client"),
    ("httpcore", "http client"),
    ("h11", "http (h11)"),
    ("anyio", "anyio"),
    ("uvicorn", "http server"),
    ("starlette", "http server"),
    ("fastapi", "http server"),
    ("a2a", "http server"),
    ("networkx", "networkx"),
    ("prometheus_client", "prometheus"),
    ("logging", "logging"),
    ("structlog", "logging"),
    ("asyncio", "asyncio"),
    ("concurrent/futures", "thread pool"),
    ("threading.py", "threads"),
)
_IDLE_LEAVES = (
    "(asyncio/runners.py:",  # the loop in C (select, callbacks): not attributable
    "(aiosqlite/core.py:59)",  # a connection thread waiting on its queue
    "(aiosqlite/core.py:158)",  # a coroutine awaiting its statement
    "(sitecustomize.py:",  # the --sql-profile hook's dump thread
    "Condition.wait (threading.py:",
)
"""Leaf frames of samples that are waiting, not computing (py-spy --nonblocking counts some)."""
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _own(path: str) -> str | None:
    """``services/x/y.py`` or ``shared/y.py`` for a CXM frame, else None."""
    for root in ("services/", "shared/", "cxm/"):
        at = path.find(root)
        if at >= 0 and "site-packages" not in path:
            return path[at:]
    return None


def profile_summary(path: Path, top: int = 12) -> dict[str, Any]:
    """Shares of a py-spy raw file: by library on top, by innermost CXM module, and both.

    Samples whose leaf is a wait (:data:`_IDLE_LEAVES`) are left out, so the shares are of the
    samples that were computing; they are shares of samples, not of CPU time."""
    library: Counter[str] = Counter()
    module: Counter[str] = Counter()
    pair: Counter[str] = Counter()
    total = idle = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.rsplit(";", 1)[-1]
        if not leaf or any(key in leaf for key in _IDLE_LEAVES):
            idle += count
            continue
        files = []
        for frame in stack.split(";"):
            found = _FRAME.match(frame)
            files.append(found.group("file") if found else frame)
        lib = "python (other)"
        for file in reversed(files):
            if _own(file):
                lib = "cxm code"
                break
            hit = next((label for key, label in _LIBRARIES if key in file), None)
            if hit:
                lib = hit
                break
        mod = next((m for m in map(_own, reversed(files)) if m), "(no cxm frame)")
        total += count
        library[lib] += count
        module[mod] += count
        pair[f"{mod} > {lib}"] += count

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {k: round(100.0 * v / total, 1) for k, v in counter.most_common(top)}

    return {
        "samples": total,
        "idle_samples_left_out": idle,
        "library_pct": shares(library),
        "module_pct": shares(module),
        "module_library_pct": shares(pair),
    }


def candidate_links(topo: LabTopology) -> list[str]:
    """Links that carry services and have a way around them, pairwise node- and SRLG-disjoint.

    "A way around" is what the protection tunnel needs: between the ends the orchestrator
    will protect, a path on which every node supports one TE type, so that each incident of
    the benchmark can reach steering (the lab assigns TE capabilities at random, and some
    service ends share none).
    """
    graph = nx.Graph()
    for link in topo.links.values():
        graph.add_edge(link.source, link.destination, id=link.link_id)
    caps = {node_id: set(node.te_capabilities) for node_id, node in topo.nodes.items()}

    def tunnel_exists(head: str, end: str) -> bool:
        for te in caps[head] & caps[end]:
            view = nx.subgraph_view(graph, filter_node=lambda n, te=te: te in caps[n])
            if nx.has_path(view, head, end):
                return True
        return False

    used_nodes: set[str] = set()
    used_srlgs: set[int] = set()
    chosen: list[str] = []
    for link in sorted(topo.links.values(), key=lambda item: item.link_id):
        ends = {link.source, link.destination}
        if ends & used_nodes or set(link.srlgs) & used_srlgs:
            continue
        services = topo.services_on(link.link_id)
        if not services:
            continue
        graph.remove_edge(link.source, link.destination)
        # the orchestrator protects the most common ends among the highest-tier services
        best = min(TIERS.index(s.sla_tier) for s in services)
        top = [s for s in services if TIERS.index(s.sla_tier) == best]
        (head, end), _ = Counter((s.head_end, s.end_point) for s in top).most_common(1)[0]
        routable = tunnel_exists(head, end)
        graph.add_edge(link.source, link.destination, id=link.link_id)
        if not routable:
            continue
        chosen.append(link.link_id)
        used_nodes |= ends
        used_srlgs |= set(link.srlgs)
    return chosen


# --- one round -----------------------------------------------------------------------------


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else None


@dataclass
class Watch:
    """What the bench's polls of IO's ticket list have seen of a round's incidents."""

    links: list[str]
    known: set[str]
    incident: dict[str, str] = field(default_factory=dict)
    polls: int = 0

    def poll(self, http: httpx.Client, io: str) -> dict[str, dict[str, Any]]:
        """The round's tickets by link (one request: the list, newest first)."""
        self.polls += 1
        try:
            rows = http.get(f"{io}/api/v1/tickets", params={"limit": 1000}).json()
        except httpx.HTTPError:  # IO busy past the client's timeout: poll again later
            return {}
        by_id = {row["incident_id"]: row for row in rows if row["incident_id"] not in self.known}
        for row in by_id.values():
            for link in set(row.get("degraded_links") or []) & set(self.links):
                self.incident.setdefault(link, row["incident_id"])
        return {link: by_id[i] for link, i in self.incident.items() if i in by_id}


def _past_steering(row: dict[str, Any]) -> bool:
    """Phase 5 reached (steering, monitoring, restoring) or the incident ended."""
    try:
        phase = int(row.get("phase") or 0)
    except ValueError:
        phase = 0
    return phase >= 5 or row["status"] in FINAL


def run_round(
    m: Mesh,
    links: list[str],
    io_token: str,
    timeout_s: float,
    *,
    idle: dict[str, float],
    sql_dir: Path | None = None,
    py_spy: Path | None = None,
) -> dict[str, Any]:
    mesh_auth = {"Authorization": f"Bearer {m.token}"}
    io = m.url("io")
    n = len(links)
    spy_files: dict[str, dict[str, Path]] = {}
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {io_token}"}) as http:
        known = {t["incident_id"] for t in http.get(f"{io}/api/v1/tickets?limit=1000").json()}
        watch = Watch(links, known)
        recorders = start_py_spy(m, py_spy, f"n{n}-steer") if py_spy else None
        at_start = snapshot(m, sql_dir)
        started = time.monotonic()
        with httpx.Client(timeout=120) as lab:  # a lab on saturated cores answers slowly
            for link in links:  # the lab pushes the PCA alerts as it degrades
                lab.post(
                    f"{m.url('lab')}/lab/links/{link}/degrade",
                    json={"delay_ms": 120, "duration_s": 100000},
                ).raise_for_status()
        # 1. until every incident has steered or ended (latencies come from the events later)
        pending = set(links)
        while pending and time.monotonic() - started < timeout_s:
            rows = watch.poll(http, io)
            pending -= {link for link, row in rows.items() if _past_steering(row)}
            if pending:
                time.sleep(POLL_S)
        timed_out = sorted(pending)
        at_steered = snapshot(m, sql_dir)
        steer_polls = watch.polls
        if recorders is not None and py_spy is not None:
            spy_files["to_steered"] = stop_py_spy(recorders)
            recorders = start_py_spy(m, py_spy, f"n{n}-close")
        # 2. the links recover; until every incident has closed (or escalated)
        recovered_at = time.time()
        for link in links:
            try:
                http.post(f"{m.url('lab')}/lab/links/{link}/recover", timeout=120)
            except httpx.HTTPError as exc:  # the round still ends; its incidents may not close
                print(f"bench: recover {link}: {exc!r}", file=sys.stderr)
        closing = set(watch.incident)
        closed_by = time.monotonic() + timeout_s
        while closing and time.monotonic() < closed_by:
            rows = watch.poll(http, io)
            closing -= {link for link, row in rows.items() if row["status"] in FINAL}
            if closing:
                time.sleep(POLL_S)
        at_closed = snapshot(m, sql_dir)
        if recorders is not None:
            spy_files["to_closed"] = stop_py_spy(recorders)
        wall_s = time.monotonic() - started
        # 3. read the figures (after the spans: these reads are not counted)
        latencies: dict[str, float] = {}
        closed_ms: list[float] = []
        close_after_recover_ms: list[float] = []
        not_steered: dict[str, str] = {}
        rerouted = 0
        for link, incident in sorted(watch.incident.items()):
            alerts = http.get(
                f"{m.url('correlator')}/api/v1/alerts",
                params={"link": link, "limit": 5},
                headers=mesh_auth,
            ).json()
            raised = [a for a in alerts if a.get("incident_id") == incident] or [
                a for a in alerts if a.get("incident_id")
            ]
            detail = http.get(f"{io}/api/v1/tickets/{incident}").json()
            events = detail["events"]
            steered = [
                e
                for e in events
                if e["task_type"] == "status_update" and e["payload"].get("phase") == "5"
            ]
            first = (
                _ts(min(raised, key=lambda a: a["received_at"])["received_at"]) if raised else None
            )
            if steered and first is not None:
                latencies[link] = _ts(steered[0]["received_at"]) - first
            elif link not in timed_out:  # e.g. no TE-capable path
                not_steered[link] = str(detail.get("message") or detail["status"])[:200]
            ended = [e for e in events if e["task_type"] == "ticket_closed"]
            if ended and first is not None:
                closed_ms.append((_ts(ended[-1]["received_at"]) - first) * 1000)
                close_after_recover_ms.append(
                    (_ts(ended[-1]["received_at"]) - max(recovered_at, first)) * 1000
                )
            # tunnels moved off a link that went bad (seen by the end of the round)
            rerouted += any(
                e["task_type"] == "status_update"
                and "reroute" in (e["payload"].get("details") or {})
                for e in events
            )
        timed_out = sorted(set(timed_out) | (set(links) - set(watch.incident)))
    values = sorted(v * 1000 for v in latencies.values())
    closed_ms.sort()
    close_after_recover_ms.sort()
    result: dict[str, Any] = {
        "incidents": n,
        "steered": len(values),
        "not_steered": not_steered,
        "rerouted": rerouted,
        "timed_out": timed_out,
        "p50_ms": round(statistics.median(values), 1) if values else None,
        "p99_ms": _pct(values, 0.99),
        "max_ms": round(values[-1], 1) if values else None,
        "wall_s": round(wall_s, 2),
        "closed": len(closed_ms),
        "not_closed": sorted(closing),
        "alert_to_closed_p50_ms": round(statistics.median(closed_ms), 1) if closed_ms else None,
        "recover_to_closed_p50_ms": round(statistics.median(close_after_recover_ms), 1)
        if close_after_recover_ms
        else None,
        "recover_to_closed_max_ms": round(close_after_recover_ms[-1], 1)
        if close_after_recover_ms
        else None,
        "cpu": {
            "to_steered": cpu_span(at_start, at_steered, n, idle),
            "to_closed": cpu_span(at_start, at_closed, n, idle),
        },
        "tasks_per_incident": {
            "to_steered": tasks_span(at_start, at_steered, n),
            "to_closed": tasks_span(at_start, at_closed, n),
        },
        "rows_per_incident": {
            "to_steered": rows_span(at_start, at_steered, n),
            "to_closed": rows_span(at_start, at_closed, n),
        },
        "bench_ticket_list_polls": {"to_steered": steer_polls, "to_closed": watch.polls},
    }
    if sql_dir is not None:
        result["sql_per_incident"] = {
            "to_steered": sql_span(at_start, at_steered, n),
            "to_closed": sql_span(at_start, at_closed, n),
        }
    if spy_files:
        result["profile"] = {
            span: {name: profile_summary(path) for name, path in files.items()}
            for span, files in spy_files.items()
        }
    steer, close = result["cpu"]["to_steered"], result["cpu"]["to_closed"]
    print(
        f"bench: {n} incidents: steered {len(values)} p50 {result['p50_ms']} ms "
        f"p99 {result['p99_ms']} ms | CPU ms/incident to steered: mesh "
        f"{steer['mesh_ms_per_incident']} (lab {steer['lab_ms_per_incident']}), to closed: mesh "
        f"{close['mesh_ms_per_incident']} (lab {close['lab_ms_per_incident']}) | "
        + ", ".join(f"{k} {v}" for k, v in close["agents_ms_per_incident"].items()),
        file=sys.stderr,
        flush=True,
    )
    return result


@contextmanager
def started_mesh(
    data_dir: Path, env: dict[str, str], timeout_s: float, code: Path = ROOT
) -> Iterator[Mesh]:
    """``tests.support.mesh`` with a longer wait for health: eleven interpreters importing
    their stacks on two shared cores can take minutes. ``code``: the source tree they run."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in AGENT_PORTS}
    m = Mesh(data_dir, mesh_env(data_dir, ports, env), ports, code=code)
    try:
        for name in AGENT_PORTS:
            m.start(name)
        m.wait_healthy(list(AGENT_PORTS), timeout=timeout_s)
        yield m
    finally:
        for name in list(m.procs):
            m.stop(name)


def running_code(m: Mesh) -> dict[str, list[str]]:
    """Source trees each process is really executing: the distinct roots of the CXM frames
    ``py-spy dump`` shows in its stacks (the marker that ``--before`` runs the before code)."""
    out: dict[str, list[str]] = {}
    for name, proc in m.procs.items():
        try:
            dump = subprocess.run(
                [_py_spy(), "dump", "--nonblocking", "--full-filenames", "--pid", str(proc.pid)],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            dump = ""
        roots = set()
        for file in re.findall(r"\(([^()\s]+\.py):\d+\)", dump):
            own = _own(file)
            if own and file.endswith(own):
                roots.add(file[: -len(own)].rstrip("/"))
        out[name] = sorted(roots)
    return out


def run_code(
    code: Path,
    data_dir: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    rounds: list[list[str]],
    sql_dir: Path | None,
) -> dict[str, Any]:
    """Start the mesh from the source tree ``code``, measure idle CPU, run every round."""
    results = []
    with started_mesh(data_dir, env, args.start_timeout, code) as m:
        ran = running_code(m)
        wrong = {name: roots for name, roots in ran.items() if roots != [str(code)]}
        if wrong:  # a stack with no CXM frame reads [], a mix or another tree is fatal
            print(f"bench: {code}: processes not (only) on this tree: {wrong}", file=sys.stderr)
            if any(roots for roots in wrong.values()):
                raise SystemExit(3)
        idle = idle_rates(m, args.idle_s)
        for links in rounds:
            results.append(
                run_round(
                    m,
                    links,
                    m.io_token,
                    args.timeout,
                    idle=idle,
                    sql_dir=sql_dir,
                    py_spy=Path(args.py_spy) / code.name if args.py_spy else None,
                )
            )
    return {
        "code": str(code),
        "running_code": ran,
        "idle_cpu_ms_per_s": {k: round(v, 1) for k, v in idle.items()},
        "results": results,
    }


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU ms per incident before → after, per round, span, agent and mesh (with the ratio)."""
    out = []
    for b, a in zip(before["results"], after["results"], strict=True):
        row: dict[str, Any] = {"incidents": a["incidents"]}
        for span in ("to_steered", "to_closed"):
            cb, ca = b["cpu"][span], a["cpu"][span]
            names = sorted(
                set(cb["agents_ms_per_incident"]) | set(ca["agents_ms_per_incident"]),
                key=lambda k: -cb["agents_ms_per_incident"].get(k, 0.0),
            )
            cells = {
                k: (
                    cb["agents_ms_per_incident"].get(k, 0.0),
                    ca["agents_ms_per_incident"].get(k, 0.0),
                )
                for k in names
            }
            cells = {"mesh": (cb["mesh_ms_per_incident"], ca["mesh_ms_per_incident"])} | cells
            cells["lab (not CXM)"] = (cb["lab_ms_per_incident"], ca["lab_ms_per_incident"])
            row[span] = {
                k: {"before": x, "after": y, "ratio": round(x / y, 2) if y else None}
                for k, (x, y) in cells.items()
            }
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", default="gabriel/500/0")
    parser.add_argument("--counts", default="1,10,100")
    parser.add_argument("--time-scale", default="0.02")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CXM_NAME=VALUE",
        help="extra setting for every process, e.g. CXM_RESERVE_BANDWIDTH=false (repeatable)",
    )
    parser.add_argument(
        "--idle-s",
        type=float,
        default=10.0,
        help="seconds of idle CPU measured before the first round (subtracted per span)",
    )
    parser.add_argument(
        "--sql-profile",
        action="store_true",
        help="count SQLite statements and their CPU per process (bench-only sitecustomize)",
    )
    parser.add_argument("--py-spy", metavar="DIR", help="record every process with py-spy")
    parser.add_argument(
        "--before",
        metavar="DIR",
        type=lambda p: Path(p).resolve(),
        help="first run the whole bench on a mesh started from this source tree (the previous "
        "code, e.g. `git worktree add DIR <commit>`), then on the current one, and compare",
    )
    parser.add_argument(
        "--after",
        metavar="DIR",
        type=lambda p: Path(p).resolve(),
        default=ROOT,
        help="source tree of the current code (default: this checkout)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="seconds the eleven processes may take to become healthy (busy cores: minutes)",
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    topo = build_topology(args.topology)
    links = candidate_links(topo)
    if len(links) < sum(counts):
        print(
            f"bench: {args.topology} has only {len(links)} independent links; need {sum(counts)}",
            file=sys.stderr,
        )
        return 2
    env = {
        "CXM_LAB_TOPOLOGY": args.topology,
        "CXM_TIME_SCALE": args.time_scale,
        "CXM_LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.env),
    }
    rounds, offset = [], 0
    for count in counts:
        rounds.append(links[offset : offset + count])
        offset += count
    codes = (
        {"after": args.after}
        if args.before is None
        else {"before": args.before, "after": args.after}
    )
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cxm-bench-") as tmp:
        sql_dir: Path | None = None
        if args.sql_profile:
            hook = Path(tmp) / "bench-hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(SQL_HOOK)
            path = [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]
            env |= {"PYTHONPATH": os.pathsep.join(path)}
        for side, code in codes.items():
            if args.sql_profile:
                sql_dir = Path(tmp) / f"bench-sql-{side}"
                sql_dir.mkdir()
                env |= {"CXM_BENCH_SQL_DIR": str(sql_dir)}
            runs[side] = run_code(code, Path(tmp) / f"mesh-{side}", env, args, rounds, sql_dir)
            print(f"bench: {side} ({code}) done", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "alert_to_steered",
                "topology": args.topology,
                "nodes": len(topo.nodes),
                "links": len(topo.links),
                "services": len(topo.services),
                "time_scale": float(args.time_scale),
                "env": dict(item.split("=", 1) for item in args.env),
                "clock_ticks_per_s": CLK_TCK,
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "profiled": bool(args.sql_profile or args.py_spy),
                **runs["after"],
                **(
                    {
                        "before": runs["before"],
                        "cpu_before_after": compare(runs["before"], runs["after"]),
                    }
                    if "before" in runs
                    else {}
                ),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

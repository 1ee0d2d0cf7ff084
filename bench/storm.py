"""Alert storm: thousands of alerts over hundreds of links in seconds, from every kind of sender.

Issue 15: "10,000 alerts over 500 links in 10 s, from several senders at once (webhooks of
every source, CSV, REST), on a 500-node topology: every alert accounted for (a disposition
stored for each), every incident correct (as many as the links' correlation allows, no
duplicates), the correlator and the mesh bounded in memory (report RSS), nothing dropped when
the sender retries."

The lab (``cxm agent lab``, a topohub network: Gabriel 500 by default) plays CNC, whose
topology the correlator correlates on; the correlator runs as ``cxm agent correlator``. The
storm's alerts come from eight kinds of sender, each in its own format and with its own
HMAC-SHA256 secret where the source takes one: the PCA, CNC, Alertmanager, Datadog, generic and
ServiceNow webhooks, CSV uploads, and ``POST /api/v1/alerts`` (the mesh token). Each link gets
``alerts / links`` alerts spread over the senders; a few are re-sends of the same alert, as
real sources repeat themselves, and must come back ``duplicate``. Requests are paced evenly
over the window and sent by several concurrent senders. A share of them is cut on the first
try (the request written and the connection closed before the answer, or reset half-way
through the body) and then retried as a sender would, with the same body: a retried alert is
either the first of its kind the correlator stores (the cut one never arrived) or a
``duplicate`` of it, never lost and never stored twice as new.

The orchestrator is a stand-in that records what it is told (an incident's remediation is not
the storm's business; bench/closed_loop.py measures that); IO and audit are the real agents in
the bench and stand-ins in the test (tests/e2e/test_storm.py runs the same harness, smaller).

Checks (:func:`verify`): every alert the correlator answered for is stored with that
disposition; every distinct alert has exactly one stored disposition that is not
``duplicate``; every storm link is in exactly one open incident and no two incidents share a
link; each incident's links are connected by the correlation rule (shared node or SRLG); the
number of incidents and how links are grouped equal what the rule gives when replayed over
the alerts in the order the correlator decided them (at least the number of groups of related
links); every incident reached the orchestrator (``start_incident``) and IO (``new_ticket``)
exactly once.

    python -m bench.storm [--alerts 10000] [--links 500] [--window 10] [--topology gabriel/500/0]

Prints one JSON document; exits 1 when a check fails (the problems are in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import hmac
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.orchestrator_scale import proc_status
from tests.support import Mesh, free_port, http_server, mesh_env

SENDERS: tuple[str, ...] = (
    "pca",
    "cnc",
    "alertmanager",
    "datadog",
    "generic",
    "servicenow",
    "csv",
    "rest",
)
"""Every way an alert reaches the correlator; one sender kind per request."""
HMAC_SOURCES: tuple[str, ...] = ("pca", "cnc", "alertmanager", "datadog", "generic", "servicenow")
"""Webhooks signed with their own secret (CXM_CORRELATOR_WEBHOOK_AUTH); CSV and REST take the
mesh token, as they do with no per-source setting."""
HMAC_HEADER = "X-Hub-Signature-256"
METRICS: tuple[str, ...] = ("delay-avg", "loss-pct")
"""Distinct alerts per sender and link; a third send of a sender is a re-send of the first."""
NOT_DUPLICATE = ("new_incident", "correlated", "dampened", "false_positive", "suppressed")


@dataclass(frozen=True)
class StormConfig:
    """The storm's size and shape."""

    alerts: int = 10_000
    links: int = 500
    window_s: float = 10.0
    """Requests are spread evenly over this many seconds (0: as fast as the senders go)."""
    topology: str = "gabriel/500/0"
    batch: int = 25
    """Alerts per request."""
    concurrency: int = 16
    """Requests in flight at once (the senders)."""
    cut_share: float = 0.05
    """Share of requests whose first try is cut (connection closed or reset), then retried."""
    seed: int = 0


# --- the topology the correlator sees --------------------------------------------------------


@dataclass
class StormTopology:
    """Links with their ends and SRLGs, as the lab's CNC API gives them to the correlator."""

    links: dict[str, tuple[str, str]]
    srlgs: dict[str, frozenset[int]]

    @classmethod
    def from_lab(cls, body: dict[str, Any]) -> StormTopology:
        links = {x["link_id"]: (x["source"], x["destination"]) for x in body["links"]}
        srlgs = {x["link_id"]: frozenset(x.get("srlgs") or ()) for x in body["links"]}
        return cls(links, srlgs)

    def related(self, a: str, b: str) -> bool:
        """The correlator's rule (services/correlator/topology.py): a shared node or SRLG."""
        return bool(set(self.links[a]) & set(self.links[b]) or self.srlgs[a] & self.srlgs[b])

    def groups(self, links: list[str]) -> int:
        """Connected groups of ``links`` under :meth:`related`: no correlation can make fewer
        incidents than this."""
        parent = {x: x for x in links}

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        by_key: dict[Any, str] = {}
        for link in links:
            for key in (*self.links[link], *(("srlg", s) for s in self.srlgs[link])):
                if key in by_key:
                    parent[find(link)] = find(by_key[key])
                else:
                    by_key[key] = link
        return len({find(x) for x in links})


def expected_grouping(topo: StormTopology, ordered_links: list[str]) -> list[list[str]]:
    """The incidents the correlation rule makes of these firing alerts' links, in this order.

    A link already in an incident stays there; else it joins the oldest incident holding a
    related link; else it opens one (docs/correlator.md, pipeline step 6-7; the storm fits in
    the correlation window and closes nothing).
    """
    incidents: list[list[str]] = []
    where: dict[str, int] = {}
    for link in ordered_links:
        if link in where:
            continue
        for i, members in enumerate(incidents):
            if any(topo.related(link, other) for other in members):
                members.append(link)
                where[link] = i
                break
        else:
            where[link] = len(incidents)
            incidents.append([link])
    return incidents


# --- the storm's alerts and requests -------------------------------------------------------


@dataclass(frozen=True)
class StormAlert:
    """One alert as a sender sends it; ``key`` names the alert (a re-send has the same key)."""

    key: str
    sender: str
    link: str
    metric: str
    value: float
    threshold: float


@dataclass
class StormRequest:
    """One HTTP request of the storm."""

    index: int
    sender: str
    alerts: list[StormAlert]
    path: str
    body: bytes
    headers: dict[str, str]
    cut: str | None = None
    """``close`` (whole request written, connection closed unread) or ``reset`` (half the
    body, then a TCP reset) on the first try; None for a plain send."""


def plan_alerts(topo: StormTopology, cfg: StormConfig) -> tuple[list[str], list[StormAlert]]:
    """The storm's links (a seeded sample) and its alerts, ``alerts / links`` per link.

    Alert ``j`` of a link comes from sender ``j mod 8``, about metric ``(j div 8) mod 2``: the
    third alert of a sender on a link is the first one again, a re-send.
    """
    rng = random.Random(cfg.seed)
    names = sorted(topo.links)
    if cfg.links > len(names):
        raise ValueError(f"{cfg.links} links asked, the topology has {len(names)}")
    links = sorted(rng.sample(names, cfg.links))
    out: list[StormAlert] = []
    for n in range(cfg.alerts):
        link = links[n % len(links)]
        j = n // len(links)
        sender = SENDERS[(j + n % len(links)) % len(SENDERS)]
        metric = METRICS[(j // len(SENDERS)) % len(METRICS)]
        threshold = 50.0 if metric == "delay-avg" else 1.0
        out.append(
            StormAlert(
                f"{sender}|{link}|{metric}", sender, link, metric, threshold * 2.5, threshold
            )
        )
    rng.shuffle(out)
    return links, out


def plan_requests(
    alerts: list[StormAlert], cfg: StormConfig, secrets: dict[str, str], mesh_token: str
) -> list[StormRequest]:
    """Batch each sender's alerts into requests in that sender's format; mix the senders."""
    rng = random.Random(cfg.seed + 1)
    by_sender: dict[str, list[StormAlert]] = defaultdict(list)
    for alert in alerts:
        by_sender[alert.sender].append(alert)
    requests: list[StormRequest] = []
    now = datetime.now(UTC)
    for sender in SENDERS:
        batch_of = by_sender.get(sender, [])
        for start in range(0, len(batch_of), cfg.batch):
            chunk = batch_of[start : start + cfg.batch]
            path, body, content_type = BUILDERS[sender](chunk, now)
            headers = {"Content-Type": content_type}
            if sender in secrets:
                digest = hmac.new(secrets[sender].encode(), body, hashlib.sha256).hexdigest()
                headers[HMAC_HEADER] = f"sha256={digest}"
            else:
                headers["Authorization"] = f"Bearer {mesh_token}"
            requests.append(StormRequest(0, sender, chunk, path, body, headers))
    rng.shuffle(requests)
    cuts = rng.sample(range(len(requests)), round(len(requests) * cfg.cut_share))
    for n, i in enumerate(cuts):
        requests[i].cut = "close" if n % 2 == 0 else "reset"
    for i, request in enumerate(requests):
        request.index = i
    return requests


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _hex(key: str, n: int = 32) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:n]


def _pca(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    items = [
        {
            "tenantId": "storm",
            "policyId": f"policy-{a.metric}",
            "policyName": f"SLA {a.metric}",
            "policyType": "micro-tca",
            "objectId": f"obj-{a.link}",
            "objectName": a.link,
            "metric": a.metric,
            "direction": "sd",
            "value": a.threshold,
            "triggeredValue": a.value,
            "alertState": "raised",
            "startTimestamp": _ms(now),
            "processedTimestamp": _ms(now),
            "timeInViolation": 120000,
        }
        for a in chunk
    ]
    return "/api/v1/tickets/webhook/pca", json.dumps(items).encode(), "application/json"


def _cnc(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    alarms = [
        {
            "alarm-id": f"storm-{_hex(a.key, 12)}",
            "link-id": a.link,
            "type": f"link-{a.metric}",
            "severity": "major",
            "state": "raised",
            "description": f"{a.metric} above threshold on {a.link}",
            "timestamp": _iso(now),
        }
        for a in chunk
    ]
    return (
        "/api/v1/tickets/webhook/cnc",
        json.dumps({"alarms": alarms}).encode(),
        "application/json",
    )


def _alertmanager(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": f"Link-{a.metric}", "severity": "critical", "link": a.link},
            "annotations": {"summary": f"{a.metric} above SLA", "value": str(a.value)},
            "startsAt": _iso(now),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph",
            "fingerprint": _hex(a.key, 16),
        }
        for a in chunk
    ]
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="storm"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "cxm-correlator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    }
    return "/api/v1/tickets/webhook/alertmanager", json.dumps(body).encode(), "application/json"


def _datadog(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    items = [
        {
            "id": _hex(a.key + "event", 12),
            "title": f"[Triggered] {a.metric} high on link:{a.link}",
            "body": f"{a.metric} {a.value} > {a.threshold} on link:{a.link}",
            "last_updated": str(_ms(now)),
            "date": str(_ms(now)),
            "event_type": "query_alert_monitor",
            "org": {"id": "4242", "name": "storm"},
            "alert_id": _hex(a.key, 12),
            "alert_metric": a.metric,
            "alert_transition": "Triggered",
            "alert_type": "error",
            "alert_priority": "P2",
            "alert_value": a.value,
            "threshold": a.threshold,
            "tags": f"env:storm,link:{a.link}",
            "alert_scope": f"link:{a.link}",
        }
        for a in chunk
    ]
    return "/api/v1/tickets/webhook/datadog", json.dumps(items).encode(), "application/json"


def _generic(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    items = [
        {
            "link": a.link,
            "status": "firing",
            "severity": "high",
            "metric": a.metric,
            "value": a.value,
            "threshold": a.threshold,
            "summary": f"{a.metric} high on {a.link}",
            "fingerprint": f"generic-{_hex(a.key)}",
            "timestamp": _iso(now),
        }
        for a in chunk
    ]
    return "/api/v1/tickets/webhook/generic", json.dumps(items).encode(), "application/json"


def _servicenow(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    records = [
        {
            "sys_id": _hex(a.key),
            "number": f"INC{int(_hex(a.key, 7), 16) % 10_000_000:07d}",
            "short_description": f"{a.metric} degraded on {a.link}",
            "description": f"Customer reports {a.metric} on {a.link}",
            "priority": "2",
            "state": "1",
            "category": "network",
            "cmdb_ci": a.link,
            "opened_at": now.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for a in chunk
    ]
    return "/api/v1/tickets/webhook/servicenow", json.dumps(records).encode(), "application/json"


def _csv(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["timestamp", "source", "severity", "link", "metric", "value", "summary"])
    for a in chunk:
        writer.writerow(
            [_iso(now), "nms", "high", a.link, a.metric, a.value, f"{a.metric} on {a.link}"]
        )
    return "/api/v1/tickets/upload-csv", out.getvalue().encode(), "text/csv"


def _rest(chunk: list[StormAlert], now: datetime) -> tuple[str, bytes, str]:
    alerts = [
        {
            "source": "rest",
            "link": a.link,
            "status": "firing",
            "severity": "high",
            "metric": a.metric,
            "value": a.value,
            "threshold": a.threshold,
            "summary": f"{a.metric} high on {a.link}",
            "fingerprint": f"rest-{_hex(a.key)}",
            "timestamp": _iso(now),
        }
        for a in chunk
    ]
    return "/api/v1/alerts", json.dumps({"alerts": alerts}).encode(), "application/json"


BUILDERS: dict[str, Callable[[list[StormAlert], datetime], tuple[str, bytes, str]]] = {
    "pca": _pca,
    "cnc": _cnc,
    "alertmanager": _alertmanager,
    "datadog": _datadog,
    "generic": _generic,
    "servicenow": _servicenow,
    "csv": _csv,
    "rest": _rest,
}


# --- sending -----------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One try of one request: what the sender saw."""

    request: int
    kind: str
    """``send``, ``retry`` (after a failure or a cut), ``close`` or ``reset`` (cut tries)."""
    status: int | None
    latency_s: float
    answer: list[dict[str, Any]] | None = None
    error: str | None = None


@dataclass
class SendReport:
    attempts: list[Attempt] = field(default_factory=list)
    wall_s: float = 0.0

    def answered(self) -> Iterator[tuple[Attempt, dict[str, Any]]]:
        for attempt in self.attempts:
            for entry in attempt.answer or ():
                yield attempt, entry


async def _cut(base_url: str, request: StormRequest, mode: str) -> None:
    """Write the request on a raw connection and drop it before the answer: ``close`` writes
    it all and closes, ``reset`` writes half the body and resets the connection."""
    url = urlsplit(base_url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"POST {request.path} HTTP/1.1", f"Host: {url.netloc}"]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    head += [f"Content-Length: {len(request.body)}", "", ""]
    data = "\r\n".join(head).encode()
    if mode == "close":
        writer.write(data + request.body)
        await writer.drain()
        writer.close()
    else:
        writer.write(data + request.body[: len(request.body) // 2])
        await writer.drain()
        writer.transport.abort()
    await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def send_storm(
    base_url: str, requests: list[StormRequest], cfg: StormConfig, max_tries: int = 8
) -> SendReport:
    """Send every request, paced over the window by ``concurrency`` senders; retry what fails."""
    report = SendReport()
    queue: asyncio.Queue[StormRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    started = time.monotonic()
    step = cfg.window_s / max(1, len(requests))
    limits = httpx.Limits(
        max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
    )

    async def sender(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            request = queue.get_nowait()
            due = started + request.index * step - time.monotonic()
            if due > 0:  # the storm's shape: requests spread over the window
                await asyncio.sleep(due)
            kind = "send"
            if request.cut:
                t0 = time.monotonic()
                try:
                    await _cut(base_url, request, request.cut)
                    report.attempts.append(Attempt(request.index, request.cut, None, 0.0))
                except OSError as exc:
                    report.attempts.append(
                        Attempt(
                            request.index, request.cut, None, time.monotonic() - t0, None, str(exc)
                        )
                    )
                kind = "retry"
            for tries in range(max_tries):
                t0 = time.monotonic()
                try:
                    response = await http.post(
                        request.path, content=request.body, headers=request.headers
                    )
                except httpx.HTTPError as exc:
                    report.attempts.append(
                        Attempt(request.index, kind, None, time.monotonic() - t0, None, repr(exc))
                    )
                    kind = "retry"
                    await asyncio.sleep(min(2.0, 0.1 * 2**tries))
                    continue
                latency = time.monotonic() - t0
                if response.status_code in (429, 502, 503, 504):
                    report.attempts.append(
                        Attempt(
                            request.index,
                            kind,
                            response.status_code,
                            latency,
                            None,
                            response.text[:200],
                        )
                    )
                    kind = "retry"
                    await asyncio.sleep(min(2.0, 0.1 * 2**tries))
                    continue
                answer = response.json().get("alerts") if response.status_code < 300 else None
                report.attempts.append(
                    Attempt(
                        request.index,
                        kind,
                        response.status_code,
                        latency,
                        answer,
                        None if answer is not None else response.text[:300],
                    )
                )
                break

    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(sender(http) for _ in range(cfg.concurrency)))
    report.wall_s = time.monotonic() - started
    return report


# --- reading back and checking ---------------------------------------------------------------


def fetch_alerts(http: httpx.Client, base_url: str) -> list[dict[str, Any]]:
    """Every alert the correlator stored, oldest first (pages of 5,000 by the ``before``
    cursor)."""
    out: list[dict[str, Any]] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 5000}
        if before:
            params["before"] = before
        page = http.get(f"{base_url}/api/v1/alerts", params=params)
        page.raise_for_status()
        rows = page.json()
        out.extend(rows)
        if len(rows) < 5000:
            break
        before = rows[-1]["id"]
    out.reverse()
    return out


def fetch_incidents(http: httpx.Client, base_url: str) -> list[dict[str, Any]]:
    response = http.get(f"{base_url}/api/v1/incidents", params={"limit": 1000})
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()
    return rows


def _key_of(row: dict[str, Any]) -> str | None:
    return row.get("fingerprint")


def verify(
    topo: StormTopology,
    links: list[str],
    requests: list[StormRequest],
    sent: SendReport,
    stored: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    tasks: dict[str, dict[str, int]] | None,
) -> tuple[dict[str, Any], list[str]]:
    """The storm's figures and every check that failed (module docstring)."""
    problems: list[str] = []
    by_id = {row["id"]: row for row in stored}
    # 1. every answered alert is stored with the disposition it was answered with
    answered = 0
    for attempt, entry in sent.answered():
        answered += 1
        row = by_id.get(entry.get("id") or "")
        if row is None:
            problems.append(f"request {attempt.request}: alert {entry} answered but not stored")
        elif (row["disposition"], row["incident_id"]) != (
            entry["disposition"],
            entry["incident_id"],
        ):
            problems.append(f"alert {entry['id']}: answered {entry}, stored {row['disposition']}")
    answered_ids = {e.get("id") for _, e in sent.answered()}
    unanswered = [r for r in stored if r["id"] not in answered_ids]
    # every request got an answer in the end
    final = {a.request: a for a in sent.attempts if a.answer is not None}
    for request in requests:
        if request.index not in final:
            last = [a for a in sent.attempts if a.request == request.index][-1:]
            problems.append(f"request {request.index} ({request.sender}) never accepted: {last}")
        elif len(final[request.index].answer or ()) != len(request.alerts):
            problems.append(f"request {request.index}: answer does not list every alert")
    # 2. one stored disposition other than duplicate per distinct alert (fingerprint)
    firsts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in stored:
        if row["disposition"] != "duplicate":
            firsts[row["fingerprint"]].append(row)
    sent_fps = {e["fingerprint"] for _, e in sent.answered()}
    lost = sorted(fp for fp in sent_fps if fp not in firsts)
    doubled = sorted(fp for fp, rows in firsts.items() if len(rows) > 1)
    if lost:
        problems.append(f"{len(lost)} alerts with no stored disposition: {lost[:5]}")
    if doubled:
        problems.append(f"{len(doubled)} alerts stored twice as new: {doubled[:5]}")
    distinct = len({a.key for r in requests for a in r.alerts})
    if len(sent_fps) != distinct:
        problems.append(f"{distinct} distinct alerts sent, {len(sent_fps)} fingerprints answered")
    # 3. retried alerts: a duplicate of the stored one (same incident), or the stored one itself
    retried_dup = retried_new = 0
    for attempt, entry in sent.answered():
        if attempt.kind != "retry":
            continue
        first = firsts.get(entry["fingerprint"], [])
        if entry["disposition"] == "duplicate":
            retried_dup += 1
            if first and first[0]["incident_id"] != entry["incident_id"]:
                problems.append(f"retried {entry} names another incident than {first[0]['id']}")
        else:
            retried_new += 1
    # 4. incidents
    open_incidents = [i for i in incidents if i["status"] != "closed"]
    holder: dict[str, list[str]] = defaultdict(list)
    for inc in open_incidents:
        for link in inc["links"]:
            holder[link].append(inc["incident_id"])
    firing_links = sorted({r["link"] for r in stored if r["disposition"] in NOT_DUPLICATE})
    for link in firing_links:
        if len(holder.get(link, [])) != 1:
            problems.append(f"link {link} is in {holder.get(link, [])} (expected exactly one)")
    for link, ids in holder.items():
        if link not in links:
            problems.append(f"incident {ids} holds {link}, which no storm alert named")
    for inc in open_incidents:
        members = list(inc["links"])
        if _groups_among(topo, members) != 1:
            problems.append(f"{inc['incident_id']}: links {members} are not all related")
    decided = [
        r["link"]
        for r in sorted(stored, key=lambda r: r["id"])
        if r["disposition"] in ("new_incident", "correlated")
    ]
    expected = expected_grouping(topo, decided)
    actual = sorted(sorted(i["links"]) for i in open_incidents)
    if sorted(sorted(g) for g in expected) != actual:
        problems.append(
            f"incidents: {len(actual)} made, the rule replayed in decision order makes "
            f"{len(expected)}"
        )
    groups = topo.groups(links)
    if len(open_incidents) < groups:
        problems.append(f"{len(open_incidents)} incidents for {groups} groups of related links")
    # 5. what the mesh heard: one start_incident and one new_ticket per incident
    if tasks is not None:
        opened = {i["incident_id"] for i in open_incidents}
        for task_type in ("start_incident", "new_ticket"):
            heard = tasks.get(task_type, {})
            if set(heard) != opened:
                missing, extra = opened - set(heard), set(heard) - opened
                problems.append(
                    f"{task_type}: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
                )
    dispositions = Counter(r["disposition"] for r in stored)
    latencies = sorted(a.latency_s for a in sent.attempts if a.answer is not None)
    figures = {
        "alerts_sent": sum(len(r.alerts) for r in requests),
        "distinct_alerts": distinct,
        "requests": len(requests),
        "requests_by_sender": dict(Counter(r.sender for r in requests)),
        "accepted": answered,
        "stored": len(stored),
        "stored_unanswered": len(unanswered),
        "dispositions": dict(sorted(dispositions.items())),
        "incidents": len(open_incidents),
        "incidents_expected": len(expected),
        "related_link_groups": groups,
        "duplicates": dispositions.get("duplicate", 0),
        "lost": len(lost),
        "doubled": len(doubled),
        "cut_requests": sum(1 for r in requests if r.cut),
        "sender_retries": sum(1 for a in sent.attempts if a.kind == "retry"),
        "failed_tries": dict(
            Counter(
                str(a.status or a.error or a.kind)[:60] for a in sent.attempts if a.answer is None
            )
        ),
        "retried_alerts_duplicate": retried_dup,
        "retried_alerts_first": retried_new,
        "send_wall_s": round(sent.wall_s, 2),
        "send_rate_alerts_per_s": round(sum(len(r.alerts) for r in requests) / sent.wall_s, 1)
        if sent.wall_s
        else None,
        "answer_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "answer_p99_ms": round(
            latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1
        )
        if latencies
        else None,
    }
    return figures, problems


def _groups_among(topo: StormTopology, members: list[str]) -> int:
    return topo.groups(members) if members else 0


# --- the stand-in peers -----------------------------------------------------------------------


class Peers:
    """Records the A2A tasks the correlator's outbox delivers (orchestrator, and IO and audit
    when they are not real): per task type, each incident's distinct idempotency keys."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.count = 0

    def record(self, envelope: dict[str, Any], key: str) -> None:
        payload = envelope.get("payload") or {}
        incident = envelope.get("incident_id") or payload.get("incident_id") or ""
        with self.lock:
            self.tasks[envelope.get("task_type", "?")][incident].add(key)
            self.count += 1

    def heard(self) -> dict[str, dict[str, int]]:
        """Task type → incident → how many distinct tasks (idempotency keys) it got."""
        with self.lock:
            return {t: {i: len(k) for i, k in by.items()} for t, by in self.tasks.items()}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        peers = self

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

            def do_GET(self) -> None:
                self._send(200, {"status": "ok", "agent": "storm-peers"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                envelope = json.loads(self.rfile.read(length) or b"{}")
                peers.record(envelope, self.headers.get("Idempotency-Key", ""))
                self._send(200, {"status": "completed", "result": {}})

        return Handler


# --- one run ---------------------------------------------------------------------------------


@dataclass
class StormRun:
    """A finished storm: its figures, the failed checks, and the processes' memory."""

    figures: dict[str, Any]
    problems: list[str]


def until(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll ``predicate`` until truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")


@dataclass
class StormStack:
    """The running processes, the stand-in peers and the webhook secrets."""

    mesh: Mesh
    peers: Peers
    secrets: dict[str, str]


@contextmanager
def storm_mesh(data_dir: Path, cfg: StormConfig, *, real_peers: bool) -> Iterator[StormStack]:
    """The lab on ``cfg.topology`` and the correlator as real processes; the orchestrator (and
    IO and audit unless ``real_peers``) a stand-in :class:`Peers` on one port."""
    peers = Peers()
    peer_port = free_port()
    names = ["lab", "correlator"] + (["audit", "io"] if real_peers else [])
    ports = {name: free_port() for name in ("lab", "correlator", "audit", "io")}
    ports["orchestrator"] = peer_port
    if not real_peers:
        ports["audit"] = ports["io"] = peer_port
    secrets = {source: f"storm-{source}-secret" for source in HMAC_SOURCES}
    env = {
        "CXM_TIME_SCALE": "1",  # the storm runs in real time: windows and waits as configured
        "CXM_LOG_LEVEL": "WARNING",
        "CXM_LAB_TOPOLOGY": cfg.topology,
        "CXM_LAB_PUSH_ALERTS": "false",
        "CXM_CORRELATOR_WEBHOOK_AUTH": json.dumps(
            {s: {"hmac_secret": v, "hmac_header": HMAC_HEADER} for s, v in secrets.items()}
        ),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    m = Mesh(data_dir, mesh_env(data_dir, ports, env), ports)
    with ExitStack() as stack:
        stack.enter_context(http_server(peer_port, peers.handler()))
        try:
            for name in names:
                m.start(name)
            m.wait_healthy(names, timeout=1800)  # Gabriel 500 takes minutes to build on busy cores
            yield StormStack(m, peers, secrets)
        finally:
            for name in list(m.procs):
                m.stop(name)


def run_storm(stack: StormStack, cfg: StormConfig, *, settle_s: float = 600) -> StormRun:
    """Send the storm at the running mesh, wait until it settled, read back, check."""
    m, peers, secrets = stack.mesh, stack.peers, stack.secrets
    auth = {"Authorization": f"Bearer {m.token}"}
    base = m.url("correlator")
    memory: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=120, headers=auth) as http:
        topo = StormTopology.from_lab(http.get(f"{m.url('lab')}/lab/topology").json())
        links, alerts = plan_alerts(topo, cfg)
        requests = plan_requests(alerts, cfg, secrets, m.token)
        idle = {name: proc_status(p.pid) for name, p in m.procs.items()}
        sent = asyncio.run(send_storm(base, requests, cfg))
        after_send = {name: proc_status(p.pid) for name, p in m.procs.items()}

        def settled() -> bool:
            incidents = fetch_incidents(http, base)
            pending = [i for i in incidents if i["status"] == "pending"]
            heard = peers.heard().get("start_incident", {})
            return not pending and all(i["incident_id"] in heard for i in incidents)

        t0 = time.monotonic()
        until("every incident emitted and delivered to the orchestrator", settled, settle_s)
        settle = time.monotonic() - t0
        if "io" in m.procs:
            io_auth = {"Authorization": f"Bearer {m.io_token}"}

            def io_has_all() -> bool:
                rows = http.get(f"{m.url('io')}/api/v1/tickets", headers=io_auth).json()
                return len(rows) >= len(fetch_incidents(http, base))

            until("every incident a ticket in IO", io_has_all, settle_s)
        stored = fetch_alerts(http, base)
        incidents = fetch_incidents(http, base)
        heard = peers.heard()
        if "io" in m.procs:
            rows = http.get(
                f"{m.url('io')}/api/v1/tickets", headers={"Authorization": f"Bearer {m.io_token}"}
            ).json()
            heard["new_ticket"] = {r["incident_id"]: 1 for r in rows}
        for name, p in m.procs.items():
            status = proc_status(p.pid)
            memory[name] = {
                "rss_idle_mib": idle[name]["rss_mib"],
                "rss_after_send_mib": after_send[name]["rss_mib"],
                "rss_settled_mib": status["rss_mib"],
                "hwm_mib": status["hwm_mib"],
                "threads": status["threads"],
            }
    # once per incident: its start and its ticket (signals and audit events come many times)
    duplicates_heard = {
        t: sum(1 for n in by.values() if n > 1)
        for t, by in heard.items()
        if t in ("start_incident", "new_ticket")
    }
    figures, problems = verify(topo, links, requests, sent, stored, incidents, heard)
    for task_type, n in duplicates_heard.items():
        if n:
            problems.append(f"{task_type}: {n} incidents got it more than once")
    figures.update(
        {
            "topology": cfg.topology,
            "nodes": len({n for ends in topo.links.values() for n in ends}),
            "links_in_topology": len(topo.links),
            "storm_links": len(links),
            "window_s": cfg.window_s,
            "concurrency": cfg.concurrency,
            "batch": cfg.batch,
            "settle_s": round(settle, 2),
            "tasks_heard": {t: sum(by.values()) for t, by in heard.items()},
            "memory": memory,
        }
    )
    return StormRun(figures, problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=StormConfig.alerts)
    parser.add_argument("--links", type=int, default=StormConfig.links)
    parser.add_argument("--window", type=float, default=StormConfig.window_s)
    parser.add_argument("--topology", default=StormConfig.topology)
    parser.add_argument("--batch", type=int, default=StormConfig.batch)
    parser.add_argument("--concurrency", type=int, default=StormConfig.concurrency)
    parser.add_argument("--cut-share", type=float, default=StormConfig.cut_share)
    parser.add_argument(
        "--fake-peers", action="store_true", help="IO and audit as stand-ins, not real agents"
    )
    args = parser.parse_args(argv)
    cfg = StormConfig(
        alerts=args.alerts,
        links=args.links,
        window_s=args.window,
        topology=args.topology,
        batch=args.batch,
        concurrency=args.concurrency,
        cut_share=args.cut_share,
    )
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="cxm-storm-") as tmp,
        storm_mesh(Path(tmp), cfg, real_peers=not args.fake_peers) as stack,
    ):
        ready = time.monotonic() - started
        run = run_storm(stack, cfg)
    out = {
        **run.figures,
        "mesh_start_s": round(ready, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "ok": not run.problems,
        "problems": run.problems[:50],
    }
    print(json.dumps(out, indent=2))
    return 0 if not run.problems else 1


if __name__ == "__main__":
    sys.exit(main())

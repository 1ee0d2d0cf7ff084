"""Protection sweep (issue 17): how SLA incidents end on real topologies, by reason.

For each network (every SNDlib one, a deterministic sample of Topology Zoo) the lab loads that
topology and the sweep fails several disjoint single links (:func:`bench.sweep_lib.pick_faults`:
links that carry services and whose ends stay connected without them), one after the other:
a single link fault is what networks are planned for (the lab buys capacity for any one).
``--together`` fails them all at once instead (they share no node and no SRLG, so they open
separate incidents): a stress beyond the capacity plan. Each link recovers once its incident
has steered traffic (the orchestrator only closes an incident when ``check_sla`` sees the
degraded links back in SLA), and the sweep reads how each incident ended from IO's ticket:
resolved, escalated by reason, and any ``error`` event (a peer refusing an operation). Every
"no path" escalation is checked independently with :func:`bench.sweep_lib.path_exists`.

The ten agents run once as real processes (``tests.support.mesh``, as ``bench.closed_loop``
does); between networks only the lab restarts on the next topology, because starting eleven
Python processes costs 20-50 s on two cores and the sweep visits ~76 networks. The agents keep
no topology beyond their caches' TTL (scaled by ``CXM_TIME_SCALE``), which the sweep waits out.
If a network leaves an incident open (timed out), the whole mesh restarts so that it cannot
leak into the next network's figures. Prints one JSON document.

    python -m bench.sweep [--networks sndlib:all,zoo:50] [--faults 3] [--time-scale 0.02]
                          [--together] [--timeout S] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import networkx as nx

from bench.sweep_lib import hurt_groups, link_load, path_exists, pick_faults
from services.lab.topology import LabTopology, build_topology
from shared.errors import SouthboundError
from shared.settings import AGENT_PORTS, Settings
from shared.southbound import cnc_client
from tests.support import Mesh, free_port, mesh_env

FINAL = ("closed", "escalated")
REASONS = ("no_path", "steering_failed", "provisioning_failed", "other")
CLOSE_REASON_CATEGORY = {
    "no_path": "no_path",
    "steer_failed": "steering_failed",
    "tunnel_provision_failed": "provisioning_failed",
}
"""The orchestrator's ``close_reason`` codes (``escalation(reason, ...)``) by sweep category."""

NOT_AN_OPERATION = frozenset({"no_path", "services_unprotected"})
"""``error`` codes that report a verdict rather than a refused or failed operation: the
orchestrator sends ``no_path`` as an error when a re-route finds no way around, and
``services_unprotected`` when it escalates an incident whose other groups it protected (the
error names each group left out and why). Those count under ``escalated_by_reason``; every
other code is a failed operation (a peer refused, failed or was unreachable)."""

INVENTORY_TTL_S = 1.0
"""Seconds a read of the service inventory serves the agents during a sweep."""
CORRELATOR_TOPOLOGY_TTL_S = 60.0
"""The correlator's default ``topology_ttl_s`` (unscaled): the longest any agent trusts a
topology it read from the previous network's lab."""


# --- which networks --------------------------------------------------------------------------


def _topohub_names(group: str) -> list[str]:
    """The keys topohub ships for ``group`` (``sndlib``, ``topozoo``), sorted by name."""
    import topohub

    data = Path(topohub.__file__).parent / "data" / group
    return sorted(p.stem for p in data.glob("*.json"))


_BUILT: dict[str, LabTopology | None] = {}
"""Topologies built once per run: sampling the Zoo and sweeping it need the same ones."""


def usable(key: str, faults: int) -> LabTopology | None:
    """The lab's topology for ``key`` when the sweep can use it, else None.

    topohub marks no network unusable, so the sweep decides: the lab must build it and
    :func:`pick_faults` must find at least one link to fail (some Zoo graphs are trees, or
    have no two nodes that carry a service over a non-bridge link).
    """
    if key not in _BUILT:
        try:
            _BUILT[key] = build_topology(key)
        except Exception:  # a graph the lab cannot load is simply not sampled
            _BUILT[key] = None
    topo = _BUILT[key]
    if topo is None:
        return None
    return topo if pick_faults(topo, faults) else None


def zoo_sample(count: int, faults: int) -> list[str]:
    """``count`` Topology Zoo keys, deterministic: every Nth network by name (N = total /
    count); when the Nth is unusable, the next usable one by name."""
    names = _topohub_names("topozoo")
    if not names or count <= 0:
        return []
    step = len(names) / count
    chosen: list[str] = []
    for i in range(count):
        index = int(i * step)
        while index < len(names):
            key = f"topozoo/{names[index]}"
            if key not in chosen and usable(key, faults) is not None:
                chosen.append(key)
                break
            index += 1
    return chosen


def parse_networks(spec: str, faults: int) -> list[str]:
    """``sndlib:all,zoo:50,sndlib/polska`` → topohub keys, in that order, without repeats."""
    keys: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "sndlib:all":
            keys += [f"sndlib/{name}" for name in _topohub_names("sndlib")]
        elif part.startswith("zoo:"):
            keys += zoo_sample(int(part.split(":", 1)[1]), faults)
        else:
            keys.append(part)
    return list(dict.fromkeys(keys))


# --- one network ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """How the incident of one failed link ended."""

    link: str
    connected_without: bool
    incident_id: str | None = None
    outcome: str = "no_incident"
    """resolved | escalated | closed_other | timed_out | no_incident | not_run (an earlier
    fault of the network left an incident open, so the mesh restarted before this one)"""
    reason: str | None = None
    """for escalations: no_path | steering_failed | provisioning_failed | other"""
    close_reason: str | None = None
    message: str | None = None
    errors: list[str] = field(default_factory=list)
    """``error_code`` of every ``error`` event: a peer refused or failed an operation."""
    no_path_checks: list[dict[str, Any]] = field(default_factory=list)
    services_hurt: int = 0
    """Phase 2's ``total_affected``."""
    services_protected: int = 0
    """Services steered onto a protection policy (phase 5's ``service_ids``, every policy):
    an incident can resolve (the link recovers) with most of its services never protected."""


def _ends_connected(topo: LabTopology, link_id: str) -> bool:
    """Whether the link's two ends stay connected without it (the issue's 90 % applies there)."""
    graph = nx.Graph()
    graph.add_nodes_from(topo.nodes)
    graph.add_edges_from(
        (link.source, link.destination) for lid, link in topo.links.items() if lid != link_id
    )
    link = topo.links[link_id]
    return bool(nx.has_path(graph, link.source, link.destination))


def _events(ticket: dict[str, Any], task_type: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ticket.get("events", []) if e["task_type"] == task_type]


def _steered(ticket: dict[str, Any]) -> bool:
    """Traffic is on a protection policy (phase 5 reached), so the link may recover."""
    return any(str(p.get("phase")) in ("5", "6") for p in _events(ticket, "status_update"))


def _no_path_ends(
    details: dict[str, Any], ticket: dict[str, Any]
) -> list[tuple[str, str, str | None, list[str]]]:
    """(head-end, end-point, TE type, extra links avoided) for each search a no-path
    escalation says failed.

    - phase 3 (``compute``): the protected ends are in the details; TE type free;
    - a re-route (``tunnel_id`` and ``crossed`` in the details): the tunnel's ends and TE type
      are in the phase-4 status update, and the search also avoided every link monitoring
      found out of SLA on the tunnel so far;
    - multi-group protection: the groups left unprotected, each with its ends (``unprotected``
      or ``groups`` entries), so the sweep reads those too.
    """
    out: list[tuple[str, str, str | None, list[str]]] = []
    # A re-route avoids every link the tunnel was ever seen crossing out of SLA (the
    # orchestrator's ``tunnel_degraded``, reported in monitoring's status updates), not only
    # the ones it crosses now.
    crossed = [str(link) for link in details.get("crossed") or []]
    if crossed:
        for update in _events(ticket, "status_update"):
            crossed += [str(x) for x in (update.get("details") or {}).get("tunnel_degraded") or []]
        crossed = list(dict.fromkeys(crossed))
    if details.get("head_end") and details.get("end_point"):
        te = details.get("te_type") if crossed else None
        out.append((str(details["head_end"]), str(details["end_point"]), te, crossed))
    elif details.get("tunnel_id"):
        # The phase-4 update names the first policy at its top and every policy in ``tunnels``.
        for update in _events(ticket, "status_update"):
            d = update.get("details") or {}
            policies = [d, *[t for t in d.get("tunnels") or [] if isinstance(t, dict)]]
            known = [t for t in policies if t.get("tunnel_id") == details["tunnel_id"]]
            if known and known[0].get("head_end"):
                t = known[0]
                out.append((str(t["head_end"]), str(t["end_point"]), t.get("te_type"), crossed))
                break
    for key in ("unprotected", "unprotected_groups", "groups"):
        for item in details.get(key) or []:
            if not isinstance(item, dict) or not item.get("head_end") or not item.get("end_point"):
                continue
            why = str(item.get("reason") or item.get("status") or "no_path")
            if "path" in why:  # left out for want of a path (not a refused steer)
                out.append(
                    (str(item["head_end"]), str(item["end_point"]), item.get("te_type"), crossed)
                )
    unique: dict[tuple[str, str, str | None, tuple[str, ...]], None] = {}
    for head, end, te, extra in out:
        unique[(head, end, te, tuple(extra))] = None
    return [(head, end, te, list(extra)) for head, end, te, extra in unique]


def verify_no_path(
    topo: LabTopology,
    degraded: list[str],
    head_end: str,
    end_point: str,
    te_type: str | None,
    also_avoided: Iterable[str] = (),
    live_rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Independently: did any path join the ends under the path agent's hard constraints?

    The constraints the orchestrator asks for: the incident's degraded links (and, for a
    re-route, the links the tunnel crossed that degraded: ``also_avoided``) excluded, one TE
    technology end to end, and headroom for the traffic of the services between these ends
    that the degradation hurts (their own load moves, so it is not counted).

    Load is checked twice: the lab's pre-fault load (what the topology's services put on each
    link), and ``live_rates``, CNC's link rates read when the sweep saw the escalation
    (other incidents' tunnels move traffic; the path agent reads the load at compute time).
    A path "exists" only if it does under both, so a concurrent incident's traffic does not
    count as a contradiction; both answers are kept.
    """
    hurt = [
        g
        for link in degraded
        if link in topo.links
        for g in hurt_groups(topo, link)
        if (g.head_end, g.end_point) == (head_end, end_point)
    ]
    carrying = sorted({s for g in hurt for s in g.services})
    mbps = sum(topo.services[s].bandwidth_mbps for s in carrying if s in topo.services) or None
    excluded = [*degraded, *also_avoided]
    exists = path_exists(
        topo,
        head_end,
        end_point,
        excluded_links=excluded,
        te_type=te_type,
        min_bandwidth_mbps=mbps,
        load=link_load(topo, carrying=carrying),
    )
    exists_live: bool | None = None
    if live_rates is not None:
        live = dict(live_rates)
        for vpn in carrying:  # unsteered, they still load their own path: they will move
            for link in topo.services[vpn].path if vpn in topo.services else ():
                live[link] = live.get(link, 0.0) - topo.services[vpn].bandwidth_mbps
        exists_live = path_exists(
            topo,
            head_end,
            end_point,
            excluded_links=excluded,
            te_type=te_type,
            min_bandwidth_mbps=mbps,
            load=live,
        )
    unconstrained = path_exists(topo, head_end, end_point, excluded_links=excluded)
    return {
        "head_end": head_end,
        "end_point": end_point,
        "excluded_links": excluded,
        "te_type": te_type,
        "min_bandwidth_mbps": round(mbps, 3) if mbps else None,
        "path_exists": exists and exists_live is not False,
        "path_exists_pre_fault_load": exists,
        "path_exists_live_load": exists_live,
        "path_exists_ignoring_bandwidth": unconstrained,
    }


def classify(
    outcome: Outcome,
    ticket: dict[str, Any],
    topo: LabTopology,
    te_type: str | None,
    live_rates: dict[str, float] | None = None,
) -> None:
    """Fill ``outcome`` from a final ticket: resolution, reason, errors, no-path checks."""
    closed = _events(ticket, "ticket_closed")
    final = closed[-1] if closed else {}
    details = dict(final.get("details") or {})
    resolution = final.get("resolution") or ticket.get("resolution")
    outcome.close_reason = details.get("close_reason")
    outcome.message = str(final.get("summary") or ticket.get("message") or "")[:1000]
    outcome.errors = [
        str(p.get("error_code") or p.get("code") or "?") for p in _events(ticket, "error")
    ]
    updates = _events(ticket, "status_update")
    outcome.services_hurt = max(
        (int((u.get("details") or {}).get("total_affected") or 0) for u in updates), default=0
    )
    # Phase 5 names the first policy's services at its top and every policy's in ``tunnels``.
    outcome.services_protected = len(
        {
            str(vpn)
            for u in updates
            if str(u.get("phase")) == "5"
            for policy in [u.get("details") or {}, *((u.get("details") or {}).get("tunnels") or [])]
            if isinstance(policy, dict)
            for vpn in policy.get("service_ids") or []
        }
    )
    if resolution == "resolved":
        outcome.outcome = "resolved"
        return
    if ticket.get("status") != "escalated" and resolution != "escalated":
        outcome.outcome = "closed_other"
        outcome.reason = str(resolution)
        return
    outcome.outcome = "escalated"
    outcome.reason = CLOSE_REASON_CATEGORY.get(str(outcome.close_reason), "other")
    if outcome.reason == "no_path" or outcome.close_reason == "partially_protected":
        # a partial protection's groups left without a path are checked like a no_path
        degraded = list(details.get("degraded_links") or ticket.get("degraded_links") or [])
        outcome.no_path_checks = [
            verify_no_path(topo, degraded, head, end, te_type or te, extra, live_rates)
            for head, end, te, extra in _no_path_ends(details, ticket)
        ]


def live_rates(lab: str) -> dict[str, float] | None:
    """Mbps on each link now, as CNC's performance metrics report it (the busier direction),
    read from the lab with the same client the agents use (None if it cannot say)."""

    async def read() -> dict[str, float]:
        settings = Settings(cnc_url=lab, pca_url=lab, lab_url=lab)
        cnc = cnc_client(settings)
        try:
            loads = await cnc.link_utilisation()
        finally:
            await cnc.aclose()
        return {name: load.rate_mbps for name, load in loads.items() if load.rate_mbps is not None}

    try:
        return asyncio.run(read())
    except SouthboundError:
        return None


def run_network(
    m: Mesh,
    key: str,
    topo: LabTopology,
    links: list[str],
    *,
    timeout_s: float,
    te_type: str | None,
    poll_s: float = 0.3,
) -> list[Outcome]:
    """Fail ``links`` at once on the running lab, recover each once protected, and read how
    their incidents end. Every wait is bounded by ``timeout_s`` for the whole network."""
    outcomes = {link: Outcome(link, _ends_connected(topo, link)) for link in links}
    open_since = time.monotonic()
    with m.client() as http:
        io = m.url("io")
        lab = m.url("lab")
        before = {t["incident_id"] for t in http.get(f"{io}/api/v1/tickets?limit=1000").json()}
        for link in links:
            http.post(f"{lab}/lab/links/{link}/degrade", json={"delay_ms": 120}).raise_for_status()
        recovered: set[str] = set()
        pending = set(links)
        deadline = open_since + timeout_s
        while pending and time.monotonic() < deadline:
            rows = http.get(f"{io}/api/v1/tickets?limit=1000").json()
            for row in rows:
                if row["incident_id"] in before:
                    continue
                for link in set(row.get("degraded_links") or []) & set(links):
                    if outcomes[link].incident_id is None:
                        outcomes[link].incident_id = row["incident_id"]
            for link in sorted(pending):
                incident = outcomes[link].incident_id
                if incident is None:
                    continue
                ticket = http.get(f"{io}/api/v1/tickets/{incident}").json()
                if link not in recovered and (_steered(ticket) or ticket["status"] in FINAL):
                    # the SLA can only recover once the link does; the incident then closes
                    http.post(f"{lab}/lab/links/{link}/recover").raise_for_status()
                    recovered.add(link)
                if ticket["status"] in FINAL and _events(ticket, "ticket_closed"):
                    classify(outcomes[link], ticket, topo, te_type, live_rates(lab))
                    pending.discard(link)
            if pending:
                time.sleep(poll_s)
        for link in pending:
            if outcomes[link].incident_id is not None:
                outcomes[link].outcome = "timed_out"
        for link in set(links) - recovered:
            http.post(f"{lab}/lab/links/{link}/recover")
    print(
        f"sweep: {key}: "
        + ", ".join(
            f"{o.link} {o.outcome}{'/' + o.reason if o.reason else ''}" for o in outcomes.values()
        )
        + f" ({time.monotonic() - open_since:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    return list(outcomes.values())


# --- figures -------------------------------------------------------------------------------


def summarize(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """The figures the issue asks for, for any set of incidents."""
    items = list(outcomes)
    counted = [o for o in items if o.outcome not in ("no_incident", "not_run")]
    connected = [o for o in counted if o.connected_without]
    escalated = Counter(o.reason for o in counted if o.outcome == "escalated")
    checks = [c for o in counted for c in o.no_path_checks]
    other = Counter(o.close_reason for o in counted if o.reason == "other")
    resolved_connected = sum(o.outcome == "resolved" for o in connected)
    return {
        "faults": len(items),
        "incidents": len(counted),
        "no_incident": sum(o.outcome == "no_incident" for o in items),
        "not_run": sum(o.outcome == "not_run" for o in items),
        "resolved": sum(o.outcome == "resolved" for o in counted),
        "escalated": sum(escalated.values()),
        "escalated_by_reason": {r: escalated.get(r, 0) for r in REASONS},
        "other_close_reasons": dict(other),
        "closed_otherwise": sum(o.outcome == "closed_other" for o in counted),
        "timed_out": sum(o.outcome == "timed_out" for o in counted),
        "failed_operations": sum(any(e not in NOT_AN_OPERATION for e in o.errors) for o in counted),
        "failed_operation_codes": dict(Counter(e for o in counted for e in o.errors)),
        "no_path_escalations": escalated.get("no_path", 0),
        "no_path_checks": len(checks),
        "no_path_verified": sum(not c["path_exists"] for c in checks),
        "no_path_contradicted": sum(bool(c["path_exists"]) for c in checks),
        "no_path_unchecked": sum(
            1
            for o in counted
            if (o.reason == "no_path" or "no_path" in (o.message or "")) and not o.no_path_checks
        ),
        "services_hurt": sum(o.services_hurt for o in counted),
        "services_protected": sum(o.services_protected for o in counted),
        "protected_pct": round(
            100.0
            * sum(o.services_protected for o in counted)
            / max(1, sum(o.services_hurt for o in counted)),
            1,
        ),
        "resolved_pct_where_connected": round(100.0 * resolved_connected / len(connected), 1)
        if connected
        else None,
    }


# --- the mesh ------------------------------------------------------------------------------


@contextmanager
def sweep_mesh(env: dict[str, str], healthy_timeout_s: float = 300.0) -> Iterator[Mesh]:
    """The ten agents and the lab as real processes, as ``tests.support.mesh`` starts them,
    but with a longer wait for health: eleven interpreters importing FastAPI and LangGraph at
    once take well over ``mesh``'s 60 s on two busy cores."""
    with tempfile.TemporaryDirectory(prefix="cxm-sweep-") as tmp:
        data_dir = Path(tmp)
        ports = {name: free_port() for name in AGENT_PORTS}
        # a read of the service inventory serves for its TTL; the next network's services
        # reuse vpn-ids, so a stale read would silently give them another network's tiers
        # and bandwidth: keep it short and wait it out in ``switch_lab``
        # The sweep measures the SLA flow. A fault moves traffic onto other links, which can
        # forecast congestion there: the proactive tickets that follow act between faults and
        # keep the correlator busy past ``correlator_quiet``, so the next fault would not run
        # (nobel-eu, CI of 2026-11-30). bench/proactive.py measures that flow.
        env = {
            "CXM_SERVICE_INVENTORY_TTL_S": str(INVENTORY_TTL_S),
            "CXM_TRAFFIC_PROACTIVE_ENABLED": "false",
            **env,
        }
        m = Mesh(data_dir, mesh_env(data_dir, ports, env), ports)
        try:
            for name in AGENT_PORTS:
                m.start(name)
            m.wait_healthy(list(AGENT_PORTS), timeout=healthy_timeout_s)
            yield m
        finally:
            for name in list(m.procs):
                m.stop(name)


def switch_lab(m: Mesh, key: str) -> None:
    """Restart only the lab, on ``key``; then wait out the agents' topology caches."""
    m.stop("lab")
    m.env["CXM_LAB_TOPOLOGY"] = key
    m.start("lab")
    m.wait_healthy(["lab"], timeout=180)
    ttl = CORRELATOR_TOPOLOGY_TTL_S * float(m.env.get("CXM_TIME_SCALE", "1"))
    inventory_ttl = float(m.env.get("CXM_SERVICE_INVENTORY_TTL_S", INVENTORY_TTL_S))
    # a topology or inventory cached from the previous lab expires after its TTL; nothing to
    # poll for
    time.sleep(max(min(ttl, 10.0), inventory_ttl))


def correlator_quiet(m: Mesh, timeout_s: float = 30.0, poll_s: float = 0.3) -> bool:
    """Whether the correlator has no open incident left (so the next faults open their own)."""
    deadline = time.monotonic() + timeout_s
    auth = {"Authorization": f"Bearer {m.token}"}
    while time.monotonic() < deadline:
        rows = httpx.get(f"{m.url('correlator')}/api/v1/incidents", headers=auth, timeout=10)
        if rows.status_code == 200 and not [r for r in rows.json() if r["status"] != "closed"]:
            return True
        time.sleep(poll_s)
    return False


def sweep(
    keys: list[str],
    *,
    faults: int,
    env: dict[str, str],
    network_timeout_s: float,
    together: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every network in turn on one mesh (restarted only after a network left debris).

    Faults one at a time (``network_timeout_s`` each), or all at once with ``together``.

    ``progress`` gets the document so far after each network, so a long sweep that dies
    part-way still leaves its figures behind."""
    te_type = env.get("CXM_TE_TYPE") or os.environ.get("CXM_TE_TYPE") or None
    networks: list[dict[str, Any]] = []
    everything: list[Outcome] = []
    by_source: dict[str, list[Outcome]] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        m: Mesh | None = None
        for key in keys:
            topo = usable(key, faults)
            if topo is None:
                networks.append({"network": key, "skipped": "lab cannot build it or no fault"})
                continue
            links = pick_faults(topo, faults)
            t0 = time.monotonic()
            try:
                if m is None:
                    m = stack.enter_context(sweep_mesh({**env, "CXM_LAB_TOPOLOGY": key}))
                else:
                    switch_lab(m, key)
                outcomes = []
                batches = [links] if together else [[link] for link in links]
                for index, batch in enumerate(batches):
                    outcomes += run_network(
                        m, key, topo, batch, timeout_s=network_timeout_s, te_type=te_type
                    )
                    if not together and not correlator_quiet(m):
                        # the next fault could join the incident still open: say so, not skip
                        outcomes += [
                            Outcome(link, _ends_connected(topo, link), outcome="not_run")
                            for later in batches[index + 1 :]
                            for link in later
                        ]
                        break
            except (httpx.HTTPError, AssertionError) as exc:
                # a process that died or would not start: say so, start afresh, go on
                print(f"sweep: {key}: {exc!r}"[:2000], file=sys.stderr, flush=True)
                networks.append({"network": key, "error": repr(exc)[:500]})
                stack.close()
                m = None
                continue
            debris = any(o.outcome == "timed_out" for o in outcomes) or not correlator_quiet(m)
            if debris:  # start afresh so an open incident cannot join the next network's
                stack.close()
                m = None
            everything += outcomes
            by_source.setdefault(key.split("/", 1)[0], []).extend(outcomes)
            networks.append(
                {
                    "network": key,
                    "nodes": len(topo.nodes),
                    "links": len(topo.links),
                    "services": len(topo.services),
                    "wall_s": round(time.monotonic() - t0, 1),
                    **summarize(outcomes),
                    "outcomes": [asdict(o) for o in outcomes],
                }
            )
            if progress:
                progress(_document(together, networks, everything, by_source, faults, env, started))
    return _document(together, networks, everything, by_source, faults, env, started)


def _document(
    together: bool,
    networks: list[dict[str, Any]],
    everything: list[Outcome],
    by_source: dict[str, list[Outcome]],
    faults: int,
    env: dict[str, str],
    started: float,
) -> dict[str, Any]:
    return {
        "benchmark": "protection_sweep",
        "faults_per_network": faults,
        "faults_at_once": together,
        "env": env,
        "wall_s": round(time.monotonic() - started, 1),
        "networks": networks,
        "by_source": {source: summarize(items) for source, items in by_source.items()},
        "totals": summarize(everything),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--networks", default="sndlib:all,zoo:50")
    parser.add_argument("--faults", type=int, default=3, help="disjoint single-link faults each")
    parser.add_argument("--time-scale", default="0.02")
    parser.add_argument(
        "--together", action="store_true", help="fail a network's links at once, not in turn"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per fault (per network if together)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CXM_NAME=VALUE",
        help="extra setting for every process (repeatable)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the mesh's processes stop with the sweep
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    keys = parse_networks(args.networks, args.faults)
    env = {
        "CXM_TIME_SCALE": args.time_scale,
        "CXM_LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.env),
    }
    out: Path | None = args.out

    def save(document: dict[str, Any]) -> None:
        if out:
            out.write_text(json.dumps(document, indent=2) + "\n")

    result = sweep(
        keys,
        faults=args.faults,
        env=env,
        network_timeout_s=args.timeout,
        together=args.together,
        progress=save,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Alert-to-steered latency of the whole mesh, for 1, 10 and 100 concurrent incidents.

Runs the ten agents and the lab as real processes on a large topohub topology (by default the
500-node Gabriel graph), degrades N links at once in the lab, and measures for each incident
the time from its PCA alert reaching the correlator (the correlator's ``received_at``) to the
IO agent receiving the phase-5 ``status_update`` (traffic steered). Both timestamps come from
the same host clock. The links of one round share no node and no SRLG, so each becomes its
own incident; each round uses fresh links. Prints one JSON document.

    python -m bench.closed_loop [--topology gabriel/500/0] [--counts 1,10,100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import networkx as nx

from services.lab.topology import LabTopology, build_topology
from shared.models import TIERS
from tests.support import Mesh, mesh


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


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_round(m: Mesh, links: list[str], io_token: str, timeout_s: float) -> dict[str, Any]:
    mesh_auth = {"Authorization": f"Bearer {m.token}"}
    io_auth = {"Authorization": f"Bearer {io_token}"}
    with httpx.Client(timeout=30) as http:
        started = time.monotonic()
        with httpx.Client(timeout=30) as lab:
            for link in links:  # the lab pushes the PCA alerts as it degrades
                lab.post(
                    f"{m.url('lab')}/lab/links/{link}/degrade",
                    json={"delay_ms": 120, "duration_s": 100000},
                ).raise_for_status()
        latencies: dict[str, float] = {}
        not_steered: dict[str, str] = {}
        incidents: dict[str, str] = {}
        pending = set(links)
        while pending and time.monotonic() - started < timeout_s:
            for link in sorted(pending):
                alerts = http.get(
                    f"{m.url('correlator')}/api/v1/alerts",
                    params={"link": link, "limit": 5},
                    headers=mesh_auth,
                ).json()
                raised = [a for a in alerts if a.get("incident_id")]
                if not raised:
                    continue
                first = min(raised, key=lambda a: a["received_at"])
                incidents[link] = first["incident_id"]
                ticket = http.get(
                    f"{m.url('io')}/api/v1/tickets/{first['incident_id']}", headers=io_auth
                )
                if ticket.status_code != 200:
                    continue
                steered = [
                    e
                    for e in ticket.json()["events"]
                    if e["task_type"] == "status_update" and e["payload"].get("phase") == "5"
                ]
                detail = ticket.json()
                if steered:
                    latencies[link] = _ts(steered[0]["received_at"]) - _ts(first["received_at"])
                    pending.discard(link)
                elif detail["status"] in ("escalated", "closed"):  # e.g. no TE-capable path
                    not_steered[link] = str(detail.get("message") or detail["status"])[:200]
                    pending.discard(link)
            time.sleep(0.2)
        # tunnels moved off a link that went bad (seen by the end of the round)
        rerouted = sum(
            any(
                e["task_type"] == "status_update"
                and "reroute" in (e["payload"].get("details") or {})
                for e in http.get(
                    f"{m.url('io')}/api/v1/tickets/{incident}", headers=io_auth
                ).json()["events"]
            )
            for incident in set(incidents.values())
        )
        for link in links:
            http.post(f"{m.url('lab')}/lab/links/{link}/recover")
    values = sorted(v * 1000 for v in latencies.values())
    return {
        "incidents": len(links),
        "steered": len(values),
        "not_steered": not_steered,
        "rerouted": rerouted,
        "timed_out": sorted(pending),
        "p50_ms": round(statistics.median(values), 1) if values else None,
        "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 1)
        if values
        else None,
        "max_ms": round(values[-1], 1) if values else None,
        "wall_s": round(time.monotonic() - started, 2),
    }


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
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="cxm-bench-") as tmp,
        mesh(Path(tmp), extra_env=env) as m,
    ):
        io_token = (Path(tmp) / "io-admin-token").read_text().strip()
        offset = 0
        for count in counts:
            results.append(run_round(m, links[offset : offset + count], io_token, args.timeout))
            offset += count
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
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

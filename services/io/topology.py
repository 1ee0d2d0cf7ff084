"""The network as the console draws it: CNC's topology, cached, with a layout computed once.

CNC gives nodes and links but no coordinates, so IO lays the graph out itself
(Fruchterman-Reingold, deterministic so a node stays where the operator last saw it) in a
worker thread, and caches the result. When CNC cannot be reached the console gets the last
good copy marked stale, or a clear "unavailable" with the reason.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from shared.errors import SouthboundError
from shared.logs import get_logger
from shared.models import utcnow
from shared.southbound import CncClient, Topology

log = get_logger(__name__)

WIDTH, HEIGHT, MARGIN = 1000.0, 600.0, 60.0


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """Fruchterman-Reingold from a circle, scaled into the drawing box; same input, same output."""
    n = len(nodes)
    if n == 0:
        return {}
    order = sorted(nodes)
    pos = {
        node: [math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)]
        for i, node in enumerate(order)
    }
    if n > 2:
        k = math.sqrt(4.0 / n)
        temp = 0.2
        iterations = 200 if n <= 60 else max(30, 12000 // n)
        index = {node: i for i, node in enumerate(order)}
        pairs = [(a, b) for a, b in edges if a in index and b in index and a != b]
        for _ in range(iterations):
            disp = {node: [0.0, 0.0] for node in order}
            for i, a in enumerate(order):
                pa = pos[a]
                for b in order[i + 1 :]:
                    pb = pos[b]
                    dx, dy = pa[0] - pb[0], pa[1] - pb[1]
                    dist = max(math.hypot(dx, dy), 1e-3)
                    force = k * k / dist
                    fx, fy = dx / dist * force, dy / dist * force
                    disp[a][0] += fx
                    disp[a][1] += fy
                    disp[b][0] -= fx
                    disp[b][1] -= fy
            for a, b in pairs:
                pa, pb = pos[a], pos[b]
                dx, dy = pa[0] - pb[0], pa[1] - pb[1]
                dist = max(math.hypot(dx, dy), 1e-3)
                force = dist * dist / k
                fx, fy = dx / dist * force, dy / dist * force
                disp[a][0] -= fx
                disp[a][1] -= fy
                disp[b][0] += fx
                disp[b][1] += fy
            for node in order:
                dx, dy = disp[node]
                length = max(math.hypot(dx, dy), 1e-9)
                step = min(length, temp)
                pos[node][0] += dx / length * step
                pos[node][1] += dy / length * step
            temp = max(temp * 0.97, 0.005)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    return {
        node: (
            round(MARGIN + (p[0] - min(xs)) / span_x * (WIDTH - 2 * MARGIN), 1),
            round(MARGIN + (p[1] - min(ys)) / span_y * (HEIGHT - 2 * MARGIN), 1),
        )
        for node, p in pos.items()
    }


def drawing(topology: Topology) -> dict[str, Any]:
    """Nodes with coordinates and links by id, ready for the console's SVG."""
    names = [n.node_id for n in topology.nodes]
    known = set(names)
    for link in topology.links:  # a link to a node CNC did not list is still drawn
        for end in (link.source, link.destination):
            if end not in known:
                known.add(end)
                names.append(end)
    coords = layout(names, [(link.source, link.destination) for link in topology.links])
    roles = {n.node_id: n.role for n in topology.nodes}
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "nodes": [
            {"id": name, "x": coords[name][0], "y": coords[name][1], "role": roles.get(name)}
            for name in names
        ],
        "links": [
            {
                "id": link.link_id,
                "source": link.source,
                "destination": link.destination,
                "delay_ms": link.delay_ms,
                "oper_status": link.oper_status,
            }
            for link in topology.links
        ],
    }


class TopologyCache:
    """One CNC fetch per ``ttl_s`` however many consoles ask; the last good copy on failure."""

    def __init__(self, cnc: CncClient, ttl_s: float) -> None:
        self.cnc = cnc
        self.ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._value: dict[str, Any] | None = None
        self._fetched = 0.0

    async def get(self, *, refresh: bool = False) -> dict[str, Any]:
        async with self._lock:
            fresh = time.monotonic() - self._fetched < self.ttl_s
            if self._value is not None and fresh and not refresh:
                return self._value
            try:
                topology = await self.cnc.topology()
            except (SouthboundError, KeyError, ValueError) as exc:
                log.warning("topology unavailable", error=str(exc))
                if self._value is not None:
                    return {**self._value, "stale": True, "error": str(exc)}
                return {"available": False, "error": f"topology unavailable: {exc}"}
            drawn = await asyncio.to_thread(drawing, topology)
            self._value = {
                "available": True,
                "stale": False,
                "fetched_at": utcnow().isoformat(),
                **drawn,
            }
            self._fetched = time.monotonic()
            return self._value

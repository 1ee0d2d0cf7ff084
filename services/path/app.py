"""Path Computation agent: a topology knowledge graph from CNC and constrained shortest paths.

The graph is cached for a short TTL (scaled by ``CXM_TIME_SCALE``); after that CNC is asked
again and the graph is rebuilt only if the topology changed. A request for bandwidth also
reads CNC's services and SR policies, every time (steering changes all the time), to know each
link's load. "No path" is an answer, not an error: ``found=False`` with a reason, so the
orchestrator can branch to escalation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from services.path.graph import KnowledgeGraph, fingerprint
from services.path.settings import PathSettings
from shared.agent import AgentSpec, TaskContext
from shared.logs import get_logger
from shared.models import ComputePath, GetTopology, KPathsResult, KShortestPaths, PathResult
from shared.settings import Settings
from shared.southbound import CncClient, PcaClient, SrPolicy, VpnService, southbound_clients

log = get_logger(__name__)


class GraphCache:
    """The knowledge graph, refreshed from CNC at most once per TTL and rebuilt on change."""

    def __init__(self, cnc: CncClient, pca: PcaClient, ttl_s: float):
        self.cnc = cnc
        self.pca = pca
        self.ttl_s = ttl_s
        self._graph: KnowledgeGraph | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._load: asyncio.Future[tuple[list[VpnService], list[SrPolicy]]] | None = None
        self._sla: asyncio.Future[list[str]] | None = None
        self.builds = 0
        self.load_reads = 0
        self.sla_reads = 0

    async def get(self, *, refresh: bool = False) -> KnowledgeGraph:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < self.ttl_s
            if self._graph is not None and fresh and not refresh:
                return self._graph
            topology = await self.cnc.topology()
            self._fetched_at = time.monotonic()
            if self._graph is None or self._graph.digest != fingerprint(topology):
                self._graph = KnowledgeGraph.build(topology)
                self.builds += 1
                log.info(
                    "knowledge graph built",
                    nodes=self._graph.graph.number_of_nodes(),
                    links=len(self._graph.links),
                )
            return self._graph

    async def load(self) -> tuple[list[VpnService], list[SrPolicy]]:
        """Services and SR policies as CNC has them now, for bandwidth accounting.

        Never cached: steering changes all the time. Requests that arrive while a read is
        under way share it (a burst of incidents reads once), so what they see is at most one
        read old.
        """
        if self._load is None:
            self.load_reads += 1
            self._load = asyncio.ensure_future(
                asyncio.gather(self.cnc.services(), self.cnc.sr_policies())
            )
            self._load.add_done_callback(self._loaded)
        services, policies = await asyncio.shield(self._load)
        return services, policies

    def _loaded(self, done: asyncio.Future[Any]) -> None:
        if self._load is done:
            self._load = None

    async def out_of_sla(self, links: list[str]) -> list[str]:
        """Links PCA measures beyond a threshold now: a protection path must not use them,
        whichever incident they belong to (concurrent incidents each avoid only their own).

        Read like the load: never kept, one read shared by the requests that wait for it.
        """
        if self._sla is None:
            self.sla_reads += 1
            self._sla = asyncio.ensure_future(self._read_sla(links))
            self._sla.add_done_callback(self._sla_read)
        bad: list[str] = await asyncio.shield(self._sla)
        return bad

    async def _read_sla(self, links: list[str]) -> list[str]:
        metrics, limits = await asyncio.gather(self.pca.link_metrics(links), self.pca.thresholds())
        return [name for name, m in metrics.items() if not m.within(limits)]

    def _sla_read(self, done: asyncio.Future[Any]) -> None:
        if self._sla is done:
            self._sla = None


async def _graph_for(request: ComputePath, ctx: TaskContext) -> KnowledgeGraph:
    """The cached graph, without the links out of SLA now, and with every link's current load
    when the request asks for bandwidth."""
    cache: GraphCache = ctx.state.graph
    settings: PathSettings = ctx.state.path_settings
    graph = await cache.get()
    if settings.avoid_out_of_sla:
        graph = graph.degraded(await cache.out_of_sla(list(graph.links)))
    if request.min_bandwidth_mbps is None:
        return graph
    services, policies = await cache.load()
    return graph.reserve(
        services,
        policies,
        carrying=request.carrying,
        reservable_share=settings.reservable_share,
    )


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """Open the CNC client and the graph cache for the app's lifetime."""
    settings: Settings = app.state.settings
    path_settings: PathSettings = app.state.path_settings
    async with southbound_clients(app):
        app.state.graph = GraphCache(
            app.state.cnc, app.state.pca, settings.scaled(path_settings.topology_ttl_s)
        )
        yield


spec = AgentSpec(
    name="path",
    title="Path Computation",
    description="Topology knowledge graph and constrained shortest paths",
    resources=_southbound,
)


@spec.task(
    "compute_path",
    ComputePath,
    "Shortest path avoiding links, nodes and SRLGs on a delay, TE, IGP or hop metric",
    tags=["path", "dijkstra"],
)
async def compute_path(payload: ComputePath, ctx: TaskContext) -> PathResult:
    graph = await _graph_for(payload, ctx)
    result = graph.shortest(payload)
    log.info(
        "path computed",
        incident_id=payload.incident_id,
        found=result.found,
        path=result.path,
        reason=result.reason,
    )
    return result


@spec.task(
    "k_shortest_paths",
    KShortestPaths,
    "Up to k loopless alternative paths under the same constraints (Yen)",
    tags=["path"],
)
async def k_shortest_paths(payload: KShortestPaths, ctx: TaskContext) -> KPathsResult:
    graph = await _graph_for(payload, ctx)
    return KPathsResult(paths=graph.k_shortest(payload, payload.k))


@spec.task("get_topology", GetTopology, "The topology knowledge graph", tags=["topology"])
async def get_topology(payload: GetTopology, ctx: TaskContext) -> dict[str, Any]:
    cache: GraphCache = ctx.state.graph
    graph = await cache.get(refresh=payload.refresh)
    return graph.summary()


def create_app(
    settings: Settings,
    *,
    path_settings: PathSettings | None = None,
    southbound_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC."""
    app = spec.create_app(settings)
    app.state.path_settings = path_settings or PathSettings()
    app.state.southbound_transport = southbound_transport
    return app

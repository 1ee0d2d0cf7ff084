"""Path Computation agent: a topology knowledge graph from CNC and constrained shortest paths.

The graph is cached for a short TTL (scaled by ``CXM_TIME_SCALE``); after that CNC is asked
again and, if the topology changed, only the difference is applied to the graph in place (a
link's delay, status or capacity rewrites its slot; a link or node that comes or goes adds or
drops its own): a 10,000-node graph is never rebuilt per request nor per change. Each link's
delay and load come from CNC's performance metrics, one keyed read per link direction: they are
kept for their own, longer TTL (``measurement_ttl_s``), and a refresh of the structure within
it reads only the links new to it. A request
for bandwidth also reads CNC's services, every time (steering changes all the time), to know
each link's load: each service's path is the one it rides now. "No path" is an answer, not an error:
``found=False`` with a reason, so the orchestrator can branch to escalation.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI

from services.path.graph import KnowledgeGraph, SlaBreach, committed_by_link, fingerprint
from services.path.settings import PathSettings
from shared.agent import AgentSpec, TaskContext
from shared.contracts import (
    COMPUTE_PATH,
    COMPUTE_PATHS,
    GET_TOPOLOGY,
    K_SHORTEST_PATHS,
    LINK_UTILISATION,
)
from shared.errors import MeshError
from shared.logs import get_logger
from shared.mesh import MeshClient
from shared.models import (
    ComputePath,
    ComputePaths,
    GetTopology,
    KPathsResult,
    KShortestPaths,
    LinkUtilisation,
    PathResult,
    PathsResult,
    TopologyView,
    UtilisationResult,
)
from shared.settings import Settings
from shared.southbound import (
    CncClient,
    PcaClient,
    SharedRead,
    Topology,
    VpnService,
    southbound_clients,
)

log = get_logger(__name__)


class GraphCache:
    """The knowledge graph, refreshed from CNC at most once per TTL and updated on change."""

    def __init__(
        self,
        cnc: CncClient,
        pca: PcaClient,
        ttl_s: float,
        *,
        measure: bool = True,
        measurement_ttl_s: float = 0.0,
        traffic: Callable[[float], Awaitable[UtilisationResult]] | None = None,
    ):
        self.cnc = cnc
        self.traffic = traffic
        """The traffic agent's ``link_utilisation``, given the oldest sample it may answer
        (seconds): every link's load and delay without reading them from CNC again. None,
        or the call failing, reads them from CNC here."""
        self.traffic_reads = 0
        self._sampled_at: datetime | None = None
        self._from_traffic: bool | None = None
        self.pca = pca
        self.ttl_s = ttl_s
        self.measurement_ttl_s = measurement_ttl_s
        """How long each link's delay and load are kept across structure refreshes (0: read
        with every refresh)."""
        self.measure = measure
        self._graph: KnowledgeGraph | None = None
        self._fetched_at = 0.0
        self._measured_at = -math.inf
        self._lock = asyncio.Lock()
        self.full_builds = 0
        self.updates = 0
        """Topology changes applied to the graph in place."""
        self.rates: dict[str, float] = {}
        """What each link carried (Mbps) at the last topology read (none when not
        ``measure``): as fresh as the graph. Kept beside it, not in it, so a rate that moves
        does not rewrite the graph's slots."""
        self.rated_with: dict[str, float] | None = None
        """What the services committed on each link (by ``link_key``) when ``rates`` were
        read (``placement``): their ratio outlives a steering made since, where the rates
        alone would count a moved service where it left (see ``KnowledgeGraph.reserve``)."""
        self.load = SharedRead(self.cnc.services)
        """Services as CNC has them now, each with the path it rides, for bandwidth accounting
        (steering changes all the time, so never kept)."""
        self.out_of_sla = SharedRead(self._read_sla)
        """Links PCA measures beyond a threshold now, and how far: every path avoids them when
        it can, whichever incident they belong to (concurrent incidents each ban only their
        own), and crosses the mildest when there is no other way."""

    @property
    def builds(self) -> int:
        """How many versions of the graph there have been: the first build, then one per
        change CNC reported (each applied in place, see ``updates``)."""
        return self.full_builds + self.updates

    @property
    def load_reads(self) -> int:
        return self.load.reads

    @property
    def sla_reads(self) -> int:
        return self.out_of_sla.reads

    async def get(self, *, refresh: bool = False) -> KnowledgeGraph:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < self.ttl_s
            if self._graph is not None and fresh and not refresh:
                return self._graph
            topology, rates, new = await self._measure(refresh=refresh)
            if new:
                # new rates: the placement they belong to is the next services read's
                self._measured_at = time.monotonic()
                self.rated_with = None
            self.rates = rates if self.measure else {}
            self._fetched_at = time.monotonic()
            digest = fingerprint(topology)
            if self._graph is None:
                self._graph = KnowledgeGraph.build(topology)
                self.full_builds += 1
                log.info(
                    "knowledge graph built",
                    nodes=len(self._graph.nodes),
                    links=len(self._graph.links),
                )
            elif self._graph.digest != digest and self._graph.update(topology, digest):
                self.updates += 1
                log.info("knowledge graph updated", links=len(self._graph.links))
            return self._graph

    async def _measure(self, *, refresh: bool) -> tuple[Topology, dict[str, float], bool]:
        """The topology with each link's delay, what each link carries (Mbps), and whether
        those measurements are new since the last call.

        From the traffic agent's last sample when it is young enough (``measurement_ttl_s``;
        a ``refresh`` wants one taken now): it reads every link's metrics on its own clock,
        so reading them here too would double two thousand keyed GETs on a 500-node network.
        Without the traffic agent (not configured, down, or failing), from CNC, keeping each
        direction's last answer for ``measurement_ttl_s``."""
        if self.traffic is not None:
            try:
                sample = await self.traffic(0.0 if refresh else self.measurement_ttl_s)
            except MeshError as exc:
                if self._from_traffic is not False:
                    log.warning(
                        "link loads from CNC: the traffic agent did not answer", error=str(exc)
                    )
                self._from_traffic = False
            else:
                if self._from_traffic is not True:
                    log.info("link loads from the traffic agent's samples")
                self._from_traffic = True
                self.traffic_reads += 1
                new = sample.sampled_at != self._sampled_at
                self._sampled_at = sample.sampled_at
                structure = await self.cnc.topology_structure()
                return (*sampled(structure, sample), new)
        reuse = not refresh and time.monotonic() - self._measured_at < self.measurement_ttl_s
        topology, rates = await self.cnc.measured_topology(reuse=reuse)
        self._sampled_at = None
        return topology, rates, not reuse

    def placement(self, services: list[VpnService]) -> dict[str, float]:
        """What the services committed per link when the rates were read: the first
        services read after them (the same request's, as a request refreshes the graph just
        before it reads the services), kept until the next rates."""
        if self.rated_with is None:
            self.rated_with = committed_by_link(services)
        return self.rated_with

    async def _read_sla(self) -> dict[str, SlaBreach]:
        # the graph the request just got: another get() could outlive a short TTL and read
        # the whole topology a second time for the same request
        links = list((self._graph or await self.get()).links)
        metrics, limits = await asyncio.gather(self.pca.link_metrics(links), self.pca.thresholds())
        breaches = {name: SlaBreach.of(name, m, limits) for name, m in metrics.items()}
        return {name: breach for name, breach in breaches.items() if breach is not None}


def sampled(structure: Topology, sample: UtilisationResult) -> tuple[Topology, dict[str, float]]:
    """The structure with each link's delay from the traffic agent's sample, and what each
    link carries: what :meth:`CncClient.measured_topology` gives from its own reads (the
    worse direction's delay, the busier direction's rate). A link the sample does not know
    yet (new since it was taken) has neither until the next one."""
    loads = sample.links
    links = [
        link.model_copy(update={"delay_ms": load.delay_ms if load else None})
        for link in structure.links
        for load in [loads.get(link.link_id)]
    ]
    rates = {name: load.rate_mbps for name, load in loads.items() if load.rate_mbps is not None}
    return Topology(nodes=structure.nodes, links=links), rates


async def _priced(ctx: TaskContext) -> KnowledgeGraph:
    """The cached graph, with the links out of SLA now priced in."""
    cache: GraphCache = ctx.state.graph
    graph = await cache.get()
    if ctx.state.path_settings.avoid_out_of_sla:
        graph = graph.degraded(await cache.out_of_sla())
    return graph


async def _graph_for(request: ComputePath, ctx: TaskContext) -> KnowledgeGraph:
    """The priced graph, with every link's current load when the request asks for bandwidth."""
    cache: GraphCache = ctx.state.graph
    settings: PathSettings = ctx.state.path_settings
    graph = await _priced(ctx)
    if request.min_bandwidth_mbps is None:
        return graph
    services = await cache.load()
    return graph.reserve(
        services,
        carrying=request.carrying,
        reserved=request.reserved_mbps,
        reservable_share=settings.reservable_share,
        rates=cache.rates,
        rated_with=cache.placement(services),
    )


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """Open the CNC client and the graph cache for the app's lifetime."""
    settings: Settings = app.state.settings
    path_settings: PathSettings = app.state.path_settings
    async with southbound_clients(app):
        app.state.graph = GraphCache(
            app.state.cnc,
            app.state.pca,
            settings.scaled(path_settings.topology_ttl_s),
            measure=path_settings.measured_load,
            measurement_ttl_s=max(
                settings.scaled(path_settings.measurement_ttl_s),
                path_settings.measurement_min_ttl_s,
            ),
            traffic=(
                _traffic_loads(app, path_settings.traffic_timeout_s)
                if path_settings.loads_from == "traffic"
                else None
            ),
        )
        yield


def _traffic_loads(
    app: FastAPI, timeout_s: float
) -> Callable[[float], Awaitable[UtilisationResult]]:
    """The traffic agent's sample, at most ``max_age_s`` old; tried once (CNC is the fallback,
    so a traffic agent that is down costs one refused connection, not the mesh's retries),
    and waited for as long as a read of every link takes (giving up sooner would read them
    all again here, while the traffic agent finishes the same read)."""
    mesh: MeshClient = app.state.mesh

    async def loads(max_age_s: float) -> UtilisationResult:
        request = LinkUtilisation(max_age_s=max_age_s)
        return await mesh.call(LINK_UTILISATION, request, retries=0, timeout=timeout_s)

    return loads


spec = AgentSpec(
    name="path",
    title="Path Computation",
    description="Topology knowledge graph and constrained shortest paths",
    resources=_southbound,
)


@spec.serve(COMPUTE_PATH)
async def compute_path(payload: ComputePath, ctx: TaskContext) -> PathResult:
    graph = await _graph_for(payload, ctx)
    result = graph.shortest(graph.sized(payload))
    log.info(
        "path computed",
        incident_id=payload.incident_id,
        found=result.found,
        path=result.path,
        out_of_sla=result.out_of_sla_links,
        reason=result.reason,
    )
    return result


@spec.serve(COMPUTE_PATHS)
async def compute_paths(payload: ComputePaths, ctx: TaskContext) -> PathsResult:
    graph = await _priced(ctx)
    if any(request.min_bandwidth_mbps is not None for request in payload.requests):
        services: list[VpnService] = await ctx.state.graph.load()
    else:
        services = []
    settings: PathSettings = ctx.state.path_settings
    results = graph.plan(
        payload.requests,
        services,
        reservable_share=settings.reservable_share,
        rates=ctx.state.graph.rates,
        rated_with=ctx.state.graph.placement(services) if services else None,
    )
    log.info(
        "paths computed",
        incident_id=payload.incident_id,
        requests=len(payload.requests),
        found=sum(result.found for result in results),
    )
    return PathsResult(results=results)


@spec.serve(K_SHORTEST_PATHS)
async def k_shortest_paths(payload: KShortestPaths, ctx: TaskContext) -> KPathsResult:
    graph = await _graph_for(payload, ctx)
    return KPathsResult(paths=graph.k_shortest(graph.sized(payload), payload.k))


@spec.serve(GET_TOPOLOGY)
async def get_topology(payload: GetTopology, ctx: TaskContext) -> TopologyView:
    cache: GraphCache = ctx.state.graph
    graph = await cache.get(refresh=payload.refresh)
    return TopologyView.model_validate(graph.summary())


def create_app(
    settings: Settings,
    *,
    path_settings: PathSettings | None = None,
    southbound_transport: httpx.AsyncBaseTransport | None = None,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC and
    ``mesh_transport`` to reach an in-process traffic agent."""
    app = spec.create_app(settings, mesh_transport=mesh_transport)
    app.state.path_settings = path_settings or PathSettings()
    app.state.southbound_transport = southbound_transport
    return app

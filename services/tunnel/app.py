"""Tunnel Provisioning agent: SR-MPLS, SRv6 and RSVP-TE protection tunnels via the CNC PCE.

Provisioning is idempotent per incident: the tunnel's identifiers are persisted before CNC is
called, and each attempt first asks CNC whether a policy with that path-name already exists,
so neither a retried task nor a replayed orchestrator node ever creates a second tunnel.
Transient CNC failures are retried with exponential backoff; after the last attempt the task
fails with ``tunnel_provision_failed`` (502), which the orchestrator escalates.

SR-MPLS and RSVP-TE policies follow the explicit path asked for. SRv6 policies are dynamic:
CNC's PCE computes their path (TE metric, avoiding links that are down), so after the create
the agent reads the policy back and fails the provisioning, naming the link, when that path
crosses one the request must avoid (``avoid_links``: the incident's degraded links); the
policy is then removed again. The tunnel answers with the path the policy really takes.

Steering gives the group's services the policy's color (``CncClient.map_services``, the
L3NM/L2NM TE-service mapping: CNC's automated steering then puts all of a service's traffic on
the policy); removal deletes those mappings (``unmap_services``) before the policy.

An incident has one policy per group of services, all provisioned and steered together, so
``provision_tunnels`` and ``steer_policies`` take every policy of a step in one task: what the
policies share (the incident's rows, CNC's topology and policies, the services' ends) is read
once, each policy makes its own CNC writes, and each is answered, or failed, in its place.
``provision_tunnel`` and ``steer_traffic`` (one policy, as outside A2A clients may still send
them) are the same code on a batch of one.

``reroute_tunnel`` moves a live tunnel onto a new path with CNC ``sr-policy-modify`` rather
than a second tunnel: the policy keeps its key and binding SID, so the traffic already
steered onto it (by color) follows without being moved. It retries the same way and fails
with ``tunnel_reroute_failed`` (502).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tunnel import store
from services.tunnel.settings import TunnelSettings
from shared.agent import AgentSpec, TaskContext
from shared.batch import each, failure, retry_transient, rounds
from shared.contracts import (
    DELETE_TUNNEL,
    PROVISION_TUNNEL,
    PROVISION_TUNNELS,
    REROUTE_TUNNEL,
    STEER_POLICIES,
    STEER_TRAFFIC,
)
from shared.errors import SouthboundError, TaskFailed
from shared.logs import get_logger
from shared.models import (
    DeleteTunnel,
    PolicyProvisioned,
    PolicySteered,
    ProvisionTunnel,
    ProvisionTunnels,
    ProvisionTunnelsResult,
    RerouteTunnel,
    SteerPolicies,
    SteerPoliciesResult,
    SteerTraffic,
    TrafficSteered,
    TunnelDeleted,
    TunnelRerouted,
    TunnelResult,
)
from shared.settings import Settings
from shared.southbound import (
    CncClient,
    ExplicitPolicy,
    SharedRead,
    SrPolicy,
    Topology,
    VpnService,
    link_key,
    southbound_clients,
)

log = get_logger(__name__)
T = TypeVar("T")

TE_PREFERENCE: tuple[str, ...] = ("sr-mpls", "srv6", "rsvp-te")
PROVISION_FAILED = "tunnel_provision_failed"
REROUTE_FAILED = "tunnel_reroute_failed"


@asynccontextmanager
async def _southbound(app: FastAPI) -> AsyncIterator[None]:
    """Open the CNC client for the app's lifetime; locks serialize work per policy.

    CNC's whole lists (topology, SR policies, services) are read through :class:`SharedRead`:
    an incident on a busy core link provisions and steers hundreds of policies at once, and
    each call reading every list for itself made that quadratic. What is configuration rather
    than state (the topology's structure, the services' ends) is also kept for a while
    (:class:`Kept`): each incident's burst read the whole topology again (issue 16).
    """
    app.state.alloc_lock = asyncio.Lock()
    app.state.locks = {}
    async with southbound_clients(app):
        cnc: CncClient = app.state.cnc
        settings: Settings = app.state.settings
        tunnel_settings: TunnelSettings = app.state.tunnel_settings
        # the structure only (nodes, links, TE capabilities, interfaces): a policy's hops
        # never need delays, and cnc.topology() adds one performance read per link
        # direction (58 % of tunnel's CPU on gabriel/200, issue 16)
        app.state.topology = Kept(
            cnc.topology_structure, ttl_s=settings.scaled(tunnel_settings.topology_ttl_s)
        )
        app.state.sr_policies = SharedRead(cnc.sr_policies)
        app.state.mappings = SharedRead(cnc.service_mappings)
        app.state.service_ends = ServiceEnds(
            cnc.services, ttl_s=settings.scaled(tunnel_settings.ends_ttl_s)
        )
        yield


spec = AgentSpec(
    name="tunnel",
    title="Tunnel Provisioning",
    description="SR-MPLS, SRv6 and RSVP-TE protection tunnels via the CNC PCE",
    migrations=store.MIGRATIONS,
    resources=_southbound,
)


@dataclass(frozen=True)
class ServiceRef:
    """What steering needs of a service: its ends and its model (L2NM or L3NM)."""

    head_end: str
    end_point: str
    service_type: str

    @property
    def ends(self) -> tuple[str, str]:
        return self.head_end, self.end_point


class Kept(Generic[T]):
    """A read served again for ``ttl_s`` after it was made, unless the caller finds it lacking.

    For what is configuration rather than state (a service's ends, which nodes and links exist
    and what they support): it changes when an operator changes the network, not with each
    incident. A caller passes ``accept``, what it needs of the kept value; a kept value that
    does not pass is read anew at once, so whatever CNC has added is seen by the first caller
    that asks about it, and only a removal waits out the TTL. Concurrent callers share one read
    (:class:`SharedRead`), and a read that completes never replaces a newer one.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._read = SharedRead(read)
        self._ttl_s = ttl_s
        self._clock = clock
        self._kept: tuple[float, T] | None = None

    @property
    def reads(self) -> int:
        """Reads made (tests: a burst shares one, the TTL spares the next)."""
        return self._read.reads

    async def __call__(self, accept: Callable[[T], bool] = lambda _: True) -> T:
        kept = self._kept
        if kept is not None and self._clock() - kept[0] <= self._ttl_s and accept(kept[1]):
            return kept[1]
        # Taken before the read, so its age counts from when it was asked for, not from its
        # answer (a caller that joined a read under way dates it at most one read late).
        asked = self._clock()
        value = await self._read()
        if self._kept is None or self._kept[0] <= asked:
            self._kept = (asked, value)
        return value


class ServiceEnds:
    """Each VPN service's ends and type as CNC has them, read at most once per TTL.

    A service's ends are its configuration (where its sites attach), not its state, so
    steering does not need a fresh read of every service per policy: the view is read again
    when it is older than ``ttl_s`` or asked about a service it has not seen.
    """

    def __init__(self, read: Callable[[], Awaitable[list[VpnService]]], *, ttl_s: float):
        async def refs() -> dict[str, ServiceRef]:
            return {
                s.vpn_id: ServiceRef(s.head_end, s.end_point, s.service_type) for s in await read()
            }

        self._refs = Kept(refs, ttl_s=ttl_s)

    async def of(self, ids: list[str]) -> dict[str, ServiceRef]:
        """The refs of those of ``ids`` that CNC knows."""
        refs = await self._refs(lambda known: all(sid in known for sid in ids))
        return {sid: refs[sid] for sid in ids if sid in refs}

    async def all(self) -> dict[str, ServiceRef]:
        """Every service CNC knows (read within the TTL)."""
        return dict(await self._refs())


# --- pure helpers ----------------------------------------------------------------------------


def choose_te_type(topology: Topology, path: list[str], wanted: str | None) -> str:
    """The technology every node on the path supports: the requested one, or the preferred.

    Raises ``TaskFailed`` naming the first node that cannot carry the tunnel.
    """
    caps = {node.node_id: set(node.te_capabilities) for node in topology.nodes}
    for node in path:
        if node not in caps:
            raise TaskFailed(f"node {node} is not in the CNC topology", code="unknown_node")
    candidates = [wanted] if wanted else list(TE_PREFERENCE)
    for te_type in candidates:
        if all(te_type in caps[node] for node in path):
            return te_type
    if wanted:
        lacking = next(node for node in path if wanted not in caps[node])
        raise TaskFailed(f"node {lacking} does not support {wanted}", code="te_unsupported")
    bare = [node for node in path if not caps[node] & set(TE_PREFERENCE)]
    if bare:
        raise TaskFailed(
            f"node {bare[0]} supports none of {', '.join(TE_PREFERENCE)}", code="te_unsupported"
        )
    support = "; ".join(f"{node}: {', '.join(sorted(caps[node]))}" for node in path)
    raise TaskFailed(
        f"no TE type common to every node of the path ({support})", code="te_unsupported"
    )


def explicit_hops(topology: Topology, path: list[str], te_type: str) -> list[str]:
    """The policy's hops after the head-end (node ids, ending with the end-point), once the
    path is checked: every hop a link, every SR-MPLS hop with a prefix SID. The client turns
    them into each API's hops (COE node SIDs and addresses, RSVP-TE addresses)."""
    nodes = {node.node_id: node for node in topology.nodes}
    adjacent = {frozenset((link.source, link.destination)) for link in topology.links}
    for u, v in itertools.pairwise(path):
        if frozenset((u, v)) not in adjacent:
            raise TaskFailed(f"path hop {u} → {v} is not a link in the topology", code="bad_path")
    for name in path[1:]:
        if te_type == "sr-mpls" and nodes[name].prefix_sid is None:
            raise TaskFailed(f"node {name} has no prefix SID for sr-mpls", code="te_unsupported")
    return list(path[1:])


def checked_path(topology: Topology, path: list[str], wanted: str | None) -> tuple[str, list[str]]:
    """The TE type (:func:`choose_te_type`) and the hops (:func:`explicit_hops`) of ``path``."""
    te_type = choose_te_type(topology, path, wanted)
    return te_type, explicit_hops(topology, path, te_type)


def carries(path: list[str], wanted: str | None) -> Callable[[Topology], bool]:
    """Whether a topology passes ``path`` (:func:`checked_path`): what a kept read must show
    before it may answer for CNC; one that refuses the path is read again before the refusal
    is believed."""

    def check(topology: Topology) -> bool:
        try:
            checked_path(topology, path, wanted)
        except TaskFailed:
            return False
        return True

    return check


def knows_links(names: list[str]) -> Callable[[Topology], bool]:
    """Whether a topology has every link of ``names`` (a kept read must, to place them)."""

    def check(topology: Topology) -> bool:
        known = {link_key(link.link_id) for link in topology.links}
        return all(link_key(name) in known for name in names)

    return check


def crossed_links(topology: Topology, path: list[str], avoid: list[str]) -> list[str]:
    """The links of ``avoid`` that ``path`` (node ids) crosses, in the path's order.

    A policy's path is known node by node, so a hop between two nodes crosses an avoided link
    joining them even when a parallel link joins them too (CNC does not say which it takes).
    """
    by_key = {link_key(link.link_id): link for link in topology.links}
    pairs: dict[frozenset[str], str] = {}
    for name in avoid:
        link = by_key.get(link_key(name))
        ends = (link.source, link.destination) if link else tuple(name.split("-", 1))
        pairs.setdefault(frozenset(ends), name)
    return [pairs[frozenset(hop)] for hop in itertools.pairwise(path) if frozenset(hop) in pairs]


def allocate(
    *,
    seq: int,
    taken_sids: set[int],
    taken_colors: set[int],
    settings: TunnelSettings,
) -> tuple[int, int]:
    """The first free binding SID and color at or above this tunnel's sequence number."""
    sid = settings.binding_sid_base + seq
    while sid in taken_sids:
        sid += 1
    color = settings.color_base + seq
    while color in taken_colors:
        color += 1
    return sid, color


async def retrying(
    op: Callable[[], Awaitable[T]], *, attempts: int, backoff_s: float, what: str
) -> T:
    """Run ``op``, retrying transient southbound failures with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except SouthboundError as exc:
            if not exc.transient or attempt == attempts:
                raise
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("CNC call failed, retrying", what=what, attempt=attempt, error=str(exc))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _result(row: dict[str, Any]) -> TunnelResult:
    return TunnelResult(
        tunnel_id=row["tunnel_id"],
        binding_sid=row["binding_sid"],
        te_type=row["te_type"],
        head_end=row["head_end"],
        end_point=row["end_point"],
        color=row["color"],
        path=list(row["path"]),
        state=row["state"],
        incident_id=row["incident_id"],
        hops=row["hops"],
    )


def _policy(row: dict[str, Any]) -> ExplicitPolicy:
    """The CNC policy a tunnel row stands for; create and modify send the same one."""
    return ExplicitPolicy(
        head_end=row["head_end"],
        end_point=row["end_point"],
        color=row["color"],
        path_name=row["tunnel_id"],
        binding_sid=row["binding_sid"],
        hops=row["hops"],
        description=f"CXM protection tunnel for {row['incident_id']}",
        te_type=row["te_type"],
    )


def _find(policies: list[SrPolicy], tunnel_id: str) -> SrPolicy | None:
    return next((p for p in policies if p.path_name == tunnel_id), None)


def _nodes_of(policy: SrPolicy) -> list[str]:
    """The policy's path as node ids from its head-end."""
    hops = list(policy.hops)
    return hops if hops[:1] == [policy.head_end] else [policy.head_end, *hops]


# --- handlers --------------------------------------------------------------------------------


def _lock(ctx: TaskContext, *key: str) -> asyncio.Lock:
    """One lock per policy (an incident's group of ends, or a tunnel id): a policy's
    operations never interleave, an incident's policies proceed side by side."""
    locks: dict[tuple[str, ...], asyncio.Lock] = ctx.state.locks
    return locks.setdefault(key, asyncio.Lock())


async def _policy_lock(ctx: TaskContext, incident_id: str, tunnel_id: str) -> asyncio.Lock:
    """The lock of the group the tunnel was provisioned for (its ends never change)."""
    row = await store.by_tunnel(ctx.engine, tunnel_id)
    if row is None:
        return _lock(ctx, incident_id, tunnel_id)
    return _lock(ctx, row["incident_id"], row["head_end"], row["end_point"])


def _tunnel_settings(ctx: TaskContext) -> TunnelSettings:
    settings: TunnelSettings = ctx.state.tunnel_settings
    return settings


async def _retried(ctx: TaskContext, op: Callable[[], Awaitable[T]], what: str) -> T:
    """:func:`retrying` with the agent's attempts and (time-scaled) backoff."""
    cfg = _tunnel_settings(ctx)
    return await retrying(
        op, attempts=cfg.attempts, backoff_s=ctx.settings.scaled(cfg.backoff_s), what=what
    )


@dataclass
class _Ask:
    """One request of a provisioning batch as it is worked on: the row it is served by, and
    what became of it (``error``: what its own ``provision_tunnel`` would have failed with)."""

    request: ProvisionTunnel
    row: dict[str, Any] | None = None
    result: TunnelResult | None = None
    error: TaskFailed | SouthboundError | None = None

    @property
    def ends(self) -> tuple[str, str]:
        return self.request.head_end, self.request.end_point


@asynccontextmanager
async def _locked(ctx: TaskContext, keys: Iterable[tuple[str, ...]]) -> AsyncIterator[None]:
    """Hold the locks of every policy of a batch, taken in one order (two batches never wait
    on each other crosswise; a single task holds one lock and waits for none)."""
    async with AsyncExitStack() as stack:
        for key in sorted(set(keys)):
            await stack.enter_async_context(_lock(ctx, *key))
        yield


@spec.serve(PROVISION_TUNNEL)
async def provision_tunnel(payload: ProvisionTunnel, ctx: TaskContext) -> TunnelResult:
    """One policy: a batch of one, its failure the task's (a CNC read that stayed
    unavailable fails it as ``tunnel_provision_failed``, as it always did)."""
    try:
        [ask] = await _provision(ctx, payload.incident_id, [payload])
    except SouthboundError as exc:
        raise TaskFailed(
            f"CNC topology unavailable: {exc}", code=PROVISION_FAILED, status=502
        ) from exc
    if ask.error is not None:
        raise ask.error
    assert ask.result is not None
    return ask.result


@spec.serve(PROVISION_TUNNELS)
async def provision_tunnels(payload: ProvisionTunnels, ctx: TaskContext) -> ProvisionTunnelsResult:
    """Every policy of the request: CNC's topology and policies read once for all that need
    creating, each created (or adopted) on its own; a policy that failed is reported in its
    place. A passing CNC failure of the shared read fails the task (503), to be retried whole:
    nothing was created yet, and what a retry finds up it answers without calling CNC."""
    asks = await _provision(ctx, payload.incident_id, payload.tunnels)
    return ProvisionTunnelsResult(
        tunnels=[
            PolicyProvisioned(
                head_end=a.request.head_end,
                end_point=a.request.end_point,
                result=a.result,
                error=None if a.error is None else failure(a.error),
            )
            for a in asks
        ]
    )


async def _provision(
    ctx: TaskContext, incident_id: str, requests: list[ProvisionTunnel]
) -> list[_Ask]:
    """Provision each request's policy, at most once per incident and pair of ends.

    Under the locks of every pair of ends: the incident's rows read once; a policy already up
    is answered from its row (no CNC call, so a replay writes nothing); the others need CNC's
    topology (new ones) and policies (whether an earlier attempt reached CNC), read once for
    the batch, and then each its own create, ``POLICIES_AT_ONCE`` at a time. A later request
    for ends already asked for answers as the first. Raises ``SouthboundError`` when the
    shared read failed for a passing reason after the agent's own retries.
    """
    asks = [_Ask(r) for r in requests]
    for ask in asks:
        if ask.request.path[0] != ask.request.head_end or ask.request.path[-1] != (
            ask.request.end_point
        ):
            ask.error = TaskFailed(
                "path must start at head_end and end at end_point", code="bad_path"
            )
    firsts: dict[tuple[str, str], _Ask] = {}
    for ask in asks:
        if ask.error is None:
            firsts.setdefault(ask.ends, ask)
    work = list(firsts.values())
    async with _locked(ctx, ((incident_id, *ends) for ends in firsts)):
        rows = {
            (r["head_end"], r["end_point"]): r
            for r in await store.by_incident(ctx.engine, incident_id)
        }
        for ask in work:
            ask.row = rows.get(ask.ends)
            if ask.row is not None and ask.row["state"] == "up":
                ask.result = _result(ask.row)
        todo = [a for a in work if a.result is None]
        if todo:
            policies = await _plan(ctx, todo)
            await each(todo, lambda ask: _create_asked(ctx, ask, policies))
    for ask in asks:
        first = firsts.get(ask.ends)
        if ask.error is None and first is not None and first is not ask:
            ask.result, ask.error = first.result, first.error
    log.info(
        "tunnels provisioned",
        incident_id=incident_id,
        policies=len(asks),
        already_up=len(work) - len(todo),
        failed=[f"{a.ends[0]}-{a.ends[1]}" for a in asks if a.error is not None],
    )
    return asks


async def _create_asked(ctx: TaskContext, ask: _Ask, policies: list[SrPolicy]) -> None:
    """Create (or adopt) one planned policy; ``policies`` is the batch's read, taken under
    the policy's lock, so the first attempt needs no read of its own."""
    assert ask.row is not None
    existing = _find(policies, ask.row["tunnel_id"])
    ask.result = await _create(ask.row, ctx, ask.request.avoid_links, first_look=(existing,))


async def _plan(ctx: TaskContext, asks: list[_Ask]) -> list[SrPolicy]:
    """Read what the asks share (CNC's policies; the topology when some are new), then, for
    each new one, validate the path, pick the TE type and allocate identifiers, persisting
    them all before CNC is called. Returns the policies read, for the creates' first look
    (our table was lost while CNC kept its policies). A path the topology refuses fails its
    ask alone."""
    cfg = _tunnel_settings(ctx)
    new = [a for a in asks if a.row is None]

    def carried(topology: Topology) -> bool:
        return all(carries(a.request.path, a.request.te_type)(topology) for a in new)

    async def read() -> tuple[Topology | None, list[SrPolicy]]:
        if not new:
            return None, await ctx.state.sr_policies()
        topology, policies = await asyncio.gather(
            ctx.state.topology(carried), ctx.state.sr_policies()
        )
        return topology, policies

    try:
        topology, policies = await _retried(ctx, read, "topology")
    except SouthboundError as exc:
        if exc.transient:
            raise
        raise TaskFailed(
            f"CNC topology unavailable: {exc}", code=PROVISION_FAILED, status=502
        ) from exc
    if not new:
        return policies
    assert topology is not None
    engine: AsyncEngine = ctx.engine
    async with ctx.state.alloc_lock:
        seq, sids, colors = await store.allocated(engine)
        sids |= {p.binding_sid for p in policies if p.binding_sid is not None}
        planned: list[dict[str, Any]] = []
        for ask in new:
            payload = ask.request
            try:
                te_type, hops = checked_path(topology, payload.path, payload.te_type)
            except TaskFailed as exc:
                ask.error = exc
                continue
            seq += 1
            cnc_colors = {p.color for p in policies if (p.head_end, p.end_point) == ask.ends}
            sid, color = allocate(
                seq=seq, taken_sids=sids, taken_colors=colors | cnc_colors, settings=cfg
            )
            if payload.color is not None:
                color = payload.color
            sids.add(sid)
            colors.add(color)
            ask.row = {
                "incident_id": payload.incident_id,
                "seq": seq,
                "tunnel_id": f"sr-policy-{payload.head_end}-{payload.end_point}-protect-{seq:03d}",
                "binding_sid": sid,
                "color": color,
                "head_end": payload.head_end,
                "end_point": payload.end_point,
                "te_type": te_type,
                "path": list(payload.path),
                "hops": hops,
                "state": "provisioning",
                "protection_pct": 0,
                "services": [],
                "attempts": 0,
            }
            planned.append(ask.row)
        await store.insert_many(engine, planned)
    return policies


async def _create(
    row: dict[str, Any],
    ctx: TaskContext,
    avoid: list[str],
    *,
    first_look: tuple[SrPolicy | None] | None = None,
) -> TunnelResult:
    """Create the policy in CNC unless it already exists there under this path-name.

    ``first_look`` is what the planning read already found under the name, so the first
    attempt does not read every policy again (per create, that made an incident with
    thousands of policies quadratic); later attempts look afresh. An SRv6 policy's path is
    the PCE's: it is read back and checked against ``avoid``."""
    cnc: CncClient = ctx.state.cnc
    attempts = 0

    async def attempt() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if first_look is not None and attempts == 1:
            existing = first_look[0]
        else:
            existing = _find(await ctx.state.sr_policies(), row["tunnel_id"])
        if existing is not None:
            # An earlier create reached CNC (its answer was lost, or our table was): adopt it
            # with the identifiers CNC actually holds rather than create a second one.
            if existing.binding_sid is not None:
                row["binding_sid"] = existing.binding_sid
            row["color"] = existing.color
            return {"state": "success", "message": "adopted the existing policy"}
        return await cnc.create_sr_policy(**_policy(row))

    try:
        outcome = await _retried(ctx, attempt, "sr-policy-create")
        if row["te_type"] == "srv6":
            await _check_dynamic_path(ctx, row, avoid)
    except SouthboundError as exc:
        await _failed(ctx, row, attempts, str(exc))
        raise TaskFailed(
            f"provisioning {row['tunnel_id']} failed after {attempts} attempt(s): {exc}",
            code=PROVISION_FAILED,
            status=502,
        ) from exc
    except TaskFailed as exc:
        await _failed(ctx, row, attempts, str(exc))
        raise
    await store.update(
        ctx.engine,
        row["tunnel_id"],
        state="up",
        attempts=attempts,
        binding_sid=row["binding_sid"],
        color=row["color"],
        path=row["path"],
        hops=row["hops"],
        last_error=None,
    )
    log.info(
        "tunnel provisioned",
        tunnel_id=row["tunnel_id"],
        binding_sid=row["binding_sid"],
        te_type=row["te_type"],
        path=row["path"],
        cnc_state=outcome.get("state"),
    )
    return _result({**row, "state": "up"})


async def _failed(ctx: TaskContext, row: dict[str, Any], attempts: int, error: str) -> None:
    await store.update(
        ctx.engine, row["tunnel_id"], state="failed", attempts=attempts, last_error=error
    )
    log.error("tunnel provisioning failed", tunnel_id=row["tunnel_id"], error=error)


async def _check_dynamic_path(ctx: TaskContext, row: dict[str, Any], avoid: list[str]) -> None:
    """Read a new dynamic (SRv6) policy back: keep the path CNC's PCE gave it in ``row``, or
    remove the policy and fail when that path crosses a link the request must avoid.

    Raises ``TaskFailed`` (``tunnel_provision_failed``, 502) naming the links; a southbound
    failure of the read or the removal propagates as ``SouthboundError``.
    """
    cnc: CncClient = ctx.state.cnc
    nodes, crossed = await _dynamic_path(ctx, row, avoid)
    if crossed:
        await _retried(
            ctx,
            lambda: cnc.delete_sr_policy(
                head_end=row["head_end"],
                end_point=row["end_point"],
                color=row["color"],
                te_type=row["te_type"],
                path_name=row["tunnel_id"],
            ),
            "sr-policy-delete",
        )
        raise TaskFailed(
            f"provisioning {row['tunnel_id']} failed: CNC's PCE routed the dynamic SRv6 policy "
            f"over {', '.join(crossed)} ({' -> '.join(nodes)}), which it must avoid; "
            "the policy was removed",
            code=PROVISION_FAILED,
            status=502,
        )
    row["path"] = nodes
    row["hops"] = nodes[1:]


async def _dynamic_path(
    ctx: TaskContext, row: dict[str, Any], avoid: list[str]
) -> tuple[list[str], list[str]]:
    """The path (node ids) CNC lists for the row's policy, and the links of ``avoid`` it
    crosses. A keyed read of CNC's operational list, not the shared read of all of it: a
    read in flight may predate the change."""
    cnc: CncClient = ctx.state.cnc
    policy = await _retried(
        ctx,
        lambda: cnc.sr_policy(
            head_end=row["head_end"], end_point=row["end_point"], color=row["color"]
        ),
        "sr-policy",
    )
    if policy is None:
        raise SouthboundError(f"CNC does not list {row['tunnel_id']} after changing it")
    nodes = _nodes_of(policy)
    topology = await _retried(ctx, lambda: ctx.state.topology(knows_links(avoid)), "topology")
    return nodes, crossed_links(topology, nodes, avoid)


async def _known(ctx: TaskContext, incident_id: str, tunnel_id: str) -> dict[str, Any]:
    row = await store.by_tunnel(ctx.engine, tunnel_id)
    if row is None or row["incident_id"] != incident_id:
        raise TaskFailed(
            f"no tunnel {tunnel_id} for incident {incident_id}", code="unknown_tunnel", status=404
        )
    return row


@dataclass
class _Steer:
    """One policy of a steering batch as it is worked on (``error``: what its own
    ``steer_traffic`` would have failed with)."""

    request: SteerTraffic
    row: dict[str, Any] | None = None
    result: TrafficSteered | None = None
    error: TaskFailed | SouthboundError | None = None


@spec.serve(STEER_TRAFFIC)
async def steer_traffic(payload: SteerTraffic, ctx: TaskContext) -> TrafficSteered:
    """Give the group's services the policy's color: all of their traffic rides it (a batch
    of one, its failure the task's)."""
    [part] = await _steer(ctx, payload.incident_id, [payload])
    if part.error is not None:
        raise part.error
    assert part.result is not None
    return part.result


@spec.serve(STEER_POLICIES)
async def steer_policies(payload: SteerPolicies, ctx: TaskContext) -> SteerPoliciesResult:
    """Every policy of the request steered, the services' ends looked up once; a policy that
    failed is reported in its place. A passing CNC failure fails the task (503), to be
    retried whole: steering says the same thing however often it is applied."""
    parts = await _steer(ctx, payload.incident_id, payload.policies)
    return SteerPoliciesResult(
        policies=[
            PolicySteered(
                tunnel_id=p.request.tunnel_id,
                result=p.result,
                error=None if p.error is None else failure(p.error),
            )
            for p in parts
        ]
    )


async def _steer(ctx: TaskContext, incident_id: str, requests: list[SteerTraffic]) -> list[_Steer]:
    """Steer each request's services onto its policy, under the locks of every policy.

    The incident's rows are read once (again once the locks are held: another task may have
    changed them meanwhile), the services' ends once (:class:`ServiceEnds`), and each policy
    then makes its own mapping write, ``POLICIES_AT_ONCE`` at a time (a policy named twice:
    one request after the other, as two tasks would)."""
    parts = [_Steer(r) for r in requests]

    def lock_key(tunnel_id: str, rows: dict[str, dict[str, Any]]) -> tuple[str, ...]:
        # the group's lock, as _policy_lock takes it (a policy's ends never change)
        row = rows.get(tunnel_id)
        if row is None:
            return incident_id, tunnel_id
        return row["incident_id"], row["head_end"], row["end_point"]

    def by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["tunnel_id"]: r for r in found}

    before = by_id(await store.by_incident(ctx.engine, incident_id))
    async with _locked(ctx, (lock_key(p.request.tunnel_id, before) for p in parts)):
        rows = by_id(await store.by_incident(ctx.engine, incident_id))
        for part in parts:
            tid = part.request.tunnel_id
            part.row = rows.get(tid)
            if part.row is None:
                part.error = TaskFailed(
                    f"no tunnel {tid} for incident {incident_id}",
                    code="unknown_tunnel",
                    status=404,
                )
            elif part.row["state"] != "up":
                part.error = TaskFailed(
                    f"tunnel {tid} is {part.row['state']}, not up", code="tunnel_not_up"
                )
        live = [p for p in parts if p.error is None]
        refs = await _service_refs(ctx, [p.request.service_ids for p in live])
        for batch in rounds(live, lambda p: p.request.tunnel_id):
            await each(batch, lambda part: _steer_one(ctx, part, refs))
    retry_transient(parts)
    log.info(
        "traffic steered",
        incident_id=incident_id,
        policies=len(parts),
        services=sum(len(p.result.services) for p in parts if p.result is not None),
        failed=[p.request.tunnel_id for p in parts if p.error is not None],
    )
    return parts


async def _service_refs(ctx: TaskContext, wanted: list[list[str]]) -> dict[str, ServiceRef]:
    """The ends of every service some policy of the batch names (one kept read at most, read
    anew when it lacks one of them), or of every service when some policy names none."""
    service_ends: ServiceEnds = ctx.state.service_ends
    if not wanted:
        return {}
    if any(not ids for ids in wanted):
        return await service_ends.all()
    return await service_ends.of([sid for ids in wanted for sid in ids])


async def _steer_one(ctx: TaskContext, part: _Steer, refs: dict[str, ServiceRef]) -> None:
    """One policy's mapping write and its row's record of what it carries."""
    cnc: CncClient = ctx.state.cnc
    row = part.row
    assert row is not None
    carried, not_carried = _carried(row, part.request.service_ids, refs)
    pairs = [(sid, ref.service_type) for sid, ref in carried.items()]
    await _retried(ctx, lambda: cnc.map_services(pairs, row["color"]), "map-services")
    services = list(carried)
    await store.update(ctx.engine, row["tunnel_id"], protection_pct=100, services=services)
    part.result = TrafficSteered(
        traffic_steered=True,
        tunnel_id=row["tunnel_id"],
        head_end=row["head_end"],
        end_point=row["end_point"],
        color=row["color"],
        binding_sid=row["binding_sid"],
        protection_pct=100,
        services=services,
        not_steered=not_carried,
        cnc={"te-service-mapping": {"color": row["color"], "vpn-ids": services}},
    )


def _carried(
    tunnel: dict[str, Any], wanted: list[str], refs: dict[str, ServiceRef]
) -> tuple[dict[str, ServiceRef], list[str]]:
    """Split the services into those this policy can carry and the rest (``refs``: the
    ends of at least every service wanted, of every service when none is).

    A policy is one-way, from its head-end to its end-point, and automated steering only puts
    a service on a policy towards its own end-point, so only services that run that way ride
    it; the reverse direction needs a policy of its own, headed at the other end. An empty
    request means every service between the policy's ends.
    """
    ends = (tunnel["head_end"], tunnel["end_point"])
    if wanted:
        carried = {sid: refs[sid] for sid in wanted if sid in refs and refs[sid].ends == ends}
    else:
        carried = {sid: ref for sid, ref in refs.items() if ref.ends == ends}
    if not carried:
        raise TaskFailed(
            f"none of the services can ride {tunnel['tunnel_id']} "
            f"({tunnel['head_end']} -> {tunnel['end_point']})",
            code="no_steerable_services",
        )
    return carried, [s for s in wanted if s not in carried]


async def _unmap(ctx: TaskContext, policy: SrPolicy, ids: list[str]) -> list[str]:
    """Delete the TE-service mappings of those of ``ids`` still mapped to ``policy``'s color.

    A service another incident has since mapped onto a policy of its own keeps that mapping.
    Returns the vpn-ids unmapped.
    """
    cnc: CncClient = ctx.state.cnc
    wanted = set(ids)
    # The mappings alone (the NSO intent): the folded services view would add CAT's lists,
    # the topology, every policy and every service's path, none of which this needs.
    mappings = await _retried(ctx, ctx.state.mappings, "service-mappings")
    ours = [s for s in mappings if s.vpn_id in wanted and s.mapped_color == policy.color]
    if ours:
        await _retried(ctx, lambda: cnc.unmap_services(ours), "unmap-services")
    return [s.vpn_id for s in ours]


@spec.serve(REROUTE_TUNNEL)
async def reroute_tunnel(payload: RerouteTunnel, ctx: TaskContext) -> TunnelRerouted:
    """Answer the tunnel as ``provision_tunnel`` does, plus ``rerouted`` and ``previous_path``.

    A replay finds the tunnel on the requested path already and answers without calling CNC;
    its ``previous_path`` is then that same path, since this call moved nothing.
    """
    cnc: CncClient = ctx.state.cnc
    async with await _policy_lock(ctx, payload.incident_id, payload.tunnel_id):
        row = await _known(ctx, payload.incident_id, payload.tunnel_id)
        if row["state"] != "up":
            raise TaskFailed(
                f"tunnel {payload.tunnel_id} is {row['state']}: only a live tunnel is rerouted",
                code="tunnel_not_up",
                status=409,
            )
        ends = (row["head_end"], row["end_point"])
        if (payload.path[0], payload.path[-1]) != ends:
            raise TaskFailed(
                f"the new path must run {ends[0]} -> {ends[1]} like {payload.tunnel_id}",
                code="bad_path",
            )
        previous = list(row["path"])
        if payload.path == previous:
            log.info("tunnel already on this path", tunnel_id=payload.tunnel_id)
            return _rerouted(row, previous)
        # The policy keeps its TE type, so every node of the new path must support it.
        try:
            topology = await _retried(
                ctx, lambda: ctx.state.topology(carries(payload.path, row["te_type"])), "topology"
            )
        except SouthboundError as exc:
            raise TaskFailed(
                f"CNC topology unavailable: {exc}", code=REROUTE_FAILED, status=502
            ) from exc
        te_type, hops = checked_path(topology, payload.path, row["te_type"])
        moved = {**row, "path": list(payload.path), "hops": hops}
        try:
            await _retried(ctx, lambda: cnc.modify_sr_policy(**_policy(moved)), "sr-policy-modify")
            if te_type == "srv6":
                # The PCE, not the request, routes an SRv6 policy: it must at least have left
                # the links the tunnel was moved off.
                left = [f"{u}-{v}" for u, v in itertools.pairwise(previous)]
                kept = {frozenset(hop) for hop in itertools.pairwise(payload.path)}
                off = [name for name in left if frozenset(name.split("-", 1)) not in kept]
                nodes, crossed = await _dynamic_path(ctx, moved, off)
                if crossed:
                    raise SouthboundError(
                        f"CNC's PCE keeps the dynamic SRv6 policy on {', '.join(crossed)} "
                        f"({' -> '.join(nodes)})"
                    )
                moved = {**moved, "path": nodes, "hops": nodes[1:]}
        except SouthboundError as exc:
            await store.update(ctx.engine, row["tunnel_id"], last_error=str(exc))
            log.error("tunnel reroute failed", tunnel_id=payload.tunnel_id, error=str(exc))
            raise TaskFailed(
                f"rerouting {payload.tunnel_id} onto {' -> '.join(payload.path)} failed: {exc}",
                code=REROUTE_FAILED,
                status=502,
            ) from exc
        await store.update(
            ctx.engine, row["tunnel_id"], path=moved["path"], hops=moved["hops"], last_error=None
        )
    log.info(
        "tunnel rerouted",
        tunnel_id=payload.tunnel_id,
        previous_path=previous,
        path=moved["path"],
    )
    return _rerouted(moved, previous)


def _rerouted(row: dict[str, Any], previous: list[str]) -> TunnelRerouted:
    return TunnelRerouted(**_result(row).model_dump(), rerouted=True, previous_path=previous)


@spec.serve(DELETE_TUNNEL)
async def delete_tunnel(payload: DeleteTunnel, ctx: TaskContext) -> TunnelDeleted:
    cnc: CncClient = ctx.state.cnc
    async with await _policy_lock(ctx, payload.incident_id, payload.tunnel_id):
        row = await store.by_tunnel(ctx.engine, payload.tunnel_id)
        if row is not None and row["state"] == "deleted":
            return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=True)
        policies = await _retried(ctx, ctx.state.sr_policies, "sr-policies")
        policy = _find(policies, payload.tunnel_id)
        if policy is not None:
            if row is not None and row["services"]:
                # Never delete a policy that still carries traffic: move it back first.
                await _unmap(ctx, policy, list(row["services"]))
            await _retried(
                ctx,
                lambda: cnc.delete_sr_policy(
                    head_end=policy.head_end,
                    end_point=policy.end_point,
                    color=policy.color,
                    te_type=policy.te_type or (row or {}).get("te_type") or "sr-mpls",
                    path_name=policy.path_name,
                ),
                "sr-policy-delete",
            )
        if row is not None:
            await store.update(ctx.engine, row["tunnel_id"], state="deleted", protection_pct=0)
    log.info("tunnel deleted", tunnel_id=payload.tunnel_id, was_present=policy is not None)
    return TunnelDeleted(deleted=True, tunnel_id=payload.tunnel_id, already_absent=policy is None)


def create_app(
    settings: Settings,
    *,
    tunnel_settings: TunnelSettings | None = None,
    southbound_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the agent; tests pass ``southbound_transport`` to reach an in-process CNC."""
    app = spec.create_app(settings)
    app.state.tunnel_settings = tunnel_settings or TunnelSettings()
    app.state.southbound_transport = southbound_transport
    return app

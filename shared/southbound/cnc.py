"""Crosswork Network Controller 7.x: the one client agents read the network through and
change it with.

Reads: the ``ietf-network-state`` topology with each link's delay and load from the
performance metrics, the SR-policy and RSVP-TE operational lists, and the L3/L2 VPN services.
Changes: SR policies through the COE operations (SR-MPLS, RSVP-TE) or the NSO proxy (SRv6),
and steering through the services' TE-service mapping. The pure parts live beside it
(:mod:`~shared.southbound.topology`, :mod:`~shared.southbound.policies`,
:mod:`~shared.southbound.vpn`); this module holds the login, the paths and the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Unpack
from urllib.parse import quote

import httpx
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from shared.errors import SouthboundError, SouthboundNotFound
from shared.inventory import InventoryEntry, ServiceInventory
from shared.logs import get_logger
from shared.southbound.http import YANG_JSON, HttpClient, as_float, raise_login, restconf_list
from shared.southbound.models import (
    ExplicitPolicy,
    Link,
    LinkInterface,
    LinkLoad,
    Node,
    ServiceMapping,
    SrPolicy,
    Topology,
    VpnService,
)
from shared.southbound.policies import (
    address,
    first_result,
    parse_policies,
    path_hops,
    rsvp_body,
    sr_mpls_body,
    srv6_body,
)
from shared.southbound.topology import TopologyIndex, fold_topology
from shared.southbound.vpn import (
    SERVICE_TYPES,
    TE_MAPPING,
    fold_mappings,
    fold_services,
    service_pairs,
    with_base_paths,
)

log = get_logger(__name__)

SSO_TICKETS = "/crosswork/sso/v1/tickets"
TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
NETWORKS = f"{TOPOLOGY}/ietf-network-state:networks"
LINK_PM = (
    f"{TOPOLOGY}/cisco-crosswork-performance-metrics:igp-links-performance-metrics/igp-link-pm="
)
SR_POLICIES = f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies"
RSVP_TUNNELS = f"{TOPOLOGY}/cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"
OPERATIONS = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS_MODULE = "cisco-crosswork-optimization-engine-sr-policy-operations"
RSVP_OPS_MODULE = "cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations"
INVENTORY = "/crosswork/nbi/cat-inventory/v1/restconf/data"
NSO = "/crosswork/proxy/nso/restconf/data"
SRV6_POLICY = f"{NSO}/cisco-sr-te-cfp:sr-te/cisco-sr-te-cfp-sr-policies:policies/policy="

PmRow = tuple[LinkInterface, dict[str, Any] | BaseException | None]
"""One direction of a link and its performance-metrics read (None: CNC has none)."""


# --- the SSO login's helpers ----------------------------------------------------------------


class _RedactTickets(logging.Filter):
    """Blanks CNC tickets in httpx's request log: the v1 SSO path carries the TGT, and httpx
    logs every request URL at INFO (``configure_logging`` quiets httpx, but a process that
    turns it up must still not log a credential)."""

    _TICKET = re.compile(r"(/sso/v\d+/tickets/)[^\s\"'?]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/tickets/" in message:
            record.msg, record.args = self._TICKET.sub(r"\1<redacted>", message), ()
        return True


def _redact_httpx_log() -> None:
    """Install :class:`_RedactTickets` on httpx's logger once (idempotent)."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTickets) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactTickets())


class _Refused(Exception):
    """CNC's SSO refused a ticket (401): the TGT is unknown or expired."""


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` of a JWT's payload (not verified: the client is not the verifier)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return float(exp) if isinstance(exp, int | float) else None
    except (ValueError, TypeError):
        return None


def _raise_login(response: httpx.Response) -> NoReturn:
    """A login answer that is neither a ticket nor a refused TGT (never quotes the ticket)."""
    raise_login("CNC", response, f": {response.text[:200]}")


def _delay_ms(pm: dict[str, Any]) -> float | None:
    """A performance-metrics read's delay (CNC sends µs)."""
    us = as_float(pm.get("delay"))
    return us / 1000 if us is not None else None


class CncClient(HttpClient):
    """Crosswork Network Controller 7.x: topology, SR policies, services and their steering.

    One login serves every caller: the JWT is renewed ``refresh_s`` before its ``exp`` (or at
    half its lifetime when that is shorter), and on a 403 the call re-logs in and retries once.
    ``aclose`` deletes the TGT (CNC caps sessions per user).

    With ``session_file``, the TGT is also kept in that file (owner-only) and taken up again by
    the next process: an agent killed with ``kill -9`` never deletes its TGT, and without the
    file every restart would open one more session until CNC refuses all logins ("Maximum
    sessions reached", for the TGT's lifetime of hours). The file is encrypted (Fernet) with a
    key derived from the CNC password, which is not in the data directory: a copy of the data
    directory alone does not give CNC access. A file that does not decrypt (the password
    changed) is ignored and the next login replaces it.
    """

    expired_status = 403
    """CNC's answer to an expired or unknown JWT (``Unauthorized request``)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | SecretStr,
        service_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        refresh_s: float = 300.0,
        concurrency: int = 16,
        inventory: ServiceInventory | None = None,
        page_size: int = 500,
        clock: Callable[[], float] = time.time,
        default_tier: str = "silver",
        default_bandwidth_mbps: float = 100.0,
        session_file: Path | None = None,
    ):
        super().__init__(
            "CNC", base_url, transport, timeout_s, username=username, password=password
        )
        self.session_file = session_file
        self._session_cipher = _session_cipher(password, username, base_url)
        _redact_httpx_log()
        host = self.http.base_url.host or "localhost"
        self.service_url = service_url or f"https://{host}:30603/app-dashboard"
        self.refresh_s = refresh_s
        self.page_size = page_size
        self.inventory = inventory
        self._default = InventoryEntry(
            vpn_id="", sla_tier=default_tier, bandwidth_mbps=default_bandwidth_mbps
        )
        self._clock = clock
        self._lock = asyncio.Lock()
        self._reads = asyncio.Semaphore(concurrency)
        self._tgt: str | None = None
        self._jwt: str | None = None
        self._renew_at = 0.0
        self._index: TopologyIndex | None = None
        self._pm: dict[str, dict[str, Any] | None] = {}
        """The last answer of each link direction's performance read (None: CNC had none),
        for a caller that reuses measurements (``measured_topology(reuse=True)``)."""
        self.pm_reads = 0
        """Keyed performance reads sent (tests and benches: what a reuse saved)."""
        self.logins = 0
        """TGTs obtained (tests and metrics: concurrent callers must share one)."""

    # --- login ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Delete the TGT (frees the session on CNC), then close the HTTP client."""
        try:
            if self._tgt is not None:
                tgt, self._tgt, self._jwt = self._tgt, None, None
                try:
                    response = await self.http.delete(f"{SSO_TICKETS}/{tgt}")
                    if response.status_code >= 400:
                        log.warning("CNC TGT delete refused", status=response.status_code)
                except httpx.HTTPError as exc:
                    log.warning("CNC TGT delete failed", error=type(exc).__name__)
                await self._keep_tgt(None)
        finally:
            await self.http.aclose()

    async def _kept_tgt(self) -> str | None:
        """The TGT a previous process of this agent left in ``session_file``, if any."""
        path = self.session_file
        if path is None:
            return None

        cipher = self._session_cipher

        def read() -> str | None:
            with suppress(OSError, InvalidToken):
                return cipher.decrypt(path.read_bytes().strip()).decode("utf-8") or None
            return None

        return await asyncio.to_thread(read)

    async def _keep_tgt(self, tgt: str | None) -> None:
        """Write ``tgt`` to ``session_file`` (owner-only), or remove the file for None."""
        path = self.session_file
        if path is None:
            return
        cipher = self._session_cipher

        def write() -> None:
            if tgt is None:
                with suppress(FileNotFoundError):
                    path.unlink()
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(cipher.encrypt(tgt.encode("utf-8")))
            os.replace(temp, path)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:  # the session still works; only a restart would open another
            log.warning("CNC session not kept", error=type(exc).__name__)

    async def _bearer(self) -> str:
        if self._jwt is None or self._clock() >= self._renew_at:
            async with self._lock:
                if self._jwt is None or self._clock() >= self._renew_at:
                    await self._login()
        assert self._jwt is not None
        return self._jwt

    async def _renew(self, stale: str) -> str:
        async with self._lock:
            if self._jwt is None or self._jwt == stale:
                await self._login()
        assert self._jwt is not None
        return self._jwt

    async def _login(self) -> None:
        """A JWT from the TGT, or from a new TGT when there is none or CNC no longer knows it.

        Called with the lock held.
        """
        jwt: str | None = None
        if self._tgt is None:
            self._tgt = await self._kept_tgt()  # a killed predecessor's session, still live?
        if self._tgt is not None:
            try:
                jwt = await self._service_ticket(self._tgt)
            except _Refused:
                self._tgt = None
        if jwt is None:
            self._tgt = await self._new_tgt()
            await self._keep_tgt(self._tgt)
            try:
                jwt = await self._service_ticket(self._tgt)
            except _Refused as exc:
                raise SouthboundError("CNC login: a fresh TGT was refused a JWT") from exc
        self._jwt = jwt
        now = self._clock()
        exp = _jwt_exp(jwt)
        if exp is None:
            self._renew_at = math.inf  # no exp to go by: renew only when CNC answers 403
        else:
            # Never renew sooner than half the lifetime, or a JWT that lives less than
            # refresh_s (a lab's short TTL) would be renewed on every call.
            self._renew_at = exp - min(self.refresh_s, max(exp - now, 0.0) / 2)

    async def _new_tgt(self) -> str:
        response = await self._send(
            "POST",
            SSO_TICKETS,
            "login",
            data=self._credentials(),
            headers={"Accept": "text/plain"},
        )
        if response.status_code not in (200, 201):
            _raise_login(response)
        tgt = response.text.strip()
        if not tgt:
            raise SouthboundError("CNC login: empty ticket-granting ticket")
        self.logins += 1
        log.info("CNC login", user=self._username)
        return tgt

    async def _service_ticket(self, tgt: str) -> str:
        response = await self._send(
            "POST",
            f"{SSO_TICKETS}/{tgt}",
            "service ticket",
            data={"service": self.service_url},
            headers={"Accept": "text/plain"},
        )
        if response.status_code in (401, 404):
            raise _Refused()
        if response.status_code not in (200, 201):
            _raise_login(response)
        jwt = response.text.strip()
        if not jwt:
            raise SouthboundError("CNC login: empty JWT")
        return jwt

    # --- calls ---------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        what: str | None = None,
    ) -> Any:
        """One authenticated call; the answer's JSON, or the error the answer means."""
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["content"] = _dumps(json)
            kwargs["headers"] = {"Content-Type": YANG_JSON}
        return await self._authorized(method, path, what or path, **kwargs)

    async def _read_or_empty(
        self, path: str, params: dict[str, Any] | None = None, *, what: str | None = None
    ) -> Any:
        """A GET whose "not found" is an empty answer (None)."""
        try:
            return await self._call("GET", path, params=params, what=what)
        except SouthboundNotFound:
            return None  # RESTCONF's answer for an empty list (409 data-missing, NSO's 404)

    # --- topology ------------------------------------------------------------------------

    async def _structure(self) -> TopologyIndex:
        """Nodes and links (no delay), paginated; the index serves address lookups after."""
        nodes: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        seen_nodes: set[str] = set()
        seen_links: set[str] = set()
        offset = 0
        while True:
            data = await self._read_or_empty(NETWORKS, {"limit": self.page_size, "offset": offset})
            longest = 0
            new = 0
            networks = (data or {}).get("ietf-network-state:networks", {}).get("network", [])
            for network in networks:
                page_nodes = network.get("node") or []
                page_links = network.get("ietf-network-topology-state:link") or []
                longest = max(longest, len(page_nodes), len(page_links))
                for node in page_nodes:
                    if str(node.get("node-id")) not in seen_nodes:
                        seen_nodes.add(str(node.get("node-id")))
                        nodes.append(node)
                        new += 1
                for link in page_links:
                    if str(link.get("link-id")) not in seen_links:
                        seen_links.add(str(link.get("link-id")))
                        links.append(link)
                        new += 1
            # A short page ends the list (so does none at all); so does a page with nothing
            # new (a server that ignores limit/offset would otherwise be read forever).
            if longest < self.page_size or new == 0:
                break
            offset += self.page_size
        index = TopologyIndex(fold_topology(nodes, links))
        self._index = index
        return index

    async def _known_index(self) -> TopologyIndex:
        return self._index if self._index is not None else await self._structure()

    async def _link_pm(self, cnc_link_id: str) -> dict[str, Any] | None:
        """One direction's performance metrics; None when CNC has none for it."""
        async with self._reads:
            self.pm_reads += 1
            data = await self._read_or_empty(
                LINK_PM + quote(cnc_link_id, safe=""), what=f"igp-link-pm {cnc_link_id}"
            )
        entries = (data or {}).get("cisco-crosswork-performance-metrics:igp-link-pm") or []
        pm = entries[0] if entries and isinstance(entries[0], dict) else None
        self._pm[cnc_link_id] = pm
        return pm

    async def _link_pms(self, topology: Topology, *, reuse: bool = False) -> dict[str, list[PmRow]]:
        """Every direction's performance metrics, ``concurrency`` reads at a time; with
        ``reuse``, only the directions never read (or whose last read failed) are read, and
        the others keep their last answer. Answers of directions no longer in the topology
        are forgotten either way."""
        pairs = [(link, i) for link in topology.links for i in link.interfaces]
        wanted = {i.cnc_link_id for _, i in pairs}
        self._pm = {key: pm for key, pm in self._pm.items() if key in wanted}
        kept = dict(self._pm) if reuse else {}
        to_read = sorted(wanted - kept.keys())
        answers = dict(
            zip(
                to_read,
                await asyncio.gather(*map(self._link_pm, to_read), return_exceptions=True),
                strict=True,
            )
        )
        for key, answer in answers.items():
            if isinstance(answer, BaseException):
                self._pm.pop(key, None)  # a failed read is read again, not its older answer
        out: dict[str, list[PmRow]] = {}
        for link, interface in pairs:
            key = interface.cnc_link_id
            answer = kept[key] if key in kept else answers[key]
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancellation and the like are not read failures
            out.setdefault(link.link_id, []).append((interface, answer))
        return out

    async def topology_structure(self) -> Topology:
        """Nodes and links without their delays: the paginated topology read alone, for a
        caller that needs who connects to whom (the correlator) and not one performance read
        per link direction (two thousand on a 500-node network)."""
        return (await self._structure()).topology

    async def topology(self) -> Topology:
        """Nodes and links, with each link's delay from its performance metrics (the worse
        direction; None when neither read answered)."""
        return (await self.measured_topology())[0]

    async def measured_topology(self, *, reuse: bool = False) -> tuple[Topology, dict[str, float]]:
        """:meth:`topology`, and what each link carries now (Mbps, the busier direction's
        ``bandwidth-utilization-kbps``; absent where neither read gave one), from the same
        performance reads: path computation counts what links carry, not only what the
        services on them committed.

        ``reuse`` reads the structure anew but keeps each link direction's last performance
        answer, reading only the directions never read: CNC serves performance metrics as
        keyed reads only (two per link, two thousand on a 500-node network), and collects
        them itself every few minutes, so a caller that refreshes the structure often reads
        the measurements on a slower clock of its own."""
        topology = (await self._structure()).topology
        pms = await self._link_pms(topology, reuse=reuse)
        failed = 0
        links: list[Link] = []
        rates: dict[str, float] = {}
        for link in topology.links:
            delays: list[float] = []
            for _, pm in pms.get(link.link_id, []):
                if isinstance(pm, BaseException):
                    failed += 1
                    continue
                if pm is None:
                    continue
                if (delay := _delay_ms(pm)) is not None:
                    delays.append(delay)
                if (kbps := as_float(pm.get("bandwidth-utilization-kbps"))) is not None:
                    rates[link.link_id] = max(rates.get(link.link_id, 0.0), kbps / 1000)
            links.append(link.model_copy(update={"delay_ms": max(delays) if delays else None}))
        if failed:
            log.warning("CNC link delay reads failed", failed=failed)
        return Topology(nodes=topology.nodes, links=links), rates

    async def link_utilisation(self) -> dict[str, LinkLoad]:
        """Per CXM link: the busier direction's rate, capacity, utilisation and delay now."""
        topology = (await self._structure()).topology
        pms = await self._link_pms(topology)
        errors = [pm for rows in pms.values() for _, pm in rows if isinstance(pm, Exception)]
        if errors and all(isinstance(pm, Exception) for rows in pms.values() for _, pm in rows):
            raise errors[0]  # nothing answered: say why rather than report no load
        now = datetime.now(UTC)
        out: dict[str, LinkLoad] = {}
        for link in topology.links:
            directions: dict[str, float] = {}
            delays: list[float] = []
            capacity: float | None = link.capacity_mbps
            for interface, pm in pms.get(link.link_id, []):
                if not isinstance(pm, dict):
                    continue
                rate = as_float(pm.get("bandwidth-utilization-kbps"))
                if rate is not None:
                    directions[f"{interface.source}-{interface.destination}"] = rate / 1000
                if (delay := _delay_ms(pm)) is not None:
                    delays.append(delay)
                if (kbps := as_float(pm.get("max-bandwidth-kbps"))) is not None:
                    capacity = min(capacity, kbps / 1000) if capacity else kbps / 1000
            busiest = max(directions.values()) if directions else None
            out[link.link_id] = LinkLoad(
                link_id=link.link_id,
                rate_mbps=busiest,
                capacity_mbps=capacity,
                utilisation_pct=(
                    busiest / capacity * 100 if busiest is not None and capacity else None
                ),
                delay_ms=max(delays) if delays else None,
                directions=directions,
                timestamp=now,
            )
        return out

    # --- SR policies: operational list ---------------------------------------------------

    async def _policy_lists(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        sr, rsvp = await asyncio.gather(
            self._read_or_empty(SR_POLICIES), self._read_or_empty(RSVP_TUNNELS)
        )
        return (
            restconf_list(sr, "cisco-crosswork-segment-routing-policy:sr-policies"),
            restconf_list(rsvp, "cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"),
        )

    async def sr_policies(self) -> list[SrPolicy]:
        """SR-MPLS, SRv6 and RSVP-TE policies as CNC sees them, with node-id hops."""
        (sr, rsvp), index = await asyncio.gather(self._policy_lists(), self._known_index())
        policies, unresolved = parse_policies(sr, rsvp, index)
        if unresolved:  # a node CXM has not seen yet: read the topology once more
            policies, _ = parse_policies(sr, rsvp, await self._structure())
        return policies

    async def sr_policy(self, *, head_end: str, end_point: str, color: int) -> SrPolicy | None:
        """One SR policy by key (the keyed read); None when CNC has none (409 data-missing)."""
        head, end = await self._nodes(head_end, end_point)
        key = ",".join(quote(str(v), safe="") for v in (address(head), address(end), color))
        data = await self._read_or_empty(f"{SR_POLICIES}/policy={key}", what="sr-policy")
        raw = restconf_list(
            data,
            "cisco-crosswork-segment-routing-policy:policy",
            "cisco-crosswork-segment-routing-policy:sr-policies",
            "policy",
        )
        policies, _ = parse_policies(raw, [], await self._known_index())
        return policies[0] if policies else None

    # --- SR policies: operations ---------------------------------------------------------

    async def _nodes(self, *node_ids: str) -> list[Node]:
        """The nodes named, from the last topology read (read again for an unknown one)."""
        index = await self._known_index()
        if any(n not in index.nodes for n in node_ids):
            index = await self._structure()
        missing = [n for n in node_ids if n not in index.nodes]
        if missing:
            raise SouthboundError(f"CNC has no node {', '.join(missing)}")
        return [index.nodes[n] for n in node_ids]

    async def _operation(
        self, module: str, op: str, list_key: str, entry: dict[str, Any], *, strict: bool = True
    ) -> dict[str, Any]:
        data = await self._call(
            "POST",
            f"{OPERATIONS}/{module}:{op}",
            json={"input": {list_key: [entry]}},
            what=op,
        )
        return first_result(data, module, op, strict=strict)

    async def _srv6_put(self, policy: ExplicitPolicy, *, dry_run: bool) -> dict[str, Any]:
        name = policy["path_name"]
        path = SRV6_POLICY + quote(name, safe="")
        head, end = await self._nodes(policy["head_end"], policy["end_point"])
        body = srv6_body(policy, head, end)
        if dry_run:
            data = await self._call(
                "PUT", path, json=body, params={"dry-run": "native"}, what="srv6 dry-run"
            )
            return {"state": "success", "path-name": name, **(data or {})}
        await self._call("PUT", path, json=body, what=f"srv6 policy {name}")
        return {
            "head-end": policy["head_end"],
            "end-point": policy["end_point"],
            "color": policy["color"],
            "path-name": name,
            "state": "success",
        }

    async def _apply(self, policy: ExplicitPolicy, kind: str) -> dict[str, Any]:
        te_type = policy.get("te_type") or "sr-mpls"
        if te_type == "srv6":
            return await self._srv6_put(policy, dry_run=kind == "dryrun")
        if te_type not in ("sr-mpls", "rsvp-te"):
            raise SouthboundError(f"unknown TE type {te_type!r}")
        head, end, *path = await self._nodes(
            policy["head_end"], policy["end_point"], *path_hops(policy)
        )
        if te_type == "rsvp-te":
            return await self._operation(
                RSVP_OPS_MODULE,
                f"rsvp-te-tunnel-{kind}",
                "rsvp-te-tunnels",
                rsvp_body(policy, head, end, path),
            )
        return await self._operation(
            SR_OPS_MODULE, f"sr-policy-{kind}", "sr-policies", sr_mpls_body(policy, head, end, path)
        )

    async def create_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """Create the policy: SR-MPLS through ``sr-policy-create`` (explicit path), SRv6
        through the NSO proxy (dynamic, PCE-computed), RSVP-TE through ``rsvp-te-tunnel-create``.
        Returns the operation's result; a ``failure`` raises :class:`SouthboundError`."""
        return await self._apply(policy, "create")

    async def modify_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """A new path for the policy with this key (CNC keeps its binding SID, so traffic
        steered onto it follows the new path without being moved)."""
        return await self._apply(policy, "modify")

    async def dry_run_sr_policy(self, **policy: Unpack[ExplicitPolicy]) -> dict[str, Any]:
        """Validate the policy without changing anything (``-dryrun``, ``?dry-run=native``)."""
        return await self._apply(policy, "dryrun")

    async def delete_sr_policy(
        self,
        *,
        head_end: str,
        end_point: str,
        color: int,
        te_type: str = "sr-mpls",
        path_name: str | None = None,
    ) -> dict[str, Any]:
        """Delete the policy; one that is already gone counts as deleted (idempotent cleanup).

        SRv6 and RSVP-TE are keyed by name: without ``path_name`` it is looked up in the
        operational list by (head-end, end-point, color).
        """
        gone = {
            "head-end": head_end,
            "end-point": end_point,
            "color": color,
            "state": "success",
            "message": "not found (already deleted)",
        }
        if te_type in ("srv6", "rsvp-te") and path_name is None:
            path_name = next(
                (
                    p.path_name
                    for p in await self.sr_policies()
                    if p.te_type == te_type
                    and (p.head_end, p.end_point) == (head_end, end_point)
                    and (te_type == "rsvp-te" or p.color == color)
                ),
                None,
            )
            if path_name is None:
                return gone
        if te_type == "srv6":
            assert path_name is not None
            try:
                await self._call(
                    "DELETE", SRV6_POLICY + quote(path_name, safe=""), what=f"srv6 {path_name}"
                )
            except SouthboundNotFound:
                return gone
            return {**gone, "path-name": path_name, "message": "deleted"}
        head, end = await self._nodes(head_end, end_point)
        if te_type == "rsvp-te":
            module, op, key = RSVP_OPS_MODULE, "rsvp-te-tunnel-delete", "rsvp-te-tunnels"
            entry: dict[str, Any] = {"head-end": address(head), "end-point": address(end)}
        elif te_type == "sr-mpls":
            module, op, key = SR_OPS_MODULE, "sr-policy-delete", "sr-policies"
            entry = {"head-end": address(head), "end-point": address(end), "color": color}
        else:
            raise SouthboundError(f"unknown TE type {te_type!r}")
        if path_name is not None:
            entry["path-name"] = path_name
        result = await self._operation(module, op, key, entry, strict=False)
        if result.get("state") == "failure":
            message = str(result.get("message") or "no message")
            # "SR policy not found in Config DB": already gone, which is what delete wants.
            if "not found" in message.lower():
                return {**result, "state": "success"}
            raise SouthboundError(f"CNC {op} failed: {message}")
        return result

    # --- services ------------------------------------------------------------------------

    async def _inventory_entries(self) -> dict[str, InventoryEntry]:
        return await self.inventory.entries() if self.inventory is not None else {}

    def _missing(self, vpn_id: str) -> InventoryEntry:
        """The entry of a service the inventory does not list (the defaults)."""
        if self.inventory is not None:
            return self.inventory.default(vpn_id)
        return self._default.model_copy(update={"vpn_id": vpn_id})

    async def services(self) -> list[VpnService]:
        """L3 and L2 VPN services: CAT's operational view (status, the policy ridden), the NSO
        intent (the ends, the TE-service mapping), the inventory (tier, bandwidth) and the
        policy's hops turned into links (IGP shortest path for a service with no policy), and
        each one's base path (``with_base_paths``: what it rides with no steering)."""
        reads: list[Awaitable[Any]] = []
        for kind in SERVICE_TYPES:
            model = f"ietf-{kind}-ntw:{kind}-ntw/vpn-services/vpn-service"
            reads.append(self._read_or_empty(f"{INVENTORY}/{model}", {"content": "nonconfig"}))
            reads.append(self._read_or_empty(f"{NSO}/{model}"))
        (*answers, index, (sr, rsvp), inventory) = await asyncio.gather(
            *reads, self._structure(), self._policy_lists(), self._inventory_entries()
        )
        policies, _ = parse_policies(sr, rsvp, index)
        out: list[VpnService] = []
        for i, kind in enumerate(SERVICE_TYPES):
            oper, config = answers[2 * i], answers[2 * i + 1]
            out.extend(fold_services(kind, oper, config, index, policies, inventory, self._missing))
        return with_base_paths(out, index)

    async def service_mappings(self) -> list[ServiceMapping]:
        """Each service's TE-service mapping, tier and bandwidth: the NSO intent of both
        kinds and the inventory, nothing else.

        What moving a share of a steered group needs (which color each service is mapped to),
        for a fraction of :meth:`services`: that also reads CAT's operational view, the
        topology and the policies, and folds every service's path (a cutover step of one
        policy on an 800-service network read and folded all of it)."""
        reads = [
            self._read_or_empty(f"{NSO}/ietf-{kind}-ntw:{kind}-ntw/vpn-services/vpn-service")
            for kind in SERVICE_TYPES
        ]
        *configs, inventory = await asyncio.gather(*reads, self._inventory_entries())
        out: list[ServiceMapping] = []
        for kind, config in zip(SERVICE_TYPES, configs, strict=True):
            out.extend(fold_mappings(kind, config, inventory, self._missing))
        return out

    # --- steering ------------------------------------------------------------------------

    async def map_services(
        self, services: Sequence[VpnService | ServiceMapping | tuple[str, str]], color: int
    ) -> None:
        """Give the services the color (TE-service mapping): one PATCH per L3NM/L2NM."""
        by_kind: dict[str, list[str]] = {}
        for vpn_id, kind in service_pairs(services):
            by_kind.setdefault(kind, []).append(vpn_id)
        for kind, ids in by_kind.items():
            body = {
                f"ietf-{kind}-ntw:vpn-services": {
                    "vpn-service": [
                        {
                            "vpn-id": vpn_id,
                            TE_MAPPING: {"te-mapping": {"sr-policy": {"color": color}}},
                        }
                        for vpn_id in ids
                    ]
                }
            }
            await self._call(
                "PATCH",
                f"{NSO}/ietf-{kind}-ntw:{kind}-ntw/vpn-services",
                json=body,
                what=f"{kind} te-service-mapping",
            )

    async def unmap_services(
        self, services: Sequence[VpnService | ServiceMapping | tuple[str, str]]
    ) -> None:
        """Delete the services' TE-service mapping (back to their own color), concurrently;
        a service without one is done already. Raises the first failure after all finished."""

        async def unmap(vpn_id: str, kind: str) -> None:
            path = (
                f"{NSO}/ietf-{kind}-ntw:{kind}-ntw/vpn-services/vpn-service="
                f"{quote(vpn_id, safe='')}/{TE_MAPPING}"
            )
            async with self._reads:
                with suppress(SouthboundNotFound):  # no mapping: nothing to undo
                    await self._call("DELETE", path, what=f"{kind} {vpn_id} te-service-mapping")

        results = await asyncio.gather(
            *(unmap(v, k) for v, k in service_pairs(services)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _session_cipher(password: str | SecretStr, username: str, base_url: str) -> Fernet:
    """The key of the session file: HKDF-SHA256 of the CNC password, bound to the user and the
    controller, so the TGT at rest is no easier to use than the password that obtained it."""
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"cxm-cnc-session-v1",
        info=f"{username}@{base_url}".encode(),
    ).derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))

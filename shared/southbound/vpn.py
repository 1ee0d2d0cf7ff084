"""L3 and L2 VPN services as CXM sees them, folded from four sources.

No one source has a whole service: CAT's operational view (``content=nonconfig``) has its
status and the policy it rides (the discovered underlay), the NSO intent (L3NM/L2NM, RFC
9182/9291) its ends and its TE-service mapping, the operators' inventory its tier and
bandwidth, and the topology the links the policy's hops cross (docs/southbound.md,
"Services").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from shared.inventory import InventoryEntry
from shared.logs import get_logger
from shared.southbound.http import as_int, restconf_list
from shared.southbound.models import ServiceMapping, SrPolicy, VpnService
from shared.southbound.topology import TopologyIndex

log = get_logger(__name__)

SERVICE_TYPES: tuple[str, ...] = ("l3vpn", "l2vpn")
"""CXM's ``VpnService.service_type`` values; each names its RFC 9182/9291 model."""

TE_MAPPING = "ietf-te-service-mapping:te-service-mapping"


class _Paths:
    """One fold's IGP paths and hop links, each worked out once per pair of nodes: every
    service's hops cross links that many others cross too, and each IGP path is a Dijkstra
    over the whole topology in Python (issue 16: a read of 2,000 services repeated both per
    service and per hop)."""

    def __init__(self, index: TopologyIndex):
        self.index = index
        self._igp: dict[tuple[str, str], list[str]] = {}
        self._hops: dict[tuple[str, str], list[str]] = {}

    def igp(self, head: str, end: str) -> list[str]:
        """:meth:`TopologyIndex.igp_path` (nodes; empty when there is none)."""
        key = (head, end)
        if key not in self._igp:
            self._igp[key] = self.index.igp_path(head, end) or []
        return self._igp[key]

    def links(self, hops: Sequence[str]) -> list[str]:
        """:meth:`TopologyIndex.links_of`, as a new list: what it gives each hop alone (the
        link, or a loose hop's IGP segment) is all it gives the sequence."""
        out: list[str] = []
        for pair in itertools.pairwise(hops):
            links = self._hops.get(pair)
            if links is None:
                links = self._hops[pair] = self.index.links_of(pair)
            out.extend(links)
        return out


def fold_services(
    kind: str,
    oper_data: Any,
    config_data: Any,
    index: TopologyIndex,
    policies: list[SrPolicy],
    inventory: dict[str, InventoryEntry],
    missing: Callable[[str], InventoryEntry],
) -> list[VpnService]:
    """One kind's services from its operational and config reads; ``missing`` gives the
    inventory entry of a service the inventory does not list. A service whose two ends
    cannot be told is skipped (logged)."""
    keys = (f"ietf-{kind}-ntw:vpn-service", f"ietf-{kind}-ntw:vpn-services", "vpn-service")
    oper = {str(s.get("vpn-id")): s for s in restconf_list(oper_data, *keys)}
    config = {str(s.get("vpn-id")): s for s in restconf_list(config_data, *keys)}
    by_key: dict[tuple[str, str, int | None], SrPolicy] = {
        (p.head_end, p.end_point, p.color): p for p in policies if p.te_type != "rsvp-te"
    }
    tunnels: dict[int | None, SrPolicy] = {
        p.tunnel_id: p for p in policies if p.tunnel_id is not None
    }
    paths = _Paths(index)
    out: list[VpnService] = []
    for vpn_id in [*oper, *(v for v in config if v not in oper)]:
        o, c = oper.get(vpn_id, {}), config.get(vpn_id, {})
        underlay = (o.get("underlay-transport") or {}).get(
            f"cisco-{kind}-ntw:discovered-underlay-transport"
        ) or {}
        refs = [r for r in underlay.get("sr-policy-ref") or [] if isinstance(r, dict)]
        tunnel_refs = [r for r in underlay.get("te-tunnel-ref") or [] if isinstance(r, dict)]
        vpn_nodes = [
            str(n["vpn-node-id"])
            for n in (c.get("vpn-nodes") or {}).get("vpn-node") or []
            if isinstance(n, dict) and n.get("vpn-node-id") is not None
        ]
        head = (
            index.node_of(refs[0].get("headend"))
            if refs
            else index.node_of(tunnel_refs[0].get("source"))
            if tunnel_refs
            else None
        ) or (vpn_nodes[0] if vpn_nodes else None)
        end = next((n for n in vpn_nodes if n != head), None)
        if end is None and refs:
            end = index.node_of(refs[0].get("endpoint"))
        if end is None and tunnel_refs:
            end = index.node_of(tunnel_refs[0].get("destination"))
        if head is None or end is None:
            log.warning("service without two ends skipped", vpn_id=vpn_id, kind=kind)
            continue
        color = int(refs[0]["color"]) if refs and refs[0].get("color") is not None else None
        hops: list[str] = []
        if refs:
            ridden = by_key.get((head, index.node_of(refs[0].get("endpoint")) or end, color))
            hops = ridden.hops if ridden is not None else []
        elif tunnel_refs:
            tunnel = tunnels.get(as_int(tunnel_refs[0].get("tunnel-id")))
            hops = tunnel.hops if tunnel is not None else []
        if len(hops) < 2:
            # No policy (or one CNC does not list): the service follows the IGP.
            hops = paths.igp(head, end)
        mapping = (c.get(TE_MAPPING) or {}).get("te-mapping") or {}
        mapped = as_int((mapping.get("sr-policy") or {}).get("color"))
        entry = inventory.get(vpn_id) or missing(vpn_id)
        status = str(((o.get("status") or {}).get("oper-status") or {}).get("status", ""))
        status = status.rsplit(":", 1)[-1]
        links = paths.links(hops)
        steered = bool(c.get(TE_MAPPING))
        out.append(
            VpnService(
                vpn_id=vpn_id,
                name=entry.name or c.get("vpn-description") or vpn_id,
                service_type=kind,
                sla_tier=entry.sla_tier,
                head_end=head,
                end_point=end,
                path=links,
                # unsteered, it rides its base now (:func:`with_base_paths` keeps it as is)
                base_path=[] if steered else list(links),
                bandwidth_mbps=entry.bandwidth_mbps,
                oper_status={"op-up": "up", "op-down": "down"}.get(status, "unknown"),
                color=color,
                steered=steered,
                mapped_color=mapped,
            )
        )
    return out


def fold_mappings(
    kind: str,
    config_data: Any,
    inventory: dict[str, InventoryEntry],
    missing: Callable[[str], InventoryEntry],
) -> list[ServiceMapping]:
    """One kind's TE-service mappings from its config (NSO intent) read, as
    :func:`fold_services` reads them, with each service's tier and bandwidth."""
    keys = (f"ietf-{kind}-ntw:vpn-service", f"ietf-{kind}-ntw:vpn-services", "vpn-service")
    out: list[ServiceMapping] = []
    for c in restconf_list(config_data, *keys):
        vpn_id = str(c.get("vpn-id"))
        mapping = (c.get(TE_MAPPING) or {}).get("te-mapping") or {}
        entry = inventory.get(vpn_id) or missing(vpn_id)
        out.append(
            ServiceMapping(
                vpn_id=vpn_id,
                service_type=kind,
                sla_tier=entry.sla_tier,
                bandwidth_mbps=entry.bandwidth_mbps,
                steered=bool(c.get(TE_MAPPING)),
                mapped_color=as_int((mapping.get("sr-policy") or {}).get("color")),
            )
        )
    return out


def with_base_paths(services: list[VpnService], index: TopologyIndex) -> list[VpnService]:
    """Each service with ``base_path``: the links it crosses with no steering.

    A service without a TE-service mapping rides its base now (its ODN policy, or the IGP):
    its path is its base. A steered one's ODN path is not in its reads (its underlay names the
    policy it was steered onto), so it takes the path of an unsteered service with the same
    ends and tier (ODN instantiates one policy per ends and color, the color by tier), else the
    IGP path between its ends. That last guess can differ from the real ODN path (equal-cost
    IGP paths, a delay-optimised ODN): docs/proactive.md, "Native load".
    """
    siblings: dict[tuple[str, str, str], list[str]] = {}
    for s in services:
        if not s.steered and s.path:
            siblings.setdefault((s.head_end, s.end_point, s.sla_tier), list(s.path))
    paths = _Paths(index)
    out = []
    for s in services:
        if not s.steered:
            if s.base_path == s.path:  # folded with its base already: no copy to make
                out.append(s)
                continue
            base = list(s.path)
        else:
            base = siblings.get((s.head_end, s.end_point, s.sla_tier)) or paths.links(
                paths.igp(s.head_end, s.end_point)
            )
        out.append(s.model_copy(update={"base_path": base}))
    return out


def service_pairs(
    services: Sequence[VpnService | ServiceMapping | tuple[str, str]],
) -> list[tuple[str, str]]:
    """``(vpn-id, service type)`` of each service; an unknown type raises ``ValueError``."""
    out: list[tuple[str, str]] = []
    for service in services:
        if isinstance(service, VpnService | ServiceMapping):
            out.append((service.vpn_id, service.service_type))
        else:
            vpn_id, kind = service
            out.append((vpn_id, kind))
    for _, kind in out:
        if kind not in SERVICE_TYPES:
            raise ValueError(f"unknown service type {kind!r}")
    return out

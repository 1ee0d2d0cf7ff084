"""How much of a steered group stays on the protection policy as traffic moves home.

CXM moves whole services, never a share of one, so a cutover percentage becomes a set of
services (docs/southbound.md, "Services"). Pure: :meth:`CncClient.map_services` and
``unmap_services`` apply the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.models import TIERS
from shared.southbound.models import ServiceMapping, VpnService


def steering_share(services: Sequence[VpnService | ServiceMapping], pct: float) -> list[str]:
    """The vpn-ids of a group that stay on the protection policy at ``pct`` percent.

    Whole services move, so the kept set is the smallest prefix, highest tier first and then
    by vpn-id, whose bandwidth is at least ``pct`` % of the group's: as ``pct`` falls, bronze
    and silver go home first and platinum last. 100 keeps all, 0 none.
    """
    if pct <= 0:
        return []
    rank = {tier: i for i, tier in enumerate(TIERS)}  # platinum 0 … bronze 3
    ordered = sorted(services, key=lambda s: (rank.get(s.sla_tier, len(TIERS)), s.vpn_id))
    if pct >= 100:
        return [s.vpn_id for s in ordered]
    total = sum(max(s.bandwidth_mbps, 0.0) for s in ordered)
    kept: list[str] = []
    carried = 0.0
    for service in ordered:
        if carried * 100 >= pct * total:
            break
        kept.append(service.vpn_id)
        carried += max(service.bandwidth_mbps, 0.0)
    return kept

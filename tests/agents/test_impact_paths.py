"""The services' paths as the impact (and tunnel) agents read them: one fold works out each IGP
path and each hop's links once (issue 16), and what it shares must never leak from one service
or direction into another."""

from __future__ import annotations

from typing import Any

from shared.inventory import InventoryEntry
from shared.southbound import Link, Node, SrPolicy, Topology, VpnService
from shared.southbound.topology import TopologyIndex
from shared.southbound.vpn import fold_services, with_base_paths

# a -- m -- z and a -- n -- z, every link the same metric: both ways round tie, and the IGP
# takes the lower node-id sequence, through m in either direction.
SQUARE = TopologyIndex(
    Topology(
        nodes=[Node(node_id=name) for name in ("a", "m", "n", "z")],
        links=[
            Link(link_id=f"{u}-{v}", source=u, destination=v, igp_metric=10)
            for u, v in (("a", "m"), ("m", "z"), ("a", "n"), ("n", "z"))
        ],
    )
)


def _service(vpn_id: str, head: str, end: str, path: list[str], *, steered: bool) -> VpnService:
    return VpnService(
        vpn_id=vpn_id,
        name=vpn_id,
        service_type="l3vpn",
        sla_tier="gold",
        head_end=head,
        end_point=end,
        path=path,
        base_path=[] if steered else list(path),
        steered=steered,
    )


def test_each_direction_gets_its_own_igp_base_path() -> None:
    """Steered services with no unsteered sibling take the IGP path between their ends: the
    second service of each direction is served from the fold's memo, which must be keyed by
    direction (a -> z crosses a-m first, z -> a crosses m-z first)."""
    tunnel = ["a-n", "n-z"]
    services = [
        _service("vpn-1", "a", "z", tunnel, steered=True),
        _service("vpn-2", "z", "a", list(reversed(tunnel)), steered=True),
        _service("vpn-3", "a", "z", tunnel, steered=True),
        _service("vpn-4", "z", "a", list(reversed(tunnel)), steered=True),
    ]
    based = {s.vpn_id: s.base_path for s in with_base_paths(services, SQUARE)}
    assert based == {
        "vpn-1": ["a-m", "m-z"],
        "vpn-2": ["m-z", "a-m"],
        "vpn-3": ["a-m", "m-z"],
        "vpn-4": ["m-z", "a-m"],
    }


def _entry(vpn_id: str) -> InventoryEntry:
    return InventoryEntry(vpn_id=vpn_id, sla_tier="gold", bandwidth_mbps=100.0)


def _oper_and_config(*services: tuple[str, str, str, int]) -> tuple[Any, Any]:
    """CAT's operational list (each service on the policy of its color) and the NSO intent."""
    oper = [
        {
            "vpn-id": vpn_id,
            "underlay-transport": {
                "cisco-l3vpn-ntw:discovered-underlay-transport": {
                    "sr-policy-ref": [{"headend": head, "endpoint": end, "color": color}]
                }
            },
        }
        for vpn_id, head, end, color in services
    ]
    config = [
        {"vpn-id": vpn_id, "vpn-nodes": {"vpn-node": [{"vpn-node-id": head}, {"vpn-node-id": end}]}}
        for vpn_id, head, end, _ in services
    ]
    key = "ietf-l3vpn-ntw:vpn-services"
    return {key: {"vpn-service": oper}}, {key: {"vpn-service": config}}


def test_loose_hops_fold_into_links_in_each_services_direction() -> None:
    """Policies of one node SID (a loose hop) follow the IGP from their head-end: the fold
    works each hop out once, and the reverse hop is another one."""
    policies = [
        SrPolicy(head_end="a", end_point="z", color=101, hops=["a", "z"]),
        SrPolicy(head_end="z", end_point="a", color=102, hops=["z", "a"]),
        SrPolicy(head_end="a", end_point="z", color=103, hops=["a", "n", "z"]),
    ]
    oper, config = _oper_and_config(
        ("vpn-1", "a", "z", 101),
        ("vpn-2", "z", "a", 102),
        ("vpn-3", "a", "z", 101),
        ("vpn-4", "z", "a", 102),
        ("vpn-5", "a", "z", 103),
    )
    folded = fold_services("l3vpn", oper, config, SQUARE, policies, {}, _entry)
    paths = {s.vpn_id: s.path for s in folded}
    assert paths == {
        "vpn-1": ["a-m", "m-z"],
        "vpn-2": ["m-z", "a-m"],
        "vpn-3": ["a-m", "m-z"],
        "vpn-4": ["m-z", "a-m"],
        "vpn-5": ["a-n", "n-z"],
    }
    # unsteered: each rides its base, and with_base_paths leaves them as they are
    assert all(s.base_path == s.path for s in folded)
    assert with_base_paths(folded, SQUARE) == folded
    folded[0].path.append("x")  # one service's list is its own
    assert folded[2].path == folded[2].base_path == ["a-m", "m-z"]

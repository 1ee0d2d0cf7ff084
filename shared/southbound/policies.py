"""SR policies between CXM and CNC: the operational lists read as :class:`SrPolicy`, and the
bodies of the create, modify and dry-run calls built from an :class:`ExplicitPolicy`.

Pure: the client (:mod:`shared.southbound.cnc`) resolves node ids against the topology and
sends; here is only what CNC's SR-policy and RSVP-TE trees, the COE operations and the NSO
SRv6 model (docs/southbound.md, "SR policies") look like.
"""

from __future__ import annotations

from typing import Any

from shared.errors import SouthboundError
from shared.southbound.http import as_int
from shared.southbound.models import ExplicitPolicy, Node, SrPolicy
from shared.southbound.topology import TopologyIndex

# What CXM asks of an SRv6 policy (docs/southbound.md, "SR policies"): a PCE-computed dynamic
# path on the TE metric, flex-algo 128 SIDs, from the default locator. With ``srv6`` CNC refuses
# explicit paths, binding SIDs and bandwidth, so none of those are sent.
SRV6_PREFERENCE = 100
SRV6_SID_ALGORITHM = 128
SRV6_LOCATOR = "ALGO0"

# RSVP-TE tunnels CXM creates signal no bandwidth (CXM accounts for bandwidth itself) and use
# the lowest priorities, so they never pre-empt the operator's own tunnels.
RSVP_PRIORITY = 7


# --- reading: the operational lists ---------------------------------------------------------


def parse_policies(
    sr: list[dict[str, Any]], rsvp: list[dict[str, Any]], index: TopologyIndex
) -> tuple[list[SrPolicy], bool]:
    """The operational lists as :class:`SrPolicy`; the flag says an address was unknown."""
    unresolved = False

    def node(value: Any) -> str:
        nonlocal unresolved
        found = index.node_of(value)
        if found is None:
            unresolved = True
            return str(value)
        return found

    def hops_of(head: str, raw_hops: list[dict[str, Any]]) -> list[str]:
        nonlocal unresolved
        hops: list[str] = []
        for hop in raw_hops:
            found = index.hop_node(hop)
            if found is None:
                unresolved = True
                found = str(hop.get("local-ip-addr") or hop.get("label"))
            hops.append(found)
        return hops if hops and hops[0] == head else [head, *hops]

    def state(raw: dict[str, Any]) -> str:
        up = str(raw.get("oper-state", "")).upper() == "UP"
        return "up" if up and str(raw.get("admin-state", "UP")).upper() == "UP" else "down"

    out: list[SrPolicy] = []
    for raw in sr:
        details = raw.get("policy-details") or {}
        paths = [p for p in details.get("path") or [] if isinstance(p, dict)]
        # The active candidate path is the one with the highest preference.
        path = max(paths, key=lambda p: as_int(p.get("preference")) or 0) if paths else {}
        raw_hops = [h for h in path.get("hop") or [] if isinstance(h, dict)]
        srv6 = details.get("srv6-binding-sid") is not None or any(
            str(h.get("type", "")).startswith("srv6") for h in raw_hops
        )
        head = node(raw.get("headend"))
        out.append(
            SrPolicy(
                head_end=head,
                end_point=node(raw.get("endpoint")),
                color=int(raw.get("color") or 0),
                path_name=str(path.get("path-name") or ""),
                binding_sid=as_int(details.get("binding-sid")),
                te_type="srv6" if srv6 else "sr-mpls",
                hops=hops_of(head, raw_hops),
                state=state(raw),
            )
        )
    for raw in rsvp:
        head = node(raw.get("headend"))
        out.append(
            SrPolicy(
                head_end=head,
                end_point=node(raw.get("endpoint")),
                color=0,
                path_name=str(raw.get("path-name") or ""),
                te_type="rsvp-te",
                hops=hops_of(head, [h for h in raw.get("hop") or [] if isinstance(h, dict)]),
                state=state(raw),
                tunnel_id=as_int(raw.get("tunnel-id")),
            )
        )
    return out, unresolved


def first_result(data: Any, module: str, op: str, *, strict: bool = True) -> dict[str, Any]:
    """The one result of an operation (qualified or plain ``output``); ``failure`` raises
    unless ``strict`` is off (delete judges its own failures)."""
    data = data if isinstance(data, dict) else {}
    output = data.get(f"{module}:output") or data.get("output") or {}
    results = output.get("results") if isinstance(output, dict) else None
    if not results:
        raise SouthboundError(f"CNC {op}: the answer has no results")
    result: dict[str, Any] = dict(results[0])
    for key, value in output.items():  # dry-run: igp-route, segment-list-hops beside results
        if key != "results":
            result.setdefault(key, value)
    if strict and result.get("state") == "failure":
        raise SouthboundError(f"CNC {op} failed: {result.get('message') or 'no message'}")
    return result


# --- writing: operation bodies --------------------------------------------------------------


def address(node: Node) -> str:
    """The router-id CNC's operations name a node by."""
    address = node.loopback or node.ipv6_router_id
    if address is None:
        raise SouthboundError(f"node {node.node_id} has no TE router-id")
    return address


def path_hops(policy: ExplicitPolicy) -> list[str]:
    """The policy's hops after the head-end, ending at the end-point."""
    hops = list(policy["hops"])
    if hops and hops[0] == policy["head_end"]:
        hops = hops[1:]
    if not hops or hops[-1] != policy["end_point"]:
        hops.append(policy["end_point"])
    return hops


def _description(policy: ExplicitPolicy) -> str:
    return policy.get("description") or f"CXM {policy['path_name']}"


def sr_mpls_body(policy: ExplicitPolicy, head: Node, end: Node, path: list[Node]) -> dict[str, Any]:
    """One ``sr-policies`` entry of ``sr-policy-create``/``-modify``/``-dryrun``: an explicit
    path of node SIDs."""
    hops = []
    for step, node in enumerate(path, start=1):
        if node.loopback is None or node.prefix_sid is None:
            raise SouthboundError(f"node {node.node_id} has no SR-MPLS router-id and SID")
        hops.append(
            {
                "step": step,
                "hop": {"node-ipv4-address": node.loopback, "node-ipv4-sid": node.prefix_sid},
            }
        )
    body: dict[str, Any] = {
        "head-end": address(head),
        "end-point": address(end),
        "color": policy["color"],
        "path-name": policy["path_name"],
        "description": _description(policy),
    }
    if policy.get("binding_sid") is not None:
        body["binding-sid"] = policy.get("binding_sid")
    body["profile-id"] = 0
    body["sr-policy-path"] = {"hops": hops}  # the YANG choice, sent flat
    return body


def rsvp_body(policy: ExplicitPolicy, head: Node, end: Node, path: list[Node]) -> dict[str, Any]:
    """One ``rsvp-te-tunnels`` entry of ``rsvp-te-tunnel-create``/``-modify``/``-dryrun``."""
    return {
        "head-end": address(head),
        "end-point": address(end),
        "path-name": policy["path_name"],
        "description": _description(policy),
        "signaled-bandwidth": 0,
        "setup-priority": RSVP_PRIORITY,
        "hold-priority": RSVP_PRIORITY,
        "rsvp-te-tunnel-path": {
            "hops": [
                {"step": step, "hop": {"node-ipv4-address": address(node)}}
                for step, node in enumerate(path, start=1)
            ]
        },
    }


def srv6_body(policy: ExplicitPolicy, head: Node, end: Node) -> dict[str, Any]:
    """The NSO ``cisco-sr-te-cfp`` policy: dynamic, PCE-computed (no hops, no binding SID)."""
    return {
        "cisco-sr-te-cfp-sr-policies:policy": [
            {
                "name": policy["path_name"],
                "head-end": [{"name": head.node_id}],  # NSO device name
                "tail-end": end.loopback or address(end),
                "color": policy["color"],
                "path": [
                    {
                        "preference": SRV6_PREFERENCE,
                        "dynamic": {
                            "metric-type": "te",
                            "pce": {},
                            "constraints": {"segments": {"sid-algorithm": SRV6_SID_ALGORITHM}},
                        },
                    }
                ],
                "srv6": {"locator": {"locator-name": SRV6_LOCATOR}},
            }
        ]
    }

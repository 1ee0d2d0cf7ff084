"""What protects an incident's traffic: its policies (tunnels), the protection path and the
tunnels left up.

IO keeps these as fields of the ticket view (``store.record`` folds every task it records
into them), so the console and ticketing tools read one answer instead of each replaying the
events with its own copy of the rules.

An incident protects every service it hurts with one policy per group of services with the same
ends (and TE technology); the seed's ``tunnel_id`` fields name the first policy. So:

- ``tunnels``: every policy, in the order the orchestrator reported them, each
  ``{tunnel_id, path, hops, state, head_end, end_point, te_type, binding_sid, service_ids}``
  (``null``/``[]`` where not reported); ``[]`` before any ``status_update`` names a tunnel. A
  ``details.tunnels`` list (phase 4, steering, close) adds the policies it names and updates the
  ones already known; a ``details.tunnel_id`` updates that policy (a re-route names whichever
  policy moved, with its new ``path``); ``details.service_ids`` are the named policy's
  services. A ``tunnel_id`` IO has never heard of, without a list, replaces the policy of a
  single-policy incident (today's rule for old events) and is added to a multi-policy one (so a
  policy is never forgotten while it may carry traffic).
- ``tunnel``: the first policy, ``{tunnel_id, path, hops, state}`` plus ``head_end``,
  ``end_point``, ``te_type``, ``binding_sid`` once reported, or null before any policy. It is
  exactly what it always was for a single-tunnel incident. ``path`` is the newest one reported
  (phase 4, or a re-route); later updates that only name the tunnel (steering, cutover) keep it.
- ``protection_path``: ``{kind, path, links, hops, head_end, end_point}`` — the first policy's
  newest path (``kind: "tunnel"``) once there is a tunnel, else the newest alternate path
  computed in phase 3 (``kind: "computed"``), else null. The other policies' paths are in
  ``tunnels``.
- ``tunnels_left_up``: the ids of the policies an escalation left carrying traffic, until an
  operator's ``tunnel_removed`` names each (one without ``tunnel_id`` clears them all);
  ``tunnel_left_up`` is the first of them, else null (what it always was for one tunnel).
- ``unprotected_services``: the newest ``details.unprotected_services`` the orchestrator
  reported (services it could not protect), else ``[]``.

Every policy's ``state`` moves on structured fields and the seed's status values only, never on
the orchestrator's English text, and the policies of an incident move together (the
orchestrator steers, monitors, cuts back and removes them together):

- ``provisioned``: a ``status_update`` named it (phase 4, ``provisioning``);
- ``carrying``: a ``status_update`` for the incident said ``details.traffic_steered`` or had
  status ``steering``, ``monitoring`` or ``restoring`` (phases 5-7, which the orchestrator only
  reaches once traffic is on the tunnels);
- ``removed``: a ``status_update`` with ``details.cleanup`` (traffic back, the policies named by
  its ``tunnel_ids`` deleted — all of them when it names none), an operator's
  ``tunnel_removed`` naming it, or a ``ticket_closed`` that does not leave it up (the
  orchestrator deletes the tunnels itself before it closes a resolved incident, and before it
  escalates one whose tunnels never carried traffic);
- ``left_up`` — THE RULE, written here only: a ``ticket_closed`` whose ``resolution`` is not
  ``resolved`` (an escalation) while a policy is ``carrying`` leaves it up, and
  ``tunnels_left_up`` names it until an operator's ``tunnel_removed``.

``new_ticket``, ``approval_required`` and ``error`` change none of these: they report what was
asked or what failed, not what the network now carries.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

CARRYING_STATUSES = frozenset({"steering", "monitoring", "restoring"})
FIELDS = (
    "tunnel",
    "protection_path",
    "tunnel_left_up",
    "tunnels",
    "tunnels_left_up",
    "unprotected_services",
)
# their values before any task: lists start empty so clients never have to test for null
EMPTY: dict[str, Any] = {
    "tunnel": None,
    "protection_path": None,
    "tunnel_left_up": None,
    "tunnels": [],
    "tunnels_left_up": [],
    "unprotected_services": [],
}
REPORTED = ("head_end", "end_point", "te_type", "binding_sid")
LIVE = ("provisioned", "carrying")


def _hops(path: list[str] | None) -> int | None:
    return len(path) - 1 if path else None


def _path(value: Any) -> list[str] | None:
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(n, str) for n in value):
        return list(value)
    return None


def _ids(value: Any) -> list[str] | None:
    """A list of ids as sent, or None when the field is absent or not a list of strings."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _protection(kind: str, path: list[str], details: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "path": path,
        "links": [f"{a}-{b}" for a, b in pairwise(path)],
        "hops": _hops(path),
        "head_end": details.get("head_end") or path[0],
        "end_point": details.get("end_point") or path[-1],
    }


def _policy(tunnel_id: str) -> dict[str, Any]:
    return {
        "tunnel_id": tunnel_id,
        "path": None,
        "hops": None,
        "state": "provisioned",
        **dict.fromkeys(REPORTED),
        "service_ids": [],
    }


def _first(policy: dict[str, Any]) -> dict[str, Any]:
    """``tunnel``: the first policy in the shape it always had (reported keys only)."""
    view = {k: policy.get(k) for k in ("tunnel_id", "state", "path", "hops")}
    view.update({k: policy[k] for k in REPORTED if policy.get(k) is not None})
    return view


def _policies(current: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored policies, copied; a ``tunnel`` stored before ``tunnels`` existed is the one."""
    stored = current.get("tunnels")
    if stored:
        return [dict(p) for p in stored]
    tunnel = current.get("tunnel")
    if tunnel:
        return [{**_policy(tunnel["tunnel_id"]), **tunnel}]
    return []


def _learn(policy: dict[str, Any], facts: dict[str, Any], *, crossed: bool) -> bool:
    """Update ``policy`` with what ``facts`` reports of it; True when its path changed.

    A path reported as ``crossed`` is the old one that now crosses degraded links, not a move.
    """
    for key in REPORTED:
        if facts.get(key) is not None:
            policy[key] = facts[key]
    services = _ids(facts.get("service_ids"))
    if services is not None:
        policy["service_ids"] = services
    path = _path(facts.get("path"))
    if path and not crossed and not facts.get("crossed"):
        policy["path"], policy["hops"] = path, _hops(path)
        return True
    return False


def fold(current: dict[str, Any], task_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The protection fields after ``task_type``, given their values before it (see the module).

    Pure, so a migration can replay a ticket's events through it and the tests can check the
    rule without a database. Returns only the fields that changed.
    """
    policies = _policies(current)
    protection: dict[str, Any] | None = current.get("protection_path")
    left_up: list[str] = list(current.get("tunnels_left_up") or [])
    if not left_up and current.get("tunnel_left_up"):
        left_up = [current["tunnel_left_up"]]  # stored before tunnels_left_up existed
    unprotected: list[str] = list(current.get("unprotected_services") or [])
    raw = payload.get("details")
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}
    crossed = bool(details.get("crossed"))

    if task_type == "status_update":
        status = payload.get("status")
        first_moved = False
        listed = details.get("tunnels")
        for facts in listed if isinstance(listed, list) else []:
            tid = facts.get("tunnel_id") if isinstance(facts, dict) else None
            if not isinstance(tid, str) or not tid:
                continue
            policy = next((p for p in policies if p["tunnel_id"] == tid), None)
            if policy is None:
                policy = _policy(tid)
                policies.append(policy)
            first_moved |= _learn(policy, facts, crossed=crossed) and policy is policies[0]
        tunnel_id = details.get("tunnel_id")
        if isinstance(tunnel_id, str) and tunnel_id:
            policy = next((p for p in policies if p["tunnel_id"] == tunnel_id), None)
            if policy is None:
                policy = _policy(tunnel_id)
                # one policy known: a new id replaces it, as it always did; several: keep them
                policies = [policy] if len(policies) <= 1 else [*policies, policy]
            first_moved |= _learn(policy, details, crossed=crossed) and policy is policies[0]
        else:
            computed = _path(details.get("path"))
            if computed and payload.get("phase") == "3" and not crossed and not policies:
                # an alternate path computed; one that "now crosses degraded" links is the old one
                protection = _protection("computed", computed, details)
        if first_moved:  # protection_path follows the first policy, as ``tunnel`` does
            protection = _protection("tunnel", policies[0]["path"], _first(policies[0]))
        if details.get("cleanup") is True:
            named = _ids(details.get("tunnel_ids"))
            for p in policies:
                if p["state"] in LIVE and (not named or p["tunnel_id"] in named):
                    p["state"] = "removed"
        elif details.get("traffic_steered") is True or status in CARRYING_STATUSES:
            for p in policies:
                if p["state"] in LIVE:
                    p["state"] = "carrying"
        reported = _ids(details.get("unprotected_services"))
        if reported is not None:
            unprotected = reported
    elif task_type == "ticket_closed":
        escalated = payload.get("resolution") != "resolved"
        for p in policies:
            if p["state"] == "carrying" and escalated:
                p["state"] = "left_up"
                if p["tunnel_id"] not in left_up:
                    left_up.append(p["tunnel_id"])
            elif p["state"] in LIVE:
                p["state"] = "removed"
        reported = _ids(details.get("unprotected_services"))
        if reported is not None:
            unprotected = reported
    elif task_type == "tunnel_removed":
        named = payload.get("tunnel_id")
        for p in policies:
            if named in (None, p["tunnel_id"]):
                p["state"] = "removed"
        left_up = [] if named is None else [t for t in left_up if t != named]

    after = {
        "tunnel": _first(policies[0]) if policies else None,
        "protection_path": protection,
        "tunnel_left_up": left_up[0] if left_up else None,
        "tunnels": policies,
        "tunnels_left_up": left_up,
        "unprotected_services": unprotected,
    }
    return {k: v for k, v in after.items() if v != current.get(k)}


def replay(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The fields after every event of a ticket, in order (the migrations' backfill)."""
    fields: dict[str, Any] = dict(EMPTY)
    for task_type, payload in events:
        fields.update(fold(fields, task_type, payload))
    return fields

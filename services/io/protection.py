"""What protects an incident's traffic: its tunnel, the protection path and a tunnel left up.

IO keeps these as fields of the ticket view (``store.record`` folds every task it records
into them), so the console and ticketing tools read one answer instead of each replaying the
events with its own copy of the rules.

- ``tunnel``: ``{tunnel_id, path, hops, state, head_end, end_point, te_type, binding_sid}``,
  or null before any ``status_update`` names a ``details.tunnel_id``. ``path`` is the newest
  one reported (phase 4, or a re-route); later updates that only name the tunnel (steering,
  cutover) keep it.
- ``protection_path``: ``{kind, path, links, hops, head_end, end_point}`` — the tunnel's
  newest path (``kind: "tunnel"``) once there is a tunnel, else the newest alternate path
  computed in phase 3 (``kind: "computed"``), else null.
- ``tunnel_left_up``: the id of the tunnel an escalation left carrying traffic, else null.

The tunnel's ``state`` moves on structured fields and the seed's status values only, never on
the orchestrator's English text:

- ``provisioned``: a ``status_update`` named it (phase 4, ``provisioning``);
- ``carrying``: a ``status_update`` for the incident said ``details.traffic_steered`` or had
  status ``steering``, ``monitoring`` or ``restoring`` (phases 5-7, which the orchestrator only
  reaches once traffic is on the tunnel);
- ``removed``: a ``status_update`` with ``details.cleanup`` (traffic back, tunnel deleted), an
  operator's ``tunnel_removed``, or a ``ticket_closed`` that does not leave it up (the
  orchestrator deletes the tunnel itself before it closes a resolved incident, and before it
  escalates one whose tunnel never carried traffic);
- ``left_up`` — THE RULE, written here only: a ``ticket_closed`` whose ``resolution`` is not
  ``resolved`` (an escalation) while the tunnel is ``carrying`` leaves it up, and
  ``tunnel_left_up`` names it until an operator's ``tunnel_removed``.

``new_ticket``, ``approval_required`` and ``error`` change none of these: they report what was
asked or what failed, not what the network now carries.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

CARRYING_STATUSES = frozenset({"steering", "monitoring", "restoring"})
FIELDS = ("tunnel", "protection_path", "tunnel_left_up")


def _hops(path: list[str] | None) -> int | None:
    return len(path) - 1 if path else None


def _path(value: Any) -> list[str] | None:
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(n, str) for n in value):
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


def fold(current: dict[str, Any], task_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The three fields after ``task_type``, given their values before it (see the module).

    Pure, so a migration can replay a ticket's events through it and the tests can check the
    rule without a database. Returns only the fields that changed.
    """
    tunnel: dict[str, Any] | None = current.get("tunnel")
    protection: dict[str, Any] | None = current.get("protection_path")
    left_up: str | None = current.get("tunnel_left_up")
    raw = payload.get("details")
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}

    if task_type == "status_update":
        status = payload.get("status")
        path = _path(details.get("path"))
        tunnel_id = details.get("tunnel_id")
        if isinstance(tunnel_id, str) and tunnel_id:
            if tunnel is None or tunnel.get("tunnel_id") != tunnel_id:
                tunnel = {"tunnel_id": tunnel_id, "state": "provisioned", "path": None}
                tunnel["hops"] = None
            else:
                tunnel = dict(tunnel)
            for key in ("head_end", "end_point", "te_type", "binding_sid"):
                if details.get(key) is not None:
                    tunnel[key] = details[key]
            if path and not details.get("crossed"):
                tunnel["path"], tunnel["hops"] = path, _hops(path)
                protection = _protection("tunnel", path, tunnel)
        elif path and payload.get("phase") == "3" and not details.get("crossed") and not tunnel:
            # an alternate path computed; one that "now crosses degraded" links is the old one
            protection = _protection("computed", path, details)
        if tunnel is not None and tunnel.get("state") in ("provisioned", "carrying"):
            if details.get("cleanup") is True:
                tunnel = {**tunnel, "state": "removed"}
            elif details.get("traffic_steered") is True or status in CARRYING_STATUSES:
                tunnel = {**tunnel, "state": "carrying"}
    elif task_type == "ticket_closed" and tunnel is not None:
        if tunnel.get("state") == "carrying" and payload.get("resolution") != "resolved":
            tunnel = {**tunnel, "state": "left_up"}
            left_up = tunnel["tunnel_id"]
        elif tunnel.get("state") in ("provisioned", "carrying"):
            tunnel = {**tunnel, "state": "removed"}
    elif task_type == "tunnel_removed" and tunnel is not None:
        if payload.get("tunnel_id") in (None, tunnel.get("tunnel_id")):
            tunnel = {**tunnel, "state": "removed"}
        if payload.get("tunnel_id") in (None, left_up):
            left_up = None

    after = {"tunnel": tunnel, "protection_path": protection, "tunnel_left_up": left_up}
    return {k: v for k, v in after.items() if v != current.get(k)}


def replay(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The three fields after every event of a ticket, in order (the migration's backfill)."""
    fields: dict[str, Any] = dict.fromkeys(FIELDS)
    for task_type, payload in events:
        fields.update(fold(fields, task_type, payload))
    return fields

"""Node names, statuses and phase numbers, each defined once.

The seed numbers the phases an operator sees (1 detecting … 7 restoring); IO shows the number
next to the status. Keeping the pairing in one table means a node says *which status it
enters* and can never send a status with the wrong phase. Node names are ``Literal`` types
because LangGraph reads a node's ``Command[Literal[...]]`` return annotation to know its
edges, and mypy then checks every ``goto`` against that list.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, cast, get_args

from langgraph.graph import END

NodeName = Literal[
    "start",
    "detect",
    "dampen",
    "assess",
    "compute",
    "provision",
    "steer",
    "reroute",
    "monitor",
    "restore",
    "close",
    "escalate",
    "wait",
    "approval",
    "relieve",
    "watch",
    "release",
]
"""Every node of the incident graph. These names are checkpoint keys: never rename one."""
NODE_NAMES: tuple[NodeName, ...] = get_args(NodeName)

End = Literal["__end__"]
"""LangGraph's ``END`` as a type, for the return annotation of a node that finishes the run."""
TO_END: End = cast(End, END)

HELPER_NODES: frozenset[NodeName] = frozenset({"dampen", "escalate", "wait", "approval"})
"""Nodes that never appear in ``nodes_executed``: they wait, ask or hand over, not act."""

WaitReason = Literal["dampening", "sla_poll", "hold_timer", "cutover", "load_poll"]
"""Why the ``wait`` node is pausing; signals are interpreted differently for each
(``load_poll``: a proactive incident watching its link's native load, which no signal ends)."""


class Status(StrEnum):
    """The incident's status as IO, the audit trail and the incident row show it."""

    NEW = "new"
    DETECTING = "detecting"
    DAMPENING = "dampening"
    ASSESSING = "assessing"
    COMPUTING = "computing"
    PROVISIONING = "provisioning"
    STEERING = "steering"
    MONITORING = "monitoring"
    RESTORING = "restoring"
    WAITING_APPROVAL = "waiting_approval"
    CLOSED = "closed"
    ESCALATED = "escalated"


PHASE: dict[Status, str] = {
    Status.NEW: "0",
    Status.DETECTING: "1",
    Status.DAMPENING: "1",
    Status.ASSESSING: "2",
    Status.COMPUTING: "3",
    Status.PROVISIONING: "4",
    Status.STEERING: "5",
    Status.MONITORING: "6",
    Status.RESTORING: "7",
}
"""Seed 003's phase of each working status. ``waiting_approval``, ``closed`` and ``escalated``
are absent on purpose: they keep the phase the incident was in (or the gated step's phase)."""


def entered(status: Status) -> dict[str, str]:
    """The state update for entering ``status``: plain strings, so checkpoints stay JSON."""
    if status in PHASE:
        return {"status": status.value, "phase": PHASE[status]}
    return {"status": status.value}

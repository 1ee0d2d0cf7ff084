"""Phase 1: the incident opens, and a flapping link is dampened before anything is built.

start → detect ─┬─ assess               (the degradation is real: find what it hurts)
                ├─ dampen → wait        (flapping: hold off with exponential backoff)
                └─ relieve              (proactive: congestion predicted, see ``proactive``)
"""

from __future__ import annotations

from typing import Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from services.orchestrator.flow.effects import Effects, wait_until
from services.orchestrator.flow.phases import Status, entered
from services.orchestrator.flow.state import IncidentState, iso, parse
from shared.models import utcnow


async def start(state: IncidentState, config: RunnableConfig) -> Command[Literal["detect"]]:
    """Audit the incident's creation; the seed lists ``start`` first in ``nodes_executed``."""
    fx = Effects(state, config)
    await fx.audit(
        "state_change",
        {
            "from": None,
            "to": Status.NEW.value,
            "severity": state["severity"],
            "summary": state["summary"],
        },
    )
    return Command(goto="detect", update=fx.done(nodes_executed=["start"]))


async def detect(
    state: IncidentState, config: RunnableConfig
) -> Command[Literal["dampen", "assess", "relieve"]]:
    """Tell IO what degraded; a correlator that saw flapping set ``dampened_until``.

    A proactive incident (congestion predicted, not an SLA broken) takes its own branch: a
    forecast does not flap, and what it needs is a load shift, not an SLA repair.
    """
    fx = Effects(state, config)
    links = state["degraded_links"]
    what = "Congestion predicted" if state.get("proactive") else "SLA degradation detected"
    await fx.status(
        Status.DETECTING,
        f"{what} on {', '.join(links)}, assessing impact",
        {"degraded_links": links, "severity": state["severity"], "proactive": state["proactive"]},
    )
    update = fx.done(nodes_executed=["detect"], **entered(Status.DETECTING))
    if state.get("proactive"):
        return Command(goto="relieve", update=update)
    until = state.get("dampened_until")
    if until and parse(until) > utcnow():
        return Command(goto="dampen", update=update)
    return Command(goto="assess", update=update)


async def dampen(state: IncidentState, config: RunnableConfig) -> Command[Literal["wait"]]:
    """Flapping: hold off with exponential backoff, then look at the SLA again."""
    fx = Effects(state, config)
    count = state.get("dampen_count", 0) + 1
    backoff = min(fx.orch.dampen_max_s, fx.orch.dampen_base_s * 2 ** (count - 1))
    now = utcnow()
    due = now + fx.scaled(backoff)
    until = state.get("dampened_until")
    if until and (count == 1 or parse(until) > due):
        due = parse(until)
    await fx.status(
        Status.DAMPENING,
        f"Link flapping on {', '.join(state['degraded_links'])}: dampened until {iso(due)}",
        {
            "dampened_until": iso(due),
            "attempt": count,
            "backoff_seconds": round((due - now).total_seconds(), 3),
            "degraded_links": state["degraded_links"],
        },
    )
    # after dampening, monitor decides: recovered (hold timer) or still bad (assess)
    wait = wait_until(due, then="monitor", reason="dampening")
    return Command(
        goto="wait",
        update=fx.done(
            **entered(Status.DAMPENING), dampen_count=count, dampened_until=iso(due), wait=wait
        ),
    )

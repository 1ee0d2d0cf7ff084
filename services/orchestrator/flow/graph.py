"""The incident graph: every node says where it goes next, so the edges are the real ones.

Nodes return ``Command[Literal[...]]``; LangGraph reads that annotation to know each node's
exits, so ``build_graph(None).get_graph()`` holds exactly the transitions the code can take and
``docs/orchestrator.md`` can show the drawing. Regenerate that drawing after changing an exit::

    python -m services.orchestrator.flow --update-doc     # rewrites the doc's block
    python -m services.orchestrator.flow                  # prints the Mermaid source
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from services.orchestrator.flow import control, detect, monitor, proactive, protect, restore
from services.orchestrator.flow.phases import NODE_NAMES, NodeName
from services.orchestrator.flow.state import IncidentState
from shared.models import NODES

NODE_FUNCS: dict[NodeName, Callable[..., Any]] = {
    "start": detect.start,
    "detect": detect.detect,
    "dampen": detect.dampen,
    "assess": protect.assess,
    "compute": protect.compute,
    "provision": protect.provision,
    "steer": protect.steer,
    "reroute": monitor.reroute,
    "monitor": monitor.monitor,
    "restore": restore.restore,
    "close": restore.close,
    "escalate": control.escalate,
    "wait": control.wait,
    "approval": control.approval,
    "relieve": proactive.relieve,
    "watch": proactive.watch,
    "release": proactive.release,
}
assert tuple(NODE_FUNCS) == NODE_NAMES
assert set(NODES) <= set(NODE_FUNCS)

DOC = Path(__file__).resolve().parents[3] / "docs" / "orchestrator.md"
MERMAID_BLOCK = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None) -> CompiledStateGraph[Any]:
    """Compile the incident graph; tests pass an in-memory saver (or None), the app a durable
    one. Only ``START → start`` is added by hand: every other edge comes from a node's
    ``Command`` annotation."""
    builder = StateGraph(IncidentState)
    for name, func in NODE_FUNCS.items():
        builder.add_node(name, cast(Any, func))
    builder.add_edge(START, "start")
    return builder.compile(checkpointer=checkpointer)


def mermaid() -> str:
    """The compiled graph as Mermaid source, as ``docs/orchestrator.md`` shows it."""
    return build_graph(None).get_graph().draw_mermaid()


def documented(doc: Path = DOC) -> str | None:
    """The Mermaid source in the doc's ```mermaid block (None when it has none)."""
    found = MERMAID_BLOCK.search(doc.read_text(encoding="utf-8"))
    return found.group(1) if found else None


def update_doc(doc: Path = DOC) -> None:
    """Replace the doc's ```mermaid block with the compiled graph's drawing."""
    text = doc.read_text(encoding="utf-8")
    if not MERMAID_BLOCK.search(text):
        raise SystemExit(f"{doc} has no ```mermaid block to replace")
    drawing = mermaid()
    doc.write_text(
        MERMAID_BLOCK.sub(lambda _: f"```mermaid\n{drawing}```", text, count=1), encoding="utf-8"
    )

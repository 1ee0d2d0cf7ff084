"""The graph drawn in docs/orchestrator.md is the graph the code compiles.

Edges come from each node's ``Command[Literal[...]]`` return annotation, so a node that gains
or loses an exit changes the drawing; this test makes the doc change with it.
"""

from __future__ import annotations

import re
from pathlib import Path

from services.orchestrator.flow import build_graph
from services.orchestrator.flow.graph import NODE_FUNCS

DOC = Path(__file__).resolve().parents[2] / "docs" / "orchestrator.md"
REGENERATE = (
    "docs/orchestrator.md's ```mermaid block is not the compiled graph; regenerate it with\n"
    "    .venv/bin/python -m services.orchestrator.flow --update-doc\n"
    "(or print it with `python -m services.orchestrator.flow` and paste it into the block)"
)


def test_doc_shows_the_compiled_graph() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    drawn = build_graph(None).get_graph().draw_mermaid()
    assert len(blocks) == 1, REGENERATE
    assert blocks[0] == drawn, REGENERATE


def test_every_node_declares_where_it_goes() -> None:
    """An annotation LangGraph cannot resolve is dropped silently (no edges, yet the run
    works); the drawing would then lose the node's exits, so check that none is missing."""
    graph = build_graph(None).get_graph()
    exits = {edge.source for edge in graph.edges}
    assert set(NODE_FUNCS) <= exits, sorted(set(NODE_FUNCS) - exits)
    assert all(edge.conditional for edge in graph.edges if edge.source != "__start__")

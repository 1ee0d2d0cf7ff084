"""The incident flow: a LangGraph state machine whose modules follow its phases.

``state`` (the checkpointed state), ``phases`` (node names, statuses and phase numbers),
``effects`` (everything a node does to the world), the nodes by phase (``detect``,
``protect``, ``monitor``, ``restore``, ``control``), and ``graph`` (``build_graph``).
"""

from services.orchestrator.flow.effects import Deps
from services.orchestrator.flow.graph import build_graph, mermaid
from services.orchestrator.flow.state import IncidentState, initial_state, parse

__all__ = ["Deps", "IncidentState", "build_graph", "initial_state", "mermaid", "parse"]

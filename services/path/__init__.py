"""Path Computation agent: Topology knowledge graph and constrained shortest paths."""

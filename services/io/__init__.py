"""IO Agent (8009): the operator's view of every incident, and the tickets API."""

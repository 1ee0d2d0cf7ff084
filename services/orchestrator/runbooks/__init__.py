"""Runbooks (seed 000): documents, the inventory of connections, credentials, connectors and
execution sessions. The orchestrator owns them; IO serves them to people under ``/api/v1/``."""

"""Runbook tests: vault, inventory and connectors against real servers."""

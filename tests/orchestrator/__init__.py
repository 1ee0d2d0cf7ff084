"""Orchestrator tests."""

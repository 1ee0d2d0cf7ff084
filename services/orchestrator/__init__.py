"""Orchestrator agent: LangGraph incident state machine, approvals, timers."""

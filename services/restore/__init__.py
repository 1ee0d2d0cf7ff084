"""Restoration Monitor agent: SLA recovery checks, hold timers, gradual cutover, cleanup."""

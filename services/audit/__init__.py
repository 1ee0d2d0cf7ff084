"""Audit agent: Durable, verifiable event log, search and compliance reports."""

"""Tests of the audit agent: durable hash-chained log, verification, search, reports, ES sink."""

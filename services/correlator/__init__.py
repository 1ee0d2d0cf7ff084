"""Event Correlator agent: ingestion, dedup, correlation, dampening, silences, triage."""

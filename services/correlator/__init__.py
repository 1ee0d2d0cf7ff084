"""Event Correlator agent: Alert ingestion, dedup, correlation, flap dampening, silences, false-positive triage."""

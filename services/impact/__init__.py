"""Service Impact agent: Affected services and SLA tiers from CNC service health."""

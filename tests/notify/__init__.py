"""Tests of the notify agent: routing, channels, retries, delivery log, ServiceNow webhook."""

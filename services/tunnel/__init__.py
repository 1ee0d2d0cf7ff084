"""Tunnel Provisioning agent: SR-MPLS, SRv6 and RSVP-TE protection tunnels via the CNC PCE."""

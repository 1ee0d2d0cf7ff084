"""Traffic Analytics agent: Link utilisation, demand matrix, congestion prediction."""

"""Tests of the impact, path, tunnel, restore and traffic agents."""

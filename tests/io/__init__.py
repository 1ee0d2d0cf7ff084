"""Tests of the IO Agent: its API in-process, and its console in a real browser."""

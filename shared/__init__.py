"""Common library of the CXM mesh: wire models, A2A client and server, settings, database."""

__version__ = "0.1.0"

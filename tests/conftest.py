"""Shared fixtures: settings on a temporary data dir, and a real PostgreSQL server per session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support import postgres_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults on a temporary SQLite directory, fast timers, a mesh token."""
    return Settings(data_dir=tmp_path, time_scale=0.01, mesh_token="test-mesh-token", port=8999)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server (Debian's postgresql), started once per test session.

    Its cluster lives outside pytest's temporary root, which is mode 0700 for root and so out
    of reach of the ``postgres`` user the server runs as.
    """
    base = Path(tempfile.mkdtemp(prefix="cxm-pg-"))
    try:
        with postgres_server(base) as dsn:
            yield dsn
    finally:
        shutil.rmtree(base, ignore_errors=True)

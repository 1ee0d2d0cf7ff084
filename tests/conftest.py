"""Shared fixtures: settings on a temporary data dir, and a real PostgreSQL server per session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from tests.support import postgres_server

E2E = "tests/e2e"
"""The end-to-end suites: each starts the eleven processes of a mesh."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with every end-to-end module in one scope, handed out first.

    A module's tests share a worker (its module-scoped mesh starts once), as loadscope does.
    The e2e modules, about half the suite's time, also share one: they run one after the
    other on one worker while the other runs every other module, so two meshes of eleven
    processes never compete for two cores (their timing-sensitive waits failed CI runs that
    way), and the longest scope starts first instead of last (loadscope orders scopes by
    test count, which put the few-test, long e2e modules at the end).
    """
    from xdist.scheduler import LoadScopeScheduling

    class E2eFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(E2E + "/"):
                return E2E
            return str(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            if E2E in self.workqueue:
                self.workqueue.move_to_end(E2E, last=False)
            super()._assign_work_unit(node)

    return E2eFirst(config, log)


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

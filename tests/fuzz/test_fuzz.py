"""The short fuzz run in ``make test``: every agent's OpenAPI, no answer in the 5xx range.

A few cases per operation, valid and invalid, against the ten agents and the lab in-process
(tests/fuzz/harness.py); ``python -m bench.fuzz`` runs the long version (1,000+ cases each).
All of it runs on one xdist worker: the apps share one mesh and one event-loop thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.harness import AGENTS, Mesh, fuzz_agent, running_mesh

pytestmark = pytest.mark.xdist_group("fuzz")

MAX_EXAMPLES = 2
"""Per operation: one valid case and one invalid one."""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with running_mesh(data_dir) as m:
        yield m


@pytest.mark.parametrize("agent", AGENTS)
def test_no_server_errors(mesh: Mesh, agent: str) -> None:
    report = fuzz_agent(mesh, agent, min_cases=0, max_examples=MAX_EXAMPLES, max_rounds=1)
    assert report.operations > 0
    assert report.cases >= report.operations, report.summary()
    assert not report.errors, report.errors
    assert not report.findings, json.dumps(report.summary(), indent=2)

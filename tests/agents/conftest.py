"""Fixtures for the agent tests: a fake CNC/PCA behind respx and settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from shared.settings import Settings
from tests.agents.fakes import CNC, OSS, PCA, FakeNetwork


@pytest.fixture
def net() -> Iterator[FakeNetwork]:
    """The fake network, installed for every httpx client; unmatched requests fail the test."""
    fake = FakeNetwork()
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        yield fake


@pytest.fixture
def agent_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"cnc_url": CNC, "pca_url": PCA, "service_inventory": OSS})

"""Fixtures: a respx router per controller (CNC login routes in place), clients on it, a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import respx

from shared.southbound import LINK_PM, NETWORKS, CncClient, PcaClient
from tests.southbound.payloads import (
    CNC,
    LINKS,
    NODES,
    PCA,
    SERVICE_URL,
    data_missing,
    jwt,
    networks,
    pm,
)

NOW = 1_800_000_000.0
TGT = "TGT-1-abc"


class Clock:
    """Epoch seconds the test moves by hand (the JWT expiry seam: no sleeps)."""

    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cnc_router(clock: Clock) -> Iterator[respx.MockRouter]:
    router = respx.MockRouter(base_url=CNC, assert_all_called=False)
    router.post("/crosswork/sso/v1/tickets", name="tgt").respond(201, text=TGT)
    router.post(f"/crosswork/sso/v1/tickets/{TGT}", name="jwt").mock(
        side_effect=lambda request: httpx.Response(200, text=jwt(clock.now + 28800))
    )
    router.delete(f"/crosswork/sso/v1/tickets/{TGT}", name="logout").respond(200)
    yield router


def make_cnc(router: respx.MockRouter, clock: Clock, **kwargs: Any) -> CncClient:
    return CncClient(
        CNC,
        username="cxm",
        password="cxm-lab",
        service_url=SERVICE_URL,
        transport=httpx.MockTransport(router.async_handler),
        clock=clock,
        **kwargs,
    )


@pytest.fixture
async def cnc(cnc_router: respx.MockRouter, clock: Clock) -> AsyncIterator[CncClient]:
    client = make_cnc(cnc_router, clock, concurrency=4)
    yield client
    await client.aclose()


@pytest.fixture
def pca_router() -> Iterator[respx.MockRouter]:
    router = respx.MockRouter(base_url=PCA, assert_all_called=False)
    router.post("/api/v1/auth/login", name="login").respond(
        200, json={}, headers={"authorization": "Bearer pca-token-1"}
    )
    yield router


def pca_client(router: respx.MockRouter, clock: Clock, **options: Any) -> PcaClient:
    """A PCA client talking to ``router`` (``options``: the client's own, e.g. page size)."""
    return PcaClient(
        PCA,
        username="cxm",
        password="cxm-lab",
        transport=httpx.MockTransport(router.async_handler),
        clock=clock,
        **options,
    )


@pytest.fixture
async def pca(pca_router: respx.MockRouter, clock: Clock) -> AsyncIterator[PcaClient]:
    client = pca_client(pca_router, clock, page_size=2)
    yield client
    await client.aclose()


def pm_id(request: httpx.Request) -> str:
    """The CNC link id of a keyed igp-link-pm read (percent-decoded from the raw path)."""
    raw = request.url.raw_path.decode()
    return unquote(raw.split("igp-link-pm=", 1)[1])


def serve_topology(
    router: respx.MockRouter,
    nodes: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    *,
    pms: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Serve the topology with limit/offset pagination and keyed PM reads (409 when absent)."""
    all_nodes = NODES if nodes is None else nodes
    all_links = LINKS if links is None else links
    by_id = {
        link["link-id"]: pm(
            link["link-id"], link["source"]["source-node"], link["destination"]["dest-node"]
        )
        for link in all_links
    }
    if pms is not None:
        by_id = pms

    def page(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", 10_000))
        offset = int(request.url.params.get("offset", 0))
        return httpx.Response(
            200,
            json=networks(all_nodes[offset : offset + limit], all_links[offset : offset + limit]),
        )

    def read_pm(request: httpx.Request) -> httpx.Response:
        found = by_id.get(pm_id(request))
        if found is None:
            return httpx.Response(409, json=data_missing())
        return httpx.Response(200, json=found)

    router.get(NETWORKS, name="networks").mock(side_effect=page)
    router.get(url__startswith=CNC + LINK_PM, name="pm").mock(side_effect=read_pm)

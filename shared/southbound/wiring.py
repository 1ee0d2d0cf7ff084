"""How agents get and use the clients: built from settings, opened for an app's lifetime, and
reads shared by concurrent callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from shared.inventory import ServiceInventory
from shared.southbound.cnc import CncClient
from shared.southbound.pca import PcaClient

T = TypeVar("T")


def service_inventory(
    settings: Any, *, transport: httpx.AsyncBaseTransport | None = None
) -> ServiceInventory:
    """The inventory the settings name (the lab's export, with the mesh token, when unset)."""
    source: str = settings.service_inventory_source
    lab = source.startswith(settings.lab_url.rstrip("/"))
    return ServiceInventory(
        source,
        ttl_s=settings.service_inventory_ttl_s,
        default_tier=settings.default_sla_tier,
        default_bandwidth_mbps=settings.default_service_bandwidth_mbps,
        token=settings.mesh_token if lab else None,
        transport=transport,
    )


def cnc_client(
    settings: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 10.0,
    inventory: ServiceInventory | None = None,
    session: str | None = None,
) -> CncClient:
    """A :class:`CncClient` from settings (for agents that open one outside the lifespan).

    ``session`` names the file under ``data_dir`` where the client keeps its CNC ticket
    (``cnc-session-<session>``) so that the agent's next process reuses it; None keeps none.
    """
    return CncClient(
        settings.cnc_base,
        username=settings.cnc_username,
        password=settings.cnc_password,
        service_url=settings.cnc_service,
        transport=transport,
        timeout_s=timeout_s,
        refresh_s=settings.cnc_token_refresh_s,
        concurrency=settings.cnc_read_concurrency,
        inventory=inventory,
        default_tier=settings.default_sla_tier,
        default_bandwidth_mbps=settings.default_service_bandwidth_mbps,
        session_file=Path(settings.data_dir) / f"cnc-session-{session}" if session else None,
    )


def pca_client(
    settings: Any, *, transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 10.0
) -> PcaClient:
    """A :class:`PcaClient` from settings."""
    return PcaClient(
        settings.pca_base,
        username=settings.pca_username,
        password=settings.pca_password,
        transport=transport,
        timeout_s=timeout_s,
        window_s=settings.pca_window_s,
    )


@asynccontextmanager
async def southbound_clients(app: Any) -> AsyncIterator[None]:
    """Open ``app.state.cnc``, ``app.state.pca`` and ``app.state.inventory`` for the app's
    lifetime; close them after (the CNC TGT is deleted).

    Tests reach an in-process lab by setting ``app.state.southbound_transport``.
    """
    settings = app.state.settings
    transport = getattr(app.state, "southbound_transport", None)
    inventory = service_inventory(settings, transport=transport)
    cnc = cnc_client(
        settings,
        transport=transport,
        inventory=inventory,
        session=getattr(getattr(app.state, "spec", None), "name", None),
    )
    pca = pca_client(settings, transport=transport)
    app.state.inventory = inventory
    app.state.cnc = cnc
    app.state.pca = pca
    try:
        yield
    finally:
        try:
            await cnc.aclose()
        finally:
            await pca.aclose()
            await inventory.aclose()


class SharedRead(Generic[T]):
    """A read that is never cached, where callers that arrive while one is under way share it
    (a burst of incidents reads once, and each sees a result at most one read old)."""

    def __init__(self, read: Callable[[], Awaitable[T]]):
        self._read = read
        self._inflight: asyncio.Future[T] | None = None
        self.reads = 0

    async def __call__(self) -> T:
        if self._inflight is None:
            self.reads += 1
            self._inflight = asyncio.ensure_future(self._read())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, finished: asyncio.Future[T]) -> None:
        if self._inflight is finished:
            self._inflight = None

"""The operators' service inventory (an OSS export): SLA tier and committed bandwidth per VPN.

Neither CNC nor the L2NM/L3NM models carry a service's SLA tier, and a VPN's committed
bandwidth is a contract term, not a counter, so CXM reads both from the operators' export
(docs/southbound.md "Service inventory"): JSON ``{"services": [{"vpn-id", "name", "sla-tier",
"bandwidth-mbps", "customer"}]}`` or CSV with the header
``vpn-id,name,sla-tier,bandwidth-mbps,customer``, from a file path or an http(s) URL. A read
serves for ``ttl_s``; a service the export does not list gets the defaults (logged once).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from shared.errors import SouthboundError
from shared.logs import get_logger

log = get_logger(__name__)


class InventoryEntry(BaseModel):
    """One service of the export."""

    vpn_id: str
    name: str | None = None
    sla_tier: str
    bandwidth_mbps: float
    customer: str | None = None


def parse_inventory(text: str) -> dict[str, InventoryEntry]:
    """The export's services by vpn-id; JSON when it starts with ``{`` or ``[``, CSV otherwise.

    Raises ``ValueError`` on a document that is neither, or on a row without vpn-id or tier.
    """
    body = text.lstrip("\ufeff").strip()
    rows: list[dict[str, Any]]
    if body.startswith(("{", "[")):
        data = json.loads(body)
        raw = data.get("services", []) if isinstance(data, dict) else data
        if not isinstance(raw, list):
            raise ValueError("inventory: 'services' is not a list")
        rows = [row for row in raw if isinstance(row, dict)]
    else:
        rows = [dict(row) for row in csv.DictReader(io.StringIO(body))]
    out: dict[str, InventoryEntry] = {}
    for row in rows:
        vpn_id = str(row.get("vpn-id") or "").strip()
        if not vpn_id:
            continue  # a blank CSV line, or a row an export left half-filled
        try:
            out[vpn_id] = InventoryEntry(
                vpn_id=vpn_id,
                name=(str(row.get("name") or "").strip() or None),
                sla_tier=str(row.get("sla-tier") or "").strip().lower(),
                bandwidth_mbps=float(row.get("bandwidth-mbps") or 0),
                customer=(str(row.get("customer") or "").strip() or None),
            )
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"inventory: service {vpn_id}: {exc}") from exc
        if not out[vpn_id].sla_tier:
            raise ValueError(f"inventory: service {vpn_id} has no sla-tier")
    return out


class ServiceInventory:
    """The inventory export, read at most once per ``ttl_s`` (concurrent readers share a read).

    ``source`` is a file path or an http(s) URL; ``token`` (the mesh token, when the source is
    the lab) is sent as a bearer. When a re-read fails the previous read keeps serving (with a
    warning); when there never was one the failure is a :class:`SouthboundError`.
    """

    def __init__(
        self,
        source: str,
        *,
        ttl_s: float = 60.0,
        default_tier: str = "silver",
        default_bandwidth_mbps: float = 100.0,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source = source
        self.ttl_s = ttl_s
        self.default_tier = default_tier
        self.default_bandwidth_mbps = default_bandwidth_mbps
        self._token = token
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        if source.startswith(("http://", "https://")):
            self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._entries: dict[str, InventoryEntry] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()
        self.reads = 0

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def entries(self) -> dict[str, InventoryEntry]:
        """Every service of the export, by vpn-id (a read at most ``ttl_s`` old)."""
        if self._entries is not None and self._clock() - self._read_at < self.ttl_s:
            return self._entries
        async with self._lock:
            if self._entries is not None and self._clock() - self._read_at < self.ttl_s:
                return self._entries
            try:
                entries = parse_inventory(await self._read())
            except (SouthboundError, ValueError) as exc:
                if self._entries is None:
                    if isinstance(exc, SouthboundError):
                        raise
                    raise SouthboundError(f"service inventory {self.source}: {exc}") from exc
                log.warning(
                    "service inventory read failed, serving the previous read", error=str(exc)
                )
                self._read_at = self._clock()  # do not hammer a failing source on every call
                return self._entries
            self.reads += 1
            self._entries = entries
            self._read_at = self._clock()
            return entries

    async def lookup(self, vpn_id: str) -> InventoryEntry:
        """The service's entry, or the defaults for one the export does not list."""
        entry = (await self.entries()).get(vpn_id)
        return entry if entry is not None else self.default(vpn_id)

    def default(self, vpn_id: str) -> InventoryEntry:
        """The defaults for a service the export does not list (logged once per service)."""
        if vpn_id not in self._warned:
            self._warned.add(vpn_id)
            log.warning(
                "service not in the inventory, using the defaults",
                vpn_id=vpn_id,
                sla_tier=self.default_tier,
                bandwidth_mbps=self.default_bandwidth_mbps,
            )
        return InventoryEntry(
            vpn_id=vpn_id, sla_tier=self.default_tier, bandwidth_mbps=self.default_bandwidth_mbps
        )

    async def _read(self) -> str:
        if self._http is None:
            path = Path(self.source.removeprefix("file://"))
            try:
                # A file read is blocking I/O: keep it off the event loop.
                return await asyncio.to_thread(path.read_text, encoding="utf-8")
            except OSError as exc:
                raise SouthboundError(f"service inventory {path}: {exc}") from exc
        headers = {"Accept": "application/json, text/csv"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = await self._http.get(self.source, headers=headers)
        except httpx.HTTPError as exc:
            raise SouthboundError(
                f"service inventory unreachable: {type(exc).__name__}", transient=True
            ) from exc
        if response.status_code != 200:
            raise SouthboundError(
                f"service inventory: HTTP {response.status_code}",
                transient=response.status_code >= 500 or response.status_code == 429,
            )
        return response.text

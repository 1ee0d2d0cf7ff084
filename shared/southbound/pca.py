"""Provider Connectivity Assurance (PCA, formerly Accedian Skylight): per-link SLA metrics
and the alerting thresholds they are judged by.

The links are PCA's TWAMP sessions (monitored objects, one per link, named after it); the
metrics are the round-trip averages of the aggregate API over the last window
(docs/southbound.md, "PCA").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from shared.errors import SouthboundError
from shared.logs import get_logger
from shared.southbound.http import HttpClient, as_float, as_int, raise_login
from shared.southbound.models import LinkMetrics, Thresholds
from shared.southbound.topology import link_key

log = get_logger(__name__)

PCA_VENDOR = "accedian-twamp"
PCA_OBJECT_TYPE = "twamp-sf"
PCA_ROUND_TRIP = "2"
PCA_DELAY, PCA_JITTER, PCA_LOSS = "delayAvg", "delayVarAvg", "packetsLostPct"


@dataclass(frozen=True, slots=True)
class _Objects:
    """One read of PCA's monitored objects: id by link as PCA names it, and by link key."""

    read_at: float
    by_name: dict[str, str]
    by_key: dict[str, str]


class PcaClient(HttpClient):
    """Provider Connectivity Assurance: per-link SLA metrics and the alerting thresholds.

    Logs in with ``POST /api/v1/auth/login`` (the token comes back in the ``authorization``
    response header); a 401 on a call logs in again and retries once.
    """

    expired_status = 401

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | SecretStr,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        window_s: float = 60.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.time,
        objects_ttl_s: float = 300.0,
    ):
        super().__init__(
            "PCA", base_url, transport, timeout_s, username=username, password=password
        )
        self.window_s = window_s
        self.page_size = page_size
        self.objects_ttl_s = objects_ttl_s
        self._clock = clock
        # the monitored objects as last read (see ``_objects``)
        self._objects_read: _Objects | None = None
        self._objects_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self.logins = 0

    async def _bearer(self) -> str:
        return await self._renew(None)

    async def _renew(self, stale: str | None) -> str:
        if self._token is None or self._token == stale:
            async with self._lock:
                if self._token is None or self._token == stale:
                    self._token = await self._login()
        return self._token

    async def _login(self) -> str:
        response = await self._send("POST", "/api/v1/auth/login", "login", data=self._credentials())
        if response.status_code != 200:
            raise_login(self.name, response)
        header = response.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SouthboundError("PCA login: no bearer token in the authorization header")
        self.logins += 1
        log.info("PCA login", user=self._username)
        return token.strip()

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        return await self._authorized(method, path, path, params=params, json=json)

    async def monitored_objects(self) -> dict[str, str]:
        """Monitored-object id by link (its ``meta.link``, else its ``objectName``)."""
        out: dict[str, str] = {}
        offset = 0
        while True:
            data = await self._call(
                "GET",
                "/api/v2/monitored-objects",
                params={"page[limit]": self.page_size, "page[offset]": offset},
            )
            page = [d for d in (data or {}).get("data") or [] if isinstance(d, dict)]
            for item in page:
                attrs = item.get("attributes") or {}
                link = (attrs.get("meta") or {}).get("link") or attrs.get("objectName")
                if link and item.get("id"):
                    out.setdefault(str(link), str(item["id"]))
            offset += len(page)
            total = as_int(((data or {}).get("meta") or {}).get("total"))
            if len(page) < self.page_size or not page or (total is not None and offset >= total):
                return out

    async def _objects(self, links: list[str]) -> tuple[_Objects, bool]:
        """The monitored objects, from a read at most ``objects_ttl_s`` old unless one of
        ``links`` is missing from it; and whether it is a fresh read.

        The objects are PCA's inventory (one TWAMP session per link), not measurements: an SLA
        check that listed every page of them each time (one GET per 100 links, on every poll
        of every incident) spent more than it did on the metrics it came for.
        """
        cached = self._objects_read
        if (
            cached is not None
            and time.monotonic() - cached.read_at <= self.objects_ttl_s
            and all(link_key(link) in cached.by_key for link in links)
        ):
            return cached, False
        async with self._objects_lock:
            if self._objects_read is not cached and self._objects_read is not None:
                return self._objects_read, True  # another caller has just read them
            read_at = time.monotonic()
            objects = await self.monitored_objects()
            by_key = {link_key(link): mo for link, mo in objects.items()}
            self._objects_read = _Objects(read_at, objects, by_key)
            return self._objects_read, True

    def forget_objects(self) -> None:
        """The next ``link_metrics`` reads the monitored objects again."""
        self._objects_read = None

    async def link_metrics(self, links: list[str]) -> dict[str, LinkMetrics]:
        """Round-trip delay, jitter and loss over the last ``window_s`` per link, keyed by the
        names asked for (either orientation); empty ``links`` means every monitored link. A
        link PCA has no session or no complete measurement for is absent.

        The link → object map is kept for ``objects_ttl_s`` (see ``_objects``); a link it
        lacks has it read again at once, and an object that answers nothing from a kept map
        has the next call read it again (a session deleted and created anew has a new id)."""
        objects, fresh = await self._objects(links)
        by_key = objects.by_key
        wanted = (
            {link: by_key[link_key(link)] for link in links if link_key(link) in by_key}
            if links
            else dict(objects.by_name)
        )
        if not wanted:
            return {}
        end = datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)
        start = datetime.fromtimestamp(self._clock() - self.window_s, UTC).replace(microsecond=0)
        ids = sorted(set(wanted.values()))
        body = {
            "data": {
                "type": "aggregates",
                "attributes": {
                    "interval": f"{_iso(start)}/{_iso(end)}",
                    "granularity": "ALL",
                    "aggregation": "avg",
                    "metrics": [
                        {
                            "vendor": PCA_VENDOR,
                            "objectType": [PCA_OBJECT_TYPE],
                            "direction": [PCA_ROUND_TRIP],
                            "monitoredObjectId": ids,
                            "metric": metric,
                        }
                        for metric in (PCA_DELAY, PCA_JITTER, PCA_LOSS)
                    ],
                },
            }
        }
        data = await self._call("POST", "/api/v3/metrics/aggregate", json=body)
        result = ((data or {}).get("data") or {}).get("attributes", {}).get("result") or []
        values: dict[str, dict[str, float]] = {}
        stamps: dict[str, str] = {}
        for row in result:
            series = [s for s in row.get("series") or [] if isinstance(s, dict)]
            if not series:
                continue
            last = series[-1]
            value = as_float(last.get("value"))
            if value is None:
                continue
            mo = str(row.get("monitoredObjectId"))
            values.setdefault(mo, {})[str(row.get("metric"))] = value
            stamps[mo] = max(stamps.get(mo, ""), str(last.get("timestamp") or ""))
        if not fresh and any(mo not in values for mo in wanted.values()):
            self.forget_objects()
        out: dict[str, LinkMetrics] = {}
        for link, mo in wanted.items():
            got = values.get(mo, {})
            if all(m in got for m in (PCA_DELAY, PCA_JITTER, PCA_LOSS)):
                out[link] = LinkMetrics(
                    object_name=link,
                    delay_ms=got[PCA_DELAY],
                    jitter_ms=got[PCA_JITTER],
                    loss_pct=got[PCA_LOSS],
                    timestamp=stamps.get(mo) or _iso(end),
                )
        return out

    async def thresholds(self) -> Thresholds:
        """The raise thresholds of the alerting policies (the lowest where several set one)."""
        data = await self._call("GET", "/api/v2/policies/alerting")
        aliases = {
            "delayAvg": "delay",
            "delay-avg": "delay",
            "delayVarAvg": "jitter",
            "jitterAvg": "jitter",
            "delay-var-avg": "jitter",
            "packetsLostPct": "loss",
            "packets-lost-pct": "loss",
        }
        found: dict[str, float] = {}
        for policy in (data or {}).get("data") or []:
            attrs = policy.get("attributes") or policy
            for condition in attrs.get("conditions") or []:
                trigger = condition.get("triggersOn") or {}
                kind = aliases.get(str((trigger.get("metric") or {}).get("id")))
                value = as_float(trigger.get("value"))
                if kind is not None and value is not None:
                    found[kind] = min(found.get(kind, value), value)
        missing = {"delay", "jitter", "loss"} - set(found)
        if missing:
            log.warning(
                "PCA alerting policy lacks thresholds, using defaults", missing=sorted(missing)
            )
        return Thresholds(
            delay_ms=found.get("delay", 50.0),
            jitter_ms=found.get("jitter", 10.0),
            loss_pct=found.get("loss", 1.0),
        )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

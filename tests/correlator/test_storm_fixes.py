"""What the alert storm (tests/e2e/test_storm.py, bench/storm.py) found in the correlator.

- The topology was read with one CNC performance read per link direction on every refresh
  (two thousand reads on a 500-node network) although the correlator needs only ends, SRLGs
  and interfaces; while the first read ran, every other request correlated on an empty view
  (no SRLGs), and a request whose cache had expired waited for the whole read.
- A ServiceNow record already made a ticket was answered ``duplicate`` with no id and no row:
  an alert answered for with no disposition stored.
- A sender that went away half-way through its body (a cut connection it retries) was logged
  as an application error with a full traceback, once per cut.
- ``GET /api/v1/alerts`` could not read back more than its newest 5,000 alerts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx

from services.correlator.topology import TopologyCache
from shared.southbound import Link, Node, Topology
from tests.correlator.conftest import AUTH, Cnc
from tests.correlator.test_servicenow_source import URL, record


def _alert(link: str, n: int = 0) -> dict[str, Any]:
    return {
        "source": "rest",
        "link": link,
        "severity": "high",
        "metric": "delay-avg",
        "value": 120.0,
        "threshold": 50.0,
        "fingerprint": f"storm-{link}-{n}",
    }


async def test_first_alerts_wait_for_one_topology_read_without_link_delays(
    harness: Any, cnc: Cnc
) -> None:
    paths: list[str] = []
    answer = cnc.answer

    def counting(method: str, path: str) -> httpx.Response:
        paths.append(path)
        return answer(method, path)

    cnc.answer = counting  # type: ignore[method-assign]
    async with harness() as h:
        # pe1-pe2 and pe3-pe4 share SRLG 100 and no node: only the topology relates them
        first, second = await asyncio.gather(
            h.post("/api/v1/alerts", _alert("pe1-pe2")), h.post("/api/v1/alerts", _alert("pe3-pe4"))
        )
        a, b = first.json()["alerts"][0], second.json()["alerts"][0]
        assert a["incident_id"] == b["incident_id"], (a, b)
        assert sorted([a["disposition"], b["disposition"]]) == ["correlated", "new_incident"]
    topology_reads = [p for p in paths if "ietf-network-state" in p]
    assert len(topology_reads) == 1, paths
    assert not [p for p in paths if "igp-link-pm" in p], paths


class _SlowCnc:
    """A CNC client whose topology read waits until the test lets it finish."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reads = 0
        self.links = [
            Link.model_validate({"link-id": "a-b", "source": "a", "destination": "b", "srlgs": [7]})
        ]

    async def topology_structure(self) -> Topology:
        self.reads += 1
        await self.release.wait()
        return Topology(
            nodes=[Node.model_validate({"node-id": n}) for n in "abc"], links=list(self.links)
        )


async def test_an_expired_topology_is_served_while_it_is_read_again() -> None:
    client = _SlowCnc()
    cache = TopologyCache(client, ttl_s=60.0, extra_interfaces={})  # type: ignore[arg-type]
    waiting = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing known yet: the first callers wait for the read
    client.release.set()
    view = await waiting
    assert view.known and view.srlgs_of("a-b") == frozenset({7})
    # expired: the next caller gets the last view at once, one read runs behind it
    client.release.clear()
    client.links = [Link.model_validate({"link-id": "a-c", "source": "a", "destination": "c"})]
    cache._fetched_at -= 61
    stale = await cache.get()
    again = await cache.get()
    assert stale is view and again is view
    await asyncio.sleep(0)  # let the background read start
    assert client.reads == 2  # one read for both callers
    client.release.set()
    assert cache._fetch is not None
    await cache._fetch
    assert "a-c" in (await cache.get()).links
    await cache.aclose()


async def test_a_known_servicenow_record_is_stored_as_a_duplicate(harness: Any) -> None:
    async with harness() as h:
        first = (await h.post(URL, record())).json()["alerts"][0]
        again = await h.post(URL, record())
        assert again.status_code == 200, again.text
        (entry,) = again.json()["alerts"]
        assert entry["disposition"] == "duplicate" and entry["id"], entry
        rows = (
            await h.client.get("/api/v1/alerts", params={"source": "servicenow"}, headers=AUTH)
        ).json()
        assert [(r["id"], r["disposition"], r["incident_id"]) for r in rows] == [
            (entry["id"], "duplicate", first["incident_id"]),
            (first["id"], "new_incident", first["incident_id"]),
        ]


async def test_a_sender_that_goes_away_mid_body_stores_nothing_and_is_no_error(
    harness: Any,
) -> None:
    async with harness() as h:
        messages: Iterator[dict[str, Any]] = iter(
            [
                {"type": "http.request", "body": b'{"alerts": [{"link": "pe1', "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/alerts",
            "raw_path": b"/api/v1/alerts",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"authorization", AUTH["Authorization"].encode()),
                (b"content-type", b"application/json"),
                (b"content-length", b"400"),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8001),
            "state": {},
        }
        await h.app(scope, receive, send)
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499, sent
        rows = (await h.client.get("/api/v1/alerts", headers=AUTH)).json()
        assert rows == []


async def test_every_alert_can_be_read_back_page_by_page(harness: Any) -> None:
    async with harness() as h:
        ids: list[str] = []
        for n in range(3):  # three requests at the same clock time, then later ones
            r = await h.post("/api/v1/alerts", [_alert("pe1-pe2", 3 * n + k) for k in range(3)])
            ids += [e["id"] for e in r.json()["alerts"]]
            h.clock.advance(1)
        seen: list[str] = []
        before: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"before": before} if before else {})}
            page = (await h.client.get("/api/v1/alerts", params=params, headers=AUTH)).json()
            seen += [row["id"] for row in page]
            if len(page) < 2:
                break
            before = page[-1]["id"]
        assert seen == list(reversed(ids))


async def test_the_fast_path_answers_as_the_route_does(harness: Any) -> None:
    """A JSON list of alerts is served ahead of the framework (app.AlertsFastPath), the same
    alerts as ``{"alerts": [...]}`` by the route: the same status, headers and entries."""
    async with harness() as h:
        fast = await h.post("/api/v1/alerts", [{"link": "pe1-pe2", "labels": {"i": "1"}}])
        routed = await h.post(
            "/api/v1/alerts", {"alerts": [{"link": "pe1-pe2", "labels": {"i": "2"}}]}
        )
    assert fast.status_code == routed.status_code == 202
    for name in ("content-type", "content-length"):
        assert (name in fast.headers) == (name in routed.headers), name
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert int(fast.headers["content-length"]) == len(fast.content)
    first, second = fast.json(), routed.json()
    assert first["accepted"] == second["accepted"] == 1
    assert first["alerts"][0].keys() == second["alerts"][0].keys()
    assert [first["alerts"][0]["disposition"], second["alerts"][0]["disposition"]] == [
        "new_incident",
        "correlated",
    ]

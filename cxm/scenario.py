"""``cxm scenario NAME [--wait] [--set KEY=VALUE …]``: play a lab scenario and, optionally,
follow its ticket.

``--set`` passes scenario parameters as the request's JSON body (``busy-hour``: ``peak`` or
``peak_pct``, ``base``, ``up_s``, ``hold_s``, ``down_s``, ``gap_s``, ``repeat``; the fault
scenarios: ``duration_s``, ``step_s``); a value that reads as JSON (a number, true) is sent as
that, else as a string.

The lab answers with the links the scenario hurts; with ``--wait`` the command polls the IO
Agent's ticket list until the ticket naming those links is closed (exit 0) or escalated
(exit 1), printing every status change as it happens. Errors are one line on stderr.

IO reads need an IO API token, not the mesh token: the command uses the bootstrap admin token
IO wrote under ``CXM_DATA_DIR`` (``io-admin-token``) when it can read it, else sends none and
relies on IO trusting token-less loopback requests from the local operator.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from shared.settings import Settings

FINAL_STATUSES = frozenset({"closed", "escalated"})
IO_TOKEN_FILE = "io-admin-token"


def _io_token(path: Path) -> str | None:
    """The local IO admin token, if this user can read it (blocking: run in a thread)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class ScenarioFailed(Exception):
    """A one-line reason the command could not do its job."""


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["peak_pct=95", "repeat=3"]`` → ``{"peak_pct": 95, "repeat": 3}``; ValueError on a
    pair without ``=``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


async def run_scenario(
    settings: Settings,
    name: str,
    *,
    wait: bool,
    timeout_s: float | None = None,
    client: httpx.AsyncClient | None = None,
    out: TextIO | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    """Start scenario ``name`` on the lab; with ``wait``, follow its ticket to the end.

    ``params`` is the scenario's JSON body (none sent when empty). A busy hour's ticket is
    the one naming a link its peak overloads (the lab answers those as ``links``).

    ``client`` and ``out`` are seams for tests (an ASGI-mounted client, a string buffer).
    Returns the process exit code: 0 when started (or, waiting, when the ticket closed).
    """
    stdout = out or sys.stdout
    stderr = out or sys.stderr
    headers: dict[str, str] = {}
    own = client is None
    http = client or httpx.AsyncClient(timeout=settings.mesh_timeout_s)
    try:
        known: set[str] = set()
        if wait:
            token = await asyncio.to_thread(_io_token, settings.data_dir / IO_TOKEN_FILE)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            known = {t["incident_id"] for t in await _tickets(http, settings, headers)}
        started = await _start(http, settings, name, params or {})
        links: list[str] = list(started.get("links", []))
        print(
            f"scenario {started.get('scenario', name)} started on {settings.url_of('lab')}: "
            f"{started.get('description', '')} (links: {', '.join(links) or 'none'})",
            file=stdout,
            flush=True,
        )
        if not wait:
            return 0
        if not links:
            raise ScenarioFailed(f"{name} names no link, so there is no ticket to wait for")
        limit = timeout_s if timeout_s is not None else max(30.0, settings.scaled(900.0))
        return await _follow(http, settings, headers, set(links), known, limit, stdout)
    except ScenarioFailed as exc:
        print(f"cxm scenario: {exc}", file=stderr, flush=True)
        return 1
    finally:
        if own:
            await http.aclose()


async def _start(
    http: httpx.AsyncClient, settings: Settings, name: str, params: dict[str, Any]
) -> dict[str, Any]:
    url = f"{settings.url_of('lab')}/lab/scenarios/{name}"
    try:
        response = await http.post(url, json=params) if params else await http.post(url)
    except httpx.HTTPError as exc:
        raise ScenarioFailed(
            f"the lab is not reachable at {settings.url_of('lab')} ({type(exc).__name__}); "
            "start it with `cxm up` or `cxm agent lab`"
        ) from None
    if response.status_code >= 400:
        raise ScenarioFailed(f"the lab refused {name!r}: {_detail(response)}")
    data: dict[str, Any] = response.json()
    return data


async def _tickets(
    http: httpx.AsyncClient, settings: Settings, headers: dict[str, str]
) -> list[dict[str, Any]]:
    url = f"{settings.url_of('io')}/api/v1/tickets"
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ScenarioFailed(
            f"the IO agent is not reachable at {settings.url_of('io')} ({type(exc).__name__}); "
            "is the mesh running (`cxm up`)?"
        ) from None
    if response.status_code >= 400:
        raise ScenarioFailed(f"the IO agent answered {_detail(response)}")
    tickets: list[dict[str, Any]] = response.json()
    return tickets


async def _follow(
    http: httpx.AsyncClient,
    settings: Settings,
    headers: dict[str, str],
    links: set[str],
    known: set[str],
    limit: float,
    stdout: TextIO,
) -> int:
    """Poll IO until the scenario's ticket reaches a final status; print every event it got."""
    interval = min(2.0, max(0.05, settings.scaled(1.0)))
    deadline = time.monotonic() + limit
    printed: dict[str, int] = {}
    while time.monotonic() < deadline:
        mine = [
            t
            for t in await _tickets(http, settings, headers)
            if t["incident_id"] not in known and links & set(t.get("degraded_links") or [])
        ]
        for ticket in sorted(mine, key=lambda t: str(t.get("created_at"))):
            incident = ticket["incident_id"]
            url = f"{settings.url_of('io')}/api/v1/tickets/{incident}"
            events = (await http.get(url, headers=headers)).json().get("events", [])
            for event in events[printed.get(incident, 0) :]:
                print(f"{incident} {_describe(event)}", file=stdout, flush=True)
            printed[incident] = len(events)
        final = [t for t in mine if t.get("status") in FINAL_STATUSES]
        if mine and len(final) == len(mine):
            return 0 if all(t.get("status") == "closed" for t in final) else 1
        await asyncio.sleep(interval)
    raise ScenarioFailed(
        f"no closed or escalated ticket for {', '.join(sorted(links))} within {limit:.0f}s"
    )


def _describe(event: dict[str, Any]) -> str:
    """One line per notification: what it is, the status and phase, and its message."""
    payload = event.get("payload") or {}
    kind = event.get("task_type", "?")
    status = payload.get("status") or payload.get("resolution") or ""
    phase = f" (phase {payload['phase']})" if payload.get("phase") else ""
    text = payload.get("message") or payload.get("summary") or payload.get("action") or ""
    return f"{kind} {status}{phase}: {text}".replace("  ", " ")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return f"HTTP {response.status_code}: {detail}"

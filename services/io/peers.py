"""What the console asks other parts of CXM: the audit trail and the network lab.

Neither is needed for IO to work, so both degrade to a clear message instead of an error
page: the audit agent may be down, and a real deployment has no lab at all.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse

from services.io.auth import OperatorDep, ViewerDep
from shared.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["peers"])


def _http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


@router.get("/tickets/{incident_id}/audit")
async def audit_trail(incident_id: str, request: Request, _user: ViewerDep) -> dict[str, Any]:
    """The audit agent's events for the incident, or ``available: false`` with the reason."""
    settings: Settings = request.app.state.settings
    url = f"{settings.url_of('audit')}/api/v1/audit/events"
    headers = {"Authorization": f"Bearer {settings.mesh_token}"} if settings.mesh_token else {}
    try:
        response = await _http(request).get(
            url, params={"incident_id": incident_id}, headers=headers
        )
    except httpx.HTTPError as exc:
        return {"available": False, "error": f"audit agent unreachable: {type(exc).__name__}"}
    if response.status_code != 200:
        return {"available": False, "error": f"audit agent answered HTTP {response.status_code}"}
    try:
        body = response.json()
    except ValueError:
        return {"available": False, "error": "audit agent answered something that is not JSON"}
    if isinstance(body, dict):
        body = body.get("events", body.get("items", body.get("results", [])))
    events = body if isinstance(body, list) else []
    return {"available": True, "events": events}


def _lab(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if not settings.lab_enabled:
        raise HTTPException(404, "the lab is disabled (CXM_LAB_ENABLED=false)")
    return settings.url_of("lab")


async def _relay(request: Request, method: str, path: str, body: Any = None) -> JSONResponse:
    """Pass a lab call through; the lab's own answer (and status) reaches the console."""
    base = _lab(request)
    try:
        response = await _http(request).request(method, f"{base}{path}", json=body)
    except httpx.HTTPError as exc:
        raise HTTPException(
            503, f"the lab at {base} is unreachable: {type(exc).__name__}"
        ) from None
    try:
        content = response.json() if response.content else {}
    except ValueError:
        content = {"detail": response.text[:500]}
    return JSONResponse(content, status_code=response.status_code)


def _segment(name: str) -> str:
    """One path segment for the lab, percent-encoded: a name with ``/``, ``?``, ``%`` or spaces
    reaches the lab as that name (and gets its 404), never as another path or a bad URL."""
    if name in (".", ".."):  # a URL would resolve them to another path of the lab
        raise HTTPException(404, f"no lab object named {name!r}")
    return quote(name, safe="")


LabBody = Annotated[dict[str, Any] | None, Body()]


@router.get("/lab/topology")
async def lab_topology(request: Request, _user: ViewerDep) -> JSONResponse:
    return await _relay(request, "GET", "/lab/topology")


@router.post("/lab/links/{link}/{action}")
async def lab_link(
    link: str, action: str, request: Request, _user: OperatorDep, body: LabBody = None
) -> JSONResponse:
    """Degrade (``delay_ms``, ``loss_pct``, ``jitter_ms``, ``duration_s``), recover, flap, or
    load (``target_pct``, ``ramp_s``)."""
    if action not in ("degrade", "recover", "flap", "load"):
        raise HTTPException(404, f"unknown lab action {action!r}: degrade, recover, flap or load")
    return await _relay(request, "POST", f"/lab/links/{_segment(link)}/{action}", body or {})


@router.post("/lab/scenarios/{name}")
async def lab_scenario(
    name: str, request: Request, _user: OperatorDep, body: LabBody = None
) -> JSONResponse:
    return await _relay(request, "POST", f"/lab/scenarios/{_segment(name)}", body or {})

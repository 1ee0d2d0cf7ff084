"""Peers of IO that cannot run here in full: an orchestrator, a CNC topology, a lab, an audit API.

The fake orchestrator behaves like the real one where IO can see it: it answers
``approval_decision`` and then, as the resumed graph would, reports the next phases back to
IO over the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from shared.contracts import APPROVAL_DECISION, DELETE_TUNNEL
from shared.models import utcnow
from tests.agents.fakes import TopologyCnc
from tests.support import free_port, unbatched

INCIDENT = "INC-2026-0001"
MESH_TOKEN = "test-mesh-token"

NODES = ["pe1", "pe2", "pe3", "pe4", "p1", "p2"]
LINKS = [
    ("pe1", "pe2"),
    ("pe2", "pe3"),
    ("pe1", "p1"),
    ("p1", "pe4"),
    ("pe4", "p2"),
    ("p2", "pe3"),
    ("pe2", "p1"),
]
TUNNEL_PATH = ["pe1", "p1", "pe4", "p2", "pe3"]


def topology_cnc() -> TopologyCnc:
    """CNC as CncClient.topology() reads it (login, topology, link delays): the seed's example
    network."""
    return TopologyCnc(nodes=list(NODES), links=[(a, b, []) for a, b in LINKS])


def network_app(
    calls: list[tuple[str, Any]] | None = None, audit_log: dict[str, list[Any]] | None = None
) -> FastAPI:
    """CNC (its login and topology), the lab's control API and the audit query API in one app.

    The audit API answers ``audit_log[incident_id]`` when a test filled it in (it may do so
    after the app started), else one ``incident_created`` event.
    """
    app = FastAPI()
    seen = calls if calls is not None else []
    log = audit_log if audit_log is not None else {}

    cnc = topology_cnc()

    @app.api_route("/crosswork/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def crosswork(request: Request) -> Response:
        answer = cnc.answer(request.method, request.url.path)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    @app.get("/lab/topology")
    async def lab_topology() -> dict[str, Any]:
        return {"links": [{"id": f"{a}-{b}", "source": a, "destination": b} for a, b in LINKS]}

    @app.post("/lab/links/{link}/{action}")
    async def lab_link(link: str, action: str, request: Request) -> JSONResponse:
        body = await request.json() if await request.body() else {}
        seen.append((f"{action} {link}", body))
        if link not in {f"{a}-{b}" for a, b in LINKS}:
            return JSONResponse({"detail": f"no link {link}"}, status_code=404)
        return JSONResponse({"link": link, "action": action, "state": "applied"})

    @app.post("/lab/scenarios/{name}")
    async def scenario(name: str) -> dict[str, Any]:
        seen.append((f"scenario {name}", None))
        return {"scenario": name, "started": True}

    @app.get("/api/v1/audit/events")
    async def audit(incident_id: str) -> dict[str, Any]:
        if incident_id in log:
            return {"events": log[incident_id]}
        return {
            "events": [
                {
                    "event_type": "incident_created",
                    "incident_id": incident_id,
                    "source_agent": "correlator",
                    "occurred_at": utcnow().isoformat(),
                    "details": {"links": ["pe1-pe2"]},
                }
            ]
        }

    return app


def envelope(task_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"task_type": task_type, "payload": payload}


def new_ticket(incident: str = INCIDENT, **extra: Any) -> dict[str, Any]:
    return envelope(
        "new_ticket",
        {
            "incident_id": incident,
            "severity": "high",
            "summary": "SLA degradation detected on pe1-pe2, pe2-pe3",
            "degraded_links": ["pe1-pe2", "pe2-pe3"],
            "affected_services": [],
            "source_agent": "event_correlator",
            "created_at": utcnow().isoformat(),
            "status": "new",
            "triage": {"verdict": "genuine", "confidence": 0.93, "alerts": 2},
            **extra,
        },
    )


def status(incident: str, status_: str, phase: str, message: str, **details: Any) -> dict[str, Any]:
    return envelope(
        "status_update",
        {
            "incident_id": incident,
            "status": status_,
            "phase": phase,
            "message": message,
            "details": details,
            "source_agent": "orchestrator",
        },
    )


def seed_phases(incident: str = INCIDENT) -> list[dict[str, Any]]:
    """Phases 2 to 4 of the seed, with the path and tunnel details the orchestrator adds."""
    return [
        status(
            incident,
            "assessing",
            "2",
            "15 services affected, computing alternate path",
            total_affected=15,
            services_by_tier={"platinum": 2, "gold": 5, "silver": 8},
        ),
        status(
            incident,
            "computing",
            "3",
            "Alternate path found (sr-mpls), provisioning tunnel",
            path_type="sr-mpls",
            hop_count=4,
            path=TUNNEL_PATH,
            links=["pe1-p1", "p1-pe4", "pe4-p2", "p2-pe3"],
            head_end="pe1",
            end_point="pe3",
            metric="delay",
        ),
        status(
            incident,
            "provisioning",
            "4",
            "Protection tunnel created (sr-mpls), steering traffic",
            tunnel_id="sr-policy-pe1-pe4-protect-001",
            binding_sid=24001,
            te_type="sr-mpls",
            path=TUNNEL_PATH,
        ),
    ]


def approval(
    incident: str = INCIDENT,
    approval_id: str = "APR-0001",
    *,
    action: str = "steer_traffic",
    expires_in_s: float = 600,
) -> dict[str, Any]:
    return envelope(
        "approval_required",
        {
            "approval_id": approval_id,
            "incident_id": incident,
            "action": action,
            "details": {"tunnel_id": "sr-policy-pe1-pe4-protect-001", "services": 15},
            "expires_at": (utcnow() + timedelta(seconds=expires_in_s)).isoformat(),
            "source_agent": "orchestrator",
        },
    )


def closed(incident: str = INCIDENT) -> dict[str, Any]:
    return envelope(
        "ticket_closed",
        {
            "incident_id": incident,
            "resolution": "resolved",
            "duration_seconds": 245,
            "summary": "Incident resolved: SLA recovered on original path",
            "details": {
                "final_status": "resolved",
                "close_reason": "sla_recovered",
                "degraded_links": ["pe1-pe2", "pe2-pe3"],
                "affected_services_count": 15,
            },
            "source_agent": "orchestrator",
        },
    )


class Orchestrator:
    """A stand-in orchestrator reached through httpx.MockTransport.

    ``mode``: "ok" answers the decision, "conflict" answers 409 (not pending), "down" fails to
    connect.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        import json

        body = json.loads(request.content)
        self.received.append(body)
        if self.mode == "conflict":
            return httpx.Response(409, json={"detail": "approval is not pending"})
        return httpx.Response(200, json=_decided(body))


def resuming_orchestrator(io_url: str, received: list[dict[str, Any]]) -> FastAPI:
    """An orchestrator that, once approved, reports monitoring and then closes the ticket."""
    app = FastAPI()
    tasks: set[asyncio.Task[None]] = set()

    async def resume(incident: str) -> None:
        headers = {"Authorization": f"Bearer {MESH_TOKEN}"}
        async with httpx.AsyncClient(base_url=io_url, headers=headers, timeout=10) as client:
            await client.post(
                "/a2a/tasks",
                json=status(
                    incident,
                    "monitoring",
                    "6",
                    "Traffic on the protection tunnel; SLA recovered, hold timer running",
                    within_sla=True,
                    hold_timer_s=60,
                ),
            )
            await client.post("/a2a/tasks", json=closed(incident))

    @app.post("/a2a/tasks")
    async def a2a(request: Request) -> dict[str, Any]:
        body = await request.json()
        received.extend(task for task, _ in unbatched(body, None))
        payload = body["payload"]
        if body["task_type"] == "approval_decision" and payload["decision"] == "approve":
            task = asyncio.create_task(resume(payload["incident_id"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return _decided(body)

    return app


def _decided(body: dict[str, Any]) -> dict[str, Any]:
    """The answer of the peer IO reached, held to its contract where IO reads it: the
    orchestrator's to ``approval_decision``, the tunnel agent's to ``delete_tunnel``."""
    payload, task_type = body["payload"], body["task_type"]
    answer: BaseModel | None = None
    if task_type == DELETE_TUNNEL.task_type:
        answer = DELETE_TUNNEL.response(tunnel_id=payload["tunnel_id"], already_absent=False)
    elif task_type == APPROVAL_DECISION.task_type:
        answer = APPROVAL_DECISION.response(
            incident_id=payload["incident_id"],
            approval_id=payload["approval_id"],
            decision=payload["decision"],
        )
    # The rest is what IO's outbox sends (audit events): the outbox reads no answer.
    result = answer.model_dump() if answer is not None else {"status": "resumed"}
    return {"task_id": "t1", "task_type": task_type, "result": result}


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop; yield its URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        if not server.started:
            raise RuntimeError(f"uvicorn did not start on {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        broadcaster = getattr(app.state, "broadcaster", None)
        if broadcaster is not None:
            broadcaster.close()  # open SSE streams end, so shutdown does not wait on them
        server.should_exit = True
        await task

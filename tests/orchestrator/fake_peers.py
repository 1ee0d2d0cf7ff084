"""Fake peers of the orchestrator: impact, path, tunnel, restore, notify, audit, io, correlator.

``FakeNetwork`` answers every task the orchestrator sends, validating each payload against its
contract's request model and each answer against its response model (``shared.contracts``, so
the orchestrator and this fake are both held to the contract), replaying answers per
idempotency key like the real agents do, and recording what it received in order. Tests use
it in-process through ``transport()`` (an ``httpx.MockTransport`` the app's mesh client uses),
and the crash tests run it as a real process::

    python -m tests.orchestrator.fake_peers PORT

which serves ``POST /a2a/tasks`` for every peer role on one port plus a small control API:
``POST /control`` (set knobs such as ``sla_default``) and ``GET /control/stats``.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from shared import contracts as c
from shared import models as m
from shared.settings import AGENT_PORTS
from tests.support import unbatched

TASKS: dict[str, c.Contract[Any, Any]] = {
    contract.task_type: contract
    for contract in (
        c.ASSESS_IMPACT,
        c.COMPUTE_PATH,
        c.COMPUTE_PATHS,
        c.PROVISION_TUNNEL,
        c.STEER_TRAFFIC,
        c.PROVISION_TUNNELS,
        c.STEER_POLICIES,
        c.REROUTE_TUNNEL,
        c.CHECK_SLA,
        c.CUTOVER_STEP,
        c.CLEANUP,
        c.CUTOVER_POLICIES,
        c.CLEANUP_POLICIES,
        c.NOTIFY,
        c.AUDIT_EVENT,
        c.STATUS_UPDATE,
        c.TICKET_CLOSED,
        c.ERROR_NOTICE,
        c.APPROVAL_REQUIRED,
        c.INCIDENT_CLOSED,
    )
}
"""The contracts the orchestrator uses, by task type."""
PORT_AGENTS = {port: name for name, port in AGENT_PORTS.items()}


def _key(link: str) -> str:
    return "-".join(sorted(link.split("-")))


def _links(path: list[str]) -> list[str]:
    return [_key(f"{a}-{b}") for a, b in itertools.pairwise(path)]


def seed_services() -> list[dict[str, Any]]:
    """The seed's example: 15 services, 2 platinum, 5 gold, 8 silver, all pe1 → pe3 (the
    seed's one group, so one policy)."""
    return services_between(
        [
            ("platinum", 2, ("pe1", "pe3")),
            ("gold", 5, ("pe1", "pe3")),
            ("silver", 8, ("pe1", "pe3")),
        ]
    )


def services_between(plan: list[tuple[str, int, tuple[str, str]]]) -> list[dict[str, Any]]:
    """``count`` services of ``tier`` between each pair of PEs (several pairs: several groups,
    one policy each). Their current path crosses pe2, where the seed's links degrade."""
    out = []
    numbers: dict[str, int] = {}
    for tier, count, (head, end) in plan:
        for _ in range(count):
            n = numbers[tier] = numbers.get(tier, 0) + 1
            out.append(
                {
                    "service_id": f"vpn-{tier}-{n}",
                    "name": f"{tier} customer {n}",
                    "service_type": "l3vpn",
                    "tier": tier,
                    "head_end": head,
                    "end_point": end,
                    "path": [head, "pe2", end],
                    "bandwidth_mbps": {"platinum": 500.0, "gold": 300.0, "silver": 200.0}[tier],
                }
            )
    return out


@dataclass
class Received:
    agent: str
    task_type: str
    payload: dict[str, Any]
    key: str


@dataclass
class FakeNetwork:
    """Knobs a test turns, and what the fake peers received."""

    services: list[dict[str, Any]] = field(default_factory=seed_services)
    impact_fail: bool = False
    path_found: bool = True
    no_path_between: set[tuple[str, str]] = field(default_factory=set)
    out_of_sla_is_a_cost: bool = False
    """Like the path agent: when no candidate avoids every degraded link, cross one that only
    other incidents' (or the tunnel's) degraded links spoil; the request's own stay banned."""
    """(head_end, end_point) pairs compute_path finds no path for (the others still have one)."""
    tunnel_fail: bool = False
    sla_script: list[bool] = field(default_factory=list)
    sla_default: bool = True
    cutover_script: list[bool] = field(default_factory=list)
    """SLA within at each cutover step (one per ``cutover_policies``, whatever its policies)."""
    policy_fail: dict[tuple[str, str], str] = field(default_factory=dict)
    """(task type, tunnel id) → the code restore answers for that policy alone in a
    ``cutover_policies`` or ``cleanup_policies`` batch, or tunnel in a ``steer_policies``
    batch (status 502)."""
    provision_fail_between: set[tuple[str, str]] = field(default_factory=set)
    """(head_end, end_point) pairs whose policy ``provision_tunnels`` fails alone
    (``tunnel_provision_failed``, 502), the others provisioned."""
    down: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    tunnels_created: int = 0
    tunnels_rerouted: int = 0
    bad_links: set[str] = field(default_factory=set)
    """Links ("a-b", sorted) that check_sla reports out of SLA whatever the script says."""
    protection_links: set[str] = field(default_factory=set)
    degraded_links: set[str] = field(default_factory=set)
    """Every link some incident asked a path to avoid: the SLA script speaks for those."""
    _replies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _tunnels: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each tunnel's latest answer, for the answers that repeat its identifiers."""

    # --- what tests read ---------------------------------------------------------------

    def events(self, incident_id: str, task_type: str | None = None) -> list[dict[str, Any]]:
        return [
            r.payload
            for r in self.received
            if r.payload.get("incident_id") == incident_id
            and r.agent == "io"
            and (task_type is None or r.task_type == task_type)
        ]

    def io_types(self, incident_id: str) -> list[str]:
        return [
            r.task_type
            for r in self.received
            if r.agent == "io" and r.payload.get("incident_id") == incident_id
        ]

    def statuses(self, incident_id: str) -> list[tuple[str, str]]:
        return [(p["phase"], p["status"]) for p in self.events(incident_id, "status_update")]

    def to(self, agent: str, incident_id: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if r.agent == agent
            and (incident_id is None or r.payload.get("incident_id") == incident_id)
        ]

    def closed(self, incident_id: str) -> list[dict[str, Any]]:
        return self.events(incident_id, "ticket_closed")

    def batches(self, incident_id: str, task_type: str) -> list[Received]:
        """restore's ``cutover_policies`` or ``cleanup_policies`` tasks, in order (replays,
        answered from their record, are not received again)."""
        return [r for r in self.to("restore", incident_id) if r.task_type == task_type]

    def policy_steps(self, incident_id: str) -> list[tuple[str, int]]:
        """(tunnel id, protection %) of every policy of every cutover step sent, in order."""
        return [
            (policy["tunnel_id"], r.payload["protection_pct"])
            for r in self.batches(incident_id, "cutover_policies")
            for policy in r.payload["policies"]
        ]

    def provisions(self, incident_id: str) -> list[dict[str, Any]]:
        """Every policy of every ``provision_tunnels`` task sent, in order."""
        return [
            one
            for r in self.to("tunnel", incident_id)
            if r.task_type == "provision_tunnels"
            for one in r.payload["tunnels"]
        ]

    def steers(self, incident_id: str) -> list[dict[str, Any]]:
        """Every policy of every ``steer_policies`` task sent, in order."""
        return [
            one
            for r in self.to("tunnel", incident_id)
            if r.task_type == "steer_policies"
            for one in r.payload["policies"]
        ]

    def cleanups(self, incident_id: str) -> list[dict[str, Any]]:
        """Every policy of every cleanup sent, in order."""
        return [
            policy
            for r in self.batches(incident_id, "cleanup_policies")
            for policy in r.payload["policies"]
        ]

    def stats(self) -> dict[str, Any]:
        closed: dict[str, int] = {}
        for r in self.received:
            if r.task_type == "ticket_closed":
                closed[r.payload["incident_id"]] = closed.get(r.payload["incident_id"], 0) + 1
        return {
            "tunnels_created": self.tunnels_created,
            "ticket_closed": closed,
            "calls": self.calls,
            "received": [
                {"agent": r.agent, "task_type": r.task_type, "payload": r.payload}
                for r in self.received
            ],
        }

    # --- answering ---------------------------------------------------------------------

    def handle(self, agent: str | None, body: dict[str, Any], key: str) -> tuple[int, Any]:
        tasks = unbatched(body, key)
        if tasks[0][0] is not body:  # an outbox batch: each item as its own task, in order
            results = []
            for task, item_key in tasks:
                status, reply = self.handle(agent, task, item_key or "")
                if status != 200:
                    return status, reply
                results.append(reply["result"])
            task_type = body["task_type"]
            return 200, {"task_id": key, "task_type": task_type, "result": {"results": results}}
        task_type = body.get("task_type", "")
        if task_type not in TASKS:
            return 400, {"detail": f"unknown task_type {task_type!r}"}
        contract = TASKS[task_type]
        owner, model = contract.agent, contract.request
        if agent is not None and agent != owner:
            return 400, {"detail": f"{agent} does not serve {task_type}"}
        if owner in self.down:
            return 503, {"detail": f"{owner} is down"}
        try:
            payload = model.model_validate(body.get("payload", {}))
        except ValidationError as exc:
            return 422, {"detail": json.loads(exc.json())}
        self.calls[task_type] = self.calls.get(task_type, 0) + 1
        previous = self._replies.get((key, task_type))
        if previous is not None:
            return 200, {**previous, "replayed": True}
        status, result = self._answer(task_type, payload)
        if status != 200:
            return status, result
        contract.response.model_validate(result)  # a fake that breaks the contract is a bug
        reply = {"task_id": key, "task_type": task_type, "status": "completed", "result": result}
        self._replies[(key, task_type)] = reply
        self.received.append(Received(owner, task_type, payload.model_dump(mode="json"), key))
        return 200, reply

    def _answer(self, task_type: str, p: Any) -> tuple[int, Any]:
        if task_type == "assess_impact":
            if self.impact_fail:
                return 500, {"detail": {"code": "southbound", "message": "CNC service API down"}}
            services = self.services
            by_tier: dict[str, int] = {}
            for s in services:
                by_tier[s["tier"]] = by_tier.get(s["tier"], 0) + 1
            highest = next((t for t in m.TIERS if t in by_tier), None)
            return 200, {
                "total_affected": len(services),
                "services_by_tier": by_tier,
                "affected_services": services,
                "highest_tier": highest,
            }
        if task_type == "compute_paths":
            results = [self._answer("compute_path", request)[1] for request in p.requests]
            return 200, {"results": results}
        if task_type == "compute_path":
            if not self.path_found or (p.head_end, p.end_point) in self.no_path_between:
                return 200, {"found": False, "reason": "no path avoiding the degraded links"}
            # via pe4, else via pe5: the first whose links avoid every degraded link
            # like the path agent, which leaves out every link out of SLA, not only these
            self.degraded_links.update(_key(link) for link in p.avoid_links)
            avoid = self.degraded_links
            paths = ([p.head_end, via, p.end_point] for via in ("pe4", "pe5"))
            candidates = list(paths)
            path = next((c for c in candidates if not set(_links(c)) & avoid), None)
            if path is None and self.out_of_sla_is_a_cost:
                banned = {_key(link) for link in p.avoid_links}
                path = next((c for c in candidates if not set(_links(c)) & banned), None)
            if path is None:
                return 200, {"found": False, "reason": "every candidate crosses a degraded link"}
            self.protection_links.update(_links(path))
            return 200, {
                "found": True,
                "path": path,
                "links": [f"{a}-{b}" for a, b in itertools.pairwise(path)],
                "hop_count": len(path) - 1,
                "total_delay_ms": 12.5,
                "metric": p.metric,
            }
        if task_type == "provision_tunnel":
            if self.tunnel_fail:
                return 502, {"detail": self._provision_failed()}
            self.tunnels_created += 1
            tunnel = {
                "tunnel_id": (
                    f"sr-policy-{p.head_end}-{p.end_point}-protect-{self.tunnels_created:03d}"
                ),
                "binding_sid": 24000 + self.tunnels_created,
                "te_type": p.te_type or "sr-mpls",
                "head_end": p.head_end,
                "end_point": p.end_point,
                "color": 100 + self.tunnels_created,
                "path": p.path,
                "state": "up",
            }
            self._tunnels[tunnel["tunnel_id"]] = tunnel
            return 200, tunnel
        if task_type == "reroute_tunnel":
            self.tunnels_rerouted += 1
            before = self._tunnels.get(p.tunnel_id, {})
            moved = {
                "tunnel_id": p.tunnel_id,
                "binding_sid": before.get("binding_sid", 24001),
                "te_type": before.get("te_type", "sr-mpls"),
                "head_end": p.path[0],
                "end_point": p.path[-1],
                "color": before.get("color", 101),
                "path": p.path,
                "state": "up",
            }
            self._tunnels[p.tunnel_id] = moved
            return 200, {**moved, "rerouted": True, "previous_path": before.get("path", p.path)}
        if task_type == "steer_traffic":
            # like the tunnel agent: the policy carries the services between its two ends
            ends = tuple(p.tunnel_id.removeprefix("sr-policy-").split("-")[:2])
            carried = [
                s["service_id"]
                for s in self.services
                if s["service_id"] in p.service_ids and (s["head_end"], s["end_point"]) == ends
            ]
            tunnel = self._tunnels.get(p.tunnel_id, {})
            return 200, {
                "traffic_steered": True,
                "tunnel_id": p.tunnel_id,
                "head_end": ends[0],
                "end_point": ends[-1],
                "color": tunnel.get("color", 101),
                "binding_sid": tunnel.get("binding_sid"),
                "protection_pct": 100,
                "services": carried,
                "not_steered": [s for s in p.service_ids if s not in carried],
                "cnc": {"status": "ok"},
            }
        if task_type == "provision_tunnels":
            # each policy answered as provision_tunnel answers it, in its place
            parts = []
            for one in p.tunnels:
                ends = (one.head_end, one.end_point)
                part: dict[str, Any] = {"head_end": ends[0], "end_point": ends[1]}
                if self.tunnel_fail or ends in self.provision_fail_between:
                    part["error"] = {**self._provision_failed(), "status": 502}
                else:
                    part["result"] = self._answer("provision_tunnel", one)[1]
                parts.append(part)
            return 200, {"tunnels": parts}
        if task_type == "steer_policies":
            answers = [
                self._policy(task_type, one.tunnel_id, self._answer("steer_traffic", one)[1])
                for one in p.policies
            ]
            return 200, {"policies": answers}
        if task_type == "check_sla":
            # the script speaks for every incident's degraded links; protection paths stay
            # healthy unless a test marks one of their links bad
            within = self.sla_script.pop(0) if self.sla_script else self.sla_default
            links = {}
            for link in p.links:
                key = _key(link)
                spare = key in self.protection_links and key not in self.degraded_links
                ok = key not in self.bad_links and (spare or within)
                links[link] = {"within_sla": ok, "delay_ms": 5.0 if ok else 80.0}
            return 200, {"within_sla": all(v["within_sla"] for v in links.values()), "links": links}
        if task_type == "cutover_step":
            within = self.cutover_script.pop(0) if self.cutover_script else True
            return 200, {
                "applied": True,
                "within_sla": within,
                "protection_pct": p.protection_pct if within else 100,
                "original_pct": p.original_pct if within else 0,
                "reverted": not within,
            }
        if task_type == "cleanup":
            return 200, {"deleted": True, "tunnel_id": p.tunnel_id, "already_absent": False}
        if task_type == "cutover_policies":
            # one SLA check for the step, as restore makes it; each policy answered alone
            within = self.cutover_script.pop(0) if self.cutover_script else True
            step = {
                "applied": True,
                "within_sla": within,
                "protection_pct": p.protection_pct if within else 100,
                "original_pct": p.original_pct if within else 0,
                "reverted": not within,
            }
            answers = [self._policy(task_type, policy.tunnel_id, step) for policy in p.policies]
            return 200, {"within_sla": within, "sla": {}, "policies": answers}
        if task_type == "cleanup_policies":
            gone = {"deleted": True, "already_absent": False}
            answers = [
                self._policy(task_type, policy.tunnel_id, {**gone, "tunnel_id": policy.tunnel_id})
                for policy in p.policies
            ]
            return 200, {"policies": answers}
        return 200, self._acknowledge(task_type, p)

    @staticmethod
    def _provision_failed() -> dict[str, Any]:
        """What the tunnel agent answers a policy it failed to create three times."""
        return {
            "code": "tunnel_provision_failed",
            "message": "CNC PCE refused the SR policy 3 times",
        }

    def _policy(self, task_type: str, tunnel_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """One policy's part of a batch: ``result``, or the failure ``policy_fail`` names."""
        code = self.policy_fail.get((task_type, tunnel_id))
        if code is None:
            return {"tunnel_id": tunnel_id, "result": result}
        failure = {"code": code, "message": f"CNC refused {tunnel_id}", "status": 502}
        return {"tunnel_id": tunnel_id, "error": failure}

    def _acknowledge(self, task_type: str, p: Any) -> dict[str, Any]:
        """What notify, audit, IO and the correlator answer the notifications they are sent."""
        if task_type == "notify":
            return {
                "incident_id": p.incident_id,
                "event": p.event,
                "template": "fake",
                "level": "fake",
                "channels": {},
            }
        if task_type == "audit_event":
            n = self.calls["audit_event"]
            return {
                "id": n,
                "seq": n,
                "hash": f"fake-{n}",
                "event_type": p.event_type,
                "duplicate": False,
            }
        if task_type == "approval_required":
            return {"approval_id": p.approval_id, "stored": True}
        if task_type == "incident_closed":
            return {"incident_id": p.incident_id, "closed": True}
        return {"incident_id": p.incident_id or "unassigned", "stored": True}

    # --- transports --------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """Routes the orchestrator's mesh calls by port to the fake peer of that port."""

        def route(request: httpx.Request) -> httpx.Response:
            agent = PORT_AGENTS.get(request.url.port or 0)
            if agent in self.down:
                raise httpx.ConnectError(f"{agent} is down", request=request)
            body = json.loads(request.content)
            status, data = self.handle(agent, body, request.headers.get("idempotency-key", ""))
            return httpx.Response(status, json=data)

        return httpx.MockTransport(route)


def create_app(net: FakeNetwork | None = None) -> FastAPI:
    """Every peer role on one port, plus the control API the crash tests drive."""
    network = net or FakeNetwork()
    app = FastAPI(title="fake peers")

    @app.post("/a2a/tasks")
    async def tasks(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        status, data = network.handle(None, body, request.headers.get("idempotency-key", ""))
        return JSONResponse(data, status_code=status)

    @app.post("/control")
    async def control(request: Request) -> dict[str, Any]:
        for name, value in (await request.json()).items():
            if name in ("down", "bad_links", "protection_links", "degraded_links"):
                value = set(value)
            setattr(network, name, value)
        return {"ok": True}

    @app.get("/control/stats")
    async def stats() -> dict[str, Any]:
        return network.stats()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

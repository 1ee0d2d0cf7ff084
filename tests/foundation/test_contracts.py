"""Contracts: one declaration per task type, typed at both ends, errors as attributes."""

from __future__ import annotations

import httpx
import pytest

from services.audit.app import build_spec as audit_spec
from services.correlator.app import spec as correlator_spec
from services.impact.app import spec as impact_spec
from services.io.app import create_app as create_io
from services.io.app import spec as io_spec
from services.notify.app import build_spec as notify_spec
from services.orchestrator.app import spec as orchestrator_spec
from services.path.app import spec as path_spec
from services.restore.app import spec as restore_spec
from services.traffic.app import spec as traffic_spec
from services.tunnel.app import spec as tunnel_spec
from shared.agent import AgentSpec, TaskContext
from shared.contracts import (
    AUDIT_EVENT,
    COMPUTE_PATH,
    CONTRACTS,
    DELETE_TUNNEL,
    NEW_TICKET,
    STEER_TRAFFIC,
    served_by,
)
from shared.db import make_engine, migrate
from shared.errors import MeshUnavailable, PeerAnswerInvalid, PeerError, TaskFailed
from shared.mesh import MeshClient
from shared.models import (
    AuditEvent,
    DeleteTunnel,
    NewTicket,
    SignalResult,
    SteerTraffic,
    TicketStored,
    TrafficSteered,
    TunnelDeleted,
)
from shared.outbox import OUTBOX_MIGRATIONS, Outbox, outbox_row
from shared.settings import Settings
from tests.support import running

SPECS = [
    io_spec,
    orchestrator_spec,
    correlator_spec,
    impact_spec,
    path_spec,
    tunnel_spec,
    restore_spec,
    traffic_spec,
    notify_spec(),
    audit_spec(),
]


def _mesh(settings: Settings, app: object) -> MeshClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return MeshClient(settings, source_agent="test", transport=transport, backoff_base=0.001)


def _tunnel_app(settings: Settings, fail: TaskFailed | None = None) -> object:
    """A tunnel agent whose ``delete_tunnel`` answers as told."""
    spec = AgentSpec("tunnel", "Tunnel", "test double")

    @spec.serve(DELETE_TUNNEL)
    async def delete_tunnel(request: DeleteTunnel, ctx: TaskContext) -> TunnelDeleted:
        if fail is not None:
            raise fail
        return TunnelDeleted(tunnel_id=request.tunnel_id, already_absent=True)

    @spec.serve(STEER_TRAFFIC)
    async def steer_traffic(request: SteerTraffic, ctx: TaskContext) -> TrafficSteered:
        return TunnelDeleted(tunnel_id=request.tunnel_id, already_absent=True)  # type: ignore[return-value]

    return spec.create_app(settings)


async def test_a_call_returns_the_contracts_response_model(settings: Settings) -> None:
    app = create_io(settings)
    async with running(app):
        mesh = _mesh(settings, app)
        ticket = NewTicket(incident_id="INC-2026-0001", severity="high", summary="pe1-pe2 down")
        stored = await mesh.call(NEW_TICKET, ticket, incident_id="INC-2026-0001")
        await mesh.aclose()
    assert isinstance(stored, TicketStored)
    assert stored.incident_id == "INC-2026-0001" and stored.stored is True


async def test_a_peers_task_failure_surfaces_as_typed_attributes(settings: Settings) -> None:
    refused = TaskFailed("tunnel t1 is failed, not up", code="tunnel_not_up", status=409)
    app = _tunnel_app(settings, refused)
    async with running(app):  # type: ignore[arg-type]
        mesh = _mesh(settings, app)
        with pytest.raises(PeerError) as info:
            await mesh.call(DELETE_TUNNEL, DeleteTunnel(incident_id="INC-1", tunnel_id="t1"))
        await mesh.aclose()
    error = info.value
    assert (error.agent, error.task_type) == ("tunnel", "delete_tunnel")
    assert (error.code, error.status) == ("tunnel_not_up", 409)
    assert error.message == "tunnel t1 is failed, not up"
    assert error.detail == {"code": "tunnel_not_up", "message": "tunnel t1 is failed, not up"}


async def test_a_transient_failure_keeps_the_last_answers_code(settings: Settings) -> None:
    busy = TaskFailed("CNC is busy", code="southbound", status=503)
    app = _tunnel_app(settings, busy)
    async with running(app):  # type: ignore[arg-type]
        mesh = _mesh(settings, app)
        with pytest.raises(MeshUnavailable) as info:
            await mesh.call(
                DELETE_TUNNEL, DeleteTunnel(incident_id="INC-1", tunnel_id="t1"), retries=1
            )
        await mesh.aclose()
    assert (info.value.code, info.value.status) == ("southbound", 503)


async def test_an_answer_that_breaks_the_contract_is_a_clear_error(settings: Settings) -> None:
    def peer(request: httpx.Request) -> httpx.Response:
        result = {"deleted": True, "already_absent": "perhaps"}
        return httpx.Response(200, json={"task_id": "t", "task_type": "x", "result": result})

    mesh = MeshClient(settings, source_agent="test", transport=httpx.MockTransport(peer))
    with pytest.raises(PeerAnswerInvalid) as info:
        await mesh.call(DELETE_TUNNEL, DeleteTunnel(incident_id="INC-1", tunnel_id="t1"))
    await mesh.aclose()
    text = str(info.value)
    assert text.startswith("tunnel/delete_tunnel: answer is not a valid TunnelDeleted")
    assert "tunnel_id: Field required" in text and "already_absent" in text
    assert info.value.result == {"deleted": True, "already_absent": "perhaps"}


async def test_a_handler_answering_another_model_is_a_server_error(settings: Settings) -> None:
    app = _tunnel_app(settings)
    async with running(app) as client:  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="answered TunnelDeleted, not its contract's Traffic"):
            await client.post(
                "/a2a/tasks",
                json={
                    "task_type": "steer_traffic",
                    "payload": {"incident_id": "I", "tunnel_id": "t"},
                },
                headers={"Authorization": "Bearer test-mesh-token"},
            )


def test_an_agent_refuses_to_serve_another_agents_contract() -> None:
    spec = AgentSpec("io", "IO", "test")
    with pytest.raises(ValueError, match="io cannot serve path/compute_path"):
        spec.serve(COMPUTE_PATH)
    assert spec.skills == {}


def test_a_contract_is_served_once_per_agent() -> None:
    spec = AgentSpec("tunnel", "Tunnel", "test")

    async def handler(request: DeleteTunnel, ctx: TaskContext) -> TunnelDeleted:
        raise NotImplementedError

    spec.serve(DELETE_TUNNEL)(handler)
    with pytest.raises(ValueError, match="served twice"):
        spec.serve(DELETE_TUNNEL)(handler)


def test_every_contract_is_served_by_its_agent_and_named_handler() -> None:
    served = []
    for spec in SPECS:
        for skill in spec.skills.values():
            assert skill.contract.agent == spec.name
            handler = f"{skill.handler.__module__}.{skill.handler.__name__}"
            assert handler == skill.contract.handler, skill.contract
            served.append(skill.contract)
    assert sorted(c.task_type for c in served) == sorted(c.task_type for c in CONTRACTS)
    assert len({c.task_type for c in CONTRACTS}) == len(CONTRACTS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_agent_card_skills_are_the_contracts_served(spec: AgentSpec, settings: Settings) -> None:
    card = spec.agent_card(settings)
    skills = [(s.id, s.description, list(s.tags)) for s in card.skills]
    expected = [(c.task_type, c.description, [spec.name, *c.tags]) for c in served_by(spec.name)]
    assert sorted(skills) == sorted(expected)


async def test_the_served_card_lists_the_contracts(settings: Settings) -> None:
    async with running(create_io(settings)) as client:
        card = (await client.get("/.well-known/agent-card.json")).json()
    assert sorted(s["id"] for s in card["skills"]) == sorted(c.task_type for c in served_by("io"))


def test_answers_keep_their_wire_shape() -> None:
    """Keys the old dict answers left out stay out (the console and tests read them)."""
    accepted = SignalResult(incident_id="I", accepted=True, signal="cleared")
    over = SignalResult(incident_id="I", accepted=False, status="closed")
    assert accepted.model_dump(mode="json") == {
        "incident_id": "I",
        "accepted": True,
        "signal": "cleared",
    }
    assert over.model_dump(mode="json") == {
        "incident_id": "I",
        "accepted": False,
        "status": "closed",
    }


async def test_the_outbox_queues_by_contract(settings: Settings) -> None:
    engine = make_engine(settings.db_url("sender"))
    mesh = MeshClient(settings, source_agent="sender")
    outbox = Outbox(engine, mesh)
    await migrate(engine, "outbox", OUTBOX_MIGRATIONS)
    event = AuditEvent(event_type="state_change", source_agent="sender", incident_id="INC-1")
    assert await outbox.put(AUDIT_EVENT, event, key="k1")
    assert not await outbox.put(AUDIT_EVENT, event, key="k1")
    with pytest.raises(TypeError, match="takes a AuditEvent, not a DeleteTunnel"):
        await outbox.put(AUDIT_EVENT, DeleteTunnel(incident_id="I", tunnel_id="t"))  # type: ignore[misc]
    row = outbox_row(AUDIT_EVENT, event, key="k2")
    assert (row["agent"], row["task_type"], row["incident_id"]) == ("audit", "audit_event", "INC-1")
    await mesh.aclose()
    await engine.dispose()

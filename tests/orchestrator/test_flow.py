"""The incident flow in-process against fake peers: the seed's phases, branches and errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.orchestrator import store
from shared.models import AUDIT_EVENT_TYPES, CUTOVER_STEPS, NODES, utcnow
from tests.orchestrator.conftest import Orch, OrchFactory
from tests.orchestrator.fake_peers import FakeNetwork, seed_services
from tests.support import wait_for

INC = "INC-2026-0001"


async def test_happy_path_follows_the_seed(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    net.sla_script = [False, False, True]  # degraded twice, then recovered for the hold time
    async with orchestrator() as orch:
        started = await orch.start(INC)
        assert started["created"] is True
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
        incident = await orch.incident(INC)

    phases = [phase for phase, _ in net.statuses(INC)]
    assert phases == sorted(phases), phases
    assert [s for _, s in net.statuses(INC)][:5] == [
        "detecting",
        "assessing",
        "computing",
        "provisioning",
        "steering",
    ]
    updates = {p["phase"]: p for p in reversed(net.events(INC, "status_update"))}
    assessing = updates["2"]
    assert assessing["status"] == "assessing"
    assert assessing["message"] == "15 services affected, computing alternate path"
    assert assessing["details"]["total_affected"] == 15
    assert assessing["details"]["services_by_tier"] == {"platinum": 2, "gold": 5, "silver": 8}
    assert len(assessing["details"]["affected_services"]) == 15
    computing = updates["3"]["details"]
    assert computing["path_type"] == "sr-mpls"
    assert computing["hop_count"] == 2
    assert computing["path"] == ["pe1", "pe4", "pe3"]
    assert computing["links"] == ["pe1-pe4", "pe4-pe3"]
    assert (computing["head_end"], computing["end_point"]) == ("pe1", "pe3")
    assert computing["total_delay_ms"] == 12.5
    provisioning = updates["4"]["details"]
    assert provisioning["tunnel_id"] == "sr-policy-pe1-pe3-protect-001"
    assert isinstance(provisioning["binding_sid"], int)
    assert provisioning["te_type"] == "sr-mpls"
    assert provisioning["path"] == ["pe1", "pe4", "pe3"]
    # the tunnel must keep off the degraded links (a dynamic SRv6 path is checked against them)
    [provision] = net.provisions(INC)
    assert provision["avoid_links"] == ["pe1-pe2", "pe2-pe3"]
    assert updates["5"]["details"]["traffic_steered"] is True
    monitoring = [p for p in net.events(INC, "status_update") if p["phase"] == "6"]
    hold = [p for p in monitoring if "hold_timer" in p["details"]]
    assert hold[0]["details"]["hold_timer"]["tier"] == "platinum"
    assert hold[0]["details"]["hold_timer"]["seconds"] == 30
    assert any(p["details"].get("hold_timer_expired") for p in monitoring)
    restoring = [p["details"] for p in net.events(INC, "status_update") if p["phase"] == "7"]
    steps = [(d["protection_pct"], d["original_pct"]) for d in restoring if "step" in d]
    assert steps == list(CUTOVER_STEPS)

    # The path request: the platinum services' pair, avoiding the degraded links, by delay.
    [path_call] = net.to("path", INC)[0].payload["requests"]
    assert path_call["avoid_links"] == ["pe1-pe2", "pe2-pe3"]
    assert path_call["metric"] == "delay"
    # room for what the tunnel will carry: the seed's 15 services pe1 → pe3, one group
    assert path_call["min_bandwidth_mbps"] == 2 * 500 + 5 * 300 + 8 * 200
    assert sorted(path_call["carrying"]) == sorted(
        [f"vpn-platinum-{i}" for i in (1, 2)]
        + [f"vpn-gold-{i}" for i in range(1, 6)]
        + [f"vpn-silver-{i}" for i in range(1, 9)]
    )
    assert path_call["reserved_mbps"] == {}  # nothing promised to other groups: there are none
    cutovers = [r.payload for r in net.batches(INC, "cutover_policies")]
    assert [(c["protection_pct"], c["original_pct"]) for c in cutovers] == list(CUTOVER_STEPS)
    assert net.tunnels_created == 1

    assert closed["resolution"] == "resolved"
    assert closed["duration_seconds"] >= 0
    assert closed["summary"]
    assert closed["details"] == {
        "final_status": "resolved",
        "close_reason": "sla_recovered",
        "degraded_links": ["pe1-pe2", "pe2-pe3"],
        "affected_services_count": 15,
        "tunnel_id": "sr-policy-pe1-pe3-protect-001",
        "nodes_executed": list(NODES),
        "tunnel_ids": ["sr-policy-pe1-pe3-protect-001"],
        "tunnels": [
            {
                "tunnel_id": "sr-policy-pe1-pe3-protect-001",
                "binding_sid": 24001,
                "te_type": "sr-mpls",
                "path": ["pe1", "pe4", "pe3"],
                "head_end": "pe1",
                "end_point": "pe3",
                "color": 101,
                "service_ids": [s["service_id"] for s in seed_services()],
            }
        ],
    }
    assert net.io_types(INC)[-1] == "ticket_closed"
    assert len(net.closed(INC)) == 1

    audit = [r.payload["event_type"] for r in net.to("audit", INC)]
    assert set(audit) <= set(AUDIT_EVENT_TYPES)
    for event in (
        "service_impact_assessed",
        "path_computed",
        "tunnel_provisioned",
        "traffic_steered",
        "sla_recovered",
        "restoration_complete",
        "state_change",
    ):
        assert event in audit, event
    notes = [r.payload for r in net.to("notify", INC)]
    assert notes[-1]["event"] == "incident_closed"
    assert (notes[-1]["severity"], notes[-1]["tier"]) == ("high", "platinum")
    [told] = [r.payload for r in net.to("correlator", INC)]
    assert told == {
        "incident_id": INC,
        "resolution": "resolved",
        "degraded_links": ["pe1-pe2", "pe2-pe3"],
    }
    assert incident["status"] == "closed" and incident["final"] is True
    assert incident["nodes_executed"] == list(NODES)


async def test_no_impact_closes(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    net.services = []
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    assert closed["details"]["close_reason"] == "no_impact"
    assert closed["details"]["nodes_executed"] == ["start", "detect", "assess", "close"]
    assert "compute_paths" not in net.calls


async def test_no_path_escalates(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    net.path_found = False
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert net.statuses(INC)[-1] == ("3", "escalated")
    assert closed["resolution"] == "escalated"
    assert closed["details"]["close_reason"] == "no_path"
    assert net.tunnels_created == 0
    assert net.to("correlator", INC)[0].payload["resolution"] == "escalated"
    assert "escalation" in [r.payload["event_type"] for r in net.to("audit", INC)]
    assert net.to("notify", INC)[-1].payload["event"] == "escalation"


async def test_tunnel_failed_three_times_escalates_with_error(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.tunnel_fail = True
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    [error] = net.events(INC, "error")
    assert error["error_code"] == "tunnel_provision_failed"
    assert error["source_agent"] == "orchestrator"
    # No tunnel ever came up, so no phase-4 "provisioning" update: the escalation is reported
    # from the phase the incident was in, right after the path was computed.
    assert net.statuses(INC)[-2:] == [("3", "computing"), ("3", "escalated")]
    assert "provisioning" not in [status for _, status in net.statuses(INC)]
    assert closed["resolution"] == "escalated"
    # the tunnel agent already tried three times: no second round of retries from here
    assert net.calls["provision_tunnels"] == 1


async def test_impact_failure_escalates_with_error(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.impact_fail = True
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    [error] = net.events(INC, "error")
    assert error["error_code"] == "agent_unavailable"  # 500s kept coming after the retries
    assert net.calls["assess_impact"] == 4  # the first try and the mesh's three retries
    assert closed["resolution"] == "escalated"
    assert closed["details"]["close_reason"] == "impact_failed"


async def test_unreachable_agent_is_retried_then_escalated(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """Unreachable (refused), not broken: the step is tried again until the peer has been down
    for ``peer_down_grace_s``, then the incident escalates with ``agent_unavailable``."""
    net.down = {"path"}
    async with orchestrator(peer_down_grace_s=1.0) as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    assert net.events(INC, "error")[0]["error_code"] == "agent_unavailable"
    assert closed["resolution"] == "escalated"


async def test_peer_back_within_the_grace_does_not_escalate(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """Issue 15: one restart of the restore agent escalated every incident it monitored."""
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        net.down = {"restore"}
        await wait_for(lambda: _peer_down_retried(orch, "restore"))
        net.down = set()
        net.sla_default = True
        closed = await orch.closed(INC)
    assert closed["resolution"] == "resolved", closed
    assert not net.events(INC, "error")


async def _peer_down_retried(orch: Orch, agent: str) -> bool:
    """The runner is retrying a step whose peer is down (not escalating, not failing)."""
    row = await orch.incident(INC)
    return f"{agent}/" in (row["last_error"] or "") and "down for" in row["last_error"]


async def test_flapping_link_is_dampened_with_backoff(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_script = [False]  # still degraded when dampening ends: handled as an incident
    until = utcnow() + timedelta(seconds=60)
    async with orchestrator() as orch:
        await orch.start(INC, dampened_until=until.isoformat())
        await wait_for(lambda: ("1", "dampening") in net.statuses(INC))
        # the correlator saw another flap: dampen again (backoff doubles, beyond its until)
        again = (utcnow() + timedelta(seconds=0.05)).isoformat()
        response = await orch.task(
            "incident_signal",
            {"incident_id": INC, "signal": "dampen", "until": again},
            key="flap-2",
        )
        assert response.status_code == 200, response.text
        closed = await orch.closed(INC)
    dampening = [
        p["details"] for p in net.events(INC, "status_update") if p["status"] == "dampening"
    ]
    assert [d["attempt"] for d in dampening] == [1, 2]
    assert dampening[1]["dampened_until"] < until.isoformat()
    assert closed["resolution"] == "resolved"
    assert closed["details"]["nodes_executed"][:3] == ["start", "detect", "monitor"]
    assert net.tunnels_created == 1


async def test_flap_that_settles_closes_without_a_tunnel(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    async with orchestrator() as orch:
        # far enough ahead that a loaded machine still starts the incident inside the window
        await orch.start(INC, dampened_until=(utcnow() + timedelta(seconds=1.5)).isoformat())
        closed = await orch.closed(INC)
    assert net.statuses(INC)[1] == ("1", "dampening")
    assert closed["details"]["nodes_executed"] == ["start", "detect", "monitor", "restore", "close"]
    assert net.tunnels_created == 0


async def test_hold_timer_expiry_reverifies_sla(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    # recovered → hold → degraded at re-verification → recovered → hold → still recovered
    net.sla_script = [True, False, True, True]
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    expired = [
        p["details"]["within_sla"]
        for p in net.events(INC, "status_update")
        if p["details"].get("hold_timer_expired")
    ]
    assert expired == [False, True]
    holds = [p for p in net.events(INC, "status_update") if "hold_timer" in p["details"]]
    assert len(holds) == 2
    assert closed["details"]["nodes_executed"] == list(NODES)
    assert len(net.closed(INC)) == 1


async def test_sla_degrading_during_cutover_returns_to_monitoring(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.cutover_script = [True, False]  # 75/25 fine, 50/50 hurts: back on the tunnel
    async with orchestrator() as orch:
        await orch.start(INC)
        closed = await orch.closed(INC)
    assert [pct for _, pct in net.policy_steps(INC)] == [75, 50, 75, 50, 25, 0]
    assert closed["details"]["nodes_executed"] == list(NODES)
    assert net.tunnels_created == 1


async def test_start_incident_is_idempotent(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    async with orchestrator() as orch:
        first = await orch.start(INC)
        second = await orch.start(INC)
        await orch.closed(INC)
        await wait_for(lambda: _final(orch))
        third = await orch.start(INC)
        await orch.app.state.outbox.flush()
    assert first["created"] is True and second["created"] is False
    assert third == {**third, "created": False, "status": "closed", "final": True}
    assert net.tunnels_created == 1
    assert len(net.closed(INC)) == 1
    assert net.statuses(INC).count(("1", "detecting")) == 1


async def test_operator_resolved_closes_and_removes_the_tunnel(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        await orch.task(
            "incident_signal", {"incident_id": INC, "signal": "links_added", "links": ["pe3-pe4"]}
        )
        await orch.task("incident_signal", {"incident_id": INC, "signal": "operator_resolved"})
        closed = await orch.closed(INC)
    assert closed["details"]["close_reason"] == "operator_resolved"
    assert closed["details"]["degraded_links"] == ["pe1-pe2", "pe2-pe3", "pe3-pe4"]
    assert net.calls.get("cleanup_policies") == 1


async def test_signal_for_unknown_incident_is_404(orchestrator: OrchFactory) -> None:
    async with orchestrator() as orch:
        response = await orch.task(
            "incident_signal", {"incident_id": "INC-2026-9999", "signal": "cleared"}
        )
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "unknown_incident"


async def test_rest_and_get_incident_show_state(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        one = await wait_for(lambda: _timer_set(orch))
        listing = (await orch.client.get("/api/v1/incidents")).json()["incidents"]
        via_task = await orch.task("get_incident", {"incident_id": INC})
    assert [i["incident_id"] for i in listing] == [INC]
    assert one["status"] == "monitoring" and one["phase"] == "6"
    assert one["timer"]["kind"] == "timer" and one["timer"]["due_at"]
    assert one["state"]["tunnel"]["tunnel_id"] == "sr-policy-pe1-pe3-protect-001"
    assert via_task.json()["result"]["incident_id"] == INC


async def test_restart_resumes_open_incidents(orchestrator: OrchFactory, net: FakeNetwork) -> None:
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
    net.sla_default = True
    async with orchestrator() as orch:
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert closed["details"]["nodes_executed"] == list(NODES)
    assert net.tunnels_created == 1
    assert len(net.closed(INC)) == 1


async def steered_and_monitoring(orch: Orch) -> None:
    await orch.start(INC)
    await wait_for(lambda: ("6", "monitoring") in orch.net.statuses(INC))


async def _has_link(orch: Orch, link: str) -> bool:
    return link in (await orch.incident(INC))["degraded_links"]


async def _final(orch: Orch) -> bool:
    return bool((await orch.incident(INC))["final"])


async def _timer_set(orch: Orch) -> dict[str, Any] | None:
    incident = await orch.incident(INC)
    return incident if incident["timer"] else None


async def test_a_run_that_keeps_failing_is_reported_once_and_retried(
    orchestrator: OrchFactory, net: FakeNetwork, monkeypatch: Any
) -> None:
    """A bug or a dead database is not a peer failure: retry, but tell people it is stuck."""
    async with orchestrator(report_failures_after=3) as orch:
        graph = orch.app.state.runner.graph
        real_astream = graph.astream
        broken = {"on": True}

        def astream(*args: Any, **kwargs: Any) -> Any:
            if broken["on"]:
                raise RuntimeError("checkpoint store unreachable")
            return real_astream(*args, **kwargs)

        monkeypatch.setattr(graph, "astream", astream)
        await orch.start(INC)
        [notice] = await wait_for(lambda: net.events(INC, "error"))
        assert notice["error_code"] == "incident_run_failing"
        assert notice["details"]["failures"] == 3
        assert "checkpoint store unreachable" in notice["details"]["last_error"]
        row = await orch.incident(INC)
        assert row["status"] == "new" and row["final"] is False
        assert "checkpoint store unreachable" in row["last_error"]
        await wait_for(lambda: row_failures(orch, at_least=5))
        broken["on"] = False  # the database is back: the same incident carries on and closes
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert closed["resolution"] == "resolved"
    assert len(net.events(INC, "error")) == 1  # reported once, not on every retry
    audit = [r.payload for r in net.to("audit", INC) if r.payload["event_type"] == "error"]
    assert [a["details"]["error_code"] for a in audit] == ["incident_run_failing"]


async def row_failures(orch: Orch, at_least: int) -> bool:
    row = await store.get(orch.app.state.runner.engine, INC)
    return row is not None and row["failures"] >= at_least


async def test_link_on_the_tunnel_degrading_reroutes_it_in_place(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """pe1-pe4 (on the protection path) degrades while traffic is on the tunnel."""
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        signal = {"incident_id": INC, "signal": "links_added", "links": ["pe4-pe1"]}
        response = await orch.task("incident_signal", signal)
        assert response.status_code == 200, response.text
        [moved] = await wait_for(lambda: [r.payload for r in net.to("tunnel", INC)][2:])
        net.sla_default = True
        closed = await orch.closed(INC)
        await orch.app.state.outbox.flush()
    assert [r.task_type for r in net.to("tunnel", INC)] == [
        "provision_tunnels",
        "steer_policies",
        "reroute_tunnel",
    ]
    assert moved == {
        "incident_id": INC,
        "tunnel_id": "sr-policy-pe1-pe3-protect-001",
        "path": ["pe1", "pe5", "pe3"],
    }
    second_path = net.to("path", INC)[1].payload
    assert second_path["avoid_links"] == ["pe1-pe2", "pe2-pe3", "pe4-pe1"]
    assert second_path["min_bandwidth_mbps"] == 4100 and len(second_path["carrying"]) == 15
    assert (second_path["head_end"], second_path["end_point"]) == ("pe1", "pe3")
    [note] = [p for p in net.events(INC, "status_update") if "reroute" in p["details"]]
    assert note["phase"] == "6"
    assert note["details"]["previous_path"] == ["pe1", "pe4", "pe3"]
    assert note["details"]["avoided"] == ["pe4-pe1"]
    assert net.tunnels_created == 1 and net.tunnels_rerouted == 1
    # the hold timer ran on the new path, then cutover and cleanup of the one tunnel
    assert closed["resolution"] == "resolved"
    assert "reroute" in closed["details"]["nodes_executed"]
    assert net.calls.get("cleanup_policies") == 1
    rerouted = [
        r.payload["details"]
        for r in net.to("audit", INC)
        if r.payload["event_type"] == "tunnel_provisioned"
    ]
    assert [d.get("reroute") for d in rerouted] == [None, 1]


async def test_link_off_the_tunnel_does_not_reroute(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_default = False  # degraded until the signal has been taken
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        await orch.task(
            "incident_signal", {"incident_id": INC, "signal": "links_added", "links": ["pe3-pe6"]}
        )
        await wait_for(lambda: _has_link(orch, "pe3-pe6"))
        net.sla_default = True
        closed = await orch.closed(INC)
    assert net.tunnels_rerouted == 0
    assert "reroute" not in closed["details"]["nodes_executed"]
    assert closed["details"]["degraded_links"] == ["pe1-pe2", "pe2-pe3", "pe3-pe6"]


async def test_no_way_around_a_degraded_tunnel_escalates(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        signal = {"incident_id": INC, "signal": "links_added", "links": ["pe1-pe4", "pe5-pe3"]}
        await orch.task("incident_signal", signal)
        closed = await orch.closed(INC)
    assert closed["resolution"] == "escalated"
    [error] = net.events(INC, "error")
    assert error["error_code"] == "no_path"
    assert "sr-policy-pe1-pe3-protect-001" in error["message"]
    assert net.tunnels_rerouted == 0


async def test_tunnel_link_degrading_during_cutover_is_rerouted_back_in_monitoring(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    net.sla_script = [True, True]  # recovered, hold timer passes, cutover starts
    net.cutover_script = [True, False]  # the second step finds the SLA degraded again
    async with orchestrator() as orch:
        await orch.start(INC)
        await wait_for(lambda: net.policy_steps(INC))
        net.sla_default = False  # back in monitoring, the SLA stays degraded until re-routed
        signal = {"incident_id": INC, "signal": "links_added", "links": ["pe4-pe3"]}
        await orch.task("incident_signal", signal)
        await wait_for(lambda: net.tunnels_rerouted)
        net.sla_default = True
        closed = await orch.closed(INC)
    tunnel_calls = [r.task_type for r in net.to("tunnel", INC)]
    assert tunnel_calls == ["provision_tunnels", "steer_policies", "reroute_tunnel"]
    assert closed["resolution"] == "resolved"


async def test_protection_path_out_of_sla_is_rerouted_without_a_signal(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """A tunnel link degrades that the correlator does not relate to the incident."""
    net.sla_default = False
    async with orchestrator() as orch:
        await steered_and_monitoring(orch)
        net.bad_links = {"pe3-pe4"}  # on pe1 → pe4 → pe3
        [moved] = await wait_for(
            lambda: [r.payload for r in net.to("tunnel", INC) if r.task_type == "reroute_tunnel"]
        )
        net.sla_default = True
        closed = await orch.closed(INC)
    assert moved["path"] == ["pe1", "pe5", "pe3"]
    assert net.to("path", INC)[1].payload["avoid_links"] == ["pe1-pe2", "pe2-pe3", "pe4-pe3"]
    [note] = [p for p in net.events(INC, "status_update") if "tunnel_degraded" in p["details"]]
    assert note["details"]["tunnel_degraded"] == ["pe4-pe3"]
    checks = [r.payload["links"] for r in net.to("restore", INC) if r.task_type == "check_sla"]
    assert ["pe1-pe2", "pe2-pe3", "pe1-pe4", "pe4-pe3"] in checks
    assert closed["resolution"] == "resolved"
    # the tunnel's links are its own business, not the incident's
    assert closed["details"]["degraded_links"] == ["pe1-pe2", "pe2-pe3"]
    assert net.tunnels_created == 1 and net.tunnels_rerouted == 1


async def test_bandwidth_reservation_can_be_turned_off(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    async with orchestrator(reserve_bandwidth=False) as orch:
        await orch.start(INC)
        await orch.closed(INC)
    [path_call] = net.to("path", INC)[0].payload["requests"]
    assert path_call["min_bandwidth_mbps"] is None and path_call["carrying"] == []


async def test_incident_id_that_cannot_travel_in_a_header_is_refused(
    orchestrator: OrchFactory, net: FakeNetwork
) -> None:
    """Found by the fuzzer: an incident id with non-ASCII characters was accepted, then every
    task of its run failed to encode its Idempotency-Key header: the incident retried forever
    and never ended. It is bad input, refused with a 422 naming the field; nothing is stored."""
    async with orchestrator() as orch:
        for bad in ("÷\U000e921e", "INC 2026 0001", "", "I" * 129):
            payload = {
                "incident_id": bad,
                "severity": "high",
                "summary": "SLA degradation detected on pe1-pe2",
                "degraded_links": ["pe1-pe2"],
            }
            response = await orch.task("start_incident", payload)
            assert response.status_code == 422, response.text
            fields = [p["field"] for p in response.json()["detail"]]
            assert fields == ["payload.incident_id"], response.text
        listed = await orch.client.get("/api/v1/incidents")
        assert listed.status_code == 200, listed.text
        assert listed.json()["incidents"] == [], listed.text
        assert net.received == []
        # A well-formed id still runs to the end.
        await orch.start("INC-2026-0042")
        closed = await orch.closed("INC-2026-0042")
        assert closed["resolution"] == "resolved"

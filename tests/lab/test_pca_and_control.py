"""PCA metrics and thresholds, the control API, alert pushing, faults, tokens and 4xx paths."""

from __future__ import annotations

from typing import Any

import pytest

from services.lab.app import create_app
from services.lab.settings import LabSettings
from shared.errors import SouthboundError
from shared.settings import Settings
from tests.lab.conftest import LabHarness
from tests.support import running, wait_for

ALERT_FIELDS = {
    "tenantId",
    "policyId",
    "policyName",
    "policyType",
    "objectId",
    "objectName",
    "metric",
    "direction",
    "value",
    "triggeredValue",
    "alertState",
    "startTimestamp",
    "endTimestamp",
    "processedTimestamp",
    "duration",
    "timeInViolation",
    "topology",
    "metadata",
}


async def drain(lab: LabHarness) -> None:
    await lab.app.state.lab.pusher.drain()


async def test_thresholds_and_healthy_metrics(lab: LabHarness) -> None:
    thresholds = await lab.pca.thresholds()
    assert (thresholds.delay_ms, thresholds.jitter_ms, thresholds.loss_pct) == (50, 10, 1)
    policies = (await lab.client.get("/api/v2/policies/alerting")).json()["data"]
    condition = policies[0]["conditions"][0]
    assert condition["severity"] in {"critical", "major", "minor"}
    assert condition["triggersOn"]["metric"]["id"] == "delay-avg"
    assert condition["recoversOn"]["comparator"] == "lte"
    metrics = await lab.pca.link_metrics(["pe1-pe2", "pe2-pe3"])
    assert metrics["pe1-pe2"].delay_ms == 2.0 and metrics["pe1-pe2"].loss_pct == 0.0
    assert metrics["pe2-pe3"].jitter_ms < thresholds.jitter_ms


async def test_degrade_then_recover_pushes_raised_then_cleared(
    lab: LabHarness, settings: Settings
) -> None:
    response = await lab.client.post("/lab/links/pe1-pe2/degrade", json={})
    assert response.status_code == 200 and response.json()["alerting"] is True
    metrics = (await lab.pca.link_metrics(["pe1-pe2"]))["pe1-pe2"]
    assert (metrics.delay_ms, metrics.jitter_ms, metrics.loss_pct) == (82.0, 15.2, 2.0)
    # a degraded service is reported as such by CNC
    hurt = [s for s in await lab.cnc.services() if "pe1-pe2" in s.path]
    assert {s.oper_status for s in hurt} == {"degraded"}
    await lab.client.post("/lab/links/pe1-pe2/recover")
    await drain(lab)
    assert lab.receiver.states() == [("pe1-pe2", "raised"), ("pe1-pe2", "cleared")]
    raised, cleared = lab.receiver.alerts
    assert set(raised) >= ALERT_FIELDS
    assert raised["metric"] == "packets-lost-pct" and raised["value"] == 1.0
    assert raised["triggeredValue"] == 2.0 and raised["topology"] == ["pe1", "pe2"]
    assert cleared["startTimestamp"] == raised["startTimestamp"]
    assert cleared["endTimestamp"] >= cleared["startTimestamp"]
    assert lab.receiver.headers[0]["authorization"] == f"Bearer {settings.mesh_token}"
    assert (await lab.pca.link_metrics(["pe1-pe2"]))["pe1-pe2"].delay_ms == 2.0


async def test_mild_degradation_within_sla_raises_nothing(lab: LabHarness) -> None:
    body = {"delay_ms": 5, "loss_pct": 0, "jitter_ms": 1}
    assert (await lab.client.post("/lab/links/pe3-pe4/degrade", json=body)).status_code == 200
    await drain(lab)
    assert lab.receiver.alerts == []
    state = (await lab.client.get("/lab/state")).json()
    assert list(state["degraded_links"]) == ["pe3-pe4"] and state["alerting_links"] == []


async def test_duration_recovers_by_itself(lab: LabHarness, settings: Settings) -> None:
    # settings.time_scale is 0.01: 2 s of lab time pass in 20 ms
    await lab.client.post("/lab/links/pe2-pe3/degrade", json={"duration_s": 2, "delay_ms": 100})
    await wait_for(lambda: len(lab.receiver.alerts) == 2, timeout=5)
    assert lab.receiver.states() == [("pe2-pe3", "raised"), ("pe2-pe3", "cleared")]
    assert lab.receiver.alerts[0]["metric"] == "packets-lost-pct"
    assert (await lab.client.get("/lab/state")).json()["degraded_links"] == {}


async def test_flap_alternates_raised_and_cleared(lab: LabHarness) -> None:
    response = await lab.client.post("/lab/links/pe3-pe4/flap", json={"count": 3, "interval_s": 1})
    assert response.status_code == 202
    await wait_for(lambda: len(lab.receiver.alerts) == 6, timeout=5)
    assert [s for _, s in lab.receiver.states()] == ["raised", "cleared"] * 3


async def test_sla_degradation_scenario_hurts_the_seed_links(lab: LabHarness) -> None:
    response = await lab.client.post("/lab/scenarios/sla-degradation")
    assert response.status_code == 202
    assert response.json()["links"] == ["pe1-pe2", "pe2-pe3"]
    await wait_for(lambda: len(lab.receiver.alerts) == 2, timeout=5)
    assert lab.receiver.states() == [("pe1-pe2", "raised"), ("pe2-pe3", "raised")]
    hurt = [s for s in await lab.cnc.services() if s.oper_status == "degraded"]
    assert len(hurt) == 15
    assert (await lab.client.post("/lab/scenarios/recover-all")).status_code == 202
    await drain(lab)
    assert sorted(lab.receiver.states()[2:]) == [("pe1-pe2", "cleared"), ("pe2-pe3", "cleared")]


async def test_no_path_and_no_impact_scenarios(lab: LabHarness) -> None:
    response = await lab.client.post("/lab/scenarios/no-path", json={"step_s": 0})
    assert set(response.json()["links"]) == {"pe1-p1", "pe1-pe2", "pe2-pe3"}
    topo = await lab.cnc.topology()
    assert {link.link_id for link in topo.links if link.oper_status == "down"} == {"pe1-p1"}
    await lab.client.post("/lab/reset")
    await drain(lab)
    assert sorted(s for _, s in lab.receiver.states()) == ["cleared"] * 3 + ["raised"] * 3
    lab.receiver.alerts.clear()
    response = await lab.client.post("/lab/scenarios/no-impact")
    (link,) = response.json()["links"]
    assert not [s for s in await lab.cnc.services() if link in s.path]
    await drain(lab)
    assert lab.receiver.states() == [(link, "raised")]


async def test_delivery_failures_are_retried_and_never_crash(lab: LabHarness) -> None:
    lab.receiver.fail_next = 2  # two 503s, then the third attempt lands
    await lab.client.post("/lab/links/pe1-pe2/degrade")
    await drain(lab)
    assert lab.receiver.states() == [("pe1-pe2", "raised")]
    lab.receiver.fail_next = 10  # more than the retries: given up, logged, counted
    await lab.client.post("/lab/links/pe1-pe2/recover")
    await drain(lab)
    alerts = (await lab.client.get("/lab/state")).json()["alerts"]
    assert (alerts["delivered"], alerts["failed"]) == (1, 1)
    assert "503" in alerts["last_error"]
    assert (await lab.client.get("/health")).json()["status"] == "ok"


async def test_unreachable_correlator_does_not_hurt_the_lab(
    make_lab: object, settings: Settings
) -> None:
    lab_settings = LabSettings(push_backoff_s=0.01, push_retries=1)
    settings = settings.model_copy(update={"correlator_url": "http://127.0.0.1:9"})
    app = create_app(settings, lab_settings)  # a real client: connection refused
    async with running(app) as client:
        assert (await client.post("/lab/links/pe1-pe2/degrade")).status_code == 200
        await app.state.lab.pusher.drain()
        alerts = (await client.get("/lab/state")).json()["alerts"]
        assert alerts["failed"] == 1 and "Connect" in alerts["last_error"]


async def test_push_can_be_disabled(make_lab: object, settings: Settings) -> None:
    async with make_lab(settings, LabSettings(push_alerts=False)) as lab:  # type: ignore[operator]
        await lab.client.post("/lab/links/pe1-pe2/degrade")
        await lab.app.state.lab.pusher.drain()
        assert lab.receiver.alerts == []
        assert (await lab.client.get("/lab/alerts")).json()[0]["alertState"] == "raised"


async def test_faults_fail_the_next_calls(lab: LabHarness) -> None:
    body = {"operation": "services", "count": 2, "status": 503}
    assert (await lab.client.post("/lab/faults", json=body)).status_code == 201
    for _ in range(2):
        with pytest.raises(SouthboundError) as info:
            await lab.cnc.services()
        assert info.value.transient
    assert len(await lab.cnc.services()) == 26
    await lab.client.post("/lab/faults", json={"operation": "metrics", "status": 500})
    with pytest.raises(SouthboundError, match="HTTP 500"):
        await lab.pca.link_metrics(["pe1-pe2"])
    await lab.client.post(
        "/lab/faults", json={"operation": "sr-policy-create", "status": 200, "transient": True}
    )
    hops = [{"step": 1, "hop": {"node-id": n}} for n in ("p1", "p2", "pe4")]
    args: dict[str, Any] = {
        "head_end": "pe1",
        "end_point": "pe4",
        "color": 1,
        "path_name": "x",
        "binding_sid": 24001,
        "hops": hops,
        "description": "",
        "te_type": "sr-mpls",
    }
    with pytest.raises(SouthboundError, match="injected fault") as failed:
        await lab.cnc.create_sr_policy(**args)
    assert failed.value.transient
    assert (await lab.cnc.create_sr_policy(**args))["state"] == "success"
    await lab.client.post("/lab/faults", json={"operation": "sr-policy-create", "status": 400})
    with pytest.raises(SouthboundError) as refused:
        await lab.cnc.create_sr_policy(**args)
    assert not refused.value.transient
    assert (await lab.client.get("/lab/faults")).json() == []


async def test_token_is_required_when_configured(make_lab: object, settings: Settings) -> None:
    async with make_lab(settings, LabSettings(token="s3cret"), "s3cret") as lab:  # type: ignore[operator]
        assert len((await lab.cnc.topology()).nodes) == 10
        assert (await lab.pca.thresholds()).delay_ms == 50
        anonymous = await lab.client.get("/api/v2/policies/alerting")
        assert anonymous.status_code == 401
        wrong = await lab.client.get(
            "/crosswork/nbi/topology/v3/restconf/data/cisco-crosswork-cxm:topology",
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
        assert (await lab.client.get("/health")).status_code == 200


async def test_4xx_paths(lab: LabHarness) -> None:
    c = lab.client
    response = await c.post("/lab/links/pe1-pe9/degrade")
    assert response.status_code == 404 and "pe1-pe9" in response.json()["detail"]
    assert (await c.post("/lab/links/nope/recover")).status_code == 404
    assert (await c.post("/lab/links/x-y/flap")).status_code == 404
    assert (await c.post("/lab/links/pe1-pe2/degrade", json={"delay_ms": -1})).status_code == 422
    assert (await c.post("/lab/links/pe1-pe2/degrade", json={"bogus": 1})).status_code == 422
    assert (await c.post("/lab/links/pe1-pe2/flap", json={"count": 0})).status_code == 422
    response = await c.post("/lab/scenarios/meteor-strike")
    assert response.status_code == 404 and "sla-degradation" in response.json()["detail"]
    assert (await c.post("/lab/faults", json={"operation": "everything"})).status_code == 422
    assert (await c.post("/lab/traffic", json={"factor": 0})).status_code == 422
    with pytest.raises(SouthboundError, match="unknown link"):
        await lab.pca.link_metrics(["pe1-pe9"])
    # reversed names are the same undirected link
    assert "pe2-pe1" in await lab.pca.link_metrics(["pe2-pe1"])
    assert (await c.post("/lab/links/pe2-pe1/degrade")).json()["link_id"] == "pe1-pe2"


async def test_topology_and_state_views(lab: LabHarness) -> None:
    topo = (await lab.client.get("/lab/topology")).json()
    assert topo["name"] == "default" and len(topo["links"]) == 12
    assert {"sla-degradation", "no-path", "no-impact", "recover-all"} <= set(topo["scenarios"])
    link = next(x for x in topo["links"] if x["link_id"] == "pe1-pe2")
    assert link["services"] == 15 and link["metrics"]["utilization_pct"] == 41.0
    health = (await lab.client.get("/health")).json()
    assert health["status"] == "ok" and health["agent"] == "lab" and health["version"]

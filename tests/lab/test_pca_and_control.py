"""PCA (monitored objects, aggregates, alerting policy), the control API, alert pushing, faults,
the OSS export and 4xx paths."""

from __future__ import annotations

from typing import Any

from services.lab.app import create_app
from services.lab.settings import LabSettings
from shared.settings import Settings
from tests.lab.conftest import CAT, SR_OPS, LabHarness
from tests.lab.test_cnc import PROTECT, policy
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


def aggregate_body(
    objects: list[str],
    metrics: tuple[str, ...] = ("delayAvg", "delayVarAvg", "packetsLostPct"),
    *,
    direction: str = "2",
    granularity: str = "ALL",
) -> dict[str, Any]:
    return {
        "data": {
            "type": "aggregates",
            "attributes": {
                "interval": "2026-11-30T10:00:00Z/2026-11-30T10:01:00Z",
                "granularity": granularity,
                "aggregation": "avg",
                "metrics": [
                    {
                        "vendor": "accedian-twamp",
                        "objectType": ["twamp-sf"],
                        "direction": [direction],
                        "monitoredObjectId": [f"mo-{o}" for o in objects],
                        "metric": metric,
                    }
                    for metric in metrics
                ],
            },
        }
    }


async def measured(lab: LabHarness, *links: str, **kw: Any) -> dict[str, dict[str, float]]:
    """link → metric → the aggregate's (single) value."""
    response = await lab.pca(
        "POST", "/api/v3/metrics/aggregate", json=aggregate_body(list(links), **kw)
    )
    assert response.status_code == 200, response.text
    out: dict[str, dict[str, float]] = {}
    for row in response.json()["data"]["attributes"]["result"]:
        out.setdefault(row["monitoredObjectId"][3:], {})[row["metric"]] = row["series"][0]["value"]
    return out


async def lab_services(lab: LabHarness) -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = (await lab.client.get("/lab/topology")).json()["services"]
    return services


async def test_alerting_policy_and_healthy_metrics(lab: LabHarness) -> None:
    response = await lab.pca("GET", "/api/v2/policies/alerting")
    (policy_,) = response.json()["data"]
    assert policy_["type"] == "alertPolicies" and policy_["id"] == "cxm-lab-link-sla"
    conditions = policy_["attributes"]["conditions"]
    thresholds = {c["triggersOn"]["metric"]["id"]: c["triggersOn"]["value"] for c in conditions}
    assert thresholds == {"delayAvg": "50", "delayVarAvg": "10", "packetsLostPct": "1"}
    first = conditions[0]
    assert first["severity"] in {"critical", "major", "minor"}
    assert first["triggersOn"]["metric"]["direction"] == ["2"]
    assert first["triggersOn"]["comparator"] == "gt"
    assert first["recoversOn"]["comparator"] == "lte"
    metrics = await measured(lab, "pe1-pe2", "pe2-pe3")
    assert metrics["pe1-pe2"] == {"delayAvg": 2.0, "delayVarAvg": 0.2, "packetsLostPct": 0.0}
    assert metrics["pe2-pe3"]["delayVarAvg"] < 10


async def test_monitored_objects_page(lab: LabHarness) -> None:
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await lab.pca(
            "GET", "/api/v2/monitored-objects", params={"page[limit]": 5, "page[offset]": offset}
        )
        body = response.json()
        assert body["meta"]["total"] == 12
        seen += body["data"]
        offset += 5
        if len(body["data"]) < 5:
            break
    assert len({o["id"] for o in seen}) == 12
    first = seen[0]
    assert first["type"] == "monitoredObjects" and first["id"] == "mo-pe1-pe2"
    assert first["attributes"]["objectType"] == "twamp-sf"
    assert first["attributes"]["meta"] == {"link": "pe1-pe2", "source": "pe1", "destination": "pe2"}
    bad = await lab.pca("GET", "/api/v2/monitored-objects", params={"page[limit]": "x"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["status"] == "400"


async def test_aggregate_directions_granularity_and_errors(lab: LabHarness) -> None:
    await lab.client.post("/lab/links/pe1-pe2/degrade", json={})
    rt = (
        await measured(
            lab,
            "pe1-pe2",
            metrics=("delayAvg", "delayP95", "jitterAvg", "packetsLost", "packetsLostPct"),
        )
    )["pe1-pe2"]
    assert rt == {
        "delayAvg": 82.0,
        "delayP95": 82.0 + 2 * 15.2,
        "jitterAvg": 15.2,
        "packetsLost": 12.0,  # 2 % of 10 probes/s over 60 s
        "packetsLostPct": 2.0,
    }
    one_way = (await measured(lab, "pe1-pe2", direction="0"))["pe1-pe2"]
    assert one_way["delayAvg"] == 41.0 and one_way["packetsLostPct"] == 2.0
    body = aggregate_body(["pe1-pe2", "nope"], ("delayAvg",), granularity="PT1M")
    body["data"]["attributes"]["interval"] = "2026-11-30T10:00:00Z/2026-11-30T10:03:00Z"
    response = await lab.pca("POST", "/api/v3/metrics/aggregate", json=body)
    (row,) = response.json()["data"]["attributes"]["result"]  # the unknown object is absent
    assert [p["timestamp"] for p in row["series"]] == [
        "2026-11-30T10:00:00Z",
        "2026-11-30T10:01:00Z",
        "2026-11-30T10:02:00Z",
    ]
    for broken in (
        {"data": {"type": "metrics"}},
        {
            **body,
            "data": {
                **body["data"],
                "attributes": {**body["data"]["attributes"], "granularity": "PT0M"},
            },
        },
        aggregate_body(["pe1-pe2"], ("delay-avg",)),
        aggregate_body(["pe1-pe2"], direction="rt"),
    ):
        response = await lab.pca("POST", "/api/v3/metrics/aggregate", json=broken)
        assert response.status_code == 400, broken
        assert response.json()["errors"][0]["detail"]


async def test_degrade_then_recover_pushes_raised_then_cleared(
    lab: LabHarness, settings: Settings
) -> None:
    response = await lab.client.post("/lab/links/pe1-pe2/degrade", json={})
    assert response.status_code == 200 and response.json()["alerting"] is True
    metrics = (await measured(lab, "pe1-pe2"))["pe1-pe2"]
    assert metrics == {"delayAvg": 82.0, "delayVarAvg": 15.2, "packetsLostPct": 2.0}
    # the lab's own view calls the services on it degraded (CNC has no such status)
    hurt = [s for s in await lab_services(lab) if "pe1-pe2" in s["path"]]
    assert {s["oper_status"] for s in hurt} == {"degraded"}
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
    assert (await measured(lab, "pe1-pe2"))["pe1-pe2"]["delayAvg"] == 2.0


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
    hurt = [s for s in await lab_services(lab) if s["oper_status"] == "degraded"]
    assert len(hurt) == 15
    assert (await lab.client.post("/lab/scenarios/recover-all")).status_code == 202
    await drain(lab)
    assert sorted(lab.receiver.states()[2:]) == [("pe1-pe2", "cleared"), ("pe2-pe3", "cleared")]


async def test_no_path_and_no_impact_scenarios(lab: LabHarness) -> None:
    response = await lab.client.post("/lab/scenarios/no-path", json={"step_s": 0})
    assert set(response.json()["links"]) == {"pe1-p1", "pe1-pe2", "pe2-pe3"}
    down = {
        f"{link['source']['source-node']}-{link['destination']['dest-node']}"
        for link in await lab.links()
        if link["ietf-l3-unicast-topology-state:l3-link-attributes"][
            "cisco-crosswork-l3-te-topology:oper-status"
        ]
        == "down"
    }
    assert down == {"pe1-p1", "p1-pe1"}
    await lab.client.post("/lab/reset")
    await drain(lab)
    assert sorted(s for _, s in lab.receiver.states()) == ["cleared"] * 3 + ["raised"] * 3
    lab.receiver.alerts.clear()
    response = await lab.client.post("/lab/scenarios/no-impact")
    (link,) = response.json()["links"]
    assert not [s for s in await lab_services(lab) if link in s["path"]]
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
    path = f"{CAT}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services/vpn-service"
    body = {"operation": "services", "count": 2, "status": 503}
    assert (await lab.client.post("/lab/faults", json=body)).status_code == 201
    for _ in range(2):
        response = await lab.cnc("GET", path)
        assert response.status_code == 503 and response.json()["errors"]["error"]
    assert len(await lab.services("l3vpn")) == 15
    await lab.client.post("/lab/faults", json={"operation": "metrics", "status": 500})
    failed = await lab.pca("POST", "/api/v3/metrics/aggregate", json=aggregate_body(["pe1-pe2"]))
    assert failed.status_code == 500 and failed.json()["errors"][0]["status"] == "500"
    for operation, call in [
        (
            "topology",
            lab.cnc("GET", "/crosswork/nbi/topology/v3/restconf/data/ietf-network-state:networks"),
        ),
        ("policies", lab.pca("GET", "/api/v2/policies/alerting")),
        ("monitored-objects", lab.pca("GET", "/api/v2/monitored-objects")),
    ]:
        await lab.client.post("/lab/faults", json={"operation": operation, "status": 502})
        assert (await call).status_code == 502, operation
    await lab.client.post(
        "/lab/faults", json={"operation": "sr-policy-create", "status": 200, "count": 1}
    )
    first = await lab.sr("create", policy(*PROTECT))
    assert first[0]["state"] == "failure" and "injected fault" in first[0]["message"]
    assert (await lab.sr("create", policy(*PROTECT)))[0]["state"] == "success"
    await lab.client.post("/lab/faults", json={"operation": "sr-policy-delete", "status": 503})
    busy = await lab.op(f"{SR_OPS}:sr-policy-delete", {"input": {"sr-policies": []}})
    assert busy.status_code == 503
    assert (await lab.client.get("/lab/faults")).json() == []


async def test_oss_service_inventory_json_and_csv(lab: LabHarness) -> None:
    rows = (await lab.client.get("/lab/oss/service-inventory")).json()["services"]
    assert len(rows) == 26
    assert rows[0] == {
        "vpn-id": "vpn-001",
        "name": "bank-east-platinum-001",
        "sla-tier": "platinum",
        "bandwidth-mbps": 500,
        "customer": "bank-east",
    }
    csv = await lab.client.get("/lab/oss/service-inventory", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "vpn-id,name,sla-tier,bandwidth-mbps,customer"
    assert lines[1] == "vpn-001,bank-east-platinum-001,platinum,500,bank-east"
    assert len(lines) == 27


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
    assert (await c.post("/lab/faults", json={"operation": "traffic-steer"})).status_code == 422
    # reversed names are the same undirected link
    assert (await c.post("/lab/links/pe2-pe1/degrade")).json()["link_id"] == "pe1-pe2"


async def test_topology_and_state_views(lab: LabHarness) -> None:
    topo = (await lab.client.get("/lab/topology")).json()
    assert topo["name"] == "default" and len(topo["links"]) == 12
    assert {"sla-degradation", "no-path", "no-impact", "recover-all"} <= set(topo["scenarios"])
    link = next(x for x in topo["links"] if x["link_id"] == "pe1-pe2")
    assert link["services"] == 15 and link["metrics"]["utilization_pct"] == 41.0
    health = (await lab.client.get("/health")).json()
    assert health["status"] == "ok" and health["agent"] == "lab" and health["version"]

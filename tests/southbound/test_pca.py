"""PCA: login by response header, 401 re-login, monitored objects, aggregate, thresholds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.southbound import PcaClient
from tests.southbound.conftest import NOW, Clock, pca_client
from tests.southbound.payloads import monitored_object

OBJECTS = [
    monitored_object("mo-pe1-pe2", "pe1-pe2"),
    monitored_object("mo-pe2-pe3", "pe2-pe3"),
    monitored_object("mo-pe3-pe4", "pe3-pe4"),
]


def serve_objects(router: respx.MockRouter, objects: list[dict[str, Any]] = OBJECTS) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["page[limit]"])
        offset = int(request.url.params["page[offset]"])
        return httpx.Response(
            200,
            json={"data": objects[offset : offset + limit], "meta": {"total": len(objects)}},
        )

    router.get("/api/v2/monitored-objects", name="objects").mock(side_effect=page)


def aggregate(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    result = [
        {
            "metric": metric,
            "monitoredObjectId": mo,
            "series": [{"timestamp": "2027-01-15T08:00:00Z", "value": value}],
        }
        for mo, metrics in values.items()
        for metric, value in metrics.items()
    ]
    return {"data": {"type": "aggregates", "attributes": {"result": result}}}


HEALTHY = {"delayAvg": 5.0, "delayVarAvg": 1.0, "packetsLostPct": 0.0}


async def test_login_reads_the_token_from_the_response_header(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    await pca.monitored_objects()
    login = pca_router.routes["login"].calls.last.request
    assert login.content.decode() == "username=cxm&password=cxm-lab"
    call = pca_router.routes["objects"].calls.last.request
    assert call.headers["Authorization"] == "Bearer pca-token-1"
    assert pca.logins == 1


async def test_a_401_logs_in_again_and_retries_once(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    tokens = iter(["pca-token-1", "pca-token-2"])
    pca_router.routes["login"].mock(
        side_effect=lambda request: httpx.Response(
            200, json={}, headers={"authorization": f"Bearer {next(tokens)}"}
        )
    )
    route = pca_router.get("/api/v2/policies/alerting").mock(
        side_effect=[httpx.Response(401, json={}), httpx.Response(200, json={"data": []})]
    )
    await pca.thresholds()
    assert route.call_count == 2
    assert route.calls.last.request.headers["Authorization"] == "Bearer pca-token-2"
    assert pca.logins == 2


async def test_a_second_401_is_final(pca: PcaClient, pca_router: respx.MockRouter) -> None:
    route = pca_router.get("/api/v2/policies/alerting").respond(401, json={})
    with pytest.raises(SouthboundError) as caught:
        await pca.thresholds()
    assert not caught.value.transient
    assert route.call_count == 2


async def test_concurrent_callers_share_one_pca_login(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    pca_router.get("/api/v2/policies/alerting").respond(200, json={"data": []})
    await asyncio.gather(*(pca.thresholds() for _ in range(10)))
    assert pca_router.routes["login"].call_count == 1


@pytest.mark.parametrize(
    ("answer", "transient"),
    [
        (httpx.Response(401, json={}), False),
        (httpx.Response(200, json={}), False),  # no authorization header
        (httpx.Response(503, text="busy"), True),
    ],
)
async def test_a_failed_pca_login(
    pca: PcaClient, pca_router: respx.MockRouter, answer: httpx.Response, transient: bool
) -> None:
    pca_router.routes["login"].mock(return_value=answer)
    with pytest.raises(SouthboundError) as caught:
        await pca.thresholds()
    assert caught.value.transient is transient
    assert "cxm-lab" not in str(caught.value)


async def test_monitored_objects_are_paginated(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    objects = await pca.monitored_objects()
    assert objects == {"pe1-pe2": "mo-pe1-pe2", "pe2-pe3": "mo-pe2-pe3", "pe3-pe4": "mo-pe3-pe4"}
    pages = [
        (c.request.url.params["page[limit]"], c.request.url.params["page[offset]"])
        for c in pca_router.routes["objects"].calls
    ]
    assert pages == [("2", "0"), ("2", "2")]


async def test_an_object_without_meta_maps_by_its_name(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    bare = {"type": "monitoredObjects", "id": "mo-x", "attributes": {"objectName": "a-b"}}
    serve_objects(pca_router, [bare])
    assert await pca.monitored_objects() == {"a-b": "mo-x"}


async def test_link_metrics_ask_the_aggregate_for_the_window(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    route = pca_router.post("/api/v3/metrics/aggregate").respond(
        200,
        json=aggregate(
            {
                "mo-pe1-pe2": {"delayAvg": 82.0, "delayVarAvg": "15.2", "packetsLostPct": 2.0},
                "mo-pe2-pe3": HEALTHY,
            }
        ),
    )
    metrics = await pca.link_metrics(["pe2-pe1", "pe2-pe3", "p9-p8"])
    assert set(metrics) == {"pe2-pe1", "pe2-pe3"}  # keyed as asked; unmonitored is absent
    degraded = metrics["pe2-pe1"]
    assert (degraded.delay_ms, degraded.jitter_ms, degraded.loss_pct) == (82.0, 15.2, 2.0)
    assert degraded.object_name == "pe2-pe1"
    assert degraded.timestamp == "2027-01-15T08:00:00Z"
    sent = json.loads(route.calls.last.request.content)
    attrs = sent["data"]["attributes"]
    assert sent["data"]["type"] == "aggregates"
    assert attrs["interval"] == "2027-01-15T07:59:00Z/2027-01-15T08:00:00Z"  # the last 60 s
    assert attrs["granularity"] == "ALL"
    assert attrs["aggregation"] == "avg"
    assert [m["metric"] for m in attrs["metrics"]] == ["delayAvg", "delayVarAvg", "packetsLostPct"]
    for metric in attrs["metrics"]:
        assert metric["vendor"] == "accedian-twamp"
        assert metric["objectType"] == ["twamp-sf"]
        assert metric["direction"] == ["2"]
        assert metric["monitoredObjectId"] == ["mo-pe1-pe2", "mo-pe2-pe3"]


def test_the_clock_is_the_one_the_window_is_read_against() -> None:
    from datetime import UTC, datetime

    assert datetime.fromtimestamp(NOW, UTC).isoformat() == "2027-01-15T08:00:00+00:00"


async def test_empty_links_means_every_monitored_link(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    pca_router.post("/api/v3/metrics/aggregate").respond(
        200, json=aggregate({mo["id"]: HEALTHY for mo in OBJECTS})
    )
    assert set(await pca.link_metrics([])) == {"pe1-pe2", "pe2-pe3", "pe3-pe4"}


async def test_a_link_missing_a_metric_is_absent(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    pca_router.post("/api/v3/metrics/aggregate").respond(
        200, json=aggregate({"mo-pe1-pe2": {"delayAvg": 5.0, "packetsLostPct": 0.0}})
    )
    assert await pca.link_metrics(["pe1-pe2"]) == {}


async def test_the_monitored_objects_are_read_once_for_many_checks(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    """The objects are PCA's inventory: SLA checks within the TTL reuse one read of them."""
    serve_objects(pca_router)
    objects = pca_router.routes["objects"]
    pca_router.post("/api/v3/metrics/aggregate").respond(
        200, json=aggregate({mo["id"]: HEALTHY for mo in OBJECTS})
    )
    for _ in range(3):
        assert set(await pca.link_metrics(["pe2-pe1", "pe3-pe4"])) == {"pe2-pe1", "pe3-pe4"}
    pages = objects.call_count
    assert pages == 2  # page_size 2: three objects, one read
    assert set(await pca.link_metrics([])) == {"pe1-pe2", "pe2-pe3", "pe3-pe4"}
    assert objects.call_count == pages


async def test_a_link_the_kept_objects_lack_reads_them_again(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router, OBJECTS[:2])
    pca_router.post("/api/v3/metrics/aggregate").respond(
        200, json=aggregate({mo["id"]: HEALTHY for mo in OBJECTS})
    )
    assert set(await pca.link_metrics(["pe1-pe2", "pe3-pe4"])) == {"pe1-pe2"}
    serve_objects(pca_router)  # a session for pe3-pe4 was created since
    assert set(await pca.link_metrics(["pe1-pe2", "pe3-pe4"])) == {"pe1-pe2", "pe3-pe4"}


async def test_an_object_that_answers_nothing_has_the_next_check_read_them_again(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    serve_objects(pca_router)
    aggregate_route = pca_router.post("/api/v3/metrics/aggregate")
    aggregate_route.respond(200, json=aggregate({"mo-pe1-pe2": HEALTHY}))
    assert set(await pca.link_metrics(["pe1-pe2"])) == {"pe1-pe2"}
    # the session is deleted and created anew under another id
    renewed = [monitored_object("mo-pe1-pe2-b", "pe1-pe2"), *OBJECTS[1:]]
    serve_objects(pca_router, renewed)
    aggregate_route.respond(200, json=aggregate({"mo-pe1-pe2-b": HEALTHY}))
    assert await pca.link_metrics(["pe1-pe2"]) == {}  # the kept id answers nothing
    assert set(await pca.link_metrics(["pe1-pe2"])) == {"pe1-pe2"}


async def test_objects_ttl_zero_reads_them_for_every_check(
    pca_router: respx.MockRouter, clock: Clock
) -> None:
    client = pca_client(pca_router, clock, objects_ttl_s=0.0)
    serve_objects(pca_router)
    pca_router.post("/api/v3/metrics/aggregate").respond(
        200, json=aggregate({mo["id"]: HEALTHY for mo in OBJECTS})
    )
    try:
        await client.link_metrics(["pe1-pe2"])
        await client.link_metrics(["pe1-pe2"])
    finally:
        await client.aclose()
    assert pca_router.routes["objects"].call_count == 2


async def test_no_monitored_link_asks_nothing(pca: PcaClient, pca_router: respx.MockRouter) -> None:
    serve_objects(pca_router)
    route = pca_router.post("/api/v3/metrics/aggregate").respond(200, json=aggregate({}))
    assert await pca.link_metrics(["x-y"]) == {}
    assert route.call_count == 0


async def test_a_malformed_aggregate_is_final(pca: PcaClient, pca_router: respx.MockRouter) -> None:
    serve_objects(pca_router)
    pca_router.post("/api/v3/metrics/aggregate").respond(
        400, json={"errors": [{"status": "400", "detail": "bad interval"}]}
    )
    with pytest.raises(SouthboundError, match="bad interval") as caught:
        await pca.link_metrics(["pe1-pe2"])
    assert not caught.value.transient


def condition(metric: str, value: str, severity: str = "major") -> dict[str, Any]:
    trigger = {
        "metric": {
            "id": metric,
            "vendor": "accedian-twamp",
            "objectType": ["twamp-sf"],
            "direction": ["2"],
        },
        "comparator": "gt",
        "value": value,
        "duration": "PT1M",
    }
    return {
        "severity": severity,
        "triggersOn": trigger,
        "recoversOn": {**trigger, "comparator": "lte"},
    }


async def test_thresholds_parse_string_values(pca: PcaClient, pca_router: respx.MockRouter) -> None:
    pca_router.get("/api/v2/policies/alerting").respond(
        200,
        json={
            "data": [
                {
                    "type": "alertPolicies",
                    "id": "cxm-lab-link-sla",
                    "attributes": {
                        "policyName": "CXM lab link SLA",
                        "policyType": "micro-tca",
                        "conditions": [
                            condition("delayAvg", "50"),
                            condition("delayAvg", "80", "critical"),
                            condition("jitterAvg", "10"),
                            condition("packetsLostPct", "1.5"),
                        ],
                    },
                }
            ]
        },
    )
    limits = await pca.thresholds()
    assert (limits.delay_ms, limits.jitter_ms, limits.loss_pct) == (50.0, 10.0, 1.5)


async def test_thresholds_default_what_no_policy_sets(
    pca: PcaClient, pca_router: respx.MockRouter
) -> None:
    pca_router.get("/api/v2/policies/alerting").respond(
        200,
        json={
            "data": [
                {
                    "type": "alertPolicies",
                    "id": "p",
                    "attributes": {"conditions": [condition("delayVarAvg", "12")]},
                }
            ]
        },
    )
    limits = await pca.thresholds()
    assert (limits.delay_ms, limits.jitter_ms, limits.loss_pct) == (50.0, 12.0, 1.0)

"""Cisco PCA (Accedian Skylight) northbound, as documented: login, monitored objects, metrics
aggregates, alerting policies (docs/southbound.md "PCA").

One TWAMP session (monitored object ``mo-<link>``, type ``twamp-sf``) measures each link. The
lab keeps no history: every bucket of an asked interval carries what the link measures now.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.lab.alerts import METRIC_VENDOR, OBJECT_TYPE, alerting_policies
from services.lab.auth import BadToken, LoginRefused
from services.lab.common import LabDep, injected, pca_error
from services.lab.controller import Lab
from services.lab.network import LabNetwork, LinkMetrics

METRIC_IDS = ("delayAvg", "delayP95", "delayVarAvg", "jitterAvg", "packetsLost", "packetsLostPct")
DIRECTIONS = ("0", "1", "2")
"""Source → destination, destination → source, round trip."""
PROBES_PER_S = 10
MAX_BUCKETS = 1440
MAX_PAGE = 1000
DEFAULT_PAGE = 100


async def require_token(request: Request) -> None:
    lab: Lab = request.app.state.lab
    try:
        lab.sessions.check_pca(request.headers.get("authorization"))
    except BadToken:
        raise pca_error(401, "Unauthorized: the token is missing, unknown or expired") from None


login = APIRouter(tags=["pca-auth"])
pca = APIRouter(tags=["pca"], dependencies=[Depends(require_token)])


@login.post("/api/v1/auth/login")
async def pca_login(request: Request, lab: LabDep) -> Response:
    """Form ``username``, ``password`` → 200 ``{}`` with the token in the response header."""
    injected(lab.network, "login", kind="pca")
    body = (await request.body()).decode("utf-8", "replace")
    form = {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
    try:
        token = lab.sessions.pca_login(form.get("username", ""), form.get("password", ""))
    except LoginRefused as exc:
        raise pca_error(401, str(exc)) from None
    return JSONResponse({}, headers={"authorization": f"Bearer {token}"})


def object_id(link_id: str) -> str:
    return f"mo-{link_id}"


@pca.get("/api/v2/monitored-objects")
async def monitored_objects(request: Request, lab: LabDep) -> Response:
    """JSON:API list of the TWAMP sessions, ``page[limit]`` / ``page[offset]``."""
    network = lab.network
    injected(network, "monitored-objects", kind="pca")
    window = {"page[limit]": DEFAULT_PAGE, "page[offset]": 0}
    for name in window:
        raw = request.query_params.get(name)
        if raw is None:
            continue
        if not raw.isdigit() or (name == "page[limit]" and not 1 <= int(raw) <= MAX_PAGE):
            raise pca_error(400, f"{name} must be an integer (limit 1..{MAX_PAGE})")
        window[name] = int(raw)
    links = list(network.topology.links.values())
    offset, limit = window["page[offset]"], window["page[limit]"]
    data = [
        {
            "type": "monitoredObjects",
            "id": object_id(link.link_id),
            "attributes": {
                "objectName": link.link_id,
                "objectType": OBJECT_TYPE,
                "meta": {
                    "link": link.link_id,
                    "source": link.source,
                    "destination": link.destination,
                },
            },
        }
        for link in links[offset : offset + limit]
    ]
    return JSONResponse({"data": data, "meta": {"total": len(links)}})


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no timezone")
    return moment


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket(granularity: Any) -> timedelta | None:
    """``ALL`` → None (one point), ``PT<n>M`` / ``PT<n>H`` → the bucket length."""
    if granularity == "ALL":
        return None
    match = re.fullmatch(r"PT(\d+)([MH])", str(granularity))
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"granularity {granularity!r} is not ALL or PT<n>M / PT<n>H")
    unit = 60 if match.group(2) == "M" else 3600
    return timedelta(seconds=int(match.group(1)) * unit)


def _value(metric: str, direction: str, m: LinkMetrics, seconds: float) -> float:
    one_way = 0.5 if direction != "2" else 1.0
    values = {
        "delayAvg": m.delay_ms * one_way,
        "delayP95": (m.delay_ms + 2 * m.jitter_ms) * one_way,
        "delayVarAvg": m.jitter_ms * one_way,
        "jitterAvg": m.jitter_ms * one_way,
        "packetsLostPct": m.loss_pct,
        "packetsLost": float(round(m.loss_pct / 100 * PROBES_PER_S * seconds)),
    }
    return round(values[metric], 3)


def _aggregate(network: LabNetwork, body: Any) -> list[dict[str, Any]]:
    """The ``result`` list; ValueError with the reason for a malformed request."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("type") != "aggregates":
        raise ValueError('the body must be {"data": {"type": "aggregates", "attributes": {...}}}')
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise ValueError("data.attributes is required")
    interval = attributes.get("interval")
    if not isinstance(interval, str) or interval.count("/") != 1:
        raise ValueError("interval must be '<start>/<end>' (ISO 8601)")
    try:
        start, end = (_instant(part) for part in interval.split("/"))
    except ValueError:
        raise ValueError(f"interval {interval!r} is not two ISO 8601 instants") from None
    if end <= start:
        raise ValueError("the interval ends before it starts")
    bucket = _bucket(attributes.get("granularity", "ALL"))
    if attributes.get("aggregation", "avg") not in ("avg", "min", "max"):
        raise ValueError("aggregation must be avg, min or max")
    if bucket is not None and (end - start) / bucket > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets: use a coarser granularity")
    metrics = attributes.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise ValueError("metrics must be a non-empty list")
    starts = [start]
    if bucket is not None:
        starts = []
        at = start
        while at < end:
            starts.append(at)
            at += bucket
    seconds = (bucket or (end - start)).total_seconds()
    sessions = {object_id(link): link for link in network.topology.links}
    result = []
    for spec in metrics:
        if not isinstance(spec, dict) or spec.get("metric") not in METRIC_IDS:
            raise ValueError(f"each metric needs a metric id among {', '.join(METRIC_IDS)}")
        directions = spec.get("direction", ["2"])
        objects = spec.get("monitoredObjectId", list(sessions))
        if not isinstance(directions, list) or not set(directions) <= set(DIRECTIONS):
            raise ValueError("direction must be a list of '0', '1', '2'")
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise ValueError("monitoredObjectId must be a list of ids")
        for mo in objects:
            link = sessions.get(mo)
            if link is None:
                continue  # PCA leaves unknown sessions out
            measured = network.metrics(link)
            for direction in directions:
                value = _value(spec["metric"], direction, measured, seconds)
                result.append(
                    {
                        "metric": spec["metric"],
                        "monitoredObjectId": mo,
                        "objectType": OBJECT_TYPE,
                        "vendor": METRIC_VENDOR,
                        "direction": direction,
                        "series": [{"timestamp": _stamp(at), "value": value} for at in starts],
                    }
                )
    return result


@pca.post("/api/v3/metrics/aggregate")
async def aggregate(request: Request, lab: LabDep) -> Response:
    network = lab.network
    injected(network, "metrics", kind="pca")
    try:
        body = json.loads(await request.body())
        result = _aggregate(network, body)
    except ValueError as exc:
        raise pca_error(400, str(exc)) from None
    return JSONResponse({"data": {"type": "aggregates", "attributes": {"result": result}}})


@pca.get("/api/v2/policies/alerting")
async def policies(lab: LabDep) -> Response:
    injected(lab.network, "policies", kind="pca")
    return JSONResponse(alerting_policies(lab.network.thresholds, lab.lab_settings.tenant_id))

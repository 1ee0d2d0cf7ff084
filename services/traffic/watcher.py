"""The proactive watcher: after each load sample, forecast every link and tell the correlator
when one is predicted to cross its threshold (issue 14).

Per link, a small state machine (:func:`step`, pure):

- quiet → firing when the link has ``min_samples`` samples and its forecast ``horizon_s``
  ahead (or its measured load) reaches the threshold: one ``ingest_alerts`` with
  ``proactive=True`` and a ``firing`` alert fingerprinted ``traffic:<link>``;
- firing: re-sent at most once per ``alert_repeat_s`` while still predicted (the correlator
  dedups it by fingerprint; the repeat keeps it from going stale);
- firing → quiet with one ``resolved`` alert once the *measured* load has stayed under the
  release threshold (threshold minus a margin) for ``resolve_hold_s`` and the forecast is back
  under the threshold. The gap between the two thresholds and the hold are the hysteresis that
  keeps a load hovering around 70 % from raising and clearing an alert every sample.

A link the proactive flow is handling is left to it: ``link_forecast`` with a moved share
marks the link managed for a horizon (each call extends it). The watcher neither raises nor
repeats an alert for a managed link, and once the mark lapses it forecasts from the samples
taken after it only: the traffic coming back (a step, or the cutover's ramp) must not read as a
new trend toward congestion, which would open a second incident for the same busy hour.

Alerts go through the agent's durable outbox, written in the same transaction as the state
that sent them: a correlator that is down gets them in order when it is back, and a traffic
agent that restarts neither forgets an alert it raised nor sends it twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI

from services.traffic import store
from services.traffic.analytics import load_forecast
from services.traffic.settings import TrafficSettings
from shared.contracts import INGEST_ALERTS
from shared.logs import get_logger
from shared.models import IngestAlerts, LinkLoad, LinkLoadForecast, NormalizedAlert
from shared.outbox import Outbox, outbox_row, outbox_table
from shared.settings import Settings
from shared.southbound import link_key

log = get_logger(__name__)

Action = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Rules:
    """One link's alerting rules, durations already scaled."""

    threshold_pct: float
    release_pct: float
    horizon_s: float
    min_samples: int
    repeat_s: float
    hold_s: float


@dataclass(frozen=True, slots=True)
class AlertState:
    """A link whose proactive alert is firing (``store.alerts`` row)."""

    link_id: str
    started_at: float
    last_sent_at: float
    below_since: float | None = None
    """Since when the measured load has been under the release threshold."""
    sent: int = 1


def rules_for(
    cfg: TrafficSettings, settings: Settings, link_id: str, capacity_mbps: float | None
) -> Rules:
    threshold = cfg.threshold_for(link_id, capacity_mbps)
    return Rules(
        threshold_pct=threshold,
        release_pct=cfg.release_for(threshold),
        horizon_s=settings.scaled(cfg.forecast_horizon_s),
        min_samples=cfg.min_samples,
        repeat_s=settings.scaled(cfg.alert_repeat_s),
        hold_s=settings.scaled(cfg.resolve_hold_s),
    )


def step(
    state: AlertState | None,
    link_id: str,
    *,
    samples: int,
    measured_pct: float | None,
    predicted_pct: float | None,
    now: float,
    rules: Rules,
) -> tuple[AlertState | None, Action | None]:
    """The link's next state and what to send (None: nothing), for one new sample at ``now``."""
    if samples < rules.min_samples or measured_pct is None or predicted_pct is None:
        return state, None
    hot = predicted_pct >= rules.threshold_pct or measured_pct >= rules.threshold_pct
    if state is None:
        if hot:
            return AlertState(link_id, started_at=now, last_sent_at=now), "firing"
        return None, None
    below_since = None
    if measured_pct < rules.release_pct:
        below_since = state.below_since if state.below_since is not None else now
    if below_since is not None and now - below_since >= rules.hold_s and not hot:
        return None, "resolved"
    kept = replace(state, below_since=below_since)
    if hot and now - state.last_sent_at >= rules.repeat_s:
        return replace(kept, last_sent_at=now, sent=state.sent + 1), "firing"
    return kept, None


def proactive_alert(
    load: LinkLoadForecast, action: Action, state: AlertState, now: float
) -> NormalizedAlert:
    """The alert the issue-14 contract fixes (``docs/proactive.md``)."""
    measured = load.measured_pct or 0.0
    predicted = load.predicted_pct if load.predicted_pct is not None else measured
    horizon = load.horizon_s or 0.0
    return NormalizedAlert(
        source="traffic",
        # the correlator names links by their two nodes; a parallel link's ``#2`` stays in
        # the fingerprint, so each parallel link has its own alert
        link=load.link_id.partition("#")[0],
        status=action,
        severity="high" if measured >= 90 else "medium",
        metric="utilisation_forecast",
        value=predicted,
        threshold=load.threshold_pct,
        fingerprint=f"traffic:{load.link_id}",
        summary=(
            f"Congestion forecast on {load.link_id}: {predicted:.1f}% in {horizon:g}s "
            f"(threshold {load.threshold_pct:g}%)"
            if action == "firing"
            else f"Congestion forecast on {load.link_id} cleared: measured {measured:.1f}%"
        ),
        labels={"proactive": "true"},
        annotations={"forecast": json.dumps(load.model_dump(mode="json"), separators=(",", ":"))},
        # no ``timestamp``: a forecast delivered late by the outbox must not be discarded as
        # stale (a lost "resolved" would leave the alert firing); the repeat keeps it fresh
        starts_at=datetime.fromtimestamp(state.started_at, UTC),
        ends_at=datetime.fromtimestamp(now, UTC) if action == "resolved" else None,
    )


async def watch(app: FastAPI, loads: dict[str, LinkLoad]) -> list[NormalizedAlert]:
    """One pass after a sample: step every sampled link, queue what it sends; return that."""
    cfg: TrafficSettings = app.state.traffic_settings
    settings: Settings = app.state.settings
    outbox: Outbox = app.state.outbox
    engine = app.state.engine
    history = await store.history(engine, limit=cfg.history)
    states = {link: _state(row) for link, row in (await store.firing(engine)).items()}
    upsert: list[dict[str, Any]] = []
    cleared: list[str] = []
    rows: list[dict[str, Any]] = []
    sent: list[NormalizedAlert] = []
    managed: dict[str, float] = app.state.managed
    wall = time.time()
    for link_id, load in sorted(loads.items()):
        points = history.get(link_id, [])
        until = managed.get(link_key(link_id))
        if until is not None:
            if wall < until:
                continue  # the proactive flow is handling this link
            points = [p for p in points if p[0] >= until]
        if not points or load.utilisation_pct is None:
            continue
        rules = rules_for(cfg, settings, link_id, load.capacity_mbps)
        forecast = load_forecast(
            link_id,
            points,
            threshold_pct=rules.threshold_pct,
            horizon_s=rules.horizon_s,
            window=cfg.trend_window,
            capacity_mbps=load.capacity_mbps,
            keep=cfg.chart_samples,
            steps=cfg.chart_points,
        )
        now = points[-1][0]
        before = states.get(link_id)
        after, action = step(
            before,
            link_id,
            samples=len(points),
            measured_pct=forecast.measured_pct,
            predicted_pct=forecast.predicted_pct,
            now=now,
            rules=rules,
        )
        if after != before:
            if after is None:
                cleared.append(link_id)
            else:
                upsert.append(_row(after))
        if action is None:
            continue
        episode = after if after is not None else before
        if episode is None:  # cannot happen: an action always belongs to an alert episode
            continue
        alert = proactive_alert(forecast, action, episode, now)
        key = f"{alert.fingerprint}:{episode.started_at:.3f}:{action}:{episode.sent}"
        rows.append(
            outbox_row(INGEST_ALERTS, IngestAlerts(alerts=[alert], proactive=True), key=key)
        )
        sent.append(alert)
        log.info(
            "proactive alert",
            link=link_id,
            status=action,
            measured_pct=forecast.measured_pct,
            predicted_pct=forecast.predicted_pct,
            threshold_pct=rules.threshold_pct,
        )
    if upsert or cleared or rows:
        async with engine.begin() as conn:
            await store.save_alerts(conn, upsert=upsert, cleared=cleared)
            if rows:
                await conn.execute(outbox_table.insert(), rows)
        if rows:
            outbox.wake()
    return sent


def _state(row: dict[str, Any]) -> AlertState:
    return AlertState(
        link_id=row["link_id"],
        started_at=row["started_at"],
        last_sent_at=row["last_sent_at"],
        below_since=row["below_since"],
        sent=row["sent"],
    )


def _row(state: AlertState) -> dict[str, Any]:
    return {
        "link_id": state.link_id,
        "started_at": state.started_at,
        "last_sent_at": state.last_sent_at,
        "below_since": state.below_since,
        "sent": state.sent,
    }

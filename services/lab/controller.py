"""What the control API does over time: degrade, recover, flap, play scenarios, push alerts.

:class:`Lab` is the one object the routes talk to. It owns the background tasks (automatic
recovery, flaps, scenario steps) so the lifespan can cancel them all, and it turns every link
state change into at most one PCA alert through :class:`~services.lab.alerts.AlertPusher`.
Every wait is multiplied by ``CXM_TIME_SCALE``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.lab.alerts import AlertPusher, build_alert
from services.lab.auth import Sessions
from services.lab.network import (
    BusyHour,
    BusyHourProfile,
    LabNetwork,
    LinkCondition,
    LoadRamp,
    utcnow,
)
from services.lab.settings import LabSettings
from services.lab.topology import ScenarioPlan, ScenarioStep
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

DEFAULT_DELAY_MS = 80.0
DEFAULT_JITTER_MS = 15.0
DEFAULT_LOSS_PCT = 2.0
"""Defaults of a degradation: every one is above the default alerting thresholds."""


@dataclass(frozen=True)
class Degradation:
    delay_ms: float = DEFAULT_DELAY_MS
    jitter_ms: float = DEFAULT_JITTER_MS
    loss_pct: float = DEFAULT_LOSS_PCT
    duration_s: float | None = None
    down: bool = False


class Lab:
    """The emulated network plus its timers and alert pushing."""

    def __init__(
        self,
        *,
        settings: Settings,
        lab_settings: LabSettings,
        network: LabNetwork,
        pusher: AlertPusher,
        sessions: Sessions,
    ):
        self.settings = settings
        self.lab_settings = lab_settings
        self.network = network
        self.pusher = pusher
        self.sessions = sessions
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.raised_at: dict[str, datetime] = {}

    # --- tasks ---------------------------------------------------------------------------

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as the one task called ``name`` (replacing an earlier one)."""
        self._cancel(name)
        task = asyncio.create_task(coro, name=f"lab:{name}")
        self.tasks[name] = task

        def done(t: asyncio.Task[None]) -> None:
            if self.tasks.get(name) is t:
                del self.tasks[name]
            if not t.cancelled() and t.exception() is not None:
                log.error("lab task failed", task=name, error=repr(t.exception()))

        task.add_done_callback(done)

    def _cancel(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def _cancel_link(self, link_id: str) -> None:
        self._cancel(f"recover:{link_id}")
        self._cancel(f"flap:{link_id}")

    async def aclose(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def scaled(self, seconds: float) -> float:
        return self.settings.scaled(seconds)

    # --- alerts --------------------------------------------------------------------------

    def evaluate(self, link_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Push an alert for every link whose SLA state changed; returns what was pushed."""
        with self.network.pinned():
            return self._evaluate(link_ids)

    def _evaluate(self, link_ids: list[str] | None) -> list[dict[str, Any]]:
        pushed = []
        for link_id in link_ids if link_ids is not None else list(self.network.topology.links):
            change = self.network.alert_transition(link_id)
            if change is None:
                continue
            state, violation = change
            if state == "raised":
                self.raised_at[link_id] = utcnow()
            raised_at = self.raised_at.get(link_id, utcnow())
            if state == "cleared":
                self.raised_at.pop(link_id, None)
            alert = build_alert(
                link=self.network.topology.links[link_id],
                state=state,
                violation=violation,
                metrics=self.network.metrics(link_id),
                condition=self.network.conditions.get(link_id),
                raised_at=raised_at,
                tenant_id=self.lab_settings.tenant_id,
            )
            self.pusher.push(alert)
            pushed.append(alert)
            log.info("link sla", link=link_id, alert=state, metric=violation[0])
        return pushed

    # --- link actions --------------------------------------------------------------------

    def degrade(self, link_id: str, spec: Degradation) -> LinkCondition:
        """Degrade a link now; with a duration, it recovers by itself (x time scale)."""
        link = self.network.link(link_id).link_id
        self._cancel_link(link)
        until = None
        if spec.duration_s is not None:
            until = utcnow() + timedelta(seconds=self.scaled(spec.duration_s))
        cond = self.network.degrade(
            link,
            delay_ms=spec.delay_ms,
            jitter_ms=spec.jitter_ms,
            loss_pct=spec.loss_pct,
            down=spec.down,
            until=until,
        )
        self.evaluate([link])
        if spec.duration_s is not None:
            self._spawn(f"recover:{link}", self._recover_later(link, self.scaled(spec.duration_s)))
        return cond

    async def _recover_later(self, link: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.tasks.pop(f"recover:{link}", None)  # this task is finishing: do not cancel it
        self._recover(link)

    def recover(self, link_id: str) -> bool:
        """Recover a link (and stop its flap or timer); False when it was healthy already."""
        link = self.network.link(link_id).link_id
        self._cancel_link(link)
        return self._recover(link)

    def _recover(self, link: str) -> bool:
        was = self.network.recover(link)
        self.evaluate([link])
        return was is not None

    def recover_all(self) -> list[str]:
        links = sorted(self.network.conditions)
        for name in [n for n in self.tasks if n.startswith(("recover:", "flap:"))]:
            self._cancel(name)
        for link in links:
            self._recover(link)
        return links

    def flap(self, link_id: str, *, count: int, interval_s: float, spec: Degradation) -> str:
        """Degrade and recover ``count`` times, ``interval_s`` apart (x time scale)."""
        link = self.network.link(link_id).link_id
        self._cancel_link(link)
        self._spawn(f"flap:{link}", self._flap(link, count, self.scaled(interval_s), spec))
        return link

    async def _flap(self, link: str, count: int, interval_s: float, spec: Degradation) -> None:
        for i in range(count):
            self.network.degrade(
                link,
                delay_ms=spec.delay_ms,
                jitter_ms=spec.jitter_ms,
                loss_pct=spec.loss_pct,
                down=spec.down,
            )
            self.evaluate([link])
            await asyncio.sleep(interval_s)
            self.network.recover(link)
            self.evaluate([link])
            if i + 1 < count:
                await asyncio.sleep(interval_s)

    # --- traffic -------------------------------------------------------------------------

    def set_traffic(self, factor: float, services: list[str]) -> None:
        self.network.set_traffic(factor, services)
        self.evaluate()

    def load(self, link_id: str, *, target_pct: float, ramp_s: float) -> LoadRamp:
        """Ramp the link's native load to ``target_pct`` over ``ramp_s`` real seconds (see
        :meth:`LabNetwork.ramp_load`); alerts follow while it moves."""
        link = self.network.link(link_id).link_id
        with self.network.pinned():
            ramp = self.network.ramp_load(link, target_pct=target_pct, ramp_s=ramp_s)
        self.evaluate()
        self._watch_load()
        return ramp

    def busy_hour_spec(self, *, peak_pct: float | None = None, **fields: Any) -> BusyHour:
        """A :class:`BusyHour` from a request's fields; ``peak_pct`` (the busiest link's native
        load at the peak) becomes the ``peak`` multiplier for this network's load now.
        ValueError says what does not fit."""
        if peak_pct is not None:
            if "peak" in fields:
                raise ValueError("give peak or peak_pct, not both")
            network = self.network
            with network.pinned():
                level = network.profile.multiplier(network.now()) if network.profile else 1.0
                busiest = max(
                    (network.native_pct(link) for link in network.topology.links), default=0
                )
            if busiest <= 0:
                raise ValueError("peak_pct needs traffic: no link carries any native load")
            fields["peak"] = peak_pct / (busiest / level)
        return BusyHour(**fields)

    def busy_hour(self, spec: BusyHour) -> BusyHourProfile:
        profile = self.network.start_busy_hour(spec)
        self.evaluate()
        self._watch_load()
        return profile

    def _watch_load(self) -> None:
        """One task (not one per link) re-evaluates PCA alerts every ``load_tick_s`` while a
        ramp or the busy-hour profile still moves the load, so a link that crosses a threshold
        by itself raises (and later clears) its alert like any other."""
        if "load" not in self.tasks and self.network.time_dependent():
            self._spawn("load", self._tick_load())

    async def _tick_load(self) -> None:
        while True:
            await asyncio.sleep(self.lab_settings.load_tick_s)
            moving = self.network.time_dependent()
            self.evaluate()
            if not moving:
                self.tasks.pop("load", None)  # this task is finishing: do not cancel it
                return

    # --- scenarios and reset -------------------------------------------------------------

    def play(
        self,
        plan: ScenarioPlan,
        *,
        duration_s: float | None,
        step_s: float | None,
        busy_hour: BusyHour | None = None,
    ) -> list[ScenarioStep]:
        """Run the scenario's first steps now and the later ones in the background.

        ``busy_hour`` is the profile a ``busy-hour`` step starts (its defaults otherwise)."""
        duration = duration_s if duration_s is not None else self.lab_settings.scenario_duration_s
        gap = step_s if step_s is not None else self.lab_settings.scenario_step_s
        now = [s for s in plan.steps if s.after == 0 or gap == 0]
        later = [s for s in plan.steps if s not in now]
        for step in now:
            self._apply(step, duration, busy_hour)
        if later:
            self._spawn(f"scenario:{plan.name}", self._play_later(later, duration, gap, busy_hour))
        return list(plan.steps)

    async def _play_later(
        self, steps: list[ScenarioStep], duration: float, gap: float, busy_hour: BusyHour | None
    ) -> None:
        done = 0
        for step in sorted(steps, key=lambda s: s.after):
            await asyncio.sleep(self.scaled(gap) * (step.after - done))
            done = step.after
            self._apply(step, duration, busy_hour)

    def _apply(self, step: ScenarioStep, duration: float, busy_hour: BusyHour | None) -> None:
        params = step.params
        spec_duration = params.get("duration_s", duration) or duration
        if step.action == "recover-all":
            self.recover_all()
        elif step.action == "busy-hour":
            self.busy_hour(busy_hour or BusyHour(**params))
        elif step.link is None:
            raise ValueError(f"scenario step {step.action} names no link")
        elif step.action == "degrade":
            self.degrade(step.link, Degradation(duration_s=spec_duration))
        elif step.action == "down":
            self.degrade(step.link, Degradation(duration_s=spec_duration, down=True))
        elif step.action == "recover":
            self.recover(step.link)
        elif step.action == "flap":
            self.flap(
                step.link,
                count=int(params.get("count", 5)),
                interval_s=float(params.get("interval_s", 2.0)),
                spec=Degradation(),
            )

    def reset(self) -> None:
        """Recover every link (pushing the clears), then forget policies, mappings, faults.

        Logins survive a reset: a client's session is not part of the network."""
        for name in list(self.tasks):
            self._cancel(name)
        self.recover_all()
        self.network.reset()
        self.raised_at.clear()
        self.evaluate()

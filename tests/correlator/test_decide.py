"""The decision function alone: a state and an alert in, a disposition out, no database.

Each row builds the smallest state that leads to one branch of the pipeline and checks the
disposition, the incident, the reason and the changes asked of the state; every row also
checks that deciding changed nothing (the state is only changed by applying the result).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.correlator.dampening import DampeningParams, LinkFlapState
from services.correlator.decide import Decision, Rules, decide
from services.correlator.silences import Matcher, Silence
from services.correlator.state import (
    ClearInto,
    CorrelationState,
    Dampen,
    DedupEntry,
    Incident,
    JoinIncident,
    OpenIncident,
    RecentClose,
    RecordDedup,
    SignalCleared,
    SlideDedup,
    UpdateFlap,
)
from services.correlator.store import WriteSet
from services.correlator.topology import TopologyView
from shared.models import NormalizedAlert

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = Rules(
    group_wait=timedelta(seconds=3),
    window=timedelta(seconds=300),
    dedup_window=timedelta(seconds=300),
    stale_after=timedelta(seconds=3600),
    dampening=DampeningParams(
        penalty=1000, half_life_s=60, suppress=1500, reuse=750, max_suppress_s=240
    ),
    auto_close_confidence=0.8,
)
TOPO = TopologyView(
    links={
        "pe1-pe2": ("pe1", "pe2"),
        "pe2-pe3": ("pe2", "pe3"),
        "pe4-pe5": ("pe4", "pe5"),
        "pe6-pe7": ("pe6", "pe7"),
    },
    srlgs={"pe4-pe5": frozenset({7}), "pe6-pe7": frozenset({7})},
    known=True,
)


def alert(link: str | None = "pe1-pe2", **kw: Any) -> NormalizedAlert:
    return NormalizedAlert(link=link, fingerprint=kw.pop("fingerprint", f"fp-{link}"), **kw)


def incident(state: CorrelationState, inc_id: str, links: list[str], **kw: Any) -> Incident:
    """An incident in memory as the engine would hold it (indexes included)."""
    inc = Incident(
        id=inc_id,
        status=kw.pop("status", "open"),
        severity="medium",
        links=list(links),
        nodes=kw.pop("nodes", []),
        created_at=kw.pop("created_at", NOW - timedelta(seconds=60)),
        emit_at=NOW - timedelta(seconds=57),
        last_alert_at=kw.pop("last_alert_at", NOW - timedelta(seconds=30)),
        **kw,
    )
    state.incidents[inc.id] = inc
    state.index(inc)
    return inc


def flapping(state: CorrelationState, link: str, *, degraded: bool, firing: set[str]) -> None:
    """One change already counted a moment ago: the next change reaches the suppress level."""
    state.flaps[link] = LinkFlapState(
        link=link,
        degraded=degraded,
        seen=True,
        penalty=1000.0,
        updated_at=NOW,
        changes=1,
        firing=set(firing),
    )


def firing_on(state: CorrelationState, link: str, *fps: str) -> None:
    state.flaps[link] = LinkFlapState(
        link=link, degraded=True, seen=True, updated_at=NOW, firing=set(fps)
    )


def silenced(state: CorrelationState) -> None:
    state.silences["s1"] = Silence(
        id="s1",
        matchers=[Matcher(name="link", value="pe1-.*", op="=~")],
        starts_at=NOW - timedelta(minutes=5),
        ends_at=NOW + timedelta(minutes=5),
        created_by="ops",
        comment="",
        kind="maintenance",
        created_at=NOW - timedelta(minutes=5),
    )


def after_false_positive(state: CorrelationState) -> None:
    """pe1-pe2's last incident, a minute ago, was auto-closed as a false positive."""
    close = RecentClose("INC-2026-0003", NOW - timedelta(seconds=60), "false_positive")
    state.recent["pe1-pe2"] = close


def nothing(state: CorrelationState) -> None:
    pass


def given(*steps: Callable[[CorrelationState], object]) -> Callable[[CorrelationState], None]:
    def setup(state: CorrelationState) -> None:
        for step in steps:
            step(state)

    return setup


@dataclass
class Case:
    name: str
    setup: Callable[[CorrelationState], object]
    alert: NormalizedAlert
    disposition: str
    incident_id: str | None
    reason: str
    """A part of the reason."""
    changes: list[type] = field(default_factory=list)
    proactive: bool = False


CASES = [
    Case("no link, no node", nothing, alert(None), "discarded", None, "no link or node"),
    Case(
        "stale",
        nothing,
        alert(timestamp=NOW - timedelta(hours=2)),
        "discarded",
        None,
        "stale: observed",
    ),
    Case("info severity", nothing, alert(severity="info"), "discarded", None, "info severity"),
    Case(
        "duplicate within the dedup window",
        lambda s: s.dedup.update(
            {"fp-pe1-pe2": DedupEntry("firing", NOW - timedelta(seconds=10), "INC-2026-0001")}
        ),
        alert(),
        "duplicate",
        "INC-2026-0001",
        "dedup window",
        [SlideDedup],
    ),
    Case(
        "same fingerprint after the dedup window is not a duplicate",
        lambda s: s.dedup.update(
            {"fp-pe1-pe2": DedupEntry("firing", NOW - timedelta(seconds=300), "INC-2026-0001")}
        ),
        alert(),
        "new_incident",
        "INC-2026-0001",
        "opened",
        [RecordDedup, UpdateFlap, OpenIncident],
    ),
    Case(
        "suppressed by a maintenance window",
        silenced,
        alert(),
        "suppressed",
        None,
        "maintenance s1 by ops",
    ),
    Case(
        "new incident numbered after the year's last",
        lambda s: s.sequence.update({2026: 4}),
        alert(),
        "new_incident",
        "INC-2026-0005",
        "emitted after the group wait",
        [RecordDedup, UpdateFlap, OpenIncident],
    ),
    Case(
        "node alarm opens an incident over the node's links",
        nothing,
        alert(None, node="pe2", fingerprint="fp-pe2"),
        "new_incident",
        "INC-2026-0001",
        "opened",
        [RecordDedup, OpenIncident],
    ),
    Case(
        "node alarm on a node without links",
        nothing,
        alert(None, node="pe9", fingerprint="fp-pe9"),
        "discarded",
        None,
        "node pe9 has no known links",
        [RecordDedup],
    ),
    Case(
        "joins the incident holding its link",
        lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
        alert(fingerprint="other"),
        "correlated",
        "INC-2026-0001",
        "link pe1-pe2 already in INC-2026-0001",
        [RecordDedup, UpdateFlap, JoinIncident],
    ),
    Case(
        "joins an incident sharing a node",
        lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
        alert("pe2-pe3"),
        "correlated",
        "INC-2026-0001",
        "shared node pe2 with pe1-pe2",
        [RecordDedup, UpdateFlap, JoinIncident],
    ),
    Case(
        "joins an incident sharing an SRLG",
        lambda s: incident(s, "INC-2026-0001", ["pe4-pe5"]),
        alert("pe6-pe7"),
        "correlated",
        "INC-2026-0001",
        "shared SRLG 7 with pe4-pe5",
        [RecordDedup, UpdateFlap, JoinIncident],
    ),
    Case(
        "related incident outside the correlation window is not joined",
        lambda s: incident(
            s, "INC-2026-0001", ["pe1-pe2"], last_alert_at=NOW - timedelta(seconds=301)
        ),
        alert("pe2-pe3"),
        "new_incident",
        "INC-2026-0001",  # no sequence in this state: the number restarts at 1
        "opened",
        [RecordDedup, UpdateFlap, OpenIncident],
    ),
    Case(
        "inhibited by a node alarm on one of its nodes",
        lambda s: incident(s, "INC-2026-0002", [], nodes=["pe3"]),
        alert("pe2-pe3"),
        "correlated",
        "INC-2026-0002",
        "inhibited by node alarm on pe3",
        [RecordDedup, UpdateFlap, JoinIncident],
    ),
    Case(
        "cleared: joins the open incident, the orchestrator hears the link is clear",
        given(
            lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
            lambda s: firing_on(s, "pe1-pe2", "fp-pe1-pe2"),
        ),
        alert(status="resolved"),
        "correlated",
        "INC-2026-0001",
        "clears pe1-pe2 of INC-2026-0001",
        [RecordDedup, UpdateFlap, ClearInto, SignalCleared],
    ),
    Case(
        "cleared while another alert still fires on the link: no cleared signal",
        given(
            lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
            lambda s: firing_on(s, "pe1-pe2", "fp-pe1-pe2", "fp-other"),
        ),
        alert(status="resolved"),
        "correlated",
        "INC-2026-0001",
        "clears pe1-pe2",
        [RecordDedup, UpdateFlap, ClearInto],
    ),
    Case(
        "cleared with nothing open",
        nothing,
        alert(status="resolved"),
        "discarded",
        None,
        "cleared with nothing open",
        [RecordDedup, UpdateFlap],
    ),
    Case(
        "firing on a flapping link with nothing open: a dampened new incident",
        lambda s: flapping(s, "pe1-pe2", degraded=False, firing=set()),
        alert(),
        "dampened",
        "INC-2026-0001",
        "link pe1-pe2 flapping (penalty 2000)",
        [RecordDedup, UpdateFlap, OpenIncident, JoinIncident, Dampen],
    ),
    Case(
        "firing on a flapping link joins a related incident, dampened",
        given(
            lambda s: incident(s, "INC-2026-0007", ["pe2-pe3"]),
            lambda s: flapping(s, "pe1-pe2", degraded=False, firing=set()),
        ),
        alert(),
        "dampened",
        "INC-2026-0007",
        "flapping",
        [RecordDedup, UpdateFlap, JoinIncident, Dampen],
    ),
    Case(
        "cleared on a flapping link: the incident is dampened",
        given(
            lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
            lambda s: flapping(s, "pe1-pe2", degraded=True, firing={"fp-pe1-pe2"}),
        ),
        alert(status="resolved"),
        "dampened",
        "INC-2026-0001",
        "link pe1-pe2 flapping: dampened",
        [RecordDedup, UpdateFlap, ClearInto, Dampen],
    ),
    Case(
        "weak signal right after a false positive on the link",
        after_false_positive,
        alert(value=45.0, threshold=50.0),
        "false_positive",
        "INC-2026-0003",
        "below its threshold",
        [RecordDedup, UpdateFlap],
    ),
    Case(
        "strong signal after a false positive opens an incident",
        after_false_positive,
        alert(value=150.0, threshold=50.0, duration_s=600),
        "new_incident",
        "INC-2026-0001",
        "opened",
        [RecordDedup, UpdateFlap, OpenIncident],
    ),
    # --- a forecast (proactive) and a fault (SLA) on the same links are two incidents ---------
    Case(
        "a forecast on an SLA incident's link opens its own, the link's state untouched",
        lambda s: (incident(s, "INC-2026-0001", ["pe1-pe2"]), s.sequence.update({2026: 1})),
        alert(fingerprint="traffic:pe1-pe2"),
        "new_incident",
        "INC-2026-0002",
        "opened",
        [RecordDedup, OpenIncident],
        proactive=True,
    ),
    Case(
        "a forecast beside an SLA incident (shared node) does not join it",
        lambda s: (incident(s, "INC-2026-0001", ["pe1-pe2"]), s.sequence.update({2026: 1})),
        alert("pe2-pe3", fingerprint="traffic:pe2-pe3"),
        "new_incident",
        "INC-2026-0002",
        "opened",
        [RecordDedup, OpenIncident],
        proactive=True,
    ),
    Case(
        "a forecast on a node-alarmed node does not join the node's incident",
        lambda s: (incident(s, "INC-2026-0002", [], nodes=["pe3"]), s.sequence.update({2026: 2})),
        alert("pe2-pe3", fingerprint="traffic:pe2-pe3"),
        "new_incident",
        "INC-2026-0003",
        "opened",
        [RecordDedup, OpenIncident],
        proactive=True,
    ),
    Case(
        "a forecast joins the proactive incident on its link",
        lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"], proactive=True),
        alert(fingerprint="traffic:pe1-pe2-again"),
        "correlated",
        "INC-2026-0001",
        "link pe1-pe2 already in INC-2026-0001",
        [RecordDedup, JoinIncident],
        proactive=True,
    ),
    Case(
        "a fault on a proactive incident's link opens an SLA incident",
        lambda s: (
            incident(s, "INC-2026-0001", ["pe1-pe2"], proactive=True),
            s.sequence.update({2026: 1}),
        ),
        alert(),
        "new_incident",
        "INC-2026-0002",
        "opened",
        [RecordDedup, UpdateFlap, OpenIncident],
    ),
    Case(
        "a forecast that clears goes to the proactive incident, not the SLA one",
        given(
            lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
            lambda s: incident(s, "INC-2026-0002", ["pe1-pe2"], proactive=True),
            lambda s: firing_on(s, "pe1-pe2", "fp-pe1-pe2"),
        ),
        alert(status="resolved", fingerprint="traffic:pe1-pe2"),
        "correlated",
        "INC-2026-0002",
        "clears pe1-pe2 of INC-2026-0002",
        [RecordDedup, ClearInto],
        proactive=True,
    ),
    Case(
        "a fault that clears goes to the SLA incident, not the proactive one",
        given(
            lambda s: incident(s, "INC-2026-0001", ["pe1-pe2"]),
            lambda s: incident(s, "INC-2026-0002", ["pe1-pe2"], proactive=True),
            lambda s: firing_on(s, "pe1-pe2", "fp-pe1-pe2"),
        ),
        alert(status="resolved"),
        "correlated",
        "INC-2026-0001",
        "clears pe1-pe2 of INC-2026-0001",
        [RecordDedup, UpdateFlap, ClearInto, SignalCleared],
    ),
    Case(
        "a forecast after a false positive on the link is not judged by it",
        after_false_positive,
        alert(value=45.0, threshold=50.0, fingerprint="traffic:pe1-pe2"),
        "new_incident",
        "INC-2026-0001",
        "opened",
        [RecordDedup, OpenIncident],
        proactive=True,
    ),
]


def _memory(state: CorrelationState) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(state).items() if k != "params"})


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    state = CorrelationState(RULES.dampening)
    case.setup(state)
    before = _memory(state)
    decided = decide(case.alert, state, TOPO, RULES, NOW, proactive=case.proactive)
    assert (decided.disposition, decided.incident_id) == (case.disposition, case.incident_id)
    assert case.reason in decided.reason
    assert [type(c) for c in decided.changes] == case.changes
    assert _memory(state) == before, "deciding changed the state"


def test_new_incident_carries_what_the_state_needs() -> None:
    state = CorrelationState(RULES.dampening)
    decided = decide(
        alert(None, node="pe2", fingerprint="n"), state, TOPO, RULES, NOW, proactive=True
    )
    opened = decided.changes[-1]
    assert isinstance(opened, OpenIncident)
    assert opened.links == ("pe1-pe2", "pe2-pe3") and opened.nodes == ("pe2",)
    assert opened.emit_at == NOW + RULES.group_wait and opened.proactive
    assert opened.brief is not None and opened.brief.fingerprint == "n"


def _run(
    state: CorrelationState, alerts: list[NormalizedAlert], now: datetime, proactive: bool = False
) -> list[Decision]:
    """What the engine does per request: decide, apply, next alert."""
    ws = WriteSet()
    out = []
    for a in alerts:
        decided = decide(a, state, TOPO, RULES, now, proactive=proactive)
        state.apply(decided.changes, now, ws, TOPO)
        out.append(decided)
    return out


def test_each_decision_sees_the_ones_applied_before_it() -> None:
    state = CorrelationState(RULES.dampening)
    storm = [alert(), alert("pe2-pe3"), alert(), alert("pe2-pe1", fingerprint="x")]
    decided = _run(state, storm, NOW)
    assert [(d.disposition, d.incident_id) for d in decided] == [
        ("new_incident", "INC-2026-0001"),
        ("correlated", "INC-2026-0001"),
        ("duplicate", "INC-2026-0001"),
        ("correlated", "INC-2026-0001"),
    ]
    assert decided[3].link == "pe1-pe2"  # the topology's own name for the link
    assert state.incidents["INC-2026-0001"].links == ["pe1-pe2", "pe2-pe3"]
    assert state.sequence == {2026: 1}


def test_degrade_clear_degrade_dampens_once_applied() -> None:
    state = CorrelationState(RULES.dampening)
    steps = [alert(), alert(status="resolved"), alert()]
    decided = [_run(state, [a], NOW + timedelta(seconds=i))[0] for i, a in enumerate(steps)]
    assert [d.disposition for d in decided] == ["new_incident", "correlated", "dampened"]
    assert state.flaps["pe1-pe2"].suppressed and state.flaps["pe1-pe2"].firing == {"fp-pe1-pe2"}
    assert state.incidents["INC-2026-0001"].dampened_until is not None


def test_a_forecast_and_a_fault_on_one_link_stay_two_incidents_until_each_closes() -> None:
    """The CI run of 2026-11-30: a protection tunnel's load forecast on pe1-p1 was folded into
    the SLA incident by node pe1, and its links grew by links only forecast busy."""
    state = CorrelationState(RULES.dampening)
    (fault,) = _run(state, [alert()], NOW)
    (forecast,) = _run(state, [alert(fingerprint="traffic:pe1-pe2")], NOW, proactive=True)
    (beside,) = _run(state, [alert("pe2-pe3", fingerprint="traffic:pe2-pe3")], NOW, True)
    assert [d.disposition for d in (fault, forecast, beside)] == [
        "new_incident",
        "new_incident",
        "correlated",
    ]
    sla, ahead = (
        state.incidents[fault.incident_id or ""],
        state.incidents[forecast.incident_id or ""],
    )
    assert beside.incident_id == ahead.id and ahead.proactive and not sla.proactive
    assert sla.links == ["pe1-pe2"] and ahead.links == ["pe1-pe2", "pe2-pe3"]
    assert state.flaps["pe1-pe2"].firing == {"fp-pe1-pe2"}  # the forecast is not a fault
    state.close(ahead, "congestion_subsided", NOW, WriteSet())
    assert state.open_for("pe1-pe2", None) is sla and "pe1-pe2" not in state.recent
    (again,) = _run(state, [alert(fingerprint="more")], NOW + timedelta(seconds=1))
    assert (again.disposition, again.incident_id) == ("correlated", sla.id)


def test_derived_fingerprint_is_the_sources_formula() -> None:
    """decide() writes ``sources.fingerprint`` out for speed; the value must not change (it is
    stored, and dedup after a restart reads it back)."""
    from services.correlator.decide import _derived_fingerprint
    from services.correlator.sources import fingerprint

    cases = [
        NormalizedAlert(source="bench", link="a-b", metric="m", labels={"b": "2", "a": "1"}),
        NormalizedAlert(source="x", node="n1"),
        NormalizedAlert(source="x", host="h", metric=""),
        NormalizedAlert(source="x", node="n", host="h", labels={"é": "ü", "k": "'\"\x1f"}),
    ]
    for a in cases:
        for link in (None, "a-b"):
            expected = fingerprint(
                a.source, link, a.node or a.host, a.metric, sorted(a.labels.items())
            )
            assert _derived_fingerprint(a, link) == expected


def test_prune_forgets_exactly_what_left_the_dedup_window() -> None:
    """Dedup entries are kept in last-seen order so a prune stops early; a fingerprint that
    slid (a duplicate) or was recorded again stays, whatever its first arrival."""
    state = CorrelationState(RULES.dampening)
    ws = WriteSet()
    t0 = NOW - timedelta(seconds=400)
    state.apply((RecordDedup("a", "firing", None),), t0, ws, TOPO)
    state.apply((RecordDedup("b", "firing", None),), t0 + timedelta(seconds=1), ws, TOPO)
    state.apply((RecordDedup("c", "firing", None),), t0 + timedelta(seconds=2), ws, TOPO)
    state.apply((SlideDedup("a"),), NOW - timedelta(seconds=10), ws, TOPO)
    state.apply((RecordDedup("b", "resolved", None),), NOW - timedelta(seconds=5), ws, TOPO)
    state.prune(NOW, RULES.dedup_window, RULES.window)
    assert list(state.dedup) == ["a", "b"]  # c left the window; a slid, b was seen again
    # a clock that stepped back: the entry waits behind newer ones, then goes with them
    state.apply((RecordDedup("d", "firing", None),), NOW - timedelta(seconds=200), ws, TOPO)
    state.prune(NOW + timedelta(seconds=150), RULES.dedup_window, RULES.window)
    assert list(state.dedup) == ["a", "b", "d"]
    state.prune(NOW + timedelta(seconds=300), RULES.dedup_window, RULES.window)
    assert list(state.dedup) == []

"""Table tests for recycling (docs/fleet-operations.md): an idle recorder past spec.recycle's
limits is not free, gets its replacement first and is drained in turn; a busy one is left be."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model import (
    DrainInstance,
    InstanceState,
    Plan,
    Reason,
    ReportView,
    SetDesiredCapacity,
)
from controller.planner import plan
from tests.support.observations import NOW, STARTED, ObservationBuilder, report, spec

HOUR = 3600.0


def used(rep: ReportView, recordings: int = 0, booted_ago: float | None = None) -> ReportView:
    booted = None if booted_ago is None else NOW - booted_ago
    return rep._replace(recordings_finished=recordings, booted_at=booted)


def recycled(**recycle: Any) -> Any:
    return spec(recycle=recycle, capacity={"min": 0, "max": 10}, targetFree=2)


def drains(result: Plan) -> dict[str, Reason]:
    return {a.instance_id: a.reason for a in result.actions if isinstance(a, DrainInstance)}


def scale_outs(result: Plan) -> list[int]:
    return [
        a.capacity
        for a in result.actions
        if isinstance(a, SetDesiredCapacity) and a.capacity > a.previous
    ]


def condition(result: Plan, kind: str) -> Any:
    return next((c for c in result.conditions if c.type == kind), None)


@pytest.mark.parametrize(
    ("limits", "tired", "expected"),
    [
        pytest.param(
            {"maxRecordings": 10}, used(report(), 10), Reason.RECYCLE_RECORDINGS, id="recordings"
        ),
        pytest.param({"maxRecordings": 10}, used(report(), 9), None, id="recordings-below"),
        pytest.param(
            {"maxUptime": "24h"},
            used(report(), 0, 25 * HOUR),
            Reason.RECYCLE_UPTIME,
            id="uptime-agent",
        ),
        pytest.param({"maxUptime": "24h"}, used(report(), 0, 23 * HOUR), None, id="uptime-below"),
        pytest.param(
            {"maxRecordings": 3, "maxUptime": "1h"},
            used(report(), 3, 2 * HOUR),
            Reason.RECYCLE_RECORDINGS,
            id="both-recordings-first",
        ),
        pytest.param({}, used(report(), 500, 500 * HOUR), None, id="no-limits"),
    ],
)
def test_idle_past_a_limit_is_drained_when_free_holds_without_it(
    limits: dict[str, Any], tired: ReportView, expected: Reason | None
) -> None:
    """With the target held by other idle recorders, an idle one past a limit is drained with
    the limit's reason; below every limit it stays idle."""
    fleet = ObservationBuilder()
    fleet.add_many([1, 2], used(report(idle_for=10), 0, 60))
    worn = fleet.add(3, tired)
    result = plan(recycled(**limits), fleet.observed(), NOW)
    assert drains(result) == ({worn: expected} if expected else {})
    state = {v.instance_id: v.state for v in result.instances}[worn]
    assert state is (InstanceState.RETIRING if expected else InstanceState.IDLE)


def test_uptime_falls_back_to_first_seen() -> None:
    """An agent that reports no uptime is aged from when the controller first saw it."""
    fleet = ObservationBuilder(started_at=STARTED - 30 * HOUR)
    fleet.add_many([1, 2], report(idle_for=10), seen=NOW - HOUR)
    worn = fleet.add(3, report(), seen=NOW - 25 * HOUR)
    result = plan(recycled(maxUptime="24h"), fleet.observed(), NOW)
    assert drains(result) == {worn: Reason.RECYCLE_UPTIME}


def test_replacement_is_launched_first() -> None:
    """Without enough free recorders besides it, a due one is held and its replacement is
    launched: capacity rises by one and nothing is drained."""
    fleet = ObservationBuilder()
    fleet.add(1, report())
    worn = fleet.add(2, used(report(), 10))
    result = plan(recycled(maxRecordings=10), fleet.observed(), NOW)
    assert drains(result) == {}
    assert scale_outs(result) == [3]
    held = condition(result, "Retiring")
    assert held is not None and held.reason == "WaitingForReplacement"
    assert worn in {v.instance_id for v in result.instances if v.state is InstanceState.RETIRING}


def test_replacement_booting_is_not_free_enough() -> None:
    """A replacement still starting does not release the due one: only idle recorders count."""
    fleet = ObservationBuilder()
    fleet.add(1, report())
    fleet.add(2, used(report(), 10))
    fleet.add(3, None, seen=NOW - 60)
    result = plan(recycled(maxRecordings=10), fleet.observed(), NOW)
    assert drains(result) == {}
    assert scale_outs(result) == []


def test_busy_past_a_limit_is_left_alone() -> None:
    """A recorder past its limits while recording is neither drained nor counted as retiring."""
    fleet = ObservationBuilder()
    fleet.add_many([1, 2, 3], report())
    busy = fleet.add(4, used(report("BUSY"), 50, 50 * HOUR))
    result = plan(recycled(maxRecordings=10, maxUptime="1h"), fleet.observed(), NOW)
    assert busy not in drains(result)
    assert {v.instance_id: v.state for v in result.instances}[busy] is InstanceState.BUSY


@pytest.mark.parametrize(
    ("max_step", "expected"),
    [
        pytest.param(1, 1, id="one-a-pass"),
        pytest.param(2, 2, id="two-a-pass"),
        pytest.param(0, 0, id="step-zero-recycles-none"),
    ],
)
def test_at_most_max_step_a_pass(max_step: int, expected: int) -> None:
    """At most scaleIn.maxStep due recorders are drained in one pass."""
    fleet = ObservationBuilder()
    fleet.add_many([1, 2], report())
    fleet.add_many([3, 4, 5], used(report(), 20))
    pool = spec(
        recycle={"maxRecordings": 10},
        capacity={"min": 0, "max": 10},
        targetFree=2,
        scaleIn={"maxStep": max_step},
    )
    result = plan(pool, fleet.observed(), NOW)
    assert len(drains(result)) == expected
    assert set(drains(result).values()) <= {Reason.RECYCLE_RECORDINGS}


def test_not_while_observing() -> None:
    """In the startup window with silent instances, nothing is recycled."""
    fleet = ObservationBuilder(started_at=NOW - 5)
    fleet.add_many([1, 2, 3], report())
    fleet.add(4, used(report(), 20))
    fleet.add(5, None)
    result = plan(recycled(maxRecordings=10), fleet.observed(), NOW)
    assert drains(result) == {}


def test_wakes_when_uptime_passes() -> None:
    """The plan asks to run again when an idle recorder's uptime reaches maxUptime."""
    fleet = ObservationBuilder()
    fleet.add_many([1, 2], report())
    fleet.add(3, used(report(), 0, 24 * HOUR - 5))
    result = plan(recycled(maxUptime="24h"), fleet.observed(), NOW)
    assert result.requeue_after == pytest.approx(5.0, abs=0.2)


def test_due_ones_do_not_count_as_idle_excess() -> None:
    """Scale-in picks its idle-excess drain among recorders not due: the due one leaves with
    its own reason, never twice."""
    fleet = ObservationBuilder()
    fleet.add_many([1, 2, 3, 4], report(idle_for=900))
    worn = fleet.add(5, used(report(idle_for=1200), 10))
    pool = spec(
        recycle={"maxRecordings": 10},
        capacity={"min": 0, "max": 10},
        targetFree=2,
        scaleIn={"maxStep": 1, "idleFor": "5m"},
    )
    result = plan(pool, fleet.observed(), NOW)
    reasons = drains(result)
    assert reasons[worn] is Reason.RECYCLE_RECORDINGS
    assert len([a for a in result.actions if isinstance(a, DrainInstance)]) == len(reasons)

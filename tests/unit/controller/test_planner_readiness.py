"""Table tests for the planner's readiness rules (docs/readiness.md): the target in force, the
learned part past scaleOut.maxStep, early drains above `keep`, and the minute requeue."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import pytest

from controller.model import Action, DrainInstance, Plan, Reason, SetDesiredCapacity
from controller.planner import plan
from controller.readiness.forecast import ReadinessTarget
from controller.spec import PoolSpec
from tests.support.observations import NOW, ObservationBuilder, iid, report, spec

A = TypeVar("A", bound=Action)
WALL = 1_795_521_645.0  # Tuesday 2026-11-24 12:00:45 UTC


def of(result: Plan, kind: type[A]) -> list[A]:
    return [a for a in result.actions if isinstance(a, kind)]


def target(floor: int = 2, forecast: int = 0, reactive: int = 0, **kw: Any) -> ReadinessTarget:
    fields: dict[str, Any] = {
        "floor": floor,
        "schedule_rule": None,
        "override": None,
        "forecast": forecast,
        "reactive": reactive,
        "total": max(floor, forecast + reactive),
        "horizon": 150.0,
        "expected": float(forecast),
        "ending": 0.0,
        "surprise": 0.0,
        "samples": 4 if forecast else 0,
        "later": floor,
        "drain_early": False,
    }
    fields.update(kw)
    return ReadinessTarget(**fields)


def run(pool: PoolSpec, fleet: ObservationBuilder, readiness: ReadinessTarget | None) -> Plan:
    fleet.wall_time = WALL
    observed = dataclasses.replace(fleet.observed(), readiness=readiness)
    return plan(pool, observed, NOW)


def idle_fleet(idle_for: list[float], busy: int = 0) -> ObservationBuilder:
    fleet = ObservationBuilder()
    for n, seconds in enumerate(idle_for):
        fleet.add(n, report("IDLE", idle_for=seconds))
    for n in range(len(idle_for), len(idle_for) + busy):
        fleet.add(n, report("BUSY"), protected=True)
    return fleet


@pytest.mark.parametrize(
    "fleet",
    [
        pytest.param(idle_fleet([10.0]), id="below-target"),
        pytest.param(idle_fleet([400.0, 900.0, 600.0, 350.0]), id="idle-excess"),
        pytest.param(idle_fleet([900.0, 900.0], busy=3), id="at-target"),
        pytest.param(idle_fleet([]), id="empty"),
    ],
)
def test_a_target_without_history_plans_as_before(fleet: ObservationBuilder) -> None:
    """A readiness target that learned nothing (total = floor) gives exactly today's plan."""
    pool = spec()
    before = run(pool, fleet, None)
    after = run(pool, fleet, target())
    assert (after.actions, after.desired_capacity, after.target_free) == (
        before.actions,
        before.desired_capacity,
        before.target_free,
    )
    assert after.conditions == before.conditions


@pytest.mark.parametrize(
    ("readiness", "capacity", "desired"),
    [
        pytest.param(target(forecast=20), {"min": 1, "max": 40}, 20, id="forecast-past-maxstep"),
        pytest.param(target(forecast=12, reactive=8), {"min": 1, "max": 40}, 20, id="reactive"),
        pytest.param(target(forecast=40), {"min": 1, "max": 30}, 30, id="capped-by-max"),
        pytest.param(target(floor=20), {"min": 1, "max": 40}, 6, id="floor-keeps-maxstep"),
        pytest.param(target(floor=10, forecast=20), {"min": 1, "max": 40}, 16, id="floor+learned"),
    ],
)
def test_the_learned_part_comes_in_one_pass(
    readiness: ReadinessTarget, capacity: dict[str, int], desired: int
) -> None:
    """The part of the target learned from demand bypasses maxStep (5); the floor does not."""
    pool = spec(capacity=capacity, targetFree=readiness.floor)
    result = run(pool, idle_fleet([10.0]), readiness)
    [scale] = of(result, SetDesiredCapacity)
    assert (scale.capacity, scale.reason) == (desired, Reason.BELOW_TARGET_FREE)
    assert result.target_free == readiness.total


@pytest.mark.parametrize(
    ("readiness", "idle_for", "drained"),
    [
        pytest.param(target(), [30.0, 60.0, 20.0, 10.0], [], id="no-history-waits-idlefor"),
        pytest.param(target(drain_early=True), [30.0, 60.0, 20.0, 10.0], [1], id="drain-early"),
        pytest.param(
            target(drain_early=True, later=4), [30.0, 60.0, 20.0, 10.0], [], id="later-keeps"
        ),
        pytest.param(
            target(forecast=3, drain_early=True), [30.0, 60.0, 20.0, 10.0], [1], id="keep-total"
        ),
        pytest.param(target(forecast=4), [900.0, 800.0, 700.0, 600.0], [], id="forecast-keeps"),
        pytest.param(target(forecast=3), [900.0, 800.0, 700.0, 600.0], [0], id="idlefor-beyond"),
    ],
)
def test_scale_in_keeps_what_the_forecast_needs(
    readiness: ReadinessTarget, idle_for: list[float], drained: list[int]
) -> None:
    """Idle spares above keep = max(total, later) go at once when drain_early holds, longest
    idle first; without it only those idle for idleFor go, above the total."""
    pool = spec(scaleIn={"maxStep": 1})
    result = run(pool, idle_fleet(idle_for, busy=2), readiness)
    assert of(result, DrainInstance) == [DrainInstance(iid(n), Reason.IDLE_EXCESS) for n in drained]


def test_drain_early_never_takes_busy_or_starting() -> None:
    """Early drains pick idle recorders only, however far above the target the pool is."""
    pool = spec(scaleIn={"maxStep": 4}, capacity={"min": 0, "max": 10}, targetFree=0)
    fleet = idle_fleet([5.0], busy=3)
    fleet.add(9, None, seen=NOW - 10)  # booting
    result = run(pool, fleet, target(floor=0, drain_early=True))
    assert [a.instance_id for a in of(result, DrainInstance)] == [iid(0)]


def test_requeue_at_the_next_minute_with_readiness() -> None:
    """With readiness on, the next pass is due at the minute boundary, when history moves."""
    pool = spec(resync="5m")
    fleet = idle_fleet([10.0, 10.0])
    assert run(pool, fleet, target()).requeue_after == pytest.approx(15.0)
    assert run(pool, fleet, None).requeue_after > 15.0


def test_requeue_at_an_override_boundary() -> None:
    """A dated override that starts within resync makes the pass due when it starts."""
    pool = spec(
        resync="5m",
        schedule={
            "overrides": [
                {"from": "2026-11-24T12:01:10", "to": "2026-11-24T13:00", "targetFree": 3}
            ]
        },
        readiness={"enabled": False},
    )
    fleet = idle_fleet([10.0, 10.0])
    assert run(pool, fleet, None).requeue_after == pytest.approx(25.0)


def test_condition_names_the_parts() -> None:
    """TargetFreeMet says how the target in force is made up."""
    pool = spec(capacity={"min": 1, "max": 40})
    result = run(pool, idle_fleet([10.0]), target(forecast=9, reactive=3))
    [met] = [c for c in result.conditions if c.type == "TargetFreeMet"]
    assert "target 12 = forecast 9 + reactive 3, floor 2" in met.message

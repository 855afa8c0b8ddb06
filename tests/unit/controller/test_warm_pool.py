"""The warm pool's pure parts (docs/warm-pools.md): spec.warmPool validation, what to write to
the group, the warmed instances the planner counts on, and the planner with a warm pool."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from controller.model import InstanceState, Plan, SetDesiredCapacity
from controller.planner import plan
from controller.readiness.forecast import ReadinessTarget
from controller.spec import WarmPool
from controller.warm_pool.api import WarmInstance, WarmPoolConfig, WarmPoolView
from controller.warm_pool.rules import (
    DEFAULT_WARM_START,
    Change,
    WarmCapacity,
    WarmStarts,
    decide,
    warm_count,
    warm_credit,
)
from tests.support.observations import NOW, ObservationBuilder, report, spec

SPEC = WarmPool(minSize=2, maxPreparedCapacity=8, state="Stopped", reuseOnScaleIn=False)
SAME = WarmPoolConfig(min_size=2, max_prepared_capacity=8, state="Stopped")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            {"minSize": 3, "maxPreparedCapacity": 2}, "must not exceed", id="min-above-max"
        ),
        pytest.param({"minSize": -1}, "greater than or equal", id="negative-min"),
        pytest.param({"state": "Frozen"}, "Stopped", id="unknown-state"),
        pytest.param({"poolState": "Stopped"}, "Extra inputs", id="unknown-key"),
        pytest.param({"minSize": "2"}, "valid integer", id="string-number-strict"),
    ],
)
def test_bad_warm_pool_specs_are_refused(document: dict[str, Any], message: str) -> None:
    """A warmPool AWS would refuse, or with a typo, fails validation with a clear message."""
    with pytest.raises(ValidationError, match=message):
        WarmPool.model_validate(document, strict=True)


def test_a_pool_spec_takes_a_warm_pool() -> None:
    """spec.warmPool parses inside a pool spec, defaults filled in as AWS's."""
    pool = spec(warmPool={"minSize": 1})
    assert pool.warmPool == WarmPool(minSize=1, maxPreparedCapacity=None, state="Stopped")


@pytest.mark.parametrize(
    ("wanted", "current", "owned", "change", "drift"),
    [
        pytest.param(SPEC, WarmPoolView(None), False, Change.CREATE, None, id="absent"),
        pytest.param(SPEC, WarmPoolView(SAME), False, Change.NONE, (), id="in-place"),
        pytest.param(
            SPEC,
            WarmPoolView(dataclasses.replace(SAME, state="Running", min_size=0)),
            False,
            Change.UPDATE,
            ("minSize", "state"),
            id="drifted",
        ),
        pytest.param(
            SPEC,
            WarmPoolView(dataclasses.replace(SAME, max_prepared_capacity=None)),
            False,
            Change.UPDATE,
            ("maxPreparedCapacity",),
            id="cap-cleared",
        ),
        pytest.param(None, WarmPoolView(SAME), True, Change.DELETE, (), id="dropped-owned"),
        pytest.param(None, WarmPoolView(SAME), False, Change.LEAVE, (), id="dropped-foreign"),
        pytest.param(None, WarmPoolView(None), False, Change.NONE, (), id="none-wanted"),
        pytest.param(
            SPEC, WarmPoolView(SAME, pending_delete=True), False, Change.WAIT, (), id="deleting"
        ),
    ],
)
def test_decide(
    wanted: WarmPool | None,
    current: WarmPoolView,
    owned: bool,
    change: Change,
    drift: tuple[str, ...] | None,
) -> None:
    """Create when absent, update what drifted, delete only an owned pool the spec dropped."""
    decision = decide(wanted, current, owned)
    assert decision.change is change
    if drift is not None:
        assert decision.drift == drift


def test_warm_count_skips_terminating_and_returned_instances() -> None:
    """Only warmed instances the group can still draw on, and not yet back in it, count."""
    instances = [
        WarmInstance("i-1", "Warmed:Stopped"),
        WarmInstance("i-2", "Warmed:Pending"),
        WarmInstance("i-3", "Warmed:Terminating"),
        WarmInstance("i-4", "Warmed:Running"),
    ]
    assert warm_count(instances, frozenset({"i-4"})) == 2


def target(floor: int, forecast: int, reactive: int = 0, horizon: float = 120.0) -> ReadinessTarget:
    return ReadinessTarget(
        floor=floor,
        schedule_rule=None,
        override=None,
        forecast=forecast,
        reactive=reactive,
        total=max(floor, forecast + reactive),
        horizon=horizon,
        expected=float(forecast),
        ending=0.0,
        surprise=0.0,
        samples=4,
        later=floor,
        drain_early=False,
    )


@pytest.mark.parametrize(
    ("readiness", "warm", "credit"),
    [
        pytest.param(None, WarmCapacity(10, 30.0), 0, id="no-forecast"),
        pytest.param(target(2, 12), None, 0, id="no-warm-pool"),
        pytest.param(target(2, 12), WarmCapacity(10, 30.0), 9, id="three-quarters-later"),
        pytest.param(target(2, 12), WarmCapacity(4, 30.0), 4, id="few-warmed"),
        pytest.param(target(2, 12, reactive=3), WarmCapacity(20, 30.0), 9, id="reactive-stays"),
        pytest.param(target(10, 12), WarmCapacity(20, 30.0), 2, id="floor-stays"),
        pytest.param(target(2, 12), WarmCapacity(10, 120.0), 0, id="warm-start-too-slow"),
        pytest.param(target(2, 12), WarmCapacity(0, 30.0), 0, id="empty-warm-pool"),
    ],
)
def test_warm_credit(
    readiness: ReadinessTarget | None, warm: WarmCapacity | None, credit: int
) -> None:
    """Warmed instances stand in for the forecast's spares needed after a warm start only."""
    assert warm_credit(readiness, warm) == credit


def test_warm_starts_measure_only_instances_seen_warmed() -> None:
    """A warm start counts once for an instance seen in the warm pool; the default until three."""
    starts = WarmStarts()
    starts.warmed(["i-1", "i-2", "i-3"])
    starts.ready("i-9", 100.0)
    starts.ready("i-1", 20.0)
    starts.ready("i-1", 500.0)
    assert starts.start_seconds() == DEFAULT_WARM_START
    starts.ready("i-2", 25.0)
    starts.ready("i-3", 40.0)
    assert (starts.durations, starts.start_seconds()) == ((20.0, 25.0, 40.0), 40.0)


def run(
    fleet: ObservationBuilder, readiness: ReadinessTarget | None, warm: WarmCapacity | None
) -> Plan:
    observed = dataclasses.replace(fleet.observed(), readiness=readiness, warm=warm)
    return plan(spec(capacity={"min": 0, "max": 40}), observed, NOW)


def fleet_of(idle: int, busy: int = 0) -> ObservationBuilder:
    fleet = ObservationBuilder(min_size=0, max_size=40)
    for n in range(idle):
        fleet.add(n, report("IDLE", idle_for=10.0))
    for n in range(idle, idle + busy):
        fleet.add(n, report("BUSY"), protected=True)
    return fleet


def test_a_warm_pool_holds_fewer_running_spares() -> None:
    """With 12 forecast spares and warm starts a quarter of the horizon, 5 run instead of 12."""
    cold = run(fleet_of(idle=5), target(2, 12), None)
    warm = run(fleet_of(idle=5), target(2, 12), WarmCapacity(10, 30.0))
    assert [a.capacity for a in cold.actions if isinstance(a, SetDesiredCapacity)] == [12]
    assert [a for a in warm.actions if isinstance(a, SetDesiredCapacity)] == []
    assert warm.target_free == 3


def test_a_recording_on_a_spare_raises_capacity_which_the_warm_pool_serves() -> None:
    """Below the reduced target the plan still raises desired capacity (drawn from warmed ones)."""
    result = run(fleet_of(idle=2, busy=3), target(2, 12), WarmCapacity(10, 30.0))
    assert [a.capacity for a in result.actions if isinstance(a, SetDesiredCapacity)] == [6]


def test_warmed_instances_listed_in_the_group_are_their_own_state() -> None:
    """An instance in a Warmed:* state is `warmed`: not free, not live, protection untouched."""
    fleet = ObservationBuilder(desired=2)
    fleet.add_many(range(2), report("IDLE", idle_for=10.0))
    fleet.add(7, lifecycle="Warmed:Stopped")
    result = plan(spec(), fleet.observed(), NOW)
    states = {v.instance_id: v.state for v in result.instances}
    assert list(states.values()).count(InstanceState.WARMED) == 1
    assert result.actions == ()

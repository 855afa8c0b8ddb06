"""A pool's readiness across passes: the loop's view, fed with real plans' instance states."""

from __future__ import annotations

from dataclasses import replace

from controller.planner import plan
from controller.readiness.boot import DEFAULT_HORIZON
from controller.readiness.tracker import PoolReadiness
from tests.support.observations import NOW, ObservationBuilder, iid, report, spec

WALL = 1_795_089_600.0  # Tuesday 2026-11-24 12:00 UTC


def test_passes_feed_history_boot_times_and_the_target() -> None:
    """Idle → busy counts a recording, a launch seen through to idle counts a boot, and the
    target without history is the spec's."""
    pool = spec()
    readiness = PoolReadiness()
    builder = ObservationBuilder(wall_time=WALL)
    builder.add_many(range(2), report("IDLE"))

    def run(at: float) -> int:
        builder.wall_time = WALL + (at - NOW)
        observed = builder.observed()
        return readiness.record(observed, plan(pool, observed, at).instances, at)

    assert run(NOW) == 0
    target = readiness.target(pool, builder.wall_time)
    assert target is not None and (target.total, target.horizon) == (2, DEFAULT_HORIZON)

    builder.add(7, seen=NOW + 5)  # launched, no report yet: starting
    builder.reports[iid(0)] = report("BUSY", now=NOW + 5)
    assert run(NOW + 5) == 1
    builder.reports[iid(7)] = report("IDLE", now=NOW + 85)
    builder.reports[iid(0)] = report("BUSY", now=NOW + 85)
    builder.reports[iid(1)] = report("IDLE", now=NOW + 85)
    assert run(NOW + 85) == 0
    assert readiness.boots.durations == (80.0,)
    assert readiness.busy == 1
    assert readiness.history.arrivals(int(WALL // 60)) == 1


def test_instances_of_the_first_pass_are_not_boots() -> None:
    """An instance already starting when the controller starts has no measurable boot."""
    pool = spec()
    readiness = PoolReadiness()
    builder = ObservationBuilder(wall_time=WALL)
    builder.add(3, seen=NOW)
    readiness.record(builder.observed(), plan(pool, builder.observed(), NOW).instances, NOW)
    builder.reports[iid(3)] = report("IDLE", now=NOW + 30)
    observed = builder.observed()
    readiness.record(observed, plan(pool, observed, NOW + 30).instances, NOW + 30)
    assert readiness.boots.durations == ()


def test_no_wall_clock_no_target() -> None:
    """Without a wall clock there is no readiness target, and nothing is recorded."""
    readiness = PoolReadiness()
    builder = ObservationBuilder()
    builder.add_many(range(2), report("BUSY"))
    observed = builder.observed()
    assert readiness.record(observed, plan(spec(), observed, NOW).instances, NOW) == 0
    assert readiness.target(spec(), None) is None
    assert len(readiness.history) == 0


def test_warm_starts_are_not_cold_boots() -> None:
    """An instance seen in the warm pool and then started into the group leaves the boot
    horizon alone, while a cold launch in the same passes is measured."""
    pool = spec()
    readiness = PoolReadiness()
    builder = ObservationBuilder(wall_time=WALL)
    builder.add(0, report("IDLE"))

    def run(at: float) -> None:
        builder.wall_time = WALL + (at - NOW)
        observed = builder.observed()
        readiness.record(observed, plan(pool, observed, at).instances, at)

    run(NOW)
    warm = builder.add(5, lifecycle="Warmed:Stopped", seen=NOW + 5)
    run(NOW + 5)
    # Out of the warm pool into the group, and a cold launch beside it.
    builder.instances = [
        replace(i, lifecycle_state="InService") if i.instance_id == warm else i
        for i in builder.instances
    ]
    builder.first_seen[warm] = NOW + 40
    builder.add(7, seen=NOW + 40)
    run(NOW + 40)
    builder.reports[warm] = report("IDLE", now=NOW + 55)
    run(NOW + 55)
    for instance in (iid(0), warm, iid(7)):
        builder.reports[instance] = report("IDLE", now=NOW + 160)
    run(NOW + 160)
    assert readiness.boots.durations == (120.0,)

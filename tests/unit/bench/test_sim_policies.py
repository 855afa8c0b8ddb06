"""The simulated policies: the oracle bound, determinism, and the planner's safety."""

from __future__ import annotations

import random
from dataclasses import asdict, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sim.clock import Simulation
from bench.sim.demand import DayShape, Recording, peak_concurrency, synthetic_day
from bench.sim.fleet import SimulatedWorld, WorldSettings
from bench.sim.oracle import oracle
from bench.sim.policies.classic import ClassicPolicy, ClassicSettings
from bench.sim.policies.forecast import Forecast
from bench.sim.policies.planner import SIMULATED_DATE, ControllerSettings, PlannerPolicy
from bench.sim.runner import LEARNED, ORACLE, POLICIES, PolicyResult, Scenario, run_all
from controller.spec import PoolSpec
from tests.support.observations import spec

BOOT = 90.0

recordings_strategy = st.lists(
    st.tuples(st.floats(0, 20_000), st.floats(1, 5_000)), min_size=1, max_size=40
).map(lambda rows: tuple(Recording(i, s, d) for i, (s, d) in enumerate(sorted(rows))))


@settings(max_examples=200, deadline=None)
@given(day=recordings_strategy, min_size=st.integers(0, 3))
def test_oracle_is_a_lower_bound_of_simple_feasible_fleets(
    day: tuple[Recording, ...], min_size: int
) -> None:
    """The oracle never costs more than a recorder per recording launched a boot ahead, nor
    more than keeping the peak up all day; and never less than the recorded time."""
    until = 30_000.0
    cost = oracle(day, until=until, boot=BOOT, min_size=min_size, initial=min_size)
    busy = sum(min(r.end, until) - r.start for r in day)
    one_each = sum(min(r.end, until) - r.start + BOOT for r in day) + min_size * until
    peak_all_day = max(peak_concurrency(day, until), min_size) * (until + BOOT)
    assert busy - 1e-6 <= cost.instance_seconds
    assert cost.instance_seconds <= one_each + 1e-6
    assert cost.instance_seconds <= peak_all_day + 1e-6


def test_oracle_keeps_a_recorder_through_a_gap_shorter_than_a_boot() -> None:
    """Across a short gap the oracle keeps the recorder; across a long one it relaunches."""
    short = (Recording(0, 1000.0, 100.0), Recording(1, 1150.0, 100.0))
    long = (Recording(0, 1000.0, 100.0), Recording(1, 1500.0, 100.0))
    assert oracle(short, until=5000, boot=BOOT, min_size=0, initial=0).instance_seconds == (
        BOOT + 250.0
    )
    assert oracle(long, until=5000, boot=BOOT, min_size=0, initial=0).instance_seconds == (
        2 * (BOOT + 100.0)
    )


def _scenario(shape: DayShape, seed: int, **spec_overrides: Any) -> Scenario:
    pool = spec(capacity={"min": 1, "max": 200}, **spec_overrides)
    return Scenario(
        spec=pool,
        recordings=synthetic_day(shape, seed),
        until=shape.hours * 3600.0,
        seed=seed,
        world=WorldSettings(boot_mean=BOOT, boot_spread=30.0),
        reference=synthetic_day(shape, seed + 1_000),
    )


QUIET = DayShape(recordings=40, hours=6, on_the_hour=0.0, on_the_half_hour=0.0)
SMOOTH = DayShape(
    recordings=300, hours=6, on_the_hour=0.0, on_the_half_hour=0.0, day_start=1, day_end=5
)
BURSTY = DayShape(recordings=400, hours=6, day_start=1, day_end=5)


@pytest.mark.parametrize(
    "shape",
    [pytest.param(QUIET, id="quiet"), pytest.param(SMOOTH, id="smooth")],
)
def test_oracle_costs_no_more_than_any_policy_that_served_everything(shape: DayShape) -> None:
    """Every policy that missed nothing paid at least the oracle's instance-hours."""
    results = run_all(_scenario(shape, 5, targetFree=6), (*POLICIES, *LEARNED, ORACLE))
    bound = next(r for r in results if r.name == ORACLE).instance_hours
    complete = [r for r in results if r.name != ORACLE and r.missed == 0]
    assert {"planner", "planner-schedule"} <= {r.name for r in complete}, "six spares do"
    assert all(r.instance_hours >= bound for r in complete)


def _comparable(result: PolicyResult) -> dict[str, Any]:
    timing = {"plan_seconds_total", "plan_ms_mean", "plan_ms_max", "readiness_ms_mean"}
    fields = asdict(result)
    fields.pop("wall_seconds")
    fields["extra"] = {k: v for k, v in result.extra.items() if k not in timing}
    return fields


def test_runs_are_deterministic_under_a_seed() -> None:
    """The same scenario and seed reproduce every policy's result exactly, also in parallel."""
    names = (*POLICIES, *LEARNED, ORACLE)
    first = run_all(_scenario(BURSTY, 11), names)
    again = run_all(_scenario(BURSTY, 11), names, jobs=2)
    assert [_comparable(r) for r in first] == [_comparable(r) for r in again]
    other = run_all(_scenario(BURSTY, 12), ("planner",))
    assert _comparable(other[0]) != _comparable(first[POLICIES.index("planner")])


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in (1, 2, 3)])
def test_planner_never_terminates_a_busy_instance(seed: int) -> None:
    """Under bursty demand the planner scales in through drains and never kills a recording."""
    (result,) = run_all(_scenario(BURSTY, seed, scaleIn={"idleFor": "1m"}), ("planner",))
    assert result.extra["actions_terminate"] > 10
    # Every termination follows a drain; a drain begun in the run's last minute may not end.
    drains, terminations = result.extra["actions_drain"], result.extra["actions_terminate"]
    assert drains - 2 <= terminations <= drains
    assert (result.busy_terminations, result.lost, result.rejected_calls) == (0, 0, 0)


class _RacingPlanner(PlannerPolicy):
    """Hands the instance a recording right after the plan decides to drain it."""

    raced_at: float | None = None

    def _request_drain(self, instance_id: str, now: float) -> None:
        super()._request_drain(instance_id, now)
        if self.raced_at is None:
            self.raced_at = now
            self.fleet.request(Recording(99, now, 120.0))


def test_drain_handshake_lets_a_recording_that_started_meanwhile_finish() -> None:
    """A recording handed to an instance between Drain and the agent's handshake runs to its
    end; only then is the drained instance terminated."""
    pool = spec(
        capacity={"min": 0, "max": 2},
        targetFree=0,
        scaleIn={"idleFor": "10s", "delayAfterScaleOut": "0s"},
    )
    sim = Simulation()
    fleet = SimulatedWorld(
        sim, WorldSettings(grace=0.0), name="jibri", min_size=0, max_size=2, rng=random.Random(1)
    )
    policy = _RacingPlanner(pool, ControllerSettings())
    policy.attach(fleet)
    fleet.start(1)
    (instance_id,) = fleet.instances
    sim.run(100.0)
    assert policy.raced_at is not None
    assert instance_id in fleet.instances, "still recording, so still running"
    sim.run(policy.raced_at + 120.0 + 60.0)
    assert instance_id not in fleet.instances
    assert policy.stats()["drains_caught_recording"] == 1
    tally = fleet.tally
    assert (tally.missed, tally.lost, tally.busy_terminations) == (0, 0, 0)


def test_classic_recipe_scales_out_one_step_per_cooldown() -> None:
    """With no free recorder the alarm adds one instance, then the cooldown holds it still."""
    sim = Simulation()
    fleet = SimulatedWorld(
        sim, WorldSettings(grace=0.0), name="jibri", min_size=1, max_size=10, rng=random.Random(1)
    )
    policy = ClassicPolicy(ClassicSettings(out_below=1.0, out_periods=1, cooldown=300.0))
    policy.attach(fleet)
    fleet.start(1)
    fleet.request(Recording(0, 0.0, 4 * 3600.0))
    sim.run(59.0)
    assert fleet.desired == 1
    sim.run(61.0)
    assert fleet.desired == 2, "the minute's Sum(JibriFree) of 0 fired the alarm"
    for t in range(70, 3600, 10):
        sim.at(float(t), fleet.request, Recording(t, float(t), 4 * 3600.0))
    sim.run(359.0)
    assert fleet.desired == 2
    sim.run(361.0)
    assert fleet.desired == 3


def test_forecast_counts_reference_arrivals_by_time_of_day() -> None:
    """The forecast reads the reference day's arrivals in a window, wrapping at midnight."""
    reference = [Recording(0, 100.0, 60.0), Recording(1, 105.0, 60.0), Recording(2, 86_395.0, 9)]
    forecast = Forecast(reference, bucket=10.0)
    assert forecast.arrivals(100.0, 10.0) == 2
    assert forecast.arrivals(86_400.0 + 100.0, 30.0) == 2
    assert forecast.arrivals(86_390.0, 10.0) == 1
    assert forecast.arrivals(200.0, 100.0) == 0


def test_time_of_day_targets_cut_the_planners_misses_in_bursts() -> None:
    """The real planner with targetFree from yesterday's arrivals misses far fewer requests
    than with a fixed targetFree, and still never kills a recording."""
    base = _scenario(BURSTY, 21)
    scenario = replace(base, reference=synthetic_day(BURSTY, 22))
    plain, forecast = run_all(scenario, ("planner", "planner-forecast"))
    assert plain.missed > 20
    assert forecast.missed * 4 <= plain.missed
    assert forecast.extra["max_target_free"] > base.spec.targetFree
    assert (forecast.busy_terminations, forecast.lost) == (0, 0)


def _quiet_planner(
    pool: PoolSpec, settings: ControllerSettings
) -> tuple[Simulation, SimulatedWorld]:
    sim = Simulation()
    fleet = SimulatedWorld(
        sim, WorldSettings(), name="jibri", min_size=1, max_size=50, rng=random.Random(3)
    )
    PlannerPolicy(pool, settings).attach(fleet)
    fleet.start(pool.capacity.min + pool.targetFree)
    return sim, fleet


@pytest.mark.parametrize(
    ("epoch", "raised"),
    [
        pytest.param(SIMULATED_DATE.timestamp(), True, id="tuesday"),
        pytest.param(SIMULATED_DATE.timestamp() + 4 * 86_400, False, id="saturday"),
    ],
)
def test_planner_follows_the_schedule_at_the_simulated_wall_clock(
    epoch: float, raised: bool
) -> None:
    """The simulated planner passes the simulated time of day as wall time: a weekday rule
    for 01:00-01:04 UTC raises the pool on a Tuesday at 01:00, and not on a Saturday."""
    pool = spec(
        capacity={"min": 1, "max": 50},
        targetFree=1,
        scaleOut={"maxStep": 20},
        schedule={"rules": [{"days": "Mon-Fri", "hours": 1, "minutes": "0-4", "targetFree": 12}]},
    )
    sim, fleet = _quiet_planner(pool, ControllerSettings(epoch=epoch))
    sim.run(3599.0)
    assert fleet.desired == 1, "one idle recorder is the one spare asked for"
    sim.run(3601.0)
    assert fleet.desired == (12 if raised else 1)

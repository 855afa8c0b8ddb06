"""The schedule learned from a previous day: its rules, its YAML, and the planner following it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.sim.demand import DayShape, Recording, synthetic_day
from bench.sim.fleet import WorldSettings
from bench.sim.learned_schedule import (
    ScheduleSettings,
    merge_rules,
    schedule_yaml,
    scheduled_spec,
    window_targets,
)
from bench.sim.policies.forecast import Forecast, ForecastSettings, spares
from bench.sim.policies.planner import SIMULATED_DATE
from bench.sim.runner import Scenario, run_all, schedule_spec
from controller.config import ScheduleRule, load_desired_state
from tests.support.observations import spec

TUESDAY = SIMULATED_DATE.timestamp()
SATURDAY = TUESDAY + 4 * 86_400


def _rule(hours: str, minutes: str, target: int) -> ScheduleRule:
    return ScheduleRule(days="*", hours=hours, minutes=minutes, targetFree=target)


def test_merge_joins_adjacent_windows_and_equal_runs_in_other_hours() -> None:
    """Equal neighbouring windows share a minutes range, the same run in several hours shares
    one rule, and windows at or below the base target get none."""
    targets = [0] * (24 * 6)
    for hour in (9, 10, 14):
        targets[hour * 6 : hour * 6 + 6] = [5, 5, 2, 2, 3, 9]
    targets[14 * 6 + 4] = 4
    rules = merge_rules(targets, base=2, window=600)
    assert rules == (
        _rule("9-10,14", "0-19", 5),
        _rule("9-10", "40-49", 3),
        _rule("9-10,14", "50-59", 9),
        _rule("14", "40-49", 4),
    )


def test_merge_writes_whole_hours_and_whole_days_as_stars() -> None:
    """A target held for whole hours is `minutes: *`, and one held all day is `hours: *`."""
    assert merge_rules([7] * 24, base=2, window=3600) == (_rule("*", "*", 7),)
    targets = [0] * 24
    targets[8:18] = [4] * 10
    assert merge_rules(targets, base=0, window=3600) == (_rule("8-17", "*", 4),)


def test_merge_rejects_targets_that_do_not_cover_a_day() -> None:
    """The targets must be one per window of a whole day."""
    with pytest.raises(ValueError, match="expected 288 window targets, got 3"):
        merge_rules([1, 2, 3], base=0, window=300)


@pytest.mark.parametrize("window", [pytest.param(w, id=f"{w}s") for w in (0, 90, 420, 7200, -300)])
def test_windows_must_be_whole_minutes_dividing_an_hour(window: int) -> None:
    """A window that is not a whole number of minutes dividing 60 is refused."""
    with pytest.raises(ValueError, match="dividing an hour"):
        ScheduleSettings(window=window)


def test_window_targets_cover_a_burst_from_one_look_ahead_before_it() -> None:
    """A burst of 20 arrivals at 01:00:30 asks for its spares in the windows from which it is
    within the look-ahead (00:55 and 01:00), and nothing elsewhere."""
    burst = [Recording(i, 3630.0 + i, 600.0) for i in range(20)]
    tuning = ForecastSettings()
    targets = window_targets(Forecast(burst), tuning, lead=150.0, window=300)
    want = spares(20, tuning)
    assert want == 34
    assert {i: t for i, t in enumerate(targets) if t} == {11: want, 12: want}


def _learned(window: int = 300) -> tuple[list[int], ScheduleSettings]:
    reference = synthetic_day(DayShape(recordings=2_000), 7)
    settings = ScheduleSettings(window=window)
    targets = window_targets(Forecast(reference), ForecastSettings(), lead=150.0, window=window)
    return targets, settings


@pytest.mark.parametrize("window", [pytest.param(w, id=f"{w // 60}min") for w in (300, 600)])
def test_learned_schedule_keeps_each_windows_target_on_weekdays_only(window: int) -> None:
    """After merging, the target in force at every minute of a Tuesday is the larger of the
    window's learned target and spec.targetFree; on a Saturday it is spec.targetFree."""
    targets, settings = _learned(window)
    reference = synthetic_day(DayShape(recordings=2_000), 7)
    pool = scheduled_spec(
        spec(capacity={"min": 1, "max": 500}),
        reference,
        ForecastSettings(),
        settings,
        longest_boot=120.0,
    )
    assert 0 < len(pool.schedule.rules) < sum(1 for t in targets if t > pool.targetFree)
    for minute in range(24 * 60):
        want = max(pool.targetFree, targets[minute * 60 // window])
        assert pool.target_free_at(TUESDAY + 60 * minute + 30)[0] == want
        assert pool.target_free_at(SATURDAY + 60 * minute + 30)[0] == pool.targetFree
    assert pool.scaleOut.maxStep == max(targets)


def test_learned_targets_are_capped_at_capacity_max() -> None:
    """A forecast beyond capacity.max asks for capacity.max, so the spec stays valid."""
    burst = [Recording(i, 3630.0, 600.0) for i in range(200)]
    pool = scheduled_spec(
        spec(capacity={"min": 1, "max": 50}),
        burst,
        ForecastSettings(),
        ScheduleSettings(),
        longest_boot=120.0,
    )
    assert {rule.targetFree for rule in pool.schedule.rules} == {50}
    assert pool.scaleOut.maxStep == 50


def test_schedule_yaml_reads_back_as_the_same_pool(tmp_path: Path) -> None:
    """The written JibriPool document passes the controller's config validation and loads
    back as exactly the simulated spec, schedule included."""
    reference = synthetic_day(DayShape(recordings=2_000), 7)
    pool = scheduled_spec(
        spec(capacity={"min": 1, "max": 500}, cloudWatch={"namespace": "Jibri"}),
        reference,
        ForecastSettings(),
        ScheduleSettings(),
        longest_boot=120.0,
    )
    path = tmp_path / "schedule.yaml"
    path.write_text(schedule_yaml("recorders", pool, comment="learned\n\nfrom a day"))
    text = path.read_text()
    assert text.startswith("# learned\n#\n# from a day\napiVersion: jibri-autoscaler/v1\n")
    assert "- {days: Mon-Fri, hours:" in text, "one rule per line"
    (loaded,) = load_desired_state(path).pools
    assert loaded.name == "recorders"
    assert loaded.spec == pool


BURST_AT_ONE = 3600.0


def _burst_day(seed: int) -> tuple[Recording, ...]:
    """A quiet night with 40 meetings recorded from about 01:00 for half an hour."""
    rng = random.Random(seed)
    starts = sorted(BURST_AT_ONE + rng.uniform(0.0, 60.0) for _ in range(40))
    return tuple(Recording(i, start, 1800.0) for i, start in enumerate(starts))


def test_planner_with_the_learned_schedule_is_ready_before_the_burst() -> None:
    """Learning from yesterday's 01:00 burst, the planner raises the pool before 01:00 and
    serves today's burst in full, where the plain planner misses most of it."""
    pool = spec(capacity={"min": 1, "max": 200}, targetFree=2)
    scenario = Scenario(
        spec=pool,
        recordings=_burst_day(1),
        until=2 * 3600.0,
        seed=1,
        world=WorldSettings(boot_mean=90.0, boot_spread=30.0),
        reference=_burst_day(2),
    )
    learned = schedule_spec(scenario)
    assert learned.target_free_at(TUESDAY + BURST_AT_ONE - 60.0)[0] >= 40
    assert learned.target_free_at(TUESDAY + BURST_AT_ONE - 600.0)[0] == 2
    plain, scheduled = run_all(scenario, ("planner", "planner-schedule"))
    assert plain.missed > 20
    assert (scheduled.missed, scheduled.busy_terminations, scheduled.lost) == (0, 0, 0)
    before = [c for t, c in scheduled.capacity if BURST_AT_ONE - 600.0 <= t < BURST_AT_ONE]
    assert max(before) >= 40 > before[0], "capacity rose in the minutes before 01:00"
    assert scheduled.capacity[-1][1] < 10, "and the spares were drained after the burst"

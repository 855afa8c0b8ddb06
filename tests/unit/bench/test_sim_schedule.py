"""The schedule learned from a previous day: its rules, its YAML, and the planner following it."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from bench.sim.demand import DayShape, Recording, synthetic_day
from bench.sim.fleet import WorldSettings
from bench.sim.learned_schedule import (
    DemandProfile,
    ScheduleSettings,
    schedule_yaml,
    scheduled_spec,
    window_targets,
)
from bench.sim.policies.forecast import Forecast, ForecastSettings, spares
from bench.sim.policies.planner import SIMULATED_DATE
from bench.sim.runner import Scenario, run_all, schedule_spec
from bench.sim.schedule_rules import fit_rules, merge_rules
from controller.spec import ScheduleRule, load_desired_state
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


def test_settings_refuse_what_cannot_be_met() -> None:
    """A rule budget below one per hour, an unknown basis or a negative headroom is refused."""
    with pytest.raises(ValueError, match="at least 24 rules"):
        ScheduleSettings(rules=23)
    with pytest.raises(ValueError, match="arrivals, net"):
        ScheduleSettings(basis="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        ScheduleSettings(headroom=-1.0)


def test_arrivals_basis_is_the_forecasts_formula_one_look_ahead_before_a_burst() -> None:
    """A burst of 20 requests at 01:00:30 asks, on the arrivals basis, for the forecast's
    spares in the windows from which it is within the look-ahead (00:55 and 01:00) only."""
    burst = [Recording(i, 3630.0 + i, 600.0) for i in range(20)]
    targets = window_targets(
        DemandProfile(burst), lead=150.0, window=300, basis="arrivals", headroom=3.0
    )
    want = spares(Forecast(burst).arrivals(3600.0, 160.0), ForecastSettings())
    assert want == 34
    assert {i: t for i, t in enumerate(targets) if t} == {11: want, 12: want}


def _steady(start: float, end: float) -> list[Recording]:
    """One 10-minute recording requested every 10 s from `start` to `end`."""
    return [Recording(i, start + 10.0 * i, 600.0) for i in range(int((end - start) // 10))]


def test_net_basis_counts_recorders_that_recordings_ending_free() -> None:
    """In a steady stream, as many recordings end as start: the net basis keeps only the
    headroom for the noise of both, where the arrivals basis keeps every request in view."""
    profile = DemandProfile(_steady(0.0, 7200.0))
    arrivals, net = (
        window_targets(profile, lead=150.0, window=60, basis=basis, headroom=2.0)
        for basis in ("arrivals", "net")
    )
    at_one = 60  # the window at 01:00: 16 requests and 16 endings in view
    assert arrivals[at_one] == 16 + 2 * 4
    assert net[at_one] == 12, "ceil(2 * sqrt(16 + 16))"
    assert net[0] == arrivals[0], "before the first recording ends, net is every request"


@functools.cache
def _profile() -> tuple[int, ...]:
    reference = synthetic_day(DayShape(recordings=2_000), 7)
    return tuple(window_targets(DemandProfile(reference), lead=150.0, window=60, basis="net"))


@pytest.mark.parametrize("budget", [pytest.param(b, id=f"{b}-rules") for b in (24, 60, 150)])
def test_fitted_rules_keep_at_least_every_minutes_target_on_weekdays_only(budget: int) -> None:
    """Within its budget, the target a fitted schedule puts in force at each minute of a
    Tuesday is at least the learned one (and exactly spec.targetFree where no rule matches);
    on a Saturday it is spec.targetFree."""
    targets = _profile()
    rules = fit_rules(targets, base=2, window=60, budget=budget, days="Mon-Fri")
    assert len(rules) <= budget
    pool = spec(capacity={"min": 1, "max": 500}, schedule={"rules": rules})
    for minute in range(24 * 60):
        held = pool.target_free_at(TUESDAY + 60 * minute + 30)[0]
        assert held >= max(2, targets[minute])
        assert pool.target_free_at(SATURDAY + 60 * minute + 30)[0] == 2


def test_a_bigger_budget_holds_fewer_spares_and_an_ample_one_holds_the_profile() -> None:
    """Spare-minutes held beyond the profile shrink as the budget grows, down to none once
    every run of equal targets can have its own rule."""
    targets = _profile()
    exact = merge_rules(targets, base=2, window=60)

    def extra(budget: int) -> int:
        pool = spec(
            capacity={"min": 1, "max": 500},
            schedule={"rules": fit_rules(targets, base=2, window=60, budget=budget)},
        )
        held = (pool.target_free_at(TUESDAY + 60 * m + 30)[0] for m in range(24 * 60))
        return sum(held) - sum(max(2, t) for t in targets)

    assert extra(24) > extra(60) > extra(150) > 0
    assert extra(len(exact)) == 0
    assert fit_rules(targets, base=2, window=60, budget=len(exact)) == exact


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

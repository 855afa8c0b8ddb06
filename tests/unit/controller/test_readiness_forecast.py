"""The readiness target: floor, forecast from past weeks, reactive term, caps, and the
measured boot horizon."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.demand.history import DemandHistory
from controller.readiness.boot import DEFAULT_HORIZON, MARGIN, BootTimes, boot_horizon
from controller.readiness.forecast import readiness_target, robust_high
from controller.readiness.poisson import poisson_quantile
from tests.support.observations import spec

DAY = 86_400.0
WEEK = 7 * DAY
# Tuesday 2026-11-24 13:58:30 UTC: a burst at 14:00 is 90 s away.
NOW = datetime(2026, 11, 24, 13, 58, 30, tzinfo=UTC).timestamp()
BURST = int(datetime(2026, 11, 24, 14, 0, tzinfo=UTC).timestamp() // 60)
HORIZON = 150.0


def pool(**overrides: object):  # type: ignore[no-untyped-def]
    return spec(capacity={"min": 0, "max": 60}, **overrides)


def history(
    bursts: dict[float, float], *, days: range = range(1, 29), minute: int = BURST
) -> DemandHistory:
    """Every minute of the 3 h around `minute` on the given days back covered; `bursts` maps a
    time offset back (seconds) to arrivals in `minute` shifted by it."""
    h = DemandHistory()
    for d in days:
        base = minute - d * 1440
        for m in range(base - 90, base + 90):
            h.cover(m)
    for back, count in bursts.items():
        h.add_started(minute - int(back // 60), count)
    return h


def weekly(*counts: float) -> DemandHistory:
    """The same weekday of the last len(counts) weeks recorded, nothing else."""
    return history(
        {(k + 1) * WEEK: c for k, c in enumerate(counts)},
        days=range(7, 7 * len(counts) + 1, 7),
    )


def test_no_history_is_exactly_todays_target() -> None:
    """With nothing recorded, the target is targetFree and every learned part is zero."""
    target = readiness_target(pool(), DemandHistory(), NOW, HORIZON)
    assert (target.floor, target.forecast, target.reactive, target.total) == (2, 0, 0, 2)
    assert (target.samples, target.later, target.drain_early, target.keep) == (0, 2, False, 2)


def test_no_history_follows_the_schedule() -> None:
    """With nothing recorded, a schedule rule in force is the target, as today."""
    ruled = pool(schedule={"rules": [{"hours": "13", "targetFree": 7}]})
    target = readiness_target(ruled, DemandHistory(), NOW, HORIZON)
    assert (target.total, target.schedule_rule) == (7, 0)


@pytest.mark.parametrize(
    ("demand", "expected", "samples"),
    [
        pytest.param(weekly(20, 20, 20, 20), 20, 4, id="steady-weeks"),
        pytest.param(weekly(20, 20, 20, 200), 20, 4, id="one-odd-busy-day-dropped"),
        pytest.param(weekly(20, 0, 20, 20), 20, 4, id="one-quiet-day-ignored"),
        pytest.param(weekly(5, 40), 40, 2, id="two-weeks-take-the-higher"),
        pytest.param(
            history({DAY: 12, 4 * DAY: 10}, days=range(1, 5)),
            12,
            2,
            id="young-pool-uses-recent-weekdays",
        ),
        pytest.param(
            history({2 * DAY: 30, 3 * DAY: 30, DAY: 6}, days=range(1, 4)),
            6,
            1,
            id="weekend-not-a-sample-for-tuesday",
        ),
    ],
)
def test_forecast_reads_the_same_minute_of_past_weeks(
    demand: DemandHistory, expected: float, samples: int
) -> None:
    """Expected arrivals come from the same window of recent weeks (or days), robustly."""
    target = readiness_target(pool(), demand, NOW, HORIZON)
    assert (target.expected, target.samples) == (expected, samples)
    assert target.forecast == poisson_quantile(expected, 0.005)
    assert target.total == max(2, target.forecast)


def test_requests_already_come_this_minute_are_not_ahead() -> None:
    """Requests the current minute has already brought (served or waiting) are taken off the
    forecast, at most the minute's own prediction."""
    now = BURST * 60.0 + 20.0
    demand = weekly(20, 20, 20)
    before = readiness_target(pool(), demand, now, HORIZON)
    demand.add_started(BURST, 15)
    after = readiness_target(pool(), demand, now, HORIZON)
    assert (before.expected, after.expected) == (20, 5)
    assert after.forecast == poisson_quantile(5, 0.005)
    demand.add_started(BURST, 15)
    assert readiness_target(pool(), demand, now, HORIZON).expected == 0


def test_burst_beyond_the_horizon_is_not_held_yet() -> None:
    """A burst more than one horizon away asks for nothing yet."""
    target = readiness_target(pool(), weekly(20, 20, 20), NOW - 300, HORIZON)
    assert (target.expected, target.total) == (0, 2)


def test_unpredicted_burst_raises_the_reactive_term() -> None:
    """Arrivals of the last minutes that the history did not predict add spares at their rate."""
    demand = weekly(0, 0, 0)
    for m in range(BURST - 5, BURST - 1):
        demand.add_started(m, 3)
    target = readiness_target(pool(), demand, NOW, HORIZON)
    assert target.forecast == 0
    assert target.surprise == pytest.approx(12 * HORIZON / (5 * 60 + 30))
    assert target.reactive == poisson_quantile(target.surprise, 0.005) > 0
    assert target.total == target.reactive


def test_predicted_arrivals_add_no_reactive_term() -> None:
    """Recent arrivals the history predicted are no surprise."""
    demand = history(
        {WEEK + 240: 4, 2 * WEEK + 240: 4, 3 * WEEK + 240: 4, 240: 4}, days=range(7, 22, 7)
    )
    assert readiness_target(pool(), demand, NOW, HORIZON).reactive == 0


@pytest.mark.parametrize(
    ("overrides", "total"),
    [
        pytest.param({"readiness": {"maxSpares": 10}}, 10, id="max-spares"),
        pytest.param({"capacity": {"min": 0, "max": 12}}, 12, id="capacity-max"),
        pytest.param(
            {"readiness": {"maxSpares": 10}, "targetFree": 15}, 15, id="floor-above-max-spares"
        ),
        pytest.param({"readiness": {"enabled": False}}, 2, id="disabled"),
    ],
)
def test_caps_and_floor(overrides: dict[str, object], total: int) -> None:
    """maxSpares and capacity.max cap the learned part; the floor holds even above maxSpares."""
    target = readiness_target(
        spec(**{"capacity": {"min": 0, "max": 60}, **overrides}), weekly(40, 40), NOW, HORIZON
    )
    assert target.total == total


def test_weeks_are_local_weeks_across_daylight_saving() -> None:
    """In Europe/Berlin, last week's 15:00 before the October change is a different UTC hour."""
    now = datetime(2026, 10, 27, 13, 58, 30, tzinfo=UTC).timestamp()  # 14:58:30 CET
    week_ago = datetime(2026, 10, 20, 13, 0, tzinfo=UTC).timestamp()  # 15:00 CEST
    demand = DemandHistory()
    for m in range(int(week_ago // 60) - 120, int(week_ago // 60) + 120):
        demand.cover(m)
    demand.add_started(int(week_ago // 60), 9)
    berlin = pool(schedule={"timezone": "Europe/Berlin"})
    assert readiness_target(berlin, demand, now, HORIZON).expected == 9
    assert readiness_target(pool(), demand, now, HORIZON).expected == 0


def test_drain_early_keeps_what_idle_for_will_need() -> None:
    """Scale-in keeps the spares the forecast asks for within idleFor, and trusts the history
    only where it covers those minutes."""
    demand = weekly(20, 20, 20)
    before = readiness_target(pool(), demand, NOW - 240, HORIZON)
    assert before.total == 2
    assert before.later == poisson_quantile(20, 0.005)
    assert before.drain_early and before.keep == before.later
    after = readiness_target(pool(), demand, NOW + 3600, HORIZON)
    assert (after.total, after.later, after.keep) == (2, 2, 2)
    no_early = readiness_target(pool(readiness={"drainEarly": False}), demand, NOW - 240, HORIZON)
    assert (no_early.drain_early, no_early.keep) == (False, 2)


@pytest.mark.parametrize(
    ("overrides", "busy", "spares"),
    [
        pytest.param({}, 30, poisson_quantile(20, 0.005) - 15, id="endings-free-recorders"),
        pytest.param({}, 6, poisson_quantile(20, 0.005) - 6, id="no-more-than-busy-now"),
        pytest.param({}, None, poisson_quantile(20, 0.005), id="busy-unknown-counts-none"),
        pytest.param(
            {"readiness": {"countEndings": False}},
            30,
            poisson_quantile(20, 0.005),
            id="count-endings-off",
        ),
    ],
)
def test_recordings_ending_before_the_burst_serve_it(
    overrides: dict[str, object], busy: int | None, spares: int
) -> None:
    """Recorders the history says will be freed before the burst lower the spares held, never
    by more than the recorders busy now; endings in the burst's own minute do not count."""
    demand = weekly(20, 20, 20)
    for week in (1, 2, 3):
        demand.add_ended(BURST - 1 - week * 7 * 1440, 15)
        demand.add_ended(BURST - week * 7 * 1440, 50)
    target = readiness_target(pool(**overrides), demand, NOW, HORIZON, busy=busy)
    assert target.forecast == spares
    assert target.ending == (0 if busy is None or overrides else min(15, busy))


def test_robust_high() -> None:
    """Highest of one or two samples, second highest of three or more, None of none."""
    assert [robust_high(s) for s in ([], [3], [3, 9], [3, 9, 7], [9, 9, 1])] == [None, 3, 9, 7, 9]


@pytest.mark.parametrize(
    ("expected", "miss", "spares"),
    [
        pytest.param(0.0, 0.005, 0, id="nothing-expected"),
        pytest.param(0.1, 0.005, 1, id="a-tenth"),
        pytest.param(1.0, 0.005, 4, id="one"),
        pytest.param(10.0, 0.005, 19, id="ten"),
        pytest.param(10.0, 0.5, 10, id="median"),
        pytest.param(100.0, 0.005, 127, id="hundred"),
        pytest.param(1000.0, 0.05, 1052, id="thousand"),
    ],
)
def test_poisson_quantile(expected: float, miss: float, spares: int) -> None:
    """The upper quantile matches the Poisson distribution's (values as scipy.stats computes)."""
    assert poisson_quantile(expected, miss) == spares


@pytest.mark.parametrize(
    ("samples", "horizon"),
    [
        pytest.param([], DEFAULT_HORIZON, id="none"),
        pytest.param([60, 70, 80, 90], DEFAULT_HORIZON, id="too-few"),
        pytest.param([60, 70, 80, 90, 100], 100 + MARGIN, id="five"),
        pytest.param([60.0] * 17 + [100, 100, 400], 100 + MARGIN, id="p90-ignores-one-outlier"),
    ],
)
def test_boot_horizon(samples: list[float], horizon: float) -> None:
    """The horizon is the 90th percentile of measured boots plus the margin, or the default."""
    assert boot_horizon(samples) == horizon


def test_boot_times_count_each_launch_once() -> None:
    """A boot counts from launch to first idle, once; an instance never seen starting is not a
    boot (a controller restart meets it already up)."""
    boots = BootTimes()
    boots.starting("i-1", 100.0)
    assert boots.ready("i-1", 175.0) == 75.0
    assert boots.ready("i-1", 900.0) is None
    assert boots.ready("i-2", 900.0) is None
    boots.forget({"i-2"}, 1)
    assert boots.durations == (75.0,)


counts = st.lists(st.integers(0, 30), min_size=0, max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    weeks=counts,
    recent=st.lists(st.integers(0, 10), min_size=6, max_size=6),
    target_free=st.integers(0, 20),
    max_spares=st.integers(0, 40),
    factor=st.integers(1, 4),
    offset=st.floats(-600, 600),
    ended=st.integers(0, 30),
    busy=st.one_of(st.none(), st.integers(0, 40)),
)
def test_properties(
    weeks: list[int],
    recent: list[int],
    target_free: int,
    max_spares: int,
    factor: int,
    offset: float,
    ended: int,
    busy: int | None,
) -> None:
    """Never below the floor, never above the caps; more requests in the last minutes never
    lower the target, and requests this minute lower it by no more than they took."""
    pool_spec = spec(
        capacity={"min": 0, "max": 40},
        targetFree=target_free,
        readiness={"maxSpares": max_spares},
    )

    def build(scale: int, extra_recent: int = 0, minutes_ago: int = 0) -> DemandHistory:
        h = weekly(*(c * scale for c in weeks))
        for k in range(1, len(weeks) + 1):
            h.add_ended(BURST - 1 - k * 7 * 1440, ended)
        for i, c in enumerate(recent):
            extra = extra_recent if i == minutes_ago else 0
            h.add_started(int((NOW + offset) // 60) - i, c * scale + extra)
        return h

    now = NOW + offset
    base = readiness_target(pool_spec, build(1), now, HORIZON, busy)
    assert base.total >= target_free
    assert base.total <= max(target_free, max_spares) <= 40
    assert base.total == max(target_free, min(max_spares, base.forecast + base.reactive))
    assert readiness_target(pool_spec, build(factor), now, HORIZON, busy).total >= base.total
    earlier = readiness_target(pool_spec, build(1, 5, minutes_ago=1), now, HORIZON, busy)
    assert earlier.total >= base.total
    # Requests of the current minute already took their recorders (the free count shows it),
    # so they come off what is still expected: the target may drop, by at most them.
    this_minute = readiness_target(pool_spec, build(1, 5), now, HORIZON, busy)
    assert this_minute.total >= base.total - 5

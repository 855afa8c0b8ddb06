"""Recording demand for the simulator: the synthetic day and CSV traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sim.demand import (
    DayShape,
    Recording,
    TraceError,
    concurrency_steps,
    load_trace,
    parse_trace,
    peak_concurrency,
    synthetic_day,
)


def test_synthetic_day_is_reproducible_from_its_seed() -> None:
    """The same shape and seed give the same recordings; another seed gives others."""
    shape = DayShape(recordings=500, hours=6)
    assert synthetic_day(shape, 3) == synthetic_day(shape, 3)
    assert synthetic_day(shape, 3) != synthetic_day(shape, 4)


def test_synthetic_day_has_about_the_requested_size_and_bounded_durations() -> None:
    """The expected count is met within sampling noise, and durations respect their caps."""
    shape = DayShape(recordings=4000)
    day = synthetic_day(shape, 1)
    assert 3800 <= len(day) <= 4200
    assert all(shape.min_duration <= r.duration <= shape.max_duration for r in day)
    durations = sorted(r.duration for r in day)
    median = durations[len(durations) // 2]
    assert 1500 <= median <= 2100
    assert [r.start for r in day] == sorted(r.start for r in day)
    assert [r.index for r in day] == list(range(len(day)))


def test_synthetic_day_bursts_on_the_hour_and_is_quiet_at_night() -> None:
    """Far more requests start in the first 5 minutes of an hour than in any other 5, and
    office hours carry most of the day."""
    day = synthetic_day(DayShape(recordings=5000), 2)
    first = sum(1 for r in day if r.start % 3600 < 300)
    middle = sum(1 for r in day if 900 <= r.start % 3600 < 1200)
    assert first > 3 * middle
    office = sum(1 for r in day if 8 * 3600 <= r.start < 18 * 3600)
    night = sum(1 for r in day if r.start < 6 * 3600)
    assert office > 8 * night


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0,60\n30,120\n", [(0.0, 60.0), (30.0, 120.0)], id="plain"),
        pytest.param("start_seconds,duration_seconds\n5,10\n", [(5.0, 10.0)], id="header"),
        pytest.param("# comment\n\n9,1\n2,3\n", [(2.0, 3.0), (9.0, 1.0)], id="sorted"),
    ],
)
def test_trace_rows_become_recordings(text: str, expected: list[tuple[float, float]]) -> None:
    """A trace is read as start,duration pairs, sorted by start."""
    day = parse_trace(text.splitlines())
    assert [(r.start, r.duration) for r in day] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("1,2,3\n", "t.csv:1: expected 2 columns", id="columns"),
        pytest.param("0,60\nx,1\n", "t.csv:2: not a number", id="number"),
        pytest.param("0,60\n-1,5\n", "t.csv:2: start must be >= 0", id="negative"),
        pytest.param("0,0\n", "t.csv:1: start must be >= 0 and duration > 0", id="zero"),
        pytest.param("start,duration\n", "t.csv: no recordings", id="empty"),
    ],
)
def test_bad_trace_is_refused_with_file_and_line(text: str, message: str) -> None:
    """Every malformed trace names the file, the line and what is wrong."""
    with pytest.raises(TraceError, match=message):
        parse_trace(text.splitlines(), "t.csv")


def test_missing_trace_file_is_a_clear_error(tmp_path: Path) -> None:
    """A trace that cannot be read says so, without a traceback's worth of detail."""
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "absent.csv")


def test_concurrency_counts_overlaps_and_clips_at_the_end() -> None:
    """A recording ending when another starts does not overlap it; the end clips the day."""
    day = (Recording(0, 0.0, 10.0), Recording(1, 10.0, 10.0), Recording(2, 5.0, 100.0))
    assert concurrency_steps(day, 50.0) == [(0.0, 1), (5.0, 2), (10.0, 2), (20.0, 1)]
    assert peak_concurrency(day, 50.0) == 2

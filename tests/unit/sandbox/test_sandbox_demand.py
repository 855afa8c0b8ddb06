from __future__ import annotations

import random
from itertools import islice, takewhile
from pathlib import Path

import pytest

from sandbox.demand import DAY_SHAPE, DayPattern, Recording, TraceError, load_trace, parse_trace


def test_concurrency_follows_the_day_shape_at_whole_hours() -> None:
    """At each whole hour the expected concurrency is the peak times that hour's share."""
    pattern = DayPattern(day_length=240.0, peak=4.0)
    for hour, share in enumerate(DAY_SHAPE):
        assert pattern.concurrency(hour * 10.0) == pytest.approx(4.0 * share)


def test_concurrency_interpolates_between_hours_and_repeats_daily() -> None:
    """Between two hours the concurrency is linear, and the day repeats."""
    pattern = DayPattern(day_length=24.0, peak=2.0)
    midway = 2.0 * (DAY_SHAPE[9] + DAY_SHAPE[10]) / 2
    assert pattern.concurrency(9.5) == pytest.approx(midway)
    assert pattern.concurrency(9.5 + 24.0) == pytest.approx(midway)
    assert pattern.concurrency(23.5) == pytest.approx(2.0 * (DAY_SHAPE[23] + DAY_SHAPE[0]) / 2)


def test_offset_shifts_the_start_of_the_run_into_the_day() -> None:
    """A run that starts at 10:00 sees the 10:00 concurrency at once."""
    pattern = DayPattern(day_length=24.0, peak=3.0, offset=10.0)
    assert pattern.concurrency(0.0) == pytest.approx(3.0 * DAY_SHAPE[10])


def test_arrivals_are_seeded_ordered_and_bounded() -> None:
    """The same seed gives the same recordings, in order, each within 0.5-1.5x the mean."""
    pattern = DayPattern(day_length=120.0, peak=4.0, mean_duration=10.0)
    first = list(islice(pattern.arrivals(random.Random(7)), 200))
    again = list(islice(pattern.arrivals(random.Random(7)), 200))
    assert first == again
    assert [r.start for r in first] == sorted(r.start for r in first)
    assert all(5.0 <= r.duration <= 15.0 for r in first)


def test_arrivals_are_busier_at_midday_than_at_night() -> None:
    """Over many simulated days, far more recordings arrive at 10:00-11:00 than 02:00-03:00."""
    pattern = DayPattern(day_length=24.0, peak=5.0, mean_duration=1.0)
    arrivals = takewhile(lambda r: r.start < 24.0 * 200, pattern.arrivals(random.Random(1)))
    hours = [int(r.start % 24.0) for r in arrivals]
    assert hours.count(10) > 5 * hours.count(2)
    # Little's law: about peak/mean_duration arrivals per second at the peak hour.
    assert hours.count(10) / 200 == pytest.approx(5.0, rel=0.15)


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param("day_length", 0.0, id="zero-day"),
        pytest.param("peak", -1.0, id="negative-peak"),
        pytest.param("mean_duration", float("nan"), id="nan-duration"),
        pytest.param("offset", -5.0, id="negative-offset"),
    ],
)
def test_pattern_rejects_bad_parameters(field: str, value: float) -> None:
    """Every parameter is checked when the pattern is made, naming the field."""
    with pytest.raises(ValueError, match=field):
        DayPattern(**{field: value})


def test_trace_parses_rows_header_comments_and_sorts_by_start() -> None:
    """A header, comments and blank lines are skipped; rows come back sorted by start."""
    text = "# busy morning\nstart_seconds,duration_seconds\n10,5\n\n 2.5 , 30\n"
    assert parse_trace(text) == (Recording(2.5, 30.0), Recording(10.0, 5.0))


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("1,2,3\n", "t.csv:1: expected 2 columns", id="three-columns"),
        pytest.param("5\n", "t.csv:1: expected 2 columns", id="one-column"),
        pytest.param("soon,5\n", "t.csv:1: start_seconds is not a number (got 'soon')", id="word"),
        pytest.param("-1,5\n", "t.csv:1: start_seconds must not be negative", id="negative"),
        pytest.param("1,0\n", "t.csv:1: duration_seconds must be greater than 0", id="zero-dur"),
        pytest.param("inf,4\n", "t.csv:1: start_seconds must be finite", id="infinite"),
        pytest.param("1,2\n3,x\n", "t.csv:2: duration_seconds is not a number", id="second-row"),
        pytest.param("# only a comment\n", "t.csv: no recordings", id="empty"),
        pytest.param("start_seconds,duration_seconds\n", "t.csv: no recordings", id="header-only"),
    ],
)
def test_trace_rejects_bad_rows_with_line_numbers(text: str, message: str) -> None:
    """Each bad row is reported with the file, its line number and what is wrong."""
    with pytest.raises(TraceError) as caught:
        parse_trace(text, "t.csv")
    assert message in str(caught.value)


def test_trace_reports_every_bad_row_up_to_a_limit() -> None:
    """All bad rows are named at once, capped with a count of the rest."""
    text = "".join(f"{i},bad\n" for i in range(30))
    with pytest.raises(TraceError) as caught:
        parse_trace(text, "t.csv")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("t.csv:1: duration_seconds")
    assert lines[-1] == "… and 10 more bad rows"


def test_load_trace_names_a_missing_file(tmp_path: Path) -> None:
    """A trace file that cannot be read gives a one-line error naming it."""
    with pytest.raises(TraceError, match=r"missing\.csv: cannot read"):
        load_trace(tmp_path / "missing.csv")


def test_load_trace_rejects_binary_content(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is refused with a clear message."""
    path = tmp_path / "trace.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(path)

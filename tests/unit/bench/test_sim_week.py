"""`--days`: synthetic weeks, scored per day, reproducible from the seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.sim.__main__ import main
from bench.sim.week import DAY, WeekShape, joined, synthetic_week

CONFIG = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"
SMALL = WeekShape(recordings=400, surprise_day=3)


def test_same_seed_same_week_other_seed_other_week() -> None:
    """A week is a function of its shape and seed."""
    assert synthetic_week(4, SMALL, 7) == synthetic_week(4, SMALL, 7)
    assert synthetic_week(4, SMALL, 7) != synthetic_week(4, SMALL, 8)


def test_week_shape_weekends_noise_quarter_hours_and_the_surprise() -> None:
    """Weekends are quiet, weekdays differ from each other, the second region bursts at :15
    and :45, and the surprise day carries its burst at its odd time."""
    week = synthetic_week(7, WeekShape(recordings=2_000, surprise_day=3), 1)
    sizes = [len(d.recordings) for d in week]
    assert [d.weekday for d in week] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert max(sizes[5:]) < min(sizes[:5]) / 2
    assert len(set(sizes[:5])) == 5
    quarter = sum(1 for r in week[0].recordings if 900 <= r.start % 1800 < 960)
    assert quarter > 50, "bursts at :15 and :45"
    assert [d.surprise for d in week] == [0, 0, 40, 0, 0, 0, 0]
    at = WeekShape.surprise_at
    near = [r for r in week[2].recordings if at <= r.start < at + 300]
    assert len(near) >= 40


def test_joined_days_follow_each_other() -> None:
    """Joined, day k's requests are shifted by k days."""
    week = synthetic_week(2, SMALL, 3)
    run = joined(week)
    assert len(run) == len(week[0].recordings) + len(week[1].recordings)
    assert run[-1].start == week[1].recordings[-1].start + DAY


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> dict[str, object]:
    args = ["--config", str(CONFIG), "--days", "3", "--score", "1", "--recordings", "200"]
    args += ["--seed", str(seed), "--policies", "oracle", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_days_run_is_reproducible_and_scores_the_unseen_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--days with a seed gives the same demand every run; the scored days are the last ones,
    with a per-day row naming each, the last with its unannounced burst."""
    first, again, other = (_run(tmp_path, capsys, s) for s in (5, 5, 6))
    results = first["results"]
    assert isinstance(results, list)
    (oracle,) = results
    (day,) = oracle["days"]
    assert day["label"] == "day 3 Wed 2025-01-08, unannounced burst of 4"
    assert day["requests"] == oracle["requests"] > 0
    assert _demand(first) == _demand(again)
    assert _demand(first) != _demand(other)


def _demand(document: dict[str, object]) -> object:
    """What the run served: everything but its wall time."""
    results = document["results"]
    assert isinstance(results, list)
    return [{k: v for k, v in r.items() if k != "wallSeconds"} for r in results]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--score", "3"], "at least one day of history", id="nothing-learned"),
        pytest.param(["--hours", "2"], "takes no --trace", id="hours"),
        pytest.param(["--surprise-day", "9"], "--surprise-day must lie in 0..3", id="surprise"),
    ],
)
def test_days_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Arguments --days cannot honour exit 2 with a clear line."""
    code = main(["--config", str(CONFIG), "--days", "3", *extra, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err

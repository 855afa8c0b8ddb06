"""`--history`: previous days as the controller's demand history, and the planner that
learns from them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.sim.__main__ import main
from bench.sim.clock import Simulation
from bench.sim.demand import Recording
from bench.sim.fleet import SimulatedWorld, WorldSettings
from bench.sim.history import backfill
from bench.sim.policies.planner import SIMULATED_DATE, ControllerSettings, PlannerPolicy
from controller.spec import PoolSpec
from tests.support.observations import spec

CONFIG = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"
EPOCH = SIMULATED_DATE.timestamp()
BURST_AT = 10 * 3600.0


def _burst_day(size: int = 20) -> tuple[Recording, ...]:
    """A quiet day but for `size` recordings asked for within a minute after 10:00."""
    return tuple(Recording(i, BURST_AT + 3.0 * i, 1200.0) for i in range(size))


def _write(path: Path, day: tuple[Recording, ...]) -> Path:
    path.write_text(
        "start_seconds,duration_seconds\n" + "".join(f"{r.start},{r.duration}\n" for r in day)
    )
    return path


def test_backfill_covers_every_minute_and_counts_starts_and_ends() -> None:
    """Each history day covers its 1,440 minutes; a request counts in the minute it came and
    its recording's end in the minute it ended, unless that is after the history."""
    day = (Recording(0, 90.0, 60.0), Recording(1, 86_000.0, 1_000.0))
    filled = backfill([day, day], EPOCH)
    first = int(EPOCH // 60) - 2 * 1440
    assert len(filled.started) == 2 * 1440
    assert filled.started[first + 1] == 1.0
    assert filled.ended[first + 2] == 1.0
    # Day 1's late recording ends in day 2's minutes; day 2's ends after the history.
    assert filled.ended[first + 1440 + 10] == 1.0
    assert filled.ended[first + 1440 + 2] == 1.0
    assert filled.requests == 4
    assert sum(filled.ended.values()) == 3.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("0,60\n1,2,3\n", "history.csv:2: expected 2 columns", id="columns"),
        pytest.param("0,60\nx,60\n", "history.csv:2: not a number", id="not-a-number"),
        pytest.param("0,-5\n", "history.csv:1: start must be >= 0", id="negative"),
        pytest.param("# nothing\n", "history.csv: no recordings", id="empty"),
        pytest.param("90000,60\n", "history.csv: a history file holds one day", id="two-days"),
    ],
)
def test_bad_history_file_is_one_clear_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """A history CSV that cannot be read exits 2 with one line naming the file and the row."""
    good = _write(tmp_path / "good.csv", _burst_day())
    bad = tmp_path / "history.csv"
    bad.write_text(content)
    args = ["--config", str(CONFIG), "--trace", str(good), "--history", str(good), str(bad)]
    code = main([*args, "--policies", "planner,oracle", "--out", str(tmp_path), "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bench.sim: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_history_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A history file that does not exist exits 2 naming it."""
    good = _write(tmp_path / "good.csv", _burst_day())
    args = ["--config", str(CONFIG), "--trace", str(good), "--history", str(tmp_path / "no.csv")]
    code = main([*args, "--policies", "oracle", "--out", str(tmp_path), "--no-plot"])
    assert code == 2
    assert "no.csv: cannot read" in capsys.readouterr().err


def test_history_reaches_the_planner_and_the_per_day_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--history runs: the source names the previous days and the table has a per-day row."""
    day = _write(tmp_path / "day.csv", _burst_day())
    previous = [str(_write(tmp_path / f"d{k}.csv", _burst_day())) for k in range(3)]
    args = ["--config", str(CONFIG), "--trace", str(day), "--history", *previous, "--hours", "11"]
    args += ["--policies", "planner,oracle", "--out", str(tmp_path), "--no-plot", "--jobs", "1"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0
    assert "history of 3 previous days (60 requests)" in out
    assert "missed/requests and cost x oracle, per day" in out


def _run_planner(pool: PoolSpec, history: list[tuple[Recording, ...]] | None) -> SimulatedWorld:
    """The planner over a day that repeats the history's burst, up to the burst's minute."""
    sim = Simulation()
    fleet = SimulatedWorld(
        sim, WorldSettings(), name="jibri", min_size=1, max_size=40, rng=random.Random(5)
    )
    filled = None if history is None else backfill(history, EPOCH)
    PlannerPolicy(pool, ControllerSettings(epoch=EPOCH, history=filled)).attach(fleet)
    fleet.start(pool.capacity.min + pool.targetFree)
    for r in _burst_day():
        sim.at(r.start, fleet.request, r)
    sim.run(BURST_AT - 1.0)
    return fleet


def test_planner_with_history_holds_spares_before_a_learned_burst() -> None:
    """Seven days that each had a burst at 10:00 make the planner hold far more free
    recorders just before 10:00 than the same planner without them (targetFree alone)."""
    pool = spec(capacity={"min": 1, "max": 40}, targetFree=2)
    week = [_burst_day() for _ in range(7)]
    learned = _run_planner(pool, week)
    naive = _run_planner(pool, None)
    assert len(naive.live()) == 2, "targetFree 2, nothing busy"
    assert len(learned.live()) >= 1 + 20, "the burst's 20 requests, expected from history"
    assert all(i.jibri_up for i in learned.live()), "booted before the burst"


@pytest.mark.parametrize(
    ("jicofo", "counted"),
    [pytest.param(True, 20, id="jicofo-counts-misses"), pytest.param(False, 2, id="starts-only")],
)
def test_missed_requests_are_demand_only_with_jicofo(jicofo: bool, counted: int) -> None:
    """With --jicofo the requests no recorder took count as demand in the planner's history,
    as jicofo's failure counter makes them; without it only the recordings started do."""
    sim = Simulation()
    fleet = SimulatedWorld(
        sim, WorldSettings(grace=0.0), name="jibri", min_size=0, max_size=2, rng=random.Random(5)
    )
    pool = spec(capacity={"min": 0, "max": 2}, targetFree=2)
    policy = PlannerPolicy(pool, ControllerSettings(epoch=EPOCH, jicofo=jicofo))
    policy.attach(fleet)
    fleet.start(2)
    for r in _burst_day():
        sim.at(r.start, fleet.request, r)
    sim.run(BURST_AT + 120.0)
    history = policy.demand.readiness.history
    minutes = range(int((EPOCH + BURST_AT) // 60), int((EPOCH + BURST_AT) // 60) + 2)
    assert fleet.tally.missed == 18
    assert sum(history.arrivals(m) or 0.0 for m in minutes) == counted

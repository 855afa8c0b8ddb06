"""The command line of `python -m bench.sim`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.sim.fleet import WorldSettings
from bench.sim.learned_schedule import BASES, ScheduleSettings
from bench.sim.policies.forecast import ForecastSettings
from bench.sim.runner import LEARNED, ORACLE, POLICIES, WHAT_IF
from bench.sim.week import WeekShape

DEFAULT_POLICIES = (*POLICIES, *LEARNED, ORACLE)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.sim",
        description="Serve one day of recording demand with each autoscaling policy and compare "
        "missed recordings with instance-hours.",
    )
    p.add_argument("--config", type=Path, default=Path("config/desired-state.yaml"))
    p.add_argument("--pool", help="pool name in the config (default: the first)")
    p.add_argument("--trace", type=Path, help="CSV of start_seconds,duration_seconds")
    p.add_argument(
        "--history",
        type=Path,
        nargs="+",
        metavar="DAY.csv",
        help="previous days of demand, oldest first (each from start_seconds 0): the planner's "
        "demand history, as the controller's CloudWatch backfill would load it",
    )
    p.add_argument(
        "--days",
        type=int,
        help="a synthetic run of this many days from a Monday (weekday/weekend shape, "
        "day-to-day noise, bursts at :00/:30 and :15/:45): the first are the planner's "
        "history, the last --score days are simulated and scored",
    )
    p.add_argument(
        "--score", type=int, help="with --days: days scored (default 3, at most days - 1)"
    )
    p.add_argument(
        "--surprise-day",
        type=int,
        help="with --days: the day (1-based) with an unannounced burst (default: the last; "
        "0: none)",
    )
    p.add_argument(
        "--surprise-share",
        type=float,
        default=WeekShape.surprise_share,
        help="with --days: the unannounced burst's requests as a share of a weekday's "
        "recordings (default %(default)s)",
    )
    p.add_argument(
        "--recordings",
        type=int,
        help="synthetic day size (default 4000; with --days 3000 per weekday)",
    )
    p.add_argument("--hours", type=float, help="length of the run (default: 24, or the trace)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--max",
        type=int,
        help="capacity.max for every policy (default: the config's, raised to fit the demand)",
    )
    p.add_argument("--target-free", type=int, help="override the pool's targetFree")
    p.add_argument(
        "--idle-for",
        metavar="DURATION",
        help="override the pool's scaleIn.idleFor (e.g. 1m or 60)",
    )
    p.add_argument("--grace", type=float, default=30.0, help="seconds a request waits")
    p.add_argument(
        "--warm-pool",
        action="store_true",
        help="the group has a Stopped warm pool, and the pool's spec a warmPool",
    )
    p.add_argument("--warm-start-mean", type=float, default=WorldSettings.warm_start_mean)
    p.add_argument("--warm-start-spread", type=float, default=WorldSettings.warm_start_spread)
    p.add_argument(
        "--warm-cost",
        type=float,
        default=WorldSettings.warm_cost,
        help="a stopped warmed instance's hourly price as a share of a running one's "
        "(default %(default)s: EBS only)",
    )
    p.add_argument("--warm-min-size", type=int, default=0, help="warmPool.minSize")
    p.add_argument(
        "--warm-max-prepared",
        type=int,
        help="warmPool.maxPreparedCapacity (default: none, i.e. the group's max)",
    )
    p.add_argument(
        "--jicofo",
        action="store_true",
        help="spec.demand.jicofo: the planner's history also counts the requests missed",
    )
    p.add_argument("--boot-mean", type=float, default=90.0)
    p.add_argument("--boot-spread", type=float, default=30.0)
    p.add_argument(
        "--policies",
        help=f"comma-separated (default: all of {', '.join(DEFAULT_POLICIES)}); also the what-if "
        f"{', '.join(WHAT_IF)} (the planner with time-of-day targetFree learned from a "
        "previous day)",
    )
    p.add_argument(
        "--forecast-safety",
        type=float,
        default=ForecastSettings.safety,
        help="planner-schedule and planner-forecast: spares per expected arrival "
        "(default %(default)s)",
    )
    p.add_argument(
        "--forecast-headroom",
        type=float,
        default=ForecastSettings.headroom,
        help="planner-forecast: extra spares per sqrt(expected arrivals) (default %(default)s)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="CSV trace of a previous day, for planner-schedule and planner-forecast with "
        "--trace (a synthetic day uses another seed of the same shape)",
    )
    p.add_argument(
        "--schedule-basis",
        choices=BASES,
        default=ScheduleSettings.basis,
        help="planner-schedule: spares for the requests expected within a boot (arrivals, as "
        "planner-forecast), or for requests minus recordings ending meanwhile (net; default)",
    )
    p.add_argument(
        "--schedule-headroom",
        type=float,
        default=ScheduleSettings.headroom,
        help="planner-schedule: extra spares per sqrt(requests and endings in view) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--schedule-window",
        type=int,
        default=ScheduleSettings.window // 60,
        help="planner-schedule: minutes per step of the learned profile, dividing an hour "
        "(default %(default)s)",
    )
    p.add_argument(
        "--schedule-rules",
        type=int,
        default=ScheduleSettings.rules,
        help="planner-schedule: at most this many rules (default %(default)s)",
    )
    p.add_argument(
        "--write-schedule",
        type=Path,
        metavar="PATH",
        help="where to write planner-schedule's pool, schedule included, as a JibriPool "
        "document (default: OUT/schedule.yaml)",
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=Path("out"))
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--no-plot", action="store_true")
    return p

"""`python -m bench.sim`: simulate days of recording demand under every policy."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from collections.abc import Sequence

from pydantic import ValidationError

from bench.sim.cli import DEFAULT_POLICIES, parser
from bench.sim.demand import DayShape, TraceError, load_trace, peak_concurrency, synthetic_day
from bench.sim.fleet import WorldSettings
from bench.sim.history import Backfill, backfill, load_history
from bench.sim.learned_schedule import ScheduleSettings, schedule_yaml
from bench.sim.policies.forecast import ForecastSettings
from bench.sim.policies.planner import SIMULATED_DATE, ControllerSettings
from bench.sim.report import as_json, day_table, plot, table
from bench.sim.runner import LEARNED, WHAT_IF, Scenario, run_all, schedule_spec
from bench.sim.schedule_rules import MIN_RULE_BUDGET
from bench.sim.week import WeekShape, joined, synthetic_week
from controller.spec import ConfigError, PoolSpec, load_desired_state


def _fail(message: str) -> int:
    print(f"bench.sim: {message}", file=sys.stderr)
    return 2


def _spec(args: argparse.Namespace, peak: int) -> tuple[str, PoolSpec, str | None]:
    state = load_desired_state(args.config)
    pool = state.pool(args.pool) if args.pool else state.pools[0]
    spec = pool.spec
    document = spec.model_dump()
    note = None
    if args.target_free is not None:
        document["targetFree"] = args.target_free
    if args.warm_pool:
        document["warmPool"] = {
            "minSize": args.warm_min_size,
            "maxPreparedCapacity": args.warm_max_prepared,
            "state": "Stopped",
        }

    if args.idle_for is not None:
        document["scaleIn"]["idleFor"] = args.idle_for
    target_free = document["targetFree"]
    wanted = args.max
    if wanted is None and math.ceil(1.5 * peak) + target_free > spec.capacity.max:
        wanted = math.ceil(1.5 * peak) + target_free
        note = (
            f"capacity.max raised from {spec.capacity.max} to {wanted} for every policy "
            f"(the demand peaks at {peak} concurrent recordings)"
        )
    if wanted is not None:
        document["capacity"]["max"] = wanted
    # Validate the edited spec so an override cannot slip past the config's rules.
    try:
        return pool.name, PoolSpec.model_validate(document), note
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise ValueError(f"the overrides make an invalid pool: {problems}") from exc


def _schedule_comment(args: argparse.Namespace, scenario: Scenario, reference: str) -> str:
    tuning, learning = scenario.forecast, scenario.schedule
    lead = tuning.lead if tuning.lead is not None else scenario.longest_boot + 30.0
    safety = "" if tuning.safety == 1 else f" x {tuning.safety:g}"
    if learning.basis == "arrivals":
        need = f"the requests{safety} + {learning.headroom:g} x sqrt(requests)"
    else:
        need = (
            f"requests{safety} minus recordings ending + {learning.headroom:g} x "
            "sqrt(requests + endings), at its worst point"
        )
    step = "minute" if learning.window == 60 else f"{learning.window // 60} minutes"
    text = (
        f"planner-schedule's pool, written by `python -m bench.sim` from {reference}. "
        f"For each {step} of the day the schedule keeps free what the next {lead:g} s asked "
        f"for at the worst moment: {need} (basis {learning.basis}). The profile is then cut "
        f"into at most {learning.rules} rules, each run of minutes holding its largest target. "
        "Times are UTC; the simulated day is a Tuesday."
    )
    check = f"Check it: python -m controller validate {args.write_schedule}"
    return "\n".join([*textwrap.wrap(text, 92), check])


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    chosen = args.policies is not None
    names = tuple(
        n.strip() for n in (args.policies or ",".join(DEFAULT_POLICIES)).split(",") if n.strip()
    )
    known = (*DEFAULT_POLICIES, *WHAT_IF)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        return _fail(f"unknown policy {unknown}; choose from {', '.join(known)}")
    if args.schedule_window <= 0 or 60 % args.schedule_window:
        return _fail("--schedule-window must be a whole number of minutes dividing 60")
    if args.schedule_rules < MIN_RULE_BUDGET or args.schedule_headroom < 0:
        return _fail(
            f"--schedule-rules must be at least {MIN_RULE_BUDGET} (one per hour) and "
            "--schedule-headroom must not be negative"
        )
    learning = ScheduleSettings(
        window=60 * args.schedule_window,
        rules=args.schedule_rules,
        basis=args.schedule_basis,
        headroom=args.schedule_headroom,
    )
    if (args.recordings is not None and args.recordings <= 0) or (
        args.hours is not None and args.hours <= 0
    ):
        return _fail("--recordings and --hours must be positive")
    if args.days is not None:
        if args.trace or args.history or args.hours is not None:
            return _fail("--days makes its own days: it takes no --trace, --history or --hours")
        if args.score is None:
            args.score = max(1, min(3, args.days - 1))
        if not 1 <= args.score < args.days:
            return _fail("--days needs at least one day of history before the --score days")
        if args.surprise_day is not None and not 0 <= args.surprise_day <= args.days:
            return _fail(f"--surprise-day must lie in 0..{args.days}")
    if args.warm_pool and (
        args.warm_start_mean - args.warm_start_spread < 0 or not 0 <= args.warm_cost <= 1
    ):
        return _fail("warm starts must not be negative and --warm-cost must lie in [0, 1]")
    if (
        args.boot_mean - args.boot_spread < 0
        or args.grace < 0
        or args.forecast_safety <= 0
        or args.forecast_headroom < 0
    ):
        return _fail(
            "boot times, --grace and --forecast-headroom must not be negative, "
            "--forecast-safety must be positive"
        )
    started = time.perf_counter()
    history: Backfill | None = None
    epoch = SIMULATED_DATE.timestamp()
    labels: tuple[str, ...] = ()
    try:
        reference = None
        if args.days is not None:
            surprise = args.days if args.surprise_day is None else args.surprise_day or None
            week = synthetic_week(
                args.days,
                WeekShape(
                    recordings=args.recordings or WeekShape.recordings,
                    surprise_day=surprise,
                    surprise_share=args.surprise_share,
                ),
                args.seed,
            )
            seen, scored = week[: -args.score], week[-args.score :]
            recordings = joined(scored)
            hours = 24.0 * len(scored)
            epoch = scored[0].date.timestamp()
            history = backfill([d.recordings for d in seen], epoch)
            weekdays = [d for d in seen if d.date.weekday() < 5]
            reference = (weekdays or list(seen))[-1].recordings
            labels = tuple(
                f"day {d.number} {d.weekday} {d.date:%Y-%m-%d}"
                + (f", unannounced burst of {d.surprise}" if d.surprise else "")
                for d in scored
            )
            source = (
                f"synthetic week, days {scored[0].number}-{scored[-1].number} of {args.days} "
                f"scored ({len(seen)} days of history; about "
                f"{args.recordings or WeekShape.recordings} recordings a weekday)"
            )
        elif args.trace:
            recordings = load_trace(args.trace)
            hours = args.hours or max(r.end for r in recordings) / 3600.0
            source = str(args.trace)
            if args.reference:
                reference = load_trace(args.reference)
        else:
            hours = args.hours or 24.0
            size = args.recordings or 4_000
            shape = DayShape(recordings=size, hours=hours)
            recordings = synthetic_day(shape, args.seed)
            reference = synthetic_day(shape, args.seed + 1_000_003)
            source = f"synthetic day, {size} expected recordings"
        if args.history:
            days = load_history(args.history)
            history = backfill(days, epoch)
            if args.reference is None:
                reference = days[-1]
            source += f"; history of {len(days)} previous days ({history.requests} requests)"
        if reference is None and not chosen:
            names = tuple(n for n in names if n not in LEARNED)
            skipped = f"{', '.join(LEARNED)} skipped: it learns from --reference PREVIOUS_DAY.csv"
        else:
            skipped = None
        for name in (*LEARNED, *WHAT_IF):
            if name in names and reference is None:
                raise ValueError(f"{name} with --trace needs --reference PREVIOUS_DAY.csv")
        until = hours * 3600.0
        pool_name, spec, note = _spec(args, peak_concurrency(recordings, until))
    except (ConfigError, TraceError, KeyError, ValueError) as exc:
        message = f"no pool named {exc}" if isinstance(exc, KeyError) else str(exc)
        return _fail(message)
    world = WorldSettings(
        boot_mean=args.boot_mean,
        boot_spread=args.boot_spread,
        grace=args.grace,
        warm_pool=args.warm_pool,
        warm_start_mean=args.warm_start_mean,
        warm_start_spread=args.warm_start_spread,
        warm_cost=args.warm_cost,
        warm_min_size=args.warm_min_size,
        warm_max_prepared=args.warm_max_prepared,
    )
    scenario = Scenario(
        spec=spec,
        recordings=recordings,
        until=until,
        seed=args.seed,
        world=world,
        reference=reference,
        forecast=ForecastSettings(safety=args.forecast_safety, headroom=args.forecast_headroom),
        schedule=learning,
        controller=ControllerSettings(epoch=epoch, history=history, jicofo=args.jicofo),
        day_labels=labels,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if "planner-schedule" in names:
        if args.write_schedule is None:
            args.write_schedule = args.out / "schedule.yaml"
        learned = schedule_spec(scenario)
        previous = str(args.reference) if args.reference else f"seed {args.seed + 1_000_003}"
        comment = _schedule_comment(args, scenario, f"a previous day of demand ({previous})")
        text = schedule_yaml(pool_name, learned, comment=comment)
        try:
            args.write_schedule.parent.mkdir(parents=True, exist_ok=True)
            args.write_schedule.write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.write_schedule}: {exc.strerror}")
    results = run_all(scenario, names, jobs=args.jobs)
    elapsed = time.perf_counter() - started
    meta = {"source": source, "config": str(args.config), "wallSeconds": round(elapsed, 2)}
    notes = "; ".join(line for line in (note, skipped) if line)
    if notes:
        meta["note"] = notes
    document = as_json(scenario, results, meta)
    (args.out / "sim.json").write_text(document + "\n", encoding="utf-8")
    if not args.no_plot:
        plot(scenario, results, args.out / "sim.png")
    if args.json:
        print(document)
        return 0
    served = sum(1 for r in recordings if r.start < until)
    print(
        f"{source}: {served} recordings over {hours:g} h, peak "
        f"{peak_concurrency(recordings, until)} concurrent; seed {args.seed}; "
        f"boot {args.boot_mean:g}±{args.boot_spread:g} s; grace {args.grace:g} s; "
        f"targetFree {spec.targetFree}"
    )
    for line in (note, skipped):
        if line:
            print(line)
    print()
    print(table(results, args.grace, world.warm_cost if args.warm_pool else 0.0))
    print()
    if len(results[0].days) > 1 or history is not None:
        print(day_table(scenario, results))
        print()
    for r in results:
        if r.name.startswith("planner"):
            extra = r.extra
            print(
                f"{r.name}: {extra['passes']:.0f} passes, plan() {extra['plan_ms_mean']} ms mean, "
                f"{extra['plan_ms_max']} ms max at {extra['instances_per_pass_mean']} instances "
                f"per pass on average; {r.missed_near_boundary} of {r.missed} misses came "
                "within 10 min after a full or half hour"
            )
    print(
        f"wall time {elapsed:.1f} s ("
        + ", ".join(f"{r.name} {r.wall_seconds:.1f} s" for r in results)
        + f"); written {args.out / 'sim.json'}"
        + ("" if args.no_plot else f", {args.out / 'sim.png'}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

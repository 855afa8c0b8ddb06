"""`python -m sandbox` (`make run`): the whole system on one machine, no AWS account needed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rich.console import Console

from common.durations import parse_duration
from controller.spec import ConfigError
from sandbox.demand import DayPattern, TraceError, load_trace
from sandbox.fleet import BootDelay
from sandbox.ledger import render_summary
from sandbox.runner import Demand, RunOptions, run_sandbox
from sandbox.timings import Timings, scaled_desired_state

WORK_MARKER: Final = ".jibri-sandbox"
EXIT_OK, EXIT_UNSAFE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_DAY: Final = 300.0

_EPILOG = """\
Timings are scaled down so that a day fits in minutes: the controller gets a copy of the
desired state with the timing flags below (written to WORK_DIR/desired-state.yaml); capacity
and targetFree stay as in --config. Durations take 30s, 5m or seconds.

Exit status: 0 when no busy instance was terminated and every finished recording reached the
bucket; 1 when something unsafe happened; 2 for bad arguments; 130 when a --duration run was
stopped early with Ctrl-C."""


class UsageError(Exception):
    pass


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_duration(value: str) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero (got {value!r})")
    return seconds


def _positive_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {value!r})")
    return number


def _hour(value: str) -> float:
    try:
        hour = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an hour of the day: {value!r}") from None
    if not 0 <= hour < 24:
        raise argparse.ArgumentTypeError(f"must be from 0 to 23.99 (got {value!r})")
    return hour


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=(
            "Run the real controller and real agents against a local AWS emulator, with "
            "simulated Jibris and recording demand, and watch the fleet follow the demand."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config",
        type=Path,
        default=Path("config/desired-state.yaml"),
        help="desired-state file to run (default %(default)s)",
    )
    run.add_argument(
        "--duration",
        type=_positive_duration,
        default=None,
        metavar="DUR",
        help="stop after this long and print a summary (default: until Ctrl-C)",
    )
    run.add_argument(
        "--headless",
        action="store_true",
        help="no live view: progress lines, then the summary (implied without a TTY)",
    )
    run.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the summary as JSON to PATH",
    )
    run.add_argument(
        "--work-dir",
        type=Path,
        default=Path("sandbox-data"),
        metavar="DIR",
        help="logs, spools and the scaled config; emptied at start (default %(default)s)",
    )
    run.add_argument("--seed", type=int, default=1, help="seed of demand and boot delays")
    run.add_argument(
        "--settle",
        type=_duration,
        default=30.0,
        metavar="DUR",
        help="at the end, how long to wait for uploads to reach the bucket (30s)",
    )

    demand = parser.add_argument_group("demand")
    demand.add_argument(
        "--trace",
        type=Path,
        default=None,
        metavar="CSV",
        help="play start_seconds,duration_seconds rows instead of the day pattern",
    )
    demand.add_argument(
        "--peak",
        type=_positive_number,
        default=4.0,
        metavar="N",
        help="recordings at once at the busiest hour of the day (default 4)",
    )
    demand.add_argument(
        "--day-length",
        type=_positive_duration,
        default=None,
        metavar="DUR",
        help="one compressed day (default: --duration, else 5m)",
    )
    demand.add_argument(
        "--start-hour",
        type=_hour,
        default=5.0,
        metavar="H",
        help="hour of the day at which the run starts (default 5)",
    )
    demand.add_argument(
        "--mean-recording",
        type=_positive_duration,
        default=15.0,
        metavar="DUR",
        help="mean recording length (default 15s)",
    )

    fleet = parser.add_argument_group("simulated instances")
    fleet.add_argument(
        "--boot-delay",
        type=_duration,
        default=8.0,
        metavar="DUR",
        help="from launch to Jibri and agent running (default 8s)",
    )
    fleet.add_argument(
        "--boot-jitter",
        type=_duration,
        default=3.0,
        metavar="DUR",
        help="boot delay varies by up to this much either way (default 3s)",
    )

    defaults = Timings()
    timings = parser.add_argument_group("scaled timings written into the desired state")
    for flag, name, field_name in (
        ("--idle-for", "scaleIn.idleFor", "idle_for"),
        ("--delay-after-scale-out", "scaleIn.delayAfterScaleOut", "delay_after_scale_out"),
        ("--stale-after", "instances.staleAfter", "stale_after"),
        ("--boot-timeout", "instances.bootTimeout", "boot_timeout"),
        ("--unhealthy-for", "instances.unhealthyFor", "unhealthy_for"),
        ("--resync", "resync", "resync"),
    ):
        default = getattr(defaults, field_name)
        timings.add_argument(
            flag,
            dest=field_name,
            type=_positive_duration,
            default=default,
            metavar="DUR",
            help=f"{name} (default {default:g}s)",
        )
    return parser  # fmt: skip


def prepare_work_dir(path: Path) -> None:
    """Empty `path` for a new run, refusing to touch a directory the sandbox did not make."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--work-dir {path} exists and is not a directory")
        if any(path.iterdir()) and not (path / WORK_MARKER).exists():
            raise UsageError(
                f"--work-dir {path} is not empty and was not made by the sandbox; "
                "choose another directory or empty it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / WORK_MARKER).write_text("made by `python -m sandbox`; emptied on every run\n")


def _log_to(path: Path) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # A warning printed to the terminal would tear the live view.
    logging.captureWarnings(True)


def build_options(args: argparse.Namespace, headless: bool) -> RunOptions:
    timings = Timings(
        idle_for=args.idle_for,
        delay_after_scale_out=args.delay_after_scale_out,
        stale_after=args.stale_after,
        boot_timeout=args.boot_timeout,
        unhealthy_for=args.unhealthy_for,
        resync=args.resync,
    )
    text, state = scaled_desired_state(args.config, timings)
    if args.trace is not None:
        demand = Demand(trace=load_trace(args.trace), trace_name=str(args.trace))
    else:
        day = args.day_length or args.duration or DEFAULT_DAY
        demand = Demand(
            pattern=DayPattern(
                day_length=day,
                peak=args.peak,
                mean_duration=args.mean_recording,
                offset=day * args.start_hour / 24,
            )
        )
    try:
        boot = BootDelay(args.boot_delay, args.boot_jitter)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    prepare_work_dir(args.work_dir)
    scaled = args.work_dir / "desired-state.yaml"
    scaled.write_text(text, encoding="utf-8")
    return RunOptions(
        state=state,
        scaled_config=scaled.resolve(),
        work_dir=args.work_dir.resolve(),
        demand=demand,
        duration=args.duration,
        headless=headless,
        boot_delay=boot,
        seed=args.seed,
        settle=args.settle,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Only before the run's own handlers are in place: nothing has started yet.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    headless = args.headless or not sys.stdout.isatty()
    try:
        options = build_options(args, headless)
    except (ConfigError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _log_to(options.work_dir / "sandbox.log")
    print(f"sandbox: logs, spools and the scaled config in {args.work_dir}/", flush=True)
    try:
        summary, interrupted = asyncio.run(run_sandbox(options, Console(), sys.stdout))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNSAFE
    print(render_summary(summary), flush=True)
    if args.summary_json is not None:
        try:
            args.summary_json.write_text(summary.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.summary_json}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    if interrupted and options.duration is not None:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_UNSAFE

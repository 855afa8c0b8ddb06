"""`python -m controller run | validate | status | rollout`: arguments and subcommands
(docs/design.md §8); the running controller itself is controller/serve.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from common import logs
from common.wire import TOKEN_ENV
from controller.aws import AwsSettings
from controller.fleet.rollout_cli import RolloutUsageError, add_rollout_command, cmd_rollout
from controller.http.connections import HttpLimits
from controller.http.status import render
from controller.identity import setup as identity_setup
from controller.reload import load
from controller.serve import RunOptions, UsageError, serve
from controller.spec import ConfigError, load_desired_state

__all__ = [
    "RunOptions",
    "UsageError",
    "build_parser",
    "main",
    "parse_listen",
    "read_token",
    "serve",
]


DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_URL = "http://127.0.0.1:8080"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, such as {DEFAULT_LISTEN}: {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1: {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0: {value!r}")
    return seconds


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc.strerror}") from exc
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(
            f"no agent token: set {TOKEN_ENV} or pass --token-file; "
            "the controller does not accept reports without one"
        )
    return token


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controller",
        description="Keep exactly enough idle Jibri recorders ready in AWS Auto Scaling Groups.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="reconcile the pools and serve reports, metrics, status")
    run.add_argument("--config", required=True, type=Path, help="desired-state YAML file")
    run.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"HTTP address for reports, /metrics, /healthz, /status (default {DEFAULT_LISTEN})",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="plan, log and count actions; change nothing"
    )
    run.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the agents' bearer token, required at /v1/register (else ${TOKEN_ENV})",
    )
    run.add_argument(
        "--aws-max-attempts",
        type=_positive_int,
        default=AwsSettings.max_attempts,
        metavar="N",
        help="attempts per AWS call in botocore's standard retry mode (default %(default)s)",
    )
    _add_http_limits(run)
    identity_setup.add_arguments(run)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument(
        "--log-format",
        default="json",
        choices=logs.LOG_FORMATS,
        help="one JSON event per line, or text for a terminal (default %(default)s)",
    )

    validate = commands.add_parser("validate", help="check a desired-state file")
    validate.add_argument("path", type=Path)

    show = commands.add_parser("status", help="print a running controller's /status as tables")
    show.add_argument("--url", default=DEFAULT_URL, help=f"controller URL (default {DEFAULT_URL})")
    show.add_argument("--json", action="store_true", help="print the raw JSON instead")
    add_rollout_command(commands)
    return parser


def _add_http_limits(run: argparse.ArgumentParser) -> None:
    defaults = HttpLimits()
    run.add_argument(
        "--max-connections",
        type=_positive_int,
        default=defaults.max_connections,
        metavar="N",
        help="open HTTP connections at most (lowered to fit the file-descriptor limit); at "
        "the cap a new connection replaces the longest idle one (default %(default)s)",
    )
    run.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=defaults.idle_timeout,
        metavar="SECONDS",
        help="close a connection that sends no complete request head for this long, after "
        "opening or after its last answer (default %(default)g)",
    )
    run.add_argument(
        "--body-timeout",
        type=_seconds,
        default=defaults.body_timeout,
        metavar="SECONDS",
        help="answer 408 to a report whose body takes longer (default %(default)g)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=defaults.shutdown_grace,
        metavar="SECONDS",
        help="on SIGTERM, how long requests under way may finish (default %(default)g)",
    )


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    logs.configure(getattr(logging, args.log_level), args.log_format)
    host, port = args.listen
    token = read_token(args.token_file, environ)
    state, loaded = load(args.config)
    try:
        identity = identity_setup.options_from(args, environ)
    except identity_setup.IdentitySetupError as exc:
        raise UsageError(str(exc)) from exc
    options = RunOptions(
        config=args.config,
        host=host,
        port=port,
        token=token,
        dry_run=args.dry_run,
        aws=AwsSettings(max_attempts=args.aws_max_attempts),
        identity=identity,
        http=HttpLimits(
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            body_timeout=args.body_timeout,
            shutdown_grace=args.shutdown_grace,
        ),
    )
    asyncio.run(serve(options, state, loaded))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    state = load_desired_state(args.path)
    count = len(state.pools)
    print(f"{args.path}: {count} pool{'s' if count != 1 else ''} OK")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            document = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UsageError(f"cannot read {url}: {exc}") from exc
    print(json.dumps(document, indent=2) if args.json else render(document))
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "run":
            return cmd_run(args, env)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "rollout":
            return cmd_rollout(args)
        return cmd_status(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (UsageError, RolloutUsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

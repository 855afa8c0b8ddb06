"""`python -m controller run | validate | status` (docs/design.md §8)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from common import logs
from common.aiokits.clock import MonotonicClock
from common.aiokits.tasks import guarded_task
from common.logs import event
from common.wire import TOKEN_ENV
from controller.actuator import Actuator
from controller.aws import AwsClients, AwsSettings
from controller.cloudwatch.api import CloudWatchClients
from controller.cloudwatch.step import Apis, CloudWatchSync
from controller.demand.service import DemandSources, history_from
from controller.http.connections import HttpLimits
from controller.http.register import CredentialAuth, IdentityContext, mount
from controller.http.server import Server, ServerContext, make_app
from controller.http.status import render
from controller.identity import setup as identity_setup
from controller.identity.setup import IdentityOptions
from controller.loop import AutoScalingFactory, ExtraStep, Planner
from controller.planner import plan as default_planner
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.reload import ConfigWatcher, load
from controller.rollout_cli import RolloutUsageError, add_rollout_command, cmd_rollout
from controller.spec import ConfigError, DesiredState, load_desired_state
from controller.store import ReportStore
from controller.warm_pool_step import WarmPoolApis, WarmPoolSync

log = logging.getLogger("controller")

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_URL = "http://127.0.0.1:8080"


class UsageError(Exception):
    """A problem with how the command was called; printed without a traceback."""


@dataclass(frozen=True)
class RunOptions:
    config: Path
    host: str
    port: int
    token: str
    dry_run: bool
    aws: AwsSettings
    identity: IdentityOptions
    http: HttpLimits = field(default_factory=HttpLimits)


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


GIL_SWITCH_INTERVAL = 0.0002
"""Seconds a thread may hold the GIL while another waits for it (CPython's default is 5 ms)."""


def tune_process() -> None:
    """Settings for a process whose event loop serves reports while a worker thread plans."""
    # After every socket call the event loop waits for the planner thread to hand the GIL
    # back. At the default 5 ms per hand-over a 10,000-instance plan held reports up for tens
    # of ms; at 0.2 ms the event loop's lag under 2,000 reports/s drops by about a quarter.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # What exists by now (modules, config, app) lives as long as the process. Frozen out of the
    # collector, it is not rescanned by every full collection, which stops the server too.
    gc.collect()
    gc.freeze()


async def serve(
    options: RunOptions,
    state: DesiredState,
    loaded: str,
    *,
    autoscaling: AutoScalingFactory | None = None,
    cloud_watch_apis: Apis | None = None,
    planner: Planner = default_planner,
    extra_steps: Sequence[ExtraStep] = (),
    configure_app: Callable[[web.Application], None] | None = None,
    warm_pool_apis: WarmPoolApis | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order and return.

    The keyword arguments replace what `run` builds itself, for running this very app against
    an in-process AWS (the scale benchmark): the Auto Scaling and CloudWatch APIs per region
    (by default aiobotocore clients from the standard AWS chain), the planner, steps to run
    after the CloudWatch step of every pass, and a hook that may add routes, middlewares or
    cleanup contexts to the app before it starts."""
    metrics = Metrics()
    clock = time.monotonic
    clients: AwsClients | None = None
    cloud_watch_clients: CloudWatchClients | None = None
    if autoscaling is None or cloud_watch_apis is None:
        clients = AwsClients(metrics, options.aws)
        if autoscaling is None:
            autoscaling = clients.autoscaling
        if cloud_watch_apis is None:
            cloud_watch_clients = CloudWatchClients(clients, metrics)
            cloud_watch_apis = cloud_watch_clients
    cloud_watch = CloudWatchSync(
        apis=cloud_watch_apis, metrics=metrics, dry_run=options.dry_run, clock=clock
    )
    if warm_pool_apis is None and clients is not None and autoscaling == clients.autoscaling:
        warm_pool_apis = clients.autoscaling
    # spec.warmPool (docs/warm-pools.md); off when an injected Auto Scaling has no warm pools.
    warm_pools = (
        None
        if warm_pool_apis is None
        else WarmPoolSync(
            apis=warm_pool_apis, metrics=metrics, dry_run=options.dry_run, clock=clock
        )
    )
    side_steps: list[CloudWatchSync | WarmPoolSync] = [cloud_watch]
    if warm_pools is not None:
        side_steps.append(warm_pools)
    controller = Controller(
        state=state,
        store=ReportStore(),
        metrics=metrics,
        autoscaling=autoscaling,
        actuator=Actuator(metrics=metrics, clock=clock, dry_run=options.dry_run),
        clock=MonotonicClock(),
        planner=planner,
        extra_steps=[*side_steps, *extra_steps],
        status_sources=side_steps,
        plan_inputs=[] if warm_pools is None else [warm_pools],
        demand=DemandSources(history_from(cloud_watch_apis), publish=not options.dry_run),
    )

    async def apply(new: DesiredState) -> None:
        await controller.apply(new)
        await cloud_watch.retain([pool.name for pool in new.pools])
        if warm_pools is not None:
            await warm_pools.retain([pool.name for pool in new.pools])

    watcher = ConfigWatcher(options.config, loaded=loaded, apply=apply, metrics=metrics)
    try:
        registrar = await identity_setup.build_registrar(
            options.identity, identity_setup.FleetMembership(controller)
        )
    except identity_setup.IdentitySetupError as exc:
        raise UsageError(str(exc)) from exc
    identity = IdentityContext(
        registrar=registrar,
        metrics=metrics,
        wall_clock=time.time,
        clock=controller.clock.now,
        registration_token=options.token,
    )
    app = make_app(
        ServerContext(
            controller=controller,
            metrics=metrics,
            auth=CredentialAuth(identity),
            clock=controller.clock.now,
            dry_run=options.dry_run,
            body_timeout=options.http.body_timeout,
        )
    )
    mount(app, identity)
    if configure_app is not None:
        configure_app(app)
    server = Server(app, options.host, options.port, options.http)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = False
    reload_task = None
    try:
        try:
            await server.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}"
            ) from exc
        tune_process()
        controller.start()
        reload_task = guarded_task(watcher.run(), name="config-watcher", may_end=lambda: stopping)
        event(
            log,
            "controller started",
            pools=[p.name for p in state.pools],
            config=str(options.config),
            dry_run=options.dry_run,
        )
        await stop.wait()
        event(log, "stopping")
    finally:
        stopping = True
        # Stop accepting and let requests under way finish within the HTTP grace while the
        # passes under way get theirs, side by side: no client and no slow AWS call can hold
        # the stop past the sum, and the process exits well within a container's 30 s.
        if reload_task is not None:
            reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
        await asyncio.gather(server.close(), controller.stop())
        await cloud_watch.close()
        if warm_pools is not None:
            await warm_pools.close()
        if cloud_watch_clients is not None:
            await cloud_watch_clients.close()
        if clients is not None:
            await clients.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    event(log, "stopped")


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

"""Run the controller's real `serve` (server, loop, planner, actuator, CloudWatch step, config
watcher) with the fast in-process AWS fake injected, and expose what the benchmark needs.

`python -m bench.scale.launcher --config FILE --listen HOST:PORT` is `python -m controller run`
(controller.serve.serve) with AWS replaced by `FastAutoScaling`/`FastCloudWatch`, the planner
wrapped to time it, and one more route, GET /bench/stats: passes, their durations, plan()
times and the AWS calls each pass made. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bench.scale.fake_aws import FastAutoScaling, FastCloudWatch
from bench.scale.loadgen import ACCOUNT
from common import logs
from common.aiokits.tasks import guarded_task
from common.wire import REPORTS_PATH, TOKEN_ENV
from controller.aws import AutoScaling, AwsSettings
from controller.cloudwatch.api import CloudWatchApi, ScalingPolicyApi
from controller.identity.setup import IdentityOptions
from controller.model import Observed, Plan, SetProtection
from controller.planner import plan as real_plan
from controller.reload import load
from controller.serve import RunOptions, UsageError, serve
from controller.spec import JibriPool, PoolSpec

LAG_PROBE = 0.01


@dataclass
class PassLog:
    """One record per reconcile pass, filled by the planner wrapper and the last extra step."""

    started: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    plan_seconds: list[float] = field(default_factory=list)
    instances: list[int] = field(default_factory=list)
    protection_changes: list[int] = field(default_factory=list)
    aws_calls: list[int] = field(default_factory=list)
    _calls_before: int = 0
    handled: list[tuple[float, float]] = field(default_factory=list)
    """(start, seconds) of every POST /v1/reports, measured inside the server."""
    lag: list[tuple[float, float]] = field(default_factory=list)
    """(time, seconds) by which a 10 ms sleep on the event loop overran."""


class Recorder:
    def __init__(self, aws: FastAutoScaling, cloudwatch: FastCloudWatch) -> None:
        self.aws = aws
        self.cloudwatch = cloudwatch
        self.log = PassLog()
        self._pass_started: float | None = None

    def plan(self, spec: PoolSpec, observed: Observed, now: float) -> Plan:
        started = time.perf_counter()
        result = real_plan(spec, observed, now)
        self.log.plan_seconds.append(time.perf_counter() - started)
        self.log.instances.append(len(observed.asg.instances))
        changes = sum(len(a.instance_ids) for a in result.actions if isinstance(a, SetProtection))
        self.log.protection_changes.append(changes)
        return result

    def describe_started(self) -> None:
        self._pass_started = time.perf_counter()
        self.log._calls_before = sum(self.aws.calls.values())

    async def end_of_pass(self, pool: JibriPool, observed: Observed, plan: Plan) -> None:
        if self._pass_started is None:
            return
        self.log.started.append(self._pass_started)
        self.log.durations.append(time.perf_counter() - self._pass_started)
        self.log.aws_calls.append(sum(self.aws.calls.values()) - self.log._calls_before)
        self._pass_started = None

    @web.middleware
    async def time_reports(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != REPORTS_PATH:
            return await handler(request)
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            self.log.handled.append((started, time.perf_counter() - started))

    async def watch_loop(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE)
            now = time.perf_counter()
            self.log.lag.append((now, now - started - LAG_PROBE))

    async def lag_probe(self, app: web.Application) -> AsyncIterator[None]:
        task = guarded_task(self.watch_loop(), name="loop-lag-probe", may_end=lambda: False)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def install(self, app: web.Application) -> None:
        app.router.add_get("/bench/stats", self.stats)
        app.middlewares.append(self.time_reports)
        app.cleanup_ctx.append(self.lag_probe)

    async def stats(self, request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0"))
        log = self.log
        keep = [i for i, t in enumerate(log.started) if t >= since]
        document: dict[str, Any] = {
            "clock": time.perf_counter(),
            "passes": len(keep),
            "durations": [log.durations[i] for i in keep],
            "awsCalls": [log.aws_calls[i] for i in keep],
            "protectionChanges": [log.protection_changes[i] for i in keep],
            "planSeconds": [log.plan_seconds[i] for i in keep],
            "instances": [log.instances[i] for i in keep],
            "handlerSeconds": [d for t, d in log.handled if t >= since],
            "loopLagSeconds": [d for t, d in log.lag if t >= since],
            "awsCallsByOperation": dict(self.aws.calls),
            "cloudwatchCallsByOperation": dict(self.cloudwatch.calls),
        }
        return web.json_response(document)


class _TimedAutoScaling:
    """Marks the start of a pass at its describe, then delegates to the fake."""

    def __init__(self, aws: FastAutoScaling, recorder: Recorder) -> None:
        self._aws = aws
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aws, name)

    async def describe_group(self, name: str) -> Any:
        self._recorder.describe_started()
        return await self._aws.describe_group(name)


async def run(config: Path, host: str, port: int, token: str, latency: float) -> None:
    state, loaded = load(config)
    if len(state.pools) != 1:
        raise SystemExit("the benchmark drives exactly one pool")
    spec = state.pools[0].spec
    aws = FastAutoScaling(spec.autoScalingGroupName, instances=spec.capacity.max, latency=latency)
    aws.min_size, aws.max_size = spec.capacity.min, spec.capacity.max
    cloudwatch = FastCloudWatch(latency=latency)
    recorder = Recorder(aws, cloudwatch)
    timed = _TimedAutoScaling(aws, recorder)

    async def autoscaling(region: str | None) -> AutoScaling:
        return timed

    async def cloudwatch_apis(region: str | None) -> tuple[CloudWatchApi, ScalingPolicyApi]:
        return cloudwatch, cloudwatch

    # Documents are not signed here (the load generator has no IMDS); registration's other
    # checks and every report's credential check run as in production.
    identity = IdentityOptions(certs=None, accounts=(ACCOUNT,), secret_file=None, insecure=True)
    options = RunOptions(
        config=config,
        host=host,
        port=port,
        token=token,
        dry_run=False,
        aws=AwsSettings(),
        identity=identity,
    )
    await serve(
        options,
        state,
        loaded,
        autoscaling=autoscaling,
        cloud_watch_apis=cloudwatch_apis,
        planner=recorder.plan,
        extra_steps=[recorder.end_of_pass],
        configure_app=recorder.install,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.launcher")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--aws-latency", type=float, default=0.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"set {TOKEN_ENV}", file=sys.stderr)
        return 2
    logs.configure(getattr(logging, args.log_level))
    # The "listening" event names the port taken with --listen …:0, whatever the level.
    logging.getLogger("controller.http").setLevel(min(logging.INFO, logging.root.level))
    try:
        asyncio.run(run(args.config, host, int(port), token, args.aws_latency))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

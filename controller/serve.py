"""The running controller: clients, steps, Controller, HTTP app and server, and the order of
shutdown (`python -m controller run`, docs/design.md §8)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from common.aiokits.clock import MonotonicClock
from common.aiokits.tasks import guarded_task
from common.logs import event
from controller.actuator import Actuator
from controller.aws import AwsClients, AwsSettings
from controller.cloudwatch.api import CloudWatchClients
from controller.cloudwatch.step import Apis, CloudWatchSync
from controller.demand.service import DemandSources, history_from
from controller.http.connections import HttpLimits
from controller.http.register import CredentialAuth, IdentityContext, mount
from controller.http.server import Server, ServerContext, make_app
from controller.identity import setup as identity_setup
from controller.identity.setup import IdentityOptions
from controller.loop import AutoScalingFactory, ExtraStep, Planner
from controller.planner import plan as default_planner
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.reload import ConfigWatcher
from controller.spec import DesiredState
from controller.store import ReportStore
from controller.warm_pool.step import WarmPoolApis, WarmPoolSync

log = logging.getLogger("controller")


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
        body_timeout=options.http.body_timeout,
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

"""One sandbox run: AWS emulator, real controller, simulated fleet with real agents, demand.

Order of a run: bootstrap the emulator → start the controller and wait for /status → follow the
ASGs, play the demand and refresh the view → at the end (duration, Ctrl-C, or a dead
controller) end the recordings still running, wait for every finished recording to reach the
bucket (the settle period), then stop agents, controller and emulator, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from rich.console import Console
from rich.live import Live

from common.wire import TOKEN_ENV
from controller.spec import DesiredState
from sandbox.controlplane import ControlPlane
from sandbox.demand import DayPattern, Recording
from sandbox.emulator import Emulator, bootstrap, list_keys, running_emulator
from sandbox.fake_imds import ACCOUNT
from sandbox.fleet import AgentSettings, BootDelay, SimulatedVMs
from sandbox.ledger import ActionEvent, Ledger, Summary, summarize
from sandbox.traffic import Traffic
from sandbox.view import Snapshot, render

log = logging.getLogger(__name__)

RECORDING_FILES = (".mp4", "metadata.json")
"""What Jibri leaves for each recording; a session is in the bucket when both are."""


@dataclass(frozen=True)
class Demand:
    """What the run plays: a day pattern (endless, seeded) or a fixed trace."""

    pattern: DayPattern | None = None
    trace: tuple[Recording, ...] = ()
    trace_name: str = ""

    def recordings(self, rng: random.Random) -> Iterable[Recording]:
        return self.pattern.arrivals(rng) if self.pattern is not None else self.trace

    def describe(self, elapsed: float) -> str:
        if self.pattern is not None:
            p = self.pattern
            hour = ((elapsed + p.offset) % p.day_length) / p.day_length * 24
            clock = f"{int(hour):02d}:{int(hour % 1 * 60):02d}"
            return (
                f"day pattern, a day every {p.day_length:.0f} s, now {clock}: "
                f"about {p.concurrency(elapsed):.1f} recordings at once"
            )
        upcoming = sum(1 for r in self.trace if r.start >= elapsed)
        return f"trace {self.trace_name}: {len(self.trace)} recordings, {upcoming} still to come"


@dataclass(frozen=True)
class RunOptions:
    state: DesiredState
    scaled_config: Path
    work_dir: Path
    demand: Demand
    duration: float | None
    headless: bool
    boot_delay: BootDelay = field(default_factory=BootDelay)
    seed: int = 1
    settle: float = 30.0
    bucket: str = "jibri-recordings"
    region: str = "us-east-1"
    ready_timeout: float = 60.0
    """Longest wait for the controller to answer, then for the first instances to boot."""
    progress_every: float = 10.0


def uploaded_sessions(keys: Iterable[str], sessions: set[str]) -> set[str]:
    """Sessions with every file of RECORDING_FILES under a key naming the session."""
    found: dict[str, set[str]] = {}
    for key in keys:
        *folders, name = key.split("/")
        for folder in folders:
            if folder in sessions:
                for suffix in RECORDING_FILES:
                    if name.endswith(suffix):
                        found.setdefault(folder, set()).add(suffix)
    return {s for s, files in found.items() if len(files) == len(RECORDING_FILES)}


@dataclass
class _Run:
    options: RunOptions
    console: Console
    out: TextIO
    ledger: Ledger = field(default_factory=Ledger)
    problems: list[str] = field(default_factory=list)
    phase: str = "starting"
    started_at: float | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    skip_settle: asyncio.Event = field(default_factory=asyncio.Event)
    interrupted: bool = False

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return asyncio.get_running_loop().time() - self.started_at

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            log.warning("problem: %s", text)


def _signal_handlers(run: _Run) -> Callable[[], None]:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not run.stop.is_set():
            run.interrupted = True
            run.stop.set()
        else:
            run.skip_settle.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)

    def remove() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    return remove


async def _every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; trying again", what)
        await asyncio.sleep(seconds)


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _unless_stopped(run: _Run, work: Awaitable[None]) -> bool:
    """Await `work` unless the run is stopped first; True when `work` finished."""
    task = asyncio.ensure_future(work)
    stop = asyncio.create_task(run.stop.wait())
    try:
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel([stop] if task.done() else [stop, task])
    if task.done():
        task.result()
        return True
    return False


def _snapshot(run: _Run, cp: ControlPlane, fleet: SimulatedVMs) -> Snapshot:
    ledger = run.ledger
    return Snapshot(
        elapsed=run.elapsed(),
        duration=run.options.duration,
        phase=run.phase,
        controller_url=cp.url,
        demand=run.options.demand.describe(run.elapsed()),
        requested=ledger.requested,
        served=ledger.served,
        missed=ledger.missed,
        active=ledger.active,
        finished=len(ledger.finished),
        uploaded=ledger.uploaded,
        busy_terminated=len(ledger.busy_terminations),
        instance_minutes=ledger.instance_seconds / 60.0,
        sims=fleet.views(),
        actions=tuple(ledger.recent_actions),
        status=cp.status,
        status_error=cp.status_error,
        notes=tuple(run.problems[-3:]),
    )


def progress_line(s: Snapshot) -> str:
    pools = (s.status or {}).get("pools", [])
    parts = []
    for pool in pools:
        group, counts = pool.get("autoScalingGroup", {}), pool.get("counts", {})
        states = " ".join(
            f"{k} {counts.get(k, 0)}" for k in ("idle", "starting", "busy", "draining")
        )
        parts.append(f"{pool.get('name')}: desired {group.get('desired', '-')} | {states}")
    fleet = "; ".join(parts) or (s.status_error or "no status")
    return (
        f"[{int(s.elapsed) // 60:02d}:{int(s.elapsed) % 60:02d}] {fleet} | recordings served "
        f"{s.served} missed {s.missed} now {s.active} in bucket {s.uploaded}/{s.finished}"
    )


async def _settle(run: _Run, emulator: Emulator) -> None:
    """Wait until every finished recording is in the bucket, or the settle period ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + run.options.settle
    while True:
        await _check_bucket(run, emulator)
        waiting = run.ledger.not_uploaded()
        if not waiting or loop.time() >= deadline or run.skip_settle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.skip_settle.wait(), timeout=1.0)


async def _check_bucket(run: _Run, emulator: Emulator) -> None:
    sessions = {r.session for r in run.ledger.finished if not r.uploaded}
    if not sessions:
        return
    keys = await asyncio.to_thread(list_keys, emulator, run.options.bucket)
    run.ledger.mark_uploaded(uploaded_sessions(keys, sessions))


async def _main_phase(run: _Run, cp: ControlPlane, traffic: Traffic) -> None:
    """Play the demand until the duration is over, the user stops, or the controller dies."""
    options = run.options
    demand = asyncio.create_task(
        traffic.play(options.demand.recordings(random.Random(options.seed)), options.duration),
        name="demand",
    )
    waits: list[asyncio.Task[Any]] = [asyncio.create_task(run.stop.wait(), name="stop")]
    if options.duration is not None:
        waits.append(asyncio.create_task(asyncio.sleep(options.duration), name="duration"))

    waits.append(asyncio.create_task(cp.wait_exit(), name="controller-exit"))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel([*waits, demand])
    if cp.exited is not None:
        run.problem(f"the controller exited with code {cp.exited} during the run")


async def _run(run: _Run, emulator: Emulator, show: Callable[[Snapshot], None]) -> None:
    options = run.options
    await asyncio.to_thread(bootstrap, emulator, options.state, options.bucket)
    rng = random.Random(options.seed)
    token = secrets.token_urlsafe(24)
    fleet = SimulatedVMs(
        emulator=emulator,
        state=options.state,
        work_dir=options.work_dir,
        agents=AgentSettings(
            controller_url=lambda: cp.url, bucket=options.bucket, region=options.region
        ),
        env={**emulator.env(), TOKEN_ENV: token},
        boot_delay=options.boot_delay,
        rng=rng,
        ledger=run.ledger,
        clock=lambda: asyncio.get_running_loop().time(),
        on_problem=run.problem,
    )

    def on_action(event: ActionEvent) -> None:
        run.ledger.action(event)
        fleet.on_action(event)

    # The VMs' identity documents are signed by the fleet's test key; the controller trusts
    # its certificate the way it trusts AWS's (docs/identity.md).
    certs = fleet.authority.write_certificate(options.work_dir / "identity-certs").parent
    cp = ControlPlane(
        config=options.scaled_config,
        token=token,
        env=emulator.env(),
        extra_args=("--identity-certs", str(certs), "--identity-account", ACCOUNT),
        log_path=options.work_dir / "controller.log",
        on_action=on_action,
        on_problem=run.problem,
        at=lambda wall: run.elapsed() - (time.time() - wall),
    )
    traffic = Traffic(
        fleet=fleet, ledger=run.ledger, rng=rng, elapsed=run.elapsed, on_problem=run.problem
    )
    background: list[asyncio.Task[Any]] = []
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:

            async def refresh() -> None:
                show(_snapshot(run, cp, fleet))

            background = [asyncio.create_task(_every(1.0, refresh, "view"), name="view")]
            run.phase = "starting the controller"
            await cp.start()
            # The controller binds port 0: the agents learn its URL once it says where it
            # listens. The first instances boot while it starts up, as they would in AWS.
            if not await _unless_stopped(run, cp.wait_listening(options.ready_timeout)):
                return
            background.append(
                asyncio.create_task(_every(1.0, fleet.sync, "following the ASG"), name="fleet")
            )
            if not await _unless_stopped(run, cp.wait_ready(session, options.ready_timeout)):
                return
            background += [
                asyncio.create_task(_every(1.0, lambda: cp.poll(session), "status"), name="status"),
                asyncio.create_task(
                    _every(2.0, lambda: _check_bucket(run, emulator), "bucket"), name="bucket"
                ),
            ]
            run.phase = "booting the first instances"
            if not await _unless_stopped(run, fleet.wait_booted(options.ready_timeout)):
                return
            run.ledger.begin()
            run.started_at = asyncio.get_running_loop().time()
            run.phase = "running"
            if options.headless:
                print(
                    f"controller {cp.url}   status {cp.url}/status   metrics {cp.url}/metrics",
                    file=run.out,
                    flush=True,
                )
            await _main_phase(run, cp, traffic)
            run.phase = "ending recordings"
            await traffic.end_all(grace=30.0)
            run.phase = "waiting for uploads (Ctrl-C to skip)"
            await _settle(run, emulator)
            if run.skip_settle.is_set() and run.ledger.not_uploaded():
                run.problem("stopped before every finished recording was seen in the bucket")
            show(_snapshot(run, cp, fleet))
        finally:
            run.phase = "stopping"
            await _cancel(background)
            await traffic.cancel()
            await fleet.close()
            await cp.stop()


async def run_sandbox(options: RunOptions, console: Console, out: TextIO) -> tuple[Summary, bool]:
    """Run the sandbox to its end; return the summary and whether Ctrl-C ended it.

    Children are always stopped, whatever ends the run.
    """
    run = _Run(options, console, out)
    remove_handlers = _signal_handlers(run)
    try:
        with running_emulator(options.region) as emulator:
            if options.headless:
                shown = -1.0

                def show(snapshot: Snapshot) -> None:
                    nonlocal shown
                    if snapshot.elapsed - shown >= options.progress_every:
                        shown = snapshot.elapsed
                        print(progress_line(snapshot), file=out, flush=True)

                await _run(run, emulator, show)
            else:
                with Live(console=console, auto_refresh=False, transient=False) as live:

                    def show(snapshot: Snapshot) -> None:
                        live.update(render(snapshot), refresh=True)

                    await _run(run, emulator, show)
    finally:
        remove_handlers()
    return summarize(run.ledger, run.elapsed(), run.problems), run.interrupted

"""The reconcile loop: one guarded task per pool, each running observe → plan → act.

A pool reconciles every `spec.resync`, sooner when the plan asks (`requeue_after`), and as
soon as it may when the server reports that an instance's state changed (`trigger`). Triggers
arriving during a pass coalesce into one more pass, and a pass starts at least `min_pass_gap`
after the previous one ended, so a steady stream of changes costs a few passes a second, not
back-to-back passes (a spec change or a stop does not wait). The loop alone owns backoff: a
failed pass waits a capped, jittered exponential delay, a successful one resets it, and one
failing pool never holds up the others.

The event loop also serves the agents' reports, so a pass keeps off it whatever grows with the
pool: `observe` folds the ASG view into the pool's memory and the report store on the loop
(the server mutates both) and hands back an immutable snapshot, and the planner runs on that
snapshot in a worker thread.

Extra steps: `Controller(extra_steps=[...])` takes async callables `step(pool, observed,
plan)` that run after every pass's actions (also when an action failed, and in dry-run mode,
so a step must honour dry-run itself). They are for per-pool side work such as publishing
CloudWatch metrics. A step's failure is logged, counted in reconcile_errors_total and shown in
/status, but does not fail the pass: scaling must not wait on side work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from common.logs import event
from controller.actuator import ActuationError, Actuator
from controller.aws import AutoScaling, AwsError
from controller.model import InstanceState, Observed, Plan
from controller.observe import PoolMemory, observe, read_group
from controller.planner import plan as default_planner
from controller.prometheus import Metrics
from controller.spec import DesiredState, JibriPool, PoolSpec
from controller.store import ReportStore

log = logging.getLogger("controller.loop")

ExtraStep = Callable[[JibriPool, Observed, Plan], Awaitable[None]]
AutoScalingFactory = Callable[[str | None], Awaitable[AutoScaling]]
Planner = Callable[[PoolSpec, Observed, float], Plan]

UNMANAGED_TTL_STALE_AFTERS = 3
"""Held reports of ids in no ASG are dropped after this many staleAfter periods."""
MIN_PASS_GAP = 0.25
"""Seconds from the end of one pass of a pool to the start of the next, unless the spec
changed: reports arriving meanwhile fold into one pass. It bounds a large, busy fleet's cost
while keeping report-to-decision latency well under a second."""


def guarded_task(
    coro: Coroutine[Any, Any, None], *, name: str, may_end: Callable[[], bool]
) -> asyncio.Task[None]:
    """Start a named task meant to run until cancelled, and log if it stops on its own."""

    def _done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            event(log, "task has failed", level=logging.ERROR, task=name, error=repr(exc))
            log.error("task %s traceback", name, exc_info=exc)
        elif not may_end():
            event(log, "task finished unexpectedly", level=logging.ERROR, task=name)

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_done)
    return task


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (each delay drawn from its upper half)."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int, draw: float) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return ceiling * (0.5 + 0.5 * draw)


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, AwsError | ActuationError):
        return exc.kind
    return "internal"


def error_text(exc: BaseException) -> str:
    return str(exc) or repr(exc)


class PoolRunner:
    """One pool's loop and what /status and /healthz need to know about it."""

    def __init__(self, pool: JibriPool, controller: Controller, *, started_at: float) -> None:
        self.pool = pool
        self.memory = PoolMemory(started_at=started_at)
        self.added_at = started_at
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self.failures = 0
        self.step_errors: dict[str, str] = {}
        self.observed: Observed | None = None
        self.plan: Plan | None = None
        self._controller = controller
        self._triggered_at: float | None = None
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._stopping = False
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def triggered_at(self) -> float | None:
        """Receive time of the earliest report waiting for a pass, if any."""
        return self._triggered_at

    def start(self) -> None:
        self.task = guarded_task(
            self.run(), name=f"reconcile:{self.name}", may_end=lambda: self._stopping
        )

    def trigger(self, received_at: float) -> None:
        """Ask for a pass at once, remembering the earliest report that asked."""
        if self._triggered_at is None or received_at < self._triggered_at:
            self._triggered_at = received_at
        self._wake.set()

    def kick(self) -> None:
        """Ask for a pass at once, even while backing off (the spec changed)."""
        self._kick.set()
        self._wake.set()

    def stop(self) -> None:
        """Finish the pass under way, if any, then end."""
        self._stopping = True
        self.kick()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            delay = await self.step()
            gap_ends = loop.time() + self._controller.min_pass_gap
            # Reports must not cut a backoff short; a spec change may.
            await self._sleep(delay, self._wake if self.failures == 0 else self._kick)
            await self._sleep(gap_ends - loop.time(), self._kick)

    async def step(self) -> float:
        """One pass with its bookkeeping; return the seconds to wait before the next one."""
        try:
            delay = await self.reconcile_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            return self._controller.backoff_delay(self.failures)
        self._succeeded()
        return delay

    async def _sleep(self, delay: float, interrupt: asyncio.Event) -> None:
        if self._stopping or delay <= 0 or interrupt.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupt.wait(), timeout=delay)

    async def reconcile_once(self) -> float:
        """Observe, plan and act once; return the seconds until the next pass, or raise."""
        c = self._controller
        triggered_at, self._triggered_at = self._triggered_at, None
        self._wake.clear()
        self._kick.clear()
        spec = self.pool.spec
        started = c.clock()
        autoscaling = await c.autoscaling(spec.region)
        view, hooks = await read_group(spec, autoscaling)
        now = c.clock()
        observed = observe(
            view,
            hooks,
            c.store,
            self.memory,
            now,
            unmanaged_ttl=UNMANAGED_TTL_STALE_AFTERS * spec.instances.staleAfter,
            wall_time=c.wall_clock(),
        )
        # `observed` is a snapshot the server no longer touches: safe to plan on in a thread.
        plan, counts = await asyncio.to_thread(_decide, c.planner, spec, observed, now)
        self.observed, self.plan = observed, plan
        for state, count in counts.items():
            c.metrics.pool_instances.labels(self.name, state.value).set(count)
        c.metrics.pool_desired_capacity.labels(self.name).set(plan.desired_capacity)
        if plan.target_free is not None:
            c.metrics.pool_target_free.labels(self.name).set(plan.target_free)
        try:
            await c.actuator.execute(
                self.name,
                spec.autoScalingGroupName,
                plan,
                autoscaling=autoscaling,
                memory=self.memory,
                now=now,
                triggered_at=triggered_at,
            )
        finally:
            await self._run_extra_steps(observed, plan)
            c.metrics.reconcile_duration_seconds.labels(self.name).observe(c.clock() - started)
        return min(spec.resync, plan.requeue_after)

    async def _run_extra_steps(self, observed: Observed, plan: Plan) -> None:
        for step in self._controller.extra_steps:
            step_name = getattr(step, "__name__", type(step).__name__)
            try:
                await step(self.pool, observed, plan)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = error_kind(exc)
                self._controller.metrics.reconcile_errors_total.labels(self.name, kind).inc()
                self.step_errors[step_name] = error_text(exc)
                event(
                    log,
                    "extra step failed",
                    level=logging.WARNING,
                    pool=self.name,
                    step=step_name,
                    kind=kind,
                    error=self.step_errors[step_name],
                    exc_info=exc if kind == "internal" else False,
                )
            else:
                self.step_errors.pop(step_name, None)

    def _succeeded(self) -> None:
        c = self._controller
        if self.failures:
            event(log, "reconcile recovered", pool=self.name, after_failures=self.failures)
        self.failures = 0
        self.last_error = self.last_error_kind = None
        self.last_success_at = c.clock()
        c.metrics.last_reconcile_success_timestamp_seconds.labels(self.name).set(c.wall_clock())

    def _failed(self, exc: Exception) -> None:
        kind = error_kind(exc)
        self.failures += 1
        self.last_error, self.last_error_kind = error_text(exc), kind
        self._controller.metrics.reconcile_errors_total.labels(self.name, kind).inc()
        event(
            log,
            "reconcile failed",
            level=logging.WARNING,
            pool=self.name,
            kind=kind,
            error=self.last_error,
            failures=self.failures,
            exc_info=exc if kind == "internal" else False,
        )


def _decide(
    planner: Planner, spec: PoolSpec, observed: Observed, now: float
) -> tuple[Plan, dict[InstanceState, int]]:
    """The plan and its state counts, computed together off the event loop."""
    plan = planner(spec, observed, now)
    return plan, plan.counts()


class Controller:
    """All pools of the desired state, their loops, and hot reload of that state."""

    def __init__(
        self,
        *,
        state: DesiredState,
        store: ReportStore,
        metrics: Metrics,
        autoscaling: AutoScalingFactory,
        actuator: Actuator,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        planner: Planner = default_planner,
        extra_steps: Sequence[ExtraStep] = (),
        backoff: Backoff = Backoff(),
        draw: Callable[[], float] = random.random,
        stop_grace: float = 10.0,
        min_pass_gap: float = MIN_PASS_GAP,
    ) -> None:
        self.state = state
        self.store = store
        self.metrics = metrics
        self.autoscaling = autoscaling
        self.actuator = actuator
        self.clock = clock
        self.wall_clock = wall_clock
        self.planner = planner
        self.extra_steps = tuple(extra_steps)
        self.backoff = backoff
        self._draw = draw
        self.stop_grace = stop_grace
        self.min_pass_gap = min_pass_gap
        self.started_at = clock()
        self.pools: dict[str, PoolRunner] = {}

    def backoff_delay(self, failures: int) -> float:
        return self.backoff.delay(failures, self._draw())

    def start(self) -> None:
        for pool in self.state.pools:
            self._add(pool)

    def owner(self, instance_id: str) -> PoolRunner | None:
        """The pool whose ASG holds `instance_id`, if any."""
        for runner in self.pools.values():
            if runner.memory.owns(instance_id):
                return runner
        return None

    async def apply(self, state: DesiredState) -> None:
        """Make a new desired state take effect: add, change and remove pools in place."""
        wanted = {pool.name: pool for pool in state.pools}
        for name, runner in list(self.pools.items()):
            new = wanted.get(name)
            if new is None or _placement(new) != _placement(runner.pool):
                await self._remove(name)
        for pool in state.pools:
            existing = self.pools.get(pool.name)
            if existing is None:
                self._add(pool)
            elif existing.pool != pool:
                existing.pool = pool
                self.metrics.set_pool(pool)
                existing.kick()
                event(log, "pool changed", pool=pool.name)
        self.pools = {name: self.pools[name] for name in wanted}
        self.state = state

    def _add(self, pool: JibriPool) -> None:
        self.metrics.set_pool(pool)
        runner = PoolRunner(pool, self, started_at=self.clock())
        self.pools[pool.name] = runner
        runner.start()
        event(log, "pool added", pool=pool.name, group=pool.spec.autoScalingGroupName)

    async def _remove(self, name: str) -> None:
        runner = self.pools.pop(name)
        await _stop_runners([runner], self.stop_grace)
        self.store.release(list(runner.memory.first_seen))
        self.metrics.remove_pool(name)
        event(log, "pool removed", pool=name)

    async def stop(self) -> None:
        """Let passes under way finish (up to `stop_grace` seconds), then cancel the rest."""
        await _stop_runners(list(self.pools.values()), self.stop_grace)


async def _stop_runners(runners: Sequence[PoolRunner], grace: float) -> None:
    for runner in runners:
        runner.stop()
    tasks = [runner.task for runner in runners if runner.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _placement(pool: JibriPool) -> tuple[str, str | None]:
    """What identifies the instances a pool manages; a change makes it a different pool."""
    return pool.spec.autoScalingGroupName, pool.spec.region

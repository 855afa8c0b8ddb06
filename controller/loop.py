"""The reconcile loop: one guarded task per pool, each running observe → plan → act.

A pool reconciles every `spec.resync`, sooner when the plan asks (`requeue_after`), and as
soon as it may when the server reports that an instance's state changed (`trigger`). Triggers
arriving during a pass coalesce into one more pass, and a pass starts at least `min_pass_gap`
after the previous one ended, so a steady stream of changes costs a few passes a second, not
back-to-back passes (a spec change or a stop does not wait). The loop alone owns backoff: a
failed pass waits a capped, jittered exponential delay, a successful one resets it, and one
failing pool never holds up the others.

The event loop also serves the agents' reports, so a pass keeps off it whatever grows with the
pool: `observe` folds the ASG view into the pool's memory on the loop (the server writes the
report store it reads) and hands back an immutable snapshot, and the planner runs on that
snapshot in a worker thread. Every wait is a sleep on the injected `Clock`, so tests drive the
loop with a manual clock. At the end of each pass the runner publishes a frozen `PoolSnapshot`,
which is all /status and /healthz read of a pool.

Extra steps: `Controller(extra_steps=[...])` takes async callables `step(pool, observed,
plan)` that run after every pass's actions (also when an action failed, and in dry-run mode,
so a step must honour dry-run itself). They are for per-pool side work such as publishing
CloudWatch metrics. A step's failure is logged, counted in reconcile_errors_total and shown in
/status, but does not fail the pass: scaling must not wait on side work. A step with something
to show in /status is also given as a `StatusSource`.

Readiness (docs/readiness.md): each runner keeps the pool's demand (`PoolDemand`), which puts
the readiness target into the observation before the plan and records the plan's instance
states as demand after it; its CloudWatch and jicofo tasks end with the runner.

The all-pools `Controller` (hot reload, report intake) is in controller/pools.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from common.aiokits.tasks import guarded_task
from common.logs import event
from controller.actuation import ActuationStatus
from controller.actuator import ActuationError
from controller.aws import AutoScaling, AwsError, TerminationHook
from controller.demand.service import PoolDemand
from controller.fleet.launches_step import LaunchTracker
from controller.fleet.rollout_step import RolloutTracker
from controller.model import AsgView, InstanceState, Observed, Plan
from controller.observe import PoolMemory, observe, read_group
from controller.spec import JibriPool, PoolSpec
from controller.store import ReportStore

if TYPE_CHECKING:
    from controller.pools import Controller

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


class StatusSource(Protocol):
    """A part of the controller (an extra step) with per-pool state to show in /status."""

    @property
    def status_key(self) -> str:
        """The key of its block in each pool's /status document."""
        ...

    def pool_status(self, name: str) -> dict[str, Any] | None: ...


class PlanInput(Protocol):
    """An extra step that adds to what the planner sees (the warm-pool step: Observed.warm);
    given to the Controller as `plan_inputs` as well as in `extra_steps`."""

    def before_plan(self, spec: PoolSpec, observed: Observed, name: str) -> Observed: ...


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class PoolSnapshot:
    """One pool as its last pass left it: what /status and /healthz show. Immutable; the
    runner replaces it at the end of every pass (and when the pool's spec changes)."""

    pool: JibriPool
    added_at: float
    observed: Observed | None = None
    plan: Plan | None = None
    drain_requested: frozenset[str] = frozenset()
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    failures: int = 0
    step_errors: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def name(self) -> str:
        return self.pool.name


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (each delay drawn from its upper half)."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int, draw: float) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return ceiling * (0.5 + 0.5 * draw)


DEFAULT_BACKOFF = Backoff()


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, AwsError | ActuationError):
        return exc.kind
    return "internal"


def error_text(exc: BaseException) -> str:
    return str(exc) or repr(exc)


class PoolRunner:
    """One pool's loop, its memory and what the actuator recorded, and its latest snapshot."""

    def __init__(self, pool: JibriPool, controller: Controller, *, started_at: float) -> None:
        self.memory = PoolMemory(started_at=started_at)
        self.actuation = ActuationStatus()
        self.launches = LaunchTracker(pool.name, controller.metrics)
        self.rollout = RolloutTracker(pool.name)
        self.snapshot = PoolSnapshot(pool, added_at=started_at)
        self.demand = PoolDemand(
            pool.name,
            sources=controller.demand,
            metrics=controller.metrics,
            clock=controller.clock,
            wall_clock=controller.wall_clock,
        )
        self.failures = 0
        self.step_errors: dict[str, str] = {}
        self._pool = pool
        self._controller = controller
        self._triggered_at: float | None = None
        self._observed: Observed | None = None
        self._plan: Plan | None = None
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._stopping = False
        self.task: asyncio.Task[None] | None = None

    @property
    def pool(self) -> JibriPool:
        return self._pool

    @pool.setter
    def pool(self, pool: JibriPool) -> None:
        self._pool = pool
        self.snapshot = replace(self.snapshot, pool=pool)

    @property
    def name(self) -> str:
        return self._pool.name

    @property
    def last_success_at(self) -> float | None:
        return self.snapshot.last_success_at

    @property
    def last_error(self) -> str | None:
        return self.snapshot.last_error

    @property
    def last_error_kind(self) -> str | None:
        return self.snapshot.last_error_kind

    @property
    def triggered_at(self) -> float | None:
        """Receive time of the earliest report waiting for a pass, if any."""
        return self._triggered_at

    def start(self) -> None:
        self.demand.update(self._pool.spec)
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
        clock = self._controller.clock
        try:
            while not self._stopping:
                delay = await self.step()
                gap_ends = clock.now() + self._controller.min_pass_gap
                # Reports must not cut a backoff short; a spec change may.
                if not self._stopping:
                    await clock.sleep(delay, self._wake if self.failures == 0 else self._kick)
                if not self._stopping:
                    await clock.sleep(gap_ends - clock.now(), self._kick)
        finally:
            await self.demand.close()

    async def step(self) -> float:
        """One pass with its bookkeeping; return the seconds to wait before the next one."""
        try:
            delay = await self.reconcile_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            delay = self._controller.backoff_delay(self.failures)
        else:
            self._succeeded()
        self._publish()
        return delay

    async def reconcile_once(self) -> float:
        """Observe, plan and act once; return the seconds until the next pass, or raise."""
        c = self._controller
        triggered_at, self._triggered_at = self._triggered_at, None
        self._wake.clear()
        self._kick.clear()
        spec = self._pool.spec
        started = c.clock.now()
        autoscaling = await c.autoscaling(spec.region)
        view, hooks = await read_group(spec, autoscaling)
        now = c.clock.now()
        observed = observe_pool(
            view,
            hooks,
            c.store,
            self.memory,
            self.actuation,
            now,
            unmanaged_ttl=UNMANAGED_TTL_STALE_AFTERS * spec.instances.staleAfter,
            wall_time=c.wall_clock(),
        )
        observed = self.demand.before_plan(spec, observed)
        group = spec.autoScalingGroupName
        observed = await self.launches.observe(autoscaling, group, observed, now, c.wall_clock())
        dry_run = c.actuator.dry_run
        observed = await self.rollout.observe(autoscaling, spec, observed, now, dry_run=dry_run)
        for extra in c.plan_inputs:
            observed = extra.before_plan(spec, observed, self.name)
        # `observed` is a snapshot the server no longer touches: safe to plan on in a thread.
        plan, counts = await asyncio.to_thread(_decide, c.planner, spec, observed, now)
        self._observed, self._plan = observed, plan
        self.demand.after_plan(spec, observed, plan, now)
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
                actuation=self.actuation,
                now=now,
                triggered_at=triggered_at,
            )
        finally:
            await self._run_extra_steps(observed, plan)
            c.metrics.reconcile_duration_seconds.labels(self.name).observe(c.clock.now() - started)
        return min(spec.resync, plan.requeue_after)

    async def _run_extra_steps(self, observed: Observed, plan: Plan) -> None:
        for step in self._controller.extra_steps:
            step_name = getattr(step, "__name__", type(step).__name__)
            try:
                await step(self._pool, observed, plan)
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

    def _publish(self) -> None:
        """Replace the snapshot with what the last pass left (a failed pass may keep the plan
        of an earlier one)."""
        self.snapshot = replace(
            self.snapshot,
            pool=self._pool,
            observed=self._observed,
            plan=self._plan,
            drain_requested=frozenset(self.actuation.drain_requested),
            failures=self.failures,
            step_errors=MappingProxyType(dict(self.step_errors)),
        )

    def _succeeded(self) -> None:
        c = self._controller
        if self.failures:
            event(log, "reconcile recovered", pool=self.name, after_failures=self.failures)
        self.failures = 0
        self.snapshot = replace(
            self.snapshot, last_success_at=c.clock.now(), last_error=None, last_error_kind=None
        )
        c.metrics.last_reconcile_success_timestamp_seconds.labels(self.name).set(c.wall_clock())

    def _failed(self, exc: Exception) -> None:
        kind = error_kind(exc)
        self.failures += 1
        text = error_text(exc)
        self.snapshot = replace(self.snapshot, last_error=text, last_error_kind=kind)
        self._controller.metrics.reconcile_errors_total.labels(self.name, kind).inc()
        event(
            log,
            "reconcile failed",
            level=logging.WARNING,
            pool=self.name,
            kind=kind,
            error=text,
            failures=self.failures,
            exc_info=exc if kind == "internal" else False,
        )


def observe_pool(
    view: AsgView,
    hooks: Sequence[TerminationHook],
    store: ReportStore,
    memory: PoolMemory,
    actuation: ActuationStatus,
    now: float,
    *,
    unmanaged_ttl: float,
    wall_time: float | None = None,
) -> Observed:
    """Observe a pool, then settle what the observation found: the reports and actuation
    records of instances that left are released, held reports of new members adopted, and
    held reports of ids in no group dropped once older than `unmanaged_ttl`."""
    observation = observe(view, hooks, store.get, memory, actuation, now, wall_time=wall_time)
    store.settle(observation.present, observation.departed, unmanaged_before=now - unmanaged_ttl)
    actuation.forget(observation.departed)
    return observation.observed


def _decide(
    planner: Planner, spec: PoolSpec, observed: Observed, now: float
) -> tuple[Plan, dict[InstanceState, int]]:
    """The plan and its state counts, computed together off the event loop."""
    plan = planner(spec, observed, now)
    return plan, plan.counts()

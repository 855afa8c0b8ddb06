"""The CloudWatch side of a pool, run after each reconcile pass: publish the pool gauges, keep
the declared alarms and the fallback scaling policy as the spec says, and remember each alarm's
state for /status.

`CloudWatchSync` is the loop's extra step. It hands the pass to a per-pool worker task and
returns at once, so a slow or failing CloudWatch never delays scaling: the worker takes the
latest pass (bursts coalesce), runs at most once per `min_interval`, and syncs alarms when the
spec changed or every `resync`. Failures are logged, counted and retried on a later round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import Counter

from common.aiokits.tasks import PacedWorker
from common.logs import event
from controller.aws import AwsError
from controller.cloudwatch.alarm_sync import AlarmMemory, AlarmSync
from controller.cloudwatch.api import CloudWatchApi, ScalingPolicyApi
from controller.cloudwatch.datapoints import batches, pool_data
from controller.model import Observed, Plan
from controller.prometheus import PREFIX, Metrics
from controller.spec import JibriPool
from controller.spec import cloudwatch as cw_names

log = logging.getLogger("controller.cloudwatch.step")

Apis = Callable[[str | None], Awaitable[tuple[CloudWatchApi, ScalingPolicyApi]]]

STEPS: Final = ("metrics", "alarms", "fallback-scaling")
CHANGES: Final = (
    ("alarm", "create"),
    ("alarm", "update"),
    ("alarm", "delete"),
    ("alarm", "adopt"),
    ("policy", "create"),
    ("policy", "update"),
    ("policy", "delete"),
)


class CloudWatchMetrics:
    """Our own series, on the controller's registry, initialised per pool."""

    def __init__(self, metrics: Metrics) -> None:
        self.base = metrics
        self.errors_total = Counter(
            f"{PREFIX}_cloudwatch_errors",
            "Failed CloudWatch steps (retried on a later pass) by step.",
            ["pool", "step"],
            registry=metrics.registry,
        )
        self.changes_total = Counter(
            f"{PREFIX}_cloudwatch_changes",
            "Alarms and scaling policies written (or, in dry-run mode, planned) by change.",
            ["pool", "object", "change"],
            registry=metrics.registry,
        )

    def add_pool(self, name: str) -> None:
        for step in STEPS:
            self.errors_total.labels(name, step)
        for obj, change in CHANGES:
            self.changes_total.labels(name, obj, change)

    def remove_pool(self, name: str) -> None:
        for step in STEPS:
            with contextlib.suppress(KeyError):
                self.errors_total.remove(name, step)
        for obj, change in CHANGES:
            with contextlib.suppress(KeyError):
                self.changes_total.remove(name, obj, change)


@dataclass
class _Pool:
    """What the worker of one pool keeps between passes."""

    pool: JibriPool
    worker: PacedWorker
    pending: tuple[JibriPool, Plan] | None = None
    published_at: float | None = None
    synced_at: float | None = None
    synced: JibriPool | None = None
    alarms: AlarmMemory = field(default_factory=AlarmMemory)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self.worker.task


class CloudWatchSync:
    """The per-pool CloudWatch step (see the module docstring), and a `StatusSource` for the
    `cloudWatch` block of /status."""

    status_key: Final = "cloudWatch"

    def __init__(
        self,
        *,
        apis: Apis,
        metrics: Metrics,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        min_interval: float = 1.0,
    ) -> None:
        self._apis = apis
        self._metrics = CloudWatchMetrics(metrics)
        self._alarms = AlarmSync(changes=self._metrics.changes_total, dry_run=dry_run)
        self._dry_run = dry_run
        self._clock = clock
        self._wall_clock = wall_clock
        self._min_interval = min_interval
        self._pools: dict[str, _Pool] = {}
        self._closing = False

    async def __call__(self, pool: JibriPool, observed: Observed, plan: Plan) -> None:
        """Hand this pass over to the pool's worker; never waits on CloudWatch."""
        state = self._state(pool)
        state.pending = (pool, plan)
        state.worker.wake()

    def _state(self, pool: JibriPool) -> _Pool:
        state = self._pools.get(pool.name)
        if state is None:
            worker = PacedWorker(
                f"cloudwatch:{pool.name}",
                lambda: self._pending_round(pool.name),
                clock=self._clock,
                min_interval=self._min_interval,
                may_end=lambda: self._closing,
            )
            state = self._pools[pool.name] = _Pool(pool, worker)
            self._metrics.add_pool(pool.name)
        return state

    async def _pending_round(self, name: str) -> None:
        state = self._pools.get(name)
        if state is not None and state.pending is not None:
            (pool, plan), state.pending = state.pending, None
            await self._round(state, pool, plan)

    async def run_once(self, pool: JibriPool, plan: Plan) -> None:
        """One round for `plan`, here and now rather than on the worker."""
        await self._round(self._state(pool), pool, plan)

    async def _round(self, state: _Pool, pool: JibriPool, plan: Plan) -> None:
        state.pool = pool
        try:
            cloudwatch, policies = await self._apis(pool.spec.region)
        except Exception as exc:
            self._report(state, "metrics", exc)
            return
        if pool.spec.cloudWatch.publishMetrics:
            await self._guarded(state, "metrics", self._publish(state, pool, plan, cloudwatch))
        now = self._clock()
        due = state.synced_at is None or now - state.synced_at >= pool.spec.resync
        if due or state.synced != pool:
            state.synced, state.synced_at = pool, now
            await self._guarded(
                state,
                "alarms",
                self._alarms.sync(
                    pool,
                    state.alarms,
                    cloudwatch,
                    policies,
                    lambda step, exc: self._report(state, step, exc),
                ),
            )

    async def _guarded(self, state: _Pool, step: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report(state, step, exc)
        else:
            self._report(state, step, None)

    def _report(self, state: _Pool, step: str, exc: Exception | None) -> None:
        if exc is None:
            state.errors.pop(step, None)
            return
        kind = exc.kind if isinstance(exc, AwsError) else "internal"
        message = str(exc) or repr(exc)
        state.errors[step] = message
        name = state.pool.name
        self._metrics.errors_total.labels(name, step).inc()
        self._metrics.base.reconcile_errors_total.labels(name, kind).inc()
        event(
            log,
            "cloudwatch step failed",
            level=logging.WARNING,
            pool=name,
            step=step,
            kind=kind,
            error=message,
            exc_info=exc if kind == "internal" else False,
        )

    async def _publish(
        self, state: _Pool, pool: JibriPool, plan: Plan, cloudwatch: CloudWatchApi
    ) -> None:
        settings = pool.spec.cloudWatch
        data = pool_data(
            plan.counts(),
            pool.spec.autoScalingGroupName,
            now=self._wall_clock(),
            storage_resolution=settings.storageResolution,
        )
        if not data or self._dry_run:
            return
        for request in batches(settings.namespace, data):
            await cloudwatch.put_metric_data(settings.namespace, request)
        state.published_at = self._wall_clock()

    def pool_status(self, name: str) -> dict[str, Any] | None:
        """The /status block of a pool: alarms as last read, policy, publishing, errors."""
        state = self._pools.get(name)
        if state is None:
            return None
        settings = state.pool.spec.cloudWatch
        return {
            "namespace": settings.namespace,
            "publishMetrics": settings.publishMetrics,
            "lastPublishedAt": _iso(state.published_at),
            "lastAlarmSyncAgeSeconds": None
            if state.synced_at is None
            else round(self._clock() - state.synced_at, 3),
            "alarms": [
                {
                    "name": a.name,
                    "role": a.role,
                    "state": a.state,
                    "reason": a.reason,
                    "updatedAt": a.updated_at,
                    "corrected": list(a.corrected),
                }
                for a in state.alarms.alarms
            ],
            "fallbackScaling": None
            if settings.fallbackScaling is None
            else {"policyName": cw_names.FALLBACK_POLICY, "policyArn": state.alarms.policy_arn},
            "errors": dict(sorted(state.errors.items())),
        }

    async def retain(self, pools: Collection[str]) -> None:
        """Stop the workers of pools that left the desired state, and drop their series."""
        for name in [n for n in self._pools if n not in pools]:
            state = self._pools.pop(name)
            await state.worker.stop()
            self._metrics.remove_pool(name)

    async def close(self) -> None:
        """Stop every worker (a round under way is abandoned; the next start redoes it)."""
        self._closing = True
        for state in self._pools.values():
            await state.worker.stop()


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))

"""The warm-pool step (docs/warm-pools.md): keep the group's warm pool as spec.warmPool says,
measure warm starts, and hand the planner the warmed instances it may count on.

`WarmPoolSync` is an extra step of the loop, shaped like the CloudWatch step: each pass hands
it the pool and returns at once; a per-pool worker reads DescribeWarmPool at most once per
`min_interval` and writes PutWarmPool or DeleteWarmPool when the warm pool is missing, drifted
or no longer wanted. A slow or failing AWS never delays scaling; failures are logged, counted
and shown in /status, and retried on the next round. Before each plan, `before_plan` puts the
last read count of warmed instances and their measured start time into `Observed.warm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Final

from prometheus_client import Counter, Gauge

from common.aiokits.tasks import PacedWorker
from common.logs import event
from controller.aws import AwsError
from controller.model import AsgInstance, InstanceState, Observed, Plan
from controller.prometheus import PREFIX, Metrics
from controller.spec import JibriPool, PoolSpec
from controller.warm_pool.api import WarmPoolApi, WarmPoolView
from controller.warm_pool.rules import (
    OWNER_TAG,
    TERMINATING_WAIT,
    Change,
    Decision,
    WarmCapacity,
    WarmStarts,
    decide,
    desired_config,
    warm_count,
)

log = logging.getLogger("controller.warm_pool.rules")

WarmPoolApis = Callable[[str | None], Awaitable[WarmPoolApi]]
MIN_INTERVAL: Final = 5.0
"""Seconds between two reads of a pool's warm pool (a page of 50 instances per call)."""
UNWANTED_INTERVAL: Final = 600.0
"""Seconds between two reads for a pool without warmPool (and on each spec change): enough to
delete a warm pool the spec dropped while the controller was down, at a trickle of calls."""


@dataclass
class _Pool:
    pool: JibriPool
    worker: PacedWorker | None = None
    """Started by the first pass; run_once alone needs none."""
    view: WarmPoolView | None = None
    read_at: float | None = None
    decision: Decision | None = None
    changed_at: float | None = None
    starts: WarmStarts = field(default_factory=WarmStarts)
    released: set[str] = field(default_factory=set)
    spec: PoolSpec | None = None
    """The spec of the last round."""
    """Warmed instances whose termination hooks this step completed."""
    error: str | None = None


class WarmPoolSync:
    """The per-pool warm-pool step, a `StatusSource` for the `warmPool` block of /status, and
    the source of `Observed.warm`."""

    status_key: Final = "warmPool"

    def __init__(
        self,
        *,
        apis: WarmPoolApis,
        metrics: Metrics,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        self._apis = apis
        self._dry_run = dry_run
        self._clock = clock
        self._min_interval = min_interval
        self.base = metrics
        self._changes = Counter(
            f"{PREFIX}_warm_pool_changes",
            "Warm-pool writes (or, in dry-run mode, planned ones) by change: create, update, "
            "delete, lifecycle-continue.",
            ["pool", "change"],
            registry=metrics.registry,
        )
        self._warm_start = Gauge(
            f"{PREFIX}_warm_start_seconds",
            "Warm start time the planner uses: leaving the warm pool to the first idle pass.",
            ["pool"],
            registry=metrics.registry,
        )
        self._pools: dict[str, _Pool] = {}
        self._closing = False

    def before_plan(self, spec: PoolSpec, observed: Observed, name: str) -> Observed:
        """`observed` with the warmed instances the pool's group can draw on, if it has a
        warmPool and the warm pool was read; they are also added to the group's instances
        in their Warmed states, so the plan, /status and metrics show them as `warmed`."""
        state = self._pools.get(name)
        if spec.warmPool is None or state is None or state.view is None:
            return observed
        in_group = frozenset(i.instance_id for i in observed.asg.instances)
        warm = WarmCapacity(
            count=warm_count(state.view.instances, in_group),
            start_seconds=state.starts.start_seconds(),
            measured=len(state.starts.durations),
        )
        warmed = tuple(
            AsgInstance(i.instance_id, i.lifecycle_state)
            for i in state.view.instances
            if i.instance_id not in in_group
        )
        asg = replace(observed.asg, instances=observed.asg.instances + warmed)
        return replace(observed, asg=asg, warm=warm)

    async def __call__(self, pool: JibriPool, observed: Observed, plan: Plan) -> None:
        """Measure warm starts from this pass and wake the pool's worker; never waits on AWS."""
        state = self._pools.get(pool.name)
        if state is None:
            state = self._pools[pool.name] = _Pool(pool)
        if state.worker is None:
            state.worker = PacedWorker(
                f"warm-pool:{pool.name}",
                lambda: self.run_once(state.pool),
                clock=self._clock,
                min_interval=self._min_interval,
                may_end=lambda: self._closing,
            )
        state.pool = pool
        self._measure(state, observed, plan)
        # No warm pool wanted and the spec unchanged: only a rare look for one to delete.
        unwanted = pool.spec.warmPool is None and state.spec == pool.spec
        read_at = state.read_at
        if unwanted and read_at is not None and self._clock() - read_at < UNWANTED_INTERVAL:
            return
        state.worker.wake()

    def _measure(self, state: _Pool, observed: Observed, plan: Plan) -> None:
        pending = state.starts.pending()
        if not pending:
            return
        now = self._clock()
        for view in plan.instances:
            if view.instance_id in pending and view.state is InstanceState.IDLE:
                seen = observed.first_seen.get(view.instance_id)
                if seen is not None:
                    state.starts.ready(view.instance_id, now - seen)
        known = {i.instance_id for i in observed.asg.instances}
        if state.view is not None:
            known |= {i.instance_id for i in state.view.instances}
        state.starts.forget(known)
        self._warm_start.labels(state.pool.name).set(state.starts.start_seconds())

    async def run_once(self, pool: JibriPool) -> None:
        """One round for `pool`, here and now rather than on the worker."""
        state = self._pools.setdefault(pool.name, _Pool(pool))
        try:
            await self._round(state, pool)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = exc.kind if isinstance(exc, AwsError) else "internal"
            state.error = str(exc) or repr(exc)
            self.base.reconcile_errors_total.labels(pool.name, kind).inc()
            event(
                log,
                "warm pool step failed",
                level=logging.WARNING,
                pool=pool.name,
                kind=kind,
                error=state.error,
                exc_info=exc if kind == "internal" else False,
            )
        else:
            state.error = None

    async def _round(self, state: _Pool, pool: JibriPool) -> None:
        spec, group = pool.spec.warmPool, pool.spec.autoScalingGroupName
        state.spec = pool.spec
        api = await self._apis(pool.spec.region)
        view = await api.describe_warm_pool(group)
        state.view, state.read_at = view, self._clock()
        state.starts.warmed([i.instance_id for i in view.instances])
        await self._release(state, pool, api, view)
        owned = False
        if spec is None and view.config is not None and not view.pending_delete:
            owned = await api.group_tag(group, OWNER_TAG) == pool.name
        decision = decide(spec, view, owned)
        state.decision = decision
        if decision.change in (Change.NONE, Change.WAIT, Change.LEAVE):
            return
        self._changes.labels(pool.name, decision.change.value).inc()
        event(
            log,
            f"warm pool {decision.change.value}",
            pool=pool.name,
            group=group,
            drift=list(decision.drift),
            dry_run=self._dry_run,
        )
        if self._dry_run:
            return
        if decision.change is Change.DELETE:
            await api.delete_warm_pool(group)
            await api.delete_group_tag(group, OWNER_TAG)
        else:
            assert spec is not None
            # Tag first: a warm pool this controller wrote is always one it may delete later.
            await api.set_group_tag(group, OWNER_TAG, pool.name)
            await api.put_warm_pool(group, desired_config(spec))
        state.changed_at = self._clock()

    async def _release(
        self, state: _Pool, pool: JibriPool, api: WarmPoolApi, view: WarmPoolView
    ) -> None:
        """Complete the termination hooks holding warmed instances (see TERMINATING_WAIT)."""
        group = pool.spec.autoScalingGroupName
        state.released &= {i.instance_id for i in view.instances}
        waiting = [
            i.instance_id
            for i in view.instances
            if i.lifecycle_state == TERMINATING_WAIT and i.instance_id not in state.released
        ]
        if not waiting:
            return
        hooks = await api.termination_hooks(group)
        for instance_id in waiting:
            for hook in hooks:
                self._changes.labels(pool.name, "lifecycle-continue").inc()
                event(
                    log,
                    "warm pool lifecycle continue",
                    pool=pool.name,
                    instance=instance_id,
                    hook=hook.name,
                    dry_run=self._dry_run,
                )
                if self._dry_run:
                    continue
                try:
                    await api.complete_lifecycle_action(
                        group, hook.name, instance_id, None, "CONTINUE"
                    )
                except AwsError as exc:
                    # Not this hook's turn, or already completed: nothing is held by it.
                    if exc.kind != "validation":
                        raise
            if not self._dry_run:
                state.released.add(instance_id)

    def pool_status(self, name: str) -> dict[str, Any] | None:
        """The /status block: configured and actual warm pool, drift, instances, warm starts."""
        state = self._pools.get(name)
        if state is None:
            return None
        spec, view = state.pool.spec.warmPool, state.view
        counts: dict[str, int] = {}
        for instance in () if view is None else view.instances:
            counts[instance.lifecycle_state] = counts.get(instance.lifecycle_state, 0) + 1
        now = self._clock()
        return {
            "desired": None if spec is None else spec.model_dump(mode="json"),
            "actual": None if view is None or view.config is None else _config(view),
            "pendingDelete": view is not None and view.pending_delete,
            "change": None if state.decision is None else state.decision.change.value,
            "drift": [] if state.decision is None else list(state.decision.drift),
            "instances": dict(sorted(counts.items())),
            "warmStartSeconds": state.starts.start_seconds(),
            "warmStartsMeasured": len(state.starts.durations),
            "lastReadAgeSeconds": None if state.read_at is None else round(now - state.read_at, 3),
            "lastChangeAgeSeconds": None
            if state.changed_at is None
            else round(now - state.changed_at, 3),
            "error": state.error,
        }

    async def retain(self, pools: Collection[str]) -> None:
        """Stop the workers of pools that left the desired state."""
        for name in [n for n in self._pools if n not in pools]:
            worker = self._pools.pop(name).worker
            if worker is not None:
                await worker.stop()
            with contextlib.suppress(KeyError):
                self._warm_start.remove(name)
            for change in ("create", "update", "delete", "lifecycle-continue"):
                with contextlib.suppress(KeyError):
                    self._changes.remove(name, change)

    async def close(self) -> None:
        self._closing = True
        for state in self._pools.values():
            if state.worker is not None:
                await state.worker.stop()


def _config(view: WarmPoolView) -> dict[str, Any]:
    config = view.config
    assert config is not None
    return {
        "minSize": config.min_size,
        "maxPreparedCapacity": config.max_prepared_capacity,
        "state": config.state,
        "reuseOnScaleIn": config.reuse_on_scale_in,
    }

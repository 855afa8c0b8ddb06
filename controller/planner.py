"""The planner: `plan(spec, observed, now) -> Plan` (docs/planner.md).

Pure: no await, no clock read, no I/O. Level-triggered: it reads only the observation, so the
same observation always yields the same plan. Actions come out in the order they must run:
protection, bounds, terminations, capacity, drains, lifecycle.

With a readiness target in the observation (`Observed.readiness`, docs/readiness.md) the
free recorders to hold are its total, the part learned from demand comes in at once rather
than scaleOut.maxStep per pass, and scale-in keeps what the forecast needs within idleFor
and may drain the rest without waiting it out. Without one, the plan is exactly the
targetFree or schedule plan.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.boots import conflict_conditions
from controller.derive import Derivation, derive_all, in_startup_window
from controller.fleet.launches import step_allowed_at
from controller.fleet.recycle import allowed_step, canary_need, fleet_conditions, retire
from controller.model import (
    PROTECTION_BATCH,
    Action,
    Condition,
    DrainInstance,
    InstanceState,
    InstanceView,
    Observed,
    Plan,
    Reason,
    SetBounds,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.planner_lifecycle import lifecycle, lifecycle_deadlines
from controller.spec import PoolSpec
from controller.warm_pool.rules import warm_credit

if TYPE_CHECKING:
    from controller.readiness.forecast import ReadinessTarget

MIN_REQUEUE = 0.1

_GONE = frozenset({InstanceState.TERMINATING, InstanceState.STANDBY, InstanceState.WARMED})
_REPLACE_REASON = {
    InstanceState.UNHEALTHY: Reason.UNHEALTHY,
    InstanceState.EXPIRED: Reason.EXPIRED,
    InstanceState.FAILED_BOOT: Reason.FAILED_BOOT,
}
_PROTECT_REASON = {InstanceState.BUSY: Reason.BUSY, InstanceState.DRAINING: Reason.DRAINING}
_PROTECT_REASON |= {InstanceState.STALE: Reason.STALE, InstanceState.CONFLICTED: Reason.CONFLICTED}


@dataclass(frozen=True)
class _Context:
    spec: PoolSpec
    observed: Observed
    now: float
    derived: Derivation
    observing_only: bool
    """Startup window with unknown instances: observe only (docs/design.md §4)."""
    target_free: int
    """Free recorders to hold now: the readiness target's total, or without one targetFree in
    force (the spec's, a schedule rule's or a dated override's)."""
    schedule_rule: int | None
    readiness: ReadinessTarget | None
    warm_credit: int = 0  # spares left to the warm pool, already out of target_free

    @property
    def learned(self) -> int:
        """What demand history adds above the floor (targetFree or the schedule's)."""
        r = self.readiness
        return 0 if r is None else max(0, r.total - r.floor)

    def of(self, state: InstanceState) -> tuple[InstanceView, ...]:
        return self.derived.by_state[state]


def plan(spec: PoolSpec, observed: Observed, now: float) -> Plan:
    derived = derive_all(spec, observed, now)
    startup = in_startup_window(spec, observed, now)
    any_unknown = bool(derived.by_state[InstanceState.UNKNOWN])
    readiness = observed.readiness
    if readiness is None:
        target_free, rule = spec.target_free_at(observed.wall_time)
    else:
        target_free, rule = readiness.total, readiness.schedule_rule
    # Warmed instances stand in for the forecast's spares needed only after a warm start
    # (docs/warm-pools.md); a scale-out is served from the warm pool first.
    credit = warm_credit(readiness, observed.warm)
    target_free -= credit
    ctx = _Context(
        spec,
        observed,
        now,
        derived,
        startup and any_unknown,
        target_free,
        schedule_rule=rule,
        readiness=readiness,
        warm_credit=credit,
    )

    actions: list[Action] = []
    # Protection lands first: lowering MaxSize below desired lets AWS pick what to remove.
    actions.extend(_protection(ctx))
    actions.extend(_bounds(ctx))
    terminations = _terminations(ctx)
    actions.extend(terminations)
    capacity, scaled = _capacity(ctx, terminations)
    actions.extend(capacity)
    retiring = retire(spec, derived, target_free, ctx.observing_only)
    drains = [] if capacity else _scale_in(ctx, terminations)
    confirm = [DrainInstance(i, Reason.CONFIRM_DRAIN) for i in derived.confirm_drain]
    actions.extend([*retiring.drains, *drains, *confirm])
    actions.extend(lifecycle(spec, observed, now))

    decrements = sum(1 for t in terminations if t.decrement)
    final = capacity[-1].capacity if capacity else observed.asg.desired - decrements
    return Plan(
        actions=tuple(actions),
        requeue_after=_requeue_after(ctx),
        instances=derived.views,
        desired_capacity=final,
        conditions=_conditions(ctx, final, scaled)
        + fleet_conditions(observed, retiring, derived, target_free, now, final)
        + conflict_conditions(derived.by_state[InstanceState.CONFLICTED]),
        target_free=target_free,
    )


def _bounds(ctx: _Context) -> list[SetBounds]:
    asg, capacity = ctx.observed.asg, ctx.spec.capacity
    if (asg.min_size, asg.max_size) == (capacity.min, capacity.max):
        return []
    return [SetBounds(capacity.min, capacity.max, Reason.BOUNDS_DRIFT)]


def _chunks(ids: list[str]) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(ids), PROTECTION_BATCH):
        yield tuple(ids[start : start + PROTECTION_BATCH])


def _protection(ctx: _Context) -> list[SetProtection]:
    protect: dict[Reason, list[str]] = {}
    unprotect: list[str] = []
    for view in ctx.derived.misprotected:
        if view.protected:
            protect.setdefault(_PROTECT_REASON[view.state], []).append(view.instance_id)
        elif not ctx.observing_only:
            # Adding protection is always safe; removing it waits until every instance is known.
            unprotect.append(view.instance_id)
    actions = [
        SetProtection(chunk, True, reason)
        for reason in sorted(protect)
        for chunk in _chunks(protect[reason])
    ]
    actions += [SetProtection(chunk, False, Reason.NOT_BUSY) for chunk in _chunks(unprotect)]
    return actions


def _terminations(ctx: _Context) -> list[Terminate]:
    if ctx.observing_only:
        return []
    actions: list[Terminate] = []
    # Decrement only while the ASG stays at or above min; otherwise let it replace the instance.
    room = ctx.observed.asg.desired - ctx.spec.capacity.min
    for view in ctx.of(InstanceState.DRAINED):
        actions.append(Terminate(view.instance_id, decrement=room > 0, reason=Reason.DRAINED))
        room -= 1
    for view in ctx.derived.replace_due[: ctx.spec.scaleOut.maxStep]:
        actions.append(
            Terminate(view.instance_id, decrement=False, reason=_REPLACE_REASON[view.state])
        )
    return actions


def _free_count(ctx: _Context, terminations: Iterable[Terminate]) -> int:
    """Idle and starting instances, launches the ASG still owes, and replacements under way.

    Unknown instances count as free, so their silence never causes a scale-out.
    """
    live = len(ctx.derived.views) - ctx.derived.count(*_GONE)
    owed = max(0, ctx.observed.asg.desired - live)
    replacing = sum(1 for t in terminations if not t.decrement)
    ready = ctx.derived.count(InstanceState.IDLE, InstanceState.STARTING, InstanceState.UNKNOWN)
    return ready + owed + replacing


def _capacity(
    ctx: _Context, terminations: list[Terminate]
) -> tuple[list[SetDesiredCapacity], bool]:
    """Raise capacity by the free gap (capped), and keep it within [min, max].

    maxStep damps reactions to what the agents report; the part of the target learned from
    demand is planned ahead and comes in whole, or a forecast rise of 40 would take eight
    passes and land minutes after the burst it was for."""
    spec, asg = ctx.spec, ctx.observed.asg
    base = asg.desired - sum(1 for t in terminations if t.decrement)
    target, reason = base, Reason.BELOW_TARGET_FREE
    gap = max(ctx.target_free - _free_count(ctx, terminations), canary_need(ctx.observed.rollout))
    if gap > 0:
        step = allowed_step(ctx.observed.launches, ctx.now, spec.scaleOut.maxStep + ctx.learned)
        target = min(base + min(gap, step), max(base, spec.capacity.max))
    if target < spec.capacity.min:
        target, reason = spec.capacity.min, Reason.BELOW_MIN
    elif target > spec.capacity.max:
        target, reason = spec.capacity.max, Reason.ABOVE_MAX
    if target == base:
        return [], False
    return [SetDesiredCapacity(target, base, reason)], target > base


def _scale_in(ctx: _Context, terminations: list[Terminate]) -> list[DrainInstance]:
    """Drain the longest-idle instances beyond the target; never let the ASG pick.

    With a readiness target that trusts its forecast (`drain_early`), it keeps the spares the
    forecast asks for within idleFor (`keep`) and drains idle ones above that at once."""
    spec, observed = ctx.spec, ctx.observed
    if ctx.observing_only or in_startup_window(spec, observed, ctx.now):
        return []
    last = observed.last_scale_out_at
    if last is not None and ctx.now - last < spec.scaleIn.delayAfterScaleOut:
        return []
    readiness = ctx.readiness
    keep = ctx.target_free if readiness is None else readiness.keep - ctx.warm_credit
    excess = _free_count(ctx, terminations) - keep
    base = observed.asg.desired - sum(1 for t in terminations if t.decrement)
    draining = len(ctx.of(InstanceState.DRAINING))
    count = min(excess, base - draining - spec.capacity.min, spec.scaleIn.maxStep)
    if count <= 0:
        return []
    if readiness is not None and readiness.drain_early:
        candidates = _longest_idle(ctx, count)
    else:
        candidates = list(ctx.derived.drainable[:count])
    return [DrainInstance(instance_id, Reason.IDLE_EXCESS) for instance_id in candidates]


def _longest_idle(ctx: _Context, count: int) -> list[str]:
    """The `count` longest-idle instances, idleFor or not (only a few: scaleIn.maxStep)."""
    reports = ctx.observed.reports

    def since(view: InstanceView) -> tuple[float, str]:
        report = reports.get(view.instance_id)
        idle = report.idle_since if report is not None else None
        return (math.inf if idle is None else idle, view.instance_id)

    chosen = heapq.nsmallest(count, ctx.of(InstanceState.IDLE), key=since)
    return [view.instance_id for view in chosen]


def _requeue_after(ctx: _Context) -> float:
    """When the next time-driven change is due: the sooner of resync, the earliest change that
    derive foresees, and the deadlines of the planner's own rules."""
    spec, observed, now = ctx.spec, ctx.observed, ctx.now
    deadlines = [now + spec.resync, ctx.derived.next_change_at]
    if observed.last_scale_out_at is not None:
        deadlines.append(observed.last_scale_out_at + spec.scaleIn.delayAfterScaleOut)
    deadlines += lifecycle_deadlines(spec, observed)
    if (step_at := step_allowed_at(observed.launches, now)) is not None:
        deadlines.append(step_at)
    wall = observed.wall_time
    if wall is not None:
        if spec.schedule.rules or (ctx.readiness is not None and spec.readiness.enabled):
            # Schedule rules, and the history behind a forecast, change at minute boundaries.
            deadlines.append(now + 60.0 - wall % 60.0)
        edge = spec.schedule.next_change(wall) if spec.schedule.overrides else None
        if edge is not None:
            deadlines.append(now + edge - wall)
    upcoming = [t - now for t in deadlines if t > now]
    return max(MIN_REQUEUE, min(upcoming, default=spec.resync))


def _target_text(ctx: _Context) -> str:
    """The target and what set it: `12 = forecast 9 + reactive 3, floor 2 (schedule rule 0)`."""
    r = ctx.readiness
    if r is not None and r.override is not None:
        floor = f"{r.floor} (override {r.override})"
    elif ctx.schedule_rule is not None:
        floor = (
            f"{r.floor if r is not None else ctx.target_free} (schedule rule {ctx.schedule_rule})"
        )
    else:
        floor = str(ctx.target_free if r is None else r.floor)
    if r is None or ctx.learned == 0:
        return floor
    return f"{r.total} = forecast {r.forecast} + reactive {r.reactive}, floor {floor}"


def _conditions(ctx: _Context, final_capacity: int, scaled_out: bool) -> tuple[Condition, ...]:
    spec = ctx.spec
    target = ctx.target_free
    target_text = _target_text(ctx)
    counts = {state: len(ctx.of(state)) for state in InstanceState}
    free = counts[InstanceState.IDLE]
    conditions: list[Condition] = []
    if ctx.observing_only:
        conditions.append(
            Condition(
                "Observing",
                True,
                "ControllerStarting",
                f"{counts[InstanceState.UNKNOWN]} instances have not reported since the "
                "controller started; only observing until they do or staleAfter passes",
            )
        )
    if free >= target:
        ready = Condition("TargetFreeMet", True, "Ready", f"{free} free, target {target_text}")
    elif scaled_out:
        ready = Condition(
            "TargetFreeMet",
            False,
            "ScalingOut",
            f"{free} free, target {target_text}; capacity raised to {final_capacity}",
        )
    elif final_capacity >= spec.capacity.max:
        ready = Condition(
            "TargetFreeMet",
            False,
            "AtMaxCapacity",
            f"{free} free, target {target_text}; capacity is at max {spec.capacity.max}",
        )
    else:
        ready = Condition(
            "TargetFreeMet",
            False,
            "WaitingForInstances",
            f"{free} free, target {target_text}; {counts[InstanceState.STARTING]} starting",
        )
    conditions.append(ready)
    troubled = {
        s: counts[s]
        for s in (InstanceState.STALE, InstanceState.UNHEALTHY, InstanceState.FAILED_BOOT)
        if counts[s]
    }
    if troubled:
        message = ", ".join(f"{n} {s.value}" for s, n in troubled.items())
        conditions.append(Condition("Degraded", True, "InstancesNotHealthy", message))
    else:
        conditions.append(Condition("Degraded", False, "AllReporting", "no stale or unhealthy"))
    return tuple(conditions)

"""Carry out a Plan: one AWS call (or actuation record) per action, in the plan's order.

Thin by design: every decision is the planner's. The actuator only adds one safety rule of
its own: once an action of the pass has failed, it skips any lowering of desired capacity,
because the ASG would choose the instances to remove while the pass's protection or
terminations may not have taken effect.

What the next pass must know of its effects (scale-outs, drain requests, lifecycle calls) goes
into the pool's `ActuationStatus`, the typed feedback that observe reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.logs import event
from controller.actuation import ActuationStatus
from controller.aws import AutoScaling, AwsError
from controller.model import (
    Action,
    CompleteLifecycle,
    DrainInstance,
    LifecycleHeartbeat,
    Plan,
    SetBounds,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.prometheus import Metrics

log = logging.getLogger("controller.actuator")


@dataclass(frozen=True)
class ActionFailure:
    action: Action
    error: AwsError


class ActuationError(Exception):
    """Some actions of a plan failed; the others were still attempted."""

    def __init__(self, pool: str, failures: list[ActionFailure]) -> None:
        self.pool = pool
        self.failures = tuple(failures)
        self.kind = failures[0].error.kind
        detail = "; ".join(f"{f.action.name}: {f.error}" for f in failures)
        super().__init__(f"{len(failures)} action(s) failed: {detail}")


def describe_action(action: Action) -> dict[str, Any]:
    """The fields of an action for its log line and /status."""
    fields: dict[str, Any] = {"action": action.name, "reason": action.reason.value}
    match action:
        case SetBounds(min_size=low, max_size=high):
            fields.update(min=low, max=high)
        case SetDesiredCapacity(capacity=capacity, previous=previous):
            fields.update(capacity=capacity, previous=previous)
        case SetProtection(instance_ids=ids):
            fields.update(instance_ids=list(ids))
        case DrainInstance(instance_id=iid) | Terminate(instance_id=iid):
            fields.update(instance_ids=[iid])
        case LifecycleHeartbeat(instance_id=iid, hook_name=hook):
            fields.update(instance_ids=[iid], hook=hook)
        case CompleteLifecycle(instance_id=iid, hook_name=hook, result=result):
            fields.update(instance_ids=[iid], hook=hook, result=result)
    return fields


class Actuator:
    def __init__(self, *, metrics: Metrics, clock: Callable[[], float], dry_run: bool) -> None:
        self._metrics = metrics
        self._clock = clock
        self.dry_run = dry_run

    async def execute(
        self,
        pool: str,
        group: str,
        plan: Plan,
        *,
        autoscaling: AutoScaling,
        actuation: ActuationStatus,
        now: float,
        triggered_at: float | None,
    ) -> None:
        """Run every action of `plan`; raise ActuationError after trying them all if any failed.

        `triggered_at` is the receive time of the report that caused this pass, if one did:
        the time from it to the first AWS call is the pool's decision latency.
        """
        failures: list[ActionFailure] = []
        latency_pending = triggered_at is not None
        for action in plan.actions:
            fields = describe_action(action)
            if failures and isinstance(action, SetDesiredCapacity) and action.name == "scale-in":
                event(
                    log,
                    "action",
                    level=logging.WARNING,
                    pool=pool,
                    outcome="skipped",
                    why="an earlier action of this pass failed",
                    dry_run=self.dry_run,
                    **fields,
                )
                continue
            if self.dry_run:
                self._count(pool, action)
                event(log, "action", pool=pool, outcome="planned", dry_run=True, **fields)
                continue
            if triggered_at is not None and not isinstance(action, DrainInstance):
                since_report = max(0.0, self._clock() - triggered_at)
                fields["since_report_seconds"] = round(since_report, 6)
                if latency_pending:
                    self._metrics.decision_latency_seconds.labels(pool).observe(since_report)
                    latency_pending = False
            try:
                await self._apply(action, group, autoscaling, actuation, now)
            except AwsError as exc:
                failures.append(ActionFailure(action, exc))
                event(
                    log,
                    "action",
                    level=logging.WARNING,
                    pool=pool,
                    outcome="failed",
                    error=str(exc),
                    kind=exc.kind,
                    dry_run=False,
                    **fields,
                )
                continue
            self._count(pool, action)
            event(log, "action", pool=pool, outcome="done", dry_run=False, **fields)
        if failures:
            raise ActuationError(pool, failures)

    def _count(self, pool: str, action: Action) -> None:
        self._metrics.actions_total.labels(pool, action.name, action.reason.value).inc()

    @staticmethod
    async def _apply(
        action: Action,
        group: str,
        autoscaling: AutoScaling,
        actuation: ActuationStatus,
        now: float,
    ) -> None:
        match action:
            case SetBounds():
                await autoscaling.set_bounds(group, action.min_size, action.max_size)
            case SetProtection():
                await autoscaling.set_instance_protection(
                    group, action.instance_ids, action.protected
                )
            case SetDesiredCapacity():
                await autoscaling.set_desired_capacity(group, action.capacity)
                if action.capacity > action.previous:
                    actuation.scaled_out(now)
            case DrainInstance():
                actuation.drain_requested_now(action.instance_id, now)
            case Terminate():
                await autoscaling.terminate_instance(action.instance_id, decrement=action.decrement)
            case LifecycleHeartbeat():
                await autoscaling.record_lifecycle_heartbeat(
                    group, action.hook_name, action.instance_id, action.token
                )
                actuation.heartbeat_sent(action.instance_id, action.hook_name, now)
            case CompleteLifecycle():
                await autoscaling.complete_lifecycle_action(
                    group, action.hook_name, action.instance_id, action.token, action.result
                )
                actuation.lifecycle_completed(action.instance_id, action.hook_name)

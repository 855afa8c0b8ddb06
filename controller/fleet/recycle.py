"""Retiring recorders: which idle instances are due to leave, and which of them to drain now
(docs/fleet-operations.md). Pure: no clock, no I/O.

Jibri runs Chrome, ffmpeg and Xorg for hours, and they degrade. A recorder past
spec.recycle's maxRecordings or maxUptime is retired the next time it is idle, never while it
records. `derive` gives such an idle instance the state RETIRING: it is not free, so the
planner's scale-out launches its replacement first, and `retire` drains it only once the idle
instances without it hold the target, at most scaleIn.maxStep a pass. An instance stuck in
RETIRING (jibri_autoscaler_pool_instances{state="retiring"}) is one whose replacement cannot
come: capacity at max, or launches failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.fleet.launches import allowed_step as allowed_step
from controller.fleet.rollout import canary_need as canary_need
from controller.model import (
    AsgInstance,
    Condition,
    DrainInstance,
    InstanceState,
    Observed,
    Reason,
    ReportView,
)
from controller.spec.fleet_ops import Recycle

if TYPE_CHECKING:
    from controller.derive import Derivation
    from controller.spec import PoolSpec


@dataclass(frozen=True)
class Retiring:
    """Idle instances due to leave, and the ones drained this pass."""

    due: Mapping[str, Reason]
    drains: tuple[DrainInstance, ...]

    @property
    def held(self) -> int:
        return len(self.due) - len(self.drains)


def recycle_reason(
    recycle: Recycle, report: ReportView | None, first_seen: float | None, now: float
) -> tuple[Reason | None, float]:
    """Why an instance is past spec.recycle's limits (or None), and when maxUptime will pass
    if it has not yet (infinity when it never will).

    Uptime is the agent's own when it reports one; else the time since the controller first
    saw the instance, which only errs late (a restarted controller starts counting again)."""
    limit = recycle.maxRecordings
    if report is not None and limit is not None and report.recordings_finished >= limit:
        return Reason.RECYCLE_RECORDINGS, math.inf
    if recycle.maxUptime is None:
        return None, math.inf
    booted = report.booted_at if report is not None else None
    if booted is None:
        booted = first_seen
    if booted is None:
        return None, math.inf
    due_at = booted + recycle.maxUptime
    return (Reason.RECYCLE_UPTIME, math.inf) if now >= due_at else (None, due_at)


def retire(spec: PoolSpec, derived: Derivation, target: int, observing_only: bool) -> Retiring:
    """Drain up to scaleIn.maxStep retiring instances once the idle ones hold `target`
    without them; until then hold them all, so the free recorders never dip for a recycle."""
    due = derived.retiring
    free_without = len(derived.by_state[InstanceState.IDLE])
    step = spec.scaleIn.maxStep
    if not due or observing_only or free_without < target or step <= 0:
        return Retiring(due, ())
    chosen = list(due.items())[:step]
    return Retiring(due, tuple(DrainInstance(i, reason) for i, reason in chosen))


def fleet_conditions(
    observed: Observed,
    retiring: Retiring,
    derived: Derivation,
    target: int,
    now: float,
    desired: int,
) -> tuple[Condition, ...]:
    """`LaunchFailing` (once launches are read), `RollingOut` (while spec.rollout is set) and
    `Retiring` (while any is due)."""
    conditions: list[Condition] = []
    launches, rollout = observed.launches, observed.rollout
    if launches is not None:
        conditions.append(launches.condition(now, desired))
    if rollout is not None:
        conditions.append(rollout.condition())
    if retiring.due:
        reasons: dict[str, int] = {}
        for reason in retiring.due.values():
            reasons[reason.value] = reasons.get(reason.value, 0) + 1
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        free = len(derived.by_state[InstanceState.IDLE])
        message = f"{len(retiring.due)} idle due ({parts}); {len(retiring.drains)} drained now"
        if retiring.held and free < target:
            message += f"; waiting for replacements: {free} free without them, target {target}"
        reason_word = "Draining" if retiring.drains else "WaitingForReplacement"
        conditions.append(Condition("Retiring", True, reason_word, message))
    return tuple(conditions)


def retire_reason(
    spec: PoolSpec, observed: Observed, instance: AsgInstance, report: ReportView, now: float
) -> tuple[Reason | None, float]:
    """Why an idle instance is due to leave (or None), and when time alone makes it due:
    spec.recycle's limits first, then an ongoing rollout (controller.fleet.rollout)."""
    first_seen = observed.first_seen.get(instance.instance_id)
    reason, due_at = recycle_reason(spec.recycle, report, first_seen, now)
    rollout = observed.rollout
    if reason is None and rollout is not None and rollout.retires(instance, report):
        return Reason.ROLLOUT, due_at
    return reason, due_at

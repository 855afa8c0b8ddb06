"""The planner's lifecycle-hook rules (docs/planner.md): hold an instance in Terminating:Wait
while its recordings are not safe, heartbeat the hook meanwhile, and let it go once drained,
at drain.timeout, or when no agent ever reported.

Pure, like the planner that calls it: functions of (spec, observed, now).
"""

from __future__ import annotations

from common.wire import BusyStatus
from controller.boots import lifecycle_drained, wants_drain_request
from controller.derive import boot_timed_out, in_startup_window, is_fresh
from controller.model import (
    CompleteLifecycle,
    DrainInstance,
    LifecycleHeartbeat,
    Observed,
    Reason,
    ReportView,
)
from controller.spec import PoolSpec

HEARTBEAT_FRACTION = 0.5
"""Send a lifecycle heartbeat once this fraction of the hook's heartbeat timeout has passed."""


def lifecycle(
    spec: PoolSpec, observed: Observed, now: float
) -> list[DrainInstance | LifecycleHeartbeat | CompleteLifecycle]:
    """Hold instances in Terminating:Wait until their recordings are safe, then let them go."""
    actions: list[DrainInstance | LifecycleHeartbeat | CompleteLifecycle] = []
    for instance_id in sorted(observed.lifecycle_waits):
        wait = observed.lifecycle_waits[instance_id]
        report, stale_after = observed.reports.get(instance_id), spec.instances.staleAfter
        fresh, asked_at = is_fresh(spec, report, now), observed.drain_requested.get(instance_id)
        done: Reason | None = None
        if now - wait.started_at >= spec.drain.timeout:
            done = Reason.LIFECYCLE_TIMEOUT
        elif fresh and report and lifecycle_drained(report, wait, asked_at, now, stale_after):
            done = Reason.LIFECYCLE_DRAINED
        elif (
            report is None
            and not in_startup_window(spec, observed, now)
            and boot_timed_out(spec, observed, instance_id, now)
        ):
            done = Reason.LIFECYCLE_NO_AGENT
        if done is not None:
            actions.append(CompleteLifecycle(instance_id, wait.hook_name, wait.token, done))
            continue
        if fresh and report and wants_drain_request(report, asked_at, now, stale_after):
            # Someone else is terminating it: stop Jibri taking new recordings, keep the rest.
            actions.append(DrainInstance(instance_id, Reason.TERMINATION_REQUESTED))
        if now - wait.last_heartbeat_at >= wait.heartbeat_timeout * HEARTBEAT_FRACTION:
            actions.append(
                LifecycleHeartbeat(instance_id, wait.hook_name, wait.token, _holding_reason(report))
            )
    return actions


def _holding_reason(report: ReportView | None) -> Reason:
    if report is not None and report.pending_uploads > 0:
        return Reason.UPLOADS_PENDING
    if report is not None and report.busy is BusyStatus.BUSY:
        return Reason.BUSY
    return Reason.DRAINING


def lifecycle_deadlines(spec: PoolSpec, observed: Observed) -> list[float]:
    """When each held instance next needs the planner: its drain.timeout and its heartbeat."""
    deadlines: list[float] = []
    for wait in observed.lifecycle_waits.values():
        deadlines.append(wait.started_at + spec.drain.timeout)
        deadlines.append(wait.last_heartbeat_at + wait.heartbeat_timeout * HEARTBEAT_FRACTION)
    return deadlines

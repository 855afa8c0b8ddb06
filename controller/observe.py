"""Build a pool's `Observed` from the ASG, the held reports, the observer's own memory and
what the actuator recorded.

The controller remembers only what AWS and the agents cannot tell it again. The observer keeps
when it first saw each instance and how long instances have been held in Terminating:Wait
(`PoolMemory`); which instances it asked to drain, when it last scaled out and which lifecycle
calls it made come from the actuator (`controller.actuation`), read-only here. Both are per pool
and lost on restart by design; docs/design.md says how a fresh controller reads the silence.

`observe` reads the report store and writes nothing into it: the instances that left the group
come back as data (`Observation.departed`) for the loop to release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from controller.actuation import ActuationView
from controller.aws import AutoScaling, TerminationHook
from controller.model import AsgView, LifecycleWait, Observed, ReportView
from controller.spec import PoolSpec

WAITING = "Terminating:Wait"


@dataclass
class PoolMemory:
    """What one pool's observer remembers between passes (written by observe alone)."""

    started_at: float
    first_seen: dict[str, float] = field(default_factory=dict)
    lifecycle_waits: dict[str, LifecycleWait] = field(default_factory=dict)

    def owns(self, instance_id: str) -> bool:
        return instance_id in self.first_seen


@dataclass(frozen=True)
class Observation:
    """What one observation found: the planner's input, and the instances that left the
    group since the previous one (their reports and actuation records are to be released)."""

    observed: Observed
    present: frozenset[str]
    departed: frozenset[str]


def observe(
    view: AsgView,
    hooks: Sequence[TerminationHook],
    reports: Callable[[str], ReportView | None],
    memory: PoolMemory,
    actuation: ActuationView,
    now: float,
    *,
    wall_time: float | None = None,
) -> Observation:
    """Fold one ASG view into memory and return what the planner sees.

    `reports` looks up the held report of an instance (`ReportStore.get`)."""
    # Runs on the event loop (the server writes what it reads), so it sticks to set
    # operations and single passes: a few ms for 10,000 instances.
    ids = [i.instance_id for i in view.instances]
    present = frozenset(ids)
    departed = frozenset(memory.first_seen.keys() - present)
    for instance_id in departed:
        memory.first_seen.pop(instance_id, None)
        memory.lifecycle_waits.pop(instance_id, None)
    seen = max(now, memory.started_at)
    for instance_id in present - memory.first_seen.keys():
        memory.first_seen[instance_id] = seen

    waiting = {i.instance_id for i in view.instances if i.lifecycle_state == WAITING}
    for instance_id in [i for i in memory.lifecycle_waits if i not in waiting]:
        del memory.lifecycle_waits[instance_id]
    for instance_id in sorted(waiting):
        done = actuation.completed_hooks(instance_id)
        hook = next((h for h in hooks if h.name not in done), None)
        held = memory.lifecycle_waits.get(instance_id)
        if hook is None:
            memory.lifecycle_waits.pop(instance_id, None)
            continue
        if held is None or held.hook_name != hook.name:
            held = LifecycleWait(
                instance_id=instance_id,
                hook_name=hook.name,
                token=None,
                started_at=now,
                last_heartbeat_at=now,
                heartbeat_timeout=hook.heartbeat_timeout,
            )
        beat = actuation.heartbeat_sent_at(instance_id, hook.name)
        if beat is not None and beat > held.last_heartbeat_at:
            held = replace(held, last_heartbeat_at=beat)
        if held.heartbeat_timeout != hook.heartbeat_timeout:
            held = replace(held, heartbeat_timeout=hook.heartbeat_timeout)
        memory.lifecycle_waits[instance_id] = held

    held_reports = {i: r for i in ids if (r := reports(i)) is not None}
    drains = dict(actuation.drain_requested)
    for instance_id in departed & drains.keys():
        del drains[instance_id]
    observed = Observed(
        asg=view,
        reports=held_reports,
        first_seen=dict(memory.first_seen),
        drain_requested=drains,
        controller_started_at=memory.started_at,
        last_scale_out_at=actuation.last_scale_out_at,
        lifecycle_waits=dict(memory.lifecycle_waits),
        wall_time=wall_time,
    )
    return Observation(observed, present, departed)


async def read_group(
    spec: PoolSpec, autoscaling: AutoScaling
) -> tuple[AsgView, tuple[TerminationHook, ...]]:
    """Read the pool's ASG, and its termination hooks only while an instance waits on one."""
    view = await autoscaling.describe_group(spec.autoScalingGroupName)
    hooks: tuple[TerminationHook, ...] = ()
    if any(i.lifecycle_state == WAITING for i in view.instances):
        hooks = await autoscaling.termination_hooks(spec.autoScalingGroupName)
    return view, hooks

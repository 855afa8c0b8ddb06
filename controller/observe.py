"""Build a pool's `Observed` from the ASG, the report store and the controller's own memory.

The controller remembers only what AWS and the agents cannot tell it again: when it first saw
each instance, which instances it asked to drain, when it last scaled out, and how long
instances have been held in Terminating:Wait. That memory (`PoolMemory`) is per pool and lost
on restart by design; DESIGN §4 says how a fresh controller reads the silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from controller.aws import AutoScaling, TerminationHook
from controller.model import AsgView, LifecycleWait, Observed
from controller.spec import PoolSpec
from controller.store import ReportStore

WAITING = "Terminating:Wait"


@dataclass
class PoolMemory:
    """What one pool's controller remembers between passes (mutated by observe and act)."""

    started_at: float
    first_seen: dict[str, float] = field(default_factory=dict)
    drain_requested: dict[str, float] = field(default_factory=dict)
    last_scale_out_at: float | None = None
    lifecycle_waits: dict[str, LifecycleWait] = field(default_factory=dict)
    completed_hooks: dict[str, set[str]] = field(default_factory=dict)
    """Termination hooks already completed per instance (a group may have several)."""

    def owns(self, instance_id: str) -> bool:
        return instance_id in self.first_seen

    def forget(self, instance_id: str) -> None:
        self.first_seen.pop(instance_id, None)
        self.drain_requested.pop(instance_id, None)
        self.lifecycle_waits.pop(instance_id, None)
        self.completed_hooks.pop(instance_id, None)

    def heartbeat_sent(self, instance_id: str, now: float) -> None:
        wait = self.lifecycle_waits.get(instance_id)
        if wait is not None:
            self.lifecycle_waits[instance_id] = replace(wait, last_heartbeat_at=now)

    def lifecycle_completed(self, instance_id: str, hook: str) -> None:
        self.completed_hooks.setdefault(instance_id, set()).add(hook)
        self.lifecycle_waits.pop(instance_id, None)


def observe(
    view: AsgView,
    hooks: Sequence[TerminationHook],
    store: ReportStore,
    memory: PoolMemory,
    now: float,
    *,
    unmanaged_ttl: float,
    wall_time: float | None = None,
) -> Observed:
    """Fold one ASG view into memory and the store, and return what the planner sees.

    Held reports of ids in no managed ASG are dropped once older than `unmanaged_ttl`."""
    # Runs on the event loop (it mutates what the server touches too), so it sticks to set
    # operations and single passes: a few ms for 10,000 instances.
    ids = [i.instance_id for i in view.instances]
    present = set(ids)
    left = memory.first_seen.keys() - present
    if left:
        store.release(left)
        for instance_id in left:
            memory.forget(instance_id)
    if store.unmanaged_count:
        store.adopt(present)
    seen = max(now, memory.started_at)
    for instance_id in present - memory.first_seen.keys():
        memory.first_seen[instance_id] = seen
    store.expire_unmanaged(now - unmanaged_ttl)

    waiting = {i.instance_id for i in view.instances if i.lifecycle_state == WAITING}
    for instance_id in [i for i in memory.lifecycle_waits if i not in waiting]:
        del memory.lifecycle_waits[instance_id]
    for instance_id in sorted(waiting):
        done = memory.completed_hooks.get(instance_id, set())
        hook = next((h for h in hooks if h.name not in done), None)
        held = memory.lifecycle_waits.get(instance_id)
        if hook is None:
            memory.lifecycle_waits.pop(instance_id, None)
        elif held is None or held.hook_name != hook.name:
            memory.lifecycle_waits[instance_id] = LifecycleWait(
                instance_id=instance_id,
                hook_name=hook.name,
                token=None,
                started_at=now,
                last_heartbeat_at=now,
                heartbeat_timeout=hook.heartbeat_timeout,
            )
        elif held.heartbeat_timeout != hook.heartbeat_timeout:
            memory.lifecycle_waits[instance_id] = replace(
                held, heartbeat_timeout=hook.heartbeat_timeout
            )

    report_of = store.get
    reports = {i: r for i in ids if (r := report_of(i)) is not None}
    return Observed(
        asg=view,
        reports=reports,
        first_seen=dict(memory.first_seen),
        drain_requested=dict(memory.drain_requested),
        controller_started_at=memory.started_at,
        last_scale_out_at=memory.last_scale_out_at,
        lifecycle_waits=dict(memory.lifecycle_waits),
        wall_time=wall_time,
    )


async def read_group(
    spec: PoolSpec, autoscaling: AutoScaling
) -> tuple[AsgView, tuple[TerminationHook, ...]]:
    """Read the pool's ASG, and its termination hooks only while an instance waits on one."""
    view = await autoscaling.describe_group(spec.autoScalingGroupName)
    hooks: tuple[TerminationHook, ...] = ()
    if any(i.lifecycle_state == WAITING for i in view.instances):
        hooks = await autoscaling.termination_hooks(spec.autoScalingGroupName)
    return view, hooks

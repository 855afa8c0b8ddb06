"""Rolling a pool onto a new launch template version natively (docs/fleet-operations.md).

`spec.rollout.launchTemplateVersion` names the version. Each pass, before the plan, the
pool's `RolloutTracker` (controller/fleet/rollout_step.py) decides where the rollout stands
(`decide`, here: pure) and makes the one AWS change that is its own, the group's launch
template version:

1. **switching**: the group is on another version; it is set to the new one.
2. **canary**: `canaries` instances on the new version are launched (the planner adds the
   missing ones to the free recorders it holds: `canary_need`) and must report idle or busy
   and healthy for `healthyFor`, within `canaryTimeout` of the switch.
3. **rolling**: the planner retires idle instances still on the old version (reason
   `rollout`) exactly as it recycles (controller.fleet.recycle): replacement first, then at most
   `scaleIn.maxStep` drained a pass, never a busy one.
4. **complete**: none is left on the old version.

A canary that fails to boot (no report, or Jibri never answering, within bootTimeout), turns
unhealthy for unhealthyFor, or a canary phase that outlasts canaryTimeout aborts the rollout:
the group goes back to the previous version (**rolled-back**), and the instances on the
new one retire in turn. The tracker remembers the abort until spec.rollout names another
version or the controller restarts.

Which instances are new: the AMI the agent reports when `imageId` is given; else those
launched after the switch (this controller saw the switch); else the launch template version
the group reports for the instance.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Final

from common.logs import event
from common.wire import BusyStatus, HealthStatus
from controller.model import AsgInstance, Condition, Observed, ReportView
from controller.spec import PoolSpec

log = logging.getLogger("controller.fleet.rollout")

_GONE: Final = ("Terminating", "Terminated", "Standby", "Detach", "Warmed")


@dataclass
class RolloutMemory:
    """What one pool's tracker remembers between passes (lost on restart)."""

    target: str | None = None
    previous: str | None = None
    switched_at: float | None = None
    before: frozenset[str] = frozenset()
    """Instances in the group when it switched: everything else was launched after."""
    healthy_since: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    aborted: str | None = None
    """Why the rollout to `target` was aborted, once it was."""
    until: frozenset[str] | None = None
    """Instances in the group when it was aborted: those launched after are not new."""

    def reset(self, target: str | None = None) -> None:
        self.target, self.previous, self.switched_at = target, None, None
        self.before, self.healthy_since, self.passed = frozenset(), {}, False
        self.aborted, self.until = None, None


@dataclass(frozen=True)
class RolloutStatus:
    """Where the rollout stands for this pass: what the planner and /status read."""

    phase: str
    """switching, canary, rolling, complete, rolled-back or stuck."""
    target: str
    previous: str | None
    image_id: str | None
    before: frozenset[str]
    until: frozenset[str] | None
    new: tuple[str, ...]
    """Live instances on the new version."""
    old: int
    """Live instances on any other version."""
    need: int = 0
    """Canaries still to launch (canary phase): the planner raises capacity by at least this
    much, whatever the free recorders."""
    message: str = ""

    def is_new(self, instance: AsgInstance, report: ReportView | None) -> bool:
        if self.image_id is not None and report is not None and report.ami_id is not None:
            return report.ami_id == self.image_id
        if self.before:
            launched = instance.instance_id not in self.before
            return launched and (self.until is None or instance.instance_id in self.until)
        return instance.template_version == self.target

    def retires(self, instance: AsgInstance, report: ReportView | None) -> bool:
        """Whether an idle instance is due to leave for the rollout (reason `rollout`)."""
        if self.phase == "rolling":
            return not self.is_new(instance, report)
        return self.phase == "rolled-back" and self.is_new(instance, report)

    def condition(self) -> Condition:
        in_progress = self.phase not in ("complete", "rolled-back", "stuck")
        reason = "".join(part.capitalize() for part in self.phase.split("-"))
        return Condition("RollingOut", in_progress, reason, self.message)


def canary_need(status: RolloutStatus | None) -> int:
    """The least scale-out this pass: the canaries neither running nor owed by the group."""
    return 0 if status is None else status.need


def _live(instance: AsgInstance) -> bool:
    return not instance.lifecycle_state.startswith(_GONE)


def _canary_trouble(spec: PoolSpec, observed: Observed, instance_id: str, now: float) -> str | None:
    """Why a canary has failed, or None: no working Jibri within bootTimeout, or unhealthy
    for unhealthyFor."""
    report = observed.reports.get(instance_id)
    seen = max(observed.first_seen.get(instance_id, now), observed.controller_started_at)
    if (report is None or not report.jibri_seen) and now - seen >= spec.instances.bootTimeout:
        return f"{instance_id} did not boot within bootTimeout"
    since = None if report is None else report.unhealthy_since
    if since is not None and now - since >= spec.instances.unhealthyFor:
        return f"{instance_id} unhealthy for unhealthyFor"
    return None


def _healthy(spec: PoolSpec, report: ReportView | None, now: float) -> bool:
    return (
        report is not None
        and now - report.received_at <= spec.instances.staleAfter
        and report.health is HealthStatus.HEALTHY
        and report.busy in (BusyStatus.IDLE, BusyStatus.BUSY)
        and not report.draining
    )


def decide(
    spec: PoolSpec, observed: Observed, memory: RolloutMemory, now: float
) -> tuple[RolloutStatus | None, str | None]:
    """Where the rollout stands, and the version to set the group to (or None). Updates
    `memory`; reads no clock and makes no call."""
    rollout, asg = spec.rollout, observed.asg
    if rollout is None or asg.template_id is None:
        memory.reset()
        if rollout is None:
            return None, None
        message = "the group has no launch template (a launch configuration or mixed instances)"
        version = rollout.launchTemplateVersion
        return RolloutStatus(
            "stuck", version, None, None, frozenset(), None, (), 0, 0, message
        ), None
    target = rollout.launchTemplateVersion
    if memory.target != target:
        memory.reset(target)
    live = [i for i in asg.instances if _live(i)]
    base = RolloutStatus(
        "switching", target, memory.previous, rollout.imageId, memory.before, memory.until, (), 0
    )
    if memory.aborted is not None:
        return _rolled_back(base, live, observed, memory, asg.template_version)
    if asg.template_version != target:
        memory.previous = asg.template_version
        memory.switched_at = now
        memory.before = frozenset(i.instance_id for i in live)
        message = f"setting the group from version {asg.template_version} to {target}"
        return replace(base, previous=memory.previous, message=message), target
    if memory.switched_at is None:
        # Switched before this controller started (or by hand): judge by AMI or version.
        memory.switched_at = now
    status = _count(replace(base, before=memory.before), live, observed)
    if not memory.passed:
        return _canary(spec, status, observed, memory, now)
    if status.old:
        return replace(status, phase="rolling", message=_rolling_text(status)), None
    return replace(status, phase="complete", message=f"every instance is on {target}"), None


def _count(status: RolloutStatus, live: list[AsgInstance], observed: Observed) -> RolloutStatus:
    reports = observed.reports
    new = tuple(i.instance_id for i in live if status.is_new(i, reports.get(i.instance_id)))
    return replace(status, new=new, old=len(live) - len(new))


def _canary(
    spec: PoolSpec, status: RolloutStatus, observed: Observed, memory: RolloutMemory, now: float
) -> tuple[RolloutStatus, str | None]:
    rollout = spec.rollout
    assert rollout is not None and memory.switched_at is not None
    trouble = [t for i in status.new if (t := _canary_trouble(spec, observed, i, now))]
    if not trouble and now - memory.switched_at >= rollout.canaryTimeout:
        trouble = [f"canaries not healthy within canaryTimeout ({rollout.canaryTimeout:g} s)"]
    if trouble:
        memory.aborted = "; ".join(trouble)
        memory.until = frozenset(i.instance_id for i in observed.asg.instances)
        event(
            log,
            "rollout aborted",
            level=logging.WARNING,
            reason=memory.aborted,
            version=status.target,
        )
        return _rolled_back(status, [], observed, memory, status.target)
    healthy = 0
    for instance_id in status.new:
        if _healthy(spec, observed.reports.get(instance_id), now):
            since = memory.healthy_since.setdefault(instance_id, now)
            healthy += now - since >= rollout.healthyFor
        else:
            memory.healthy_since.pop(instance_id, None)
    if healthy >= rollout.canaries:
        memory.passed = True
        event(log, "rollout canaries healthy", version=status.target, canaries=healthy)
        return replace(status, phase="rolling", message=_rolling_text(status)), None
    live = [i for i in observed.asg.instances if _live(i)]
    owed = max(0, observed.asg.desired - len(live))
    need = max(0, rollout.canaries - len(status.new) - owed)
    amis = sorted({r.ami_id for i in status.new if (r := observed.reports.get(i)) and r.ami_id})
    message = (
        f"to version {status.target}: {healthy}/{rollout.canaries} canaries healthy for "
        f"{rollout.healthyFor:g} s, {need} to launch"
        + (f" (reporting {', '.join(amis)})" if amis else "")
    )
    return replace(status, phase="canary", need=need, message=message), None


def _rolled_back(
    status: RolloutStatus,
    live: list[AsgInstance],
    observed: Observed,
    memory: RolloutMemory,
    group_version: str | None,
) -> tuple[RolloutStatus, str | None]:
    previous = memory.previous
    if previous is None:
        # Switched before this controller started: go back to what most old instances run.
        olds = Counter(
            i.template_version
            for i in observed.asg.instances
            if i.template_version not in (None, status.target)
        )
        previous = memory.previous = olds.most_common(1)[0][0] if olds else None
    live = live or [i for i in observed.asg.instances if _live(i)]
    rolled = replace(status, phase="rolled-back", previous=previous, until=memory.until)
    counted = _count(rolled, live, observed)
    if previous is None:
        message = f"aborted ({memory.aborted}); no previous version known to go back to"
        return replace(counted, phase="stuck", message=message), None
    message = (
        f"aborted ({memory.aborted}); back on version {previous}, {len(counted.new)} to retire"
    )
    return replace(counted, message=message), previous if group_version != previous else None


def _rolling_text(status: RolloutStatus) -> str:
    return f"to version {status.target}: {len(status.new)} new, {status.old} old left"

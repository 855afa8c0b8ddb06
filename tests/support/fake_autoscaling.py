"""In-memory fakes behind the controller's narrow Protocols, for unit tests.

`FakeAutoScaling` keeps AWS's own rules that moto does not enforce (desired capacity within
[min, max], at most 50 ids per protection call), so a test fails where AWS would. It also has
what moto lacks: a warm pool with warmed instances (Warmed:Pending until `warm_up`, then
Warmed:Stopped/Running/Hibernated), drawn on first when desired capacity rises.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.aws import PROTECTION_BATCH, AwsError, TerminationHook
from controller.fleet.launches import ActivityPage, ScalingActivity
from controller.model import AsgInstance, AsgView
from controller.warm_pool.api import WarmInstance, WarmPoolConfig, WarmPoolView

_ids = itertools.count(0x1000)


def new_instance_id() -> str:
    return f"i-{next(_ids):017x}"


@dataclass
class FakeGroup:
    name: str
    min_size: int
    max_size: int
    desired: int
    instances: dict[str, AsgInstance] = field(default_factory=dict)
    hooks: tuple[TerminationHook, ...] = ()
    warm_pool: WarmPoolConfig | None = None
    warm: dict[str, WarmInstance] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    from_warm: list[str] = field(default_factory=list)
    """Instances that came into service from the warm pool, in order."""
    activities: list[ScalingActivity] = field(default_factory=list)
    """Scaling activities, newest first, as DescribeScalingActivities lists them (moto
    returns none): a launch adds a Successful one, or a Failed one per missing instance
    while `launch_failure` holds AWS's StatusMessage."""
    launch_failure: str | None = None
    template_id: str | None = None
    template_version: str | None = None
    """The group's launch template and version; instances launch with that version."""
    wall: Callable[[], float] = time.time

    def launch(self, count: int) -> list[str]:
        ids: list[str] = []
        # Like AWS, a scale-out draws on warmed instances first (not those still terminating).
        for warmed in [w for w in self.warm.values() if w.lifecycle_state != "Warmed:Terminating"]:
            if len(ids) == count:
                break
            del self.warm[warmed.instance_id]
            self.from_warm.append(warmed.instance_id)
            ids.append(warmed.instance_id)
        ids += [new_instance_id() for _ in range(count - len(ids))]
        for instance_id in ids:
            self.instances[instance_id] = AsgInstance(
                instance_id, "InService", template_version=self.template_version
            )
        return ids

    def warm_size(self) -> int:
        """How many instances AWS keeps warmed: up to maxPreparedCapacity (or MaxSize) less
        desired, at least minSize."""
        config = self.warm_pool
        if config is None:
            return 0
        cap = (
            self.max_size if config.max_prepared_capacity is None else config.max_prepared_capacity
        )
        return max(config.min_size, cap - self.desired)

    def fill_warm(self) -> None:
        """Launch instances into the warm pool (Warmed:Pending) up to its size."""
        while len(self.warm) < self.warm_size():
            instance_id = new_instance_id()
            self.warm[instance_id] = WarmInstance(instance_id, "Warmed:Pending")

    def warm_up(self) -> None:
        """Finish the warm pool's launches: each pending instance reaches the pool's state."""
        state = "Stopped" if self.warm_pool is None else self.warm_pool.state
        for instance_id, instance in self.warm.items():
            if instance.lifecycle_state == "Warmed:Pending":
                self.warm[instance_id] = WarmInstance(instance_id, f"Warmed:{state}")

    def settle(self) -> None:
        """Launch or remove (unprotected, newest first) instances to match desired."""
        live = [i for i in self.instances.values() if i.lifecycle_state == "InService"]
        if len(live) < self.desired and self.launch_failure is not None:
            for _ in range(self.desired - len(live)):
                self.record("Failed", self.launch_failure)
        elif len(live) < self.desired:
            for instance_id in self.launch(self.desired - len(live)):
                self.record("Successful", f"Launching a new EC2 instance: {instance_id}")
        self.fill_warm()
        for instance in reversed([i for i in live if not i.protected]):
            if len(self.instances) <= self.desired:
                break
            del self.instances[instance.instance_id]

    def record(self, status: str, message: str) -> ScalingActivity:
        """Add a launch activity (newest first), as AWS would after an attempt."""
        activity = ScalingActivity(
            f"act-{next(_ids):x}", status, message, "Launching a new EC2 instance", self.wall()
        )
        self.activities.insert(0, activity)
        return activity


@dataclass(frozen=True)
class Call:
    operation: str
    args: tuple[object, ...]


class FakeAutoScaling:
    """An `AutoScaling` over in-memory groups; records calls and can be told to fail."""

    def __init__(self) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.calls: list[Call] = []
        self.failures: dict[str, AwsError] = {}
        self.activity_page = 100
        """DescribeScalingActivities' page size (AWS's MaxRecords, at most 100)."""

    def add_group(self, name: str, *, min_size: int, max_size: int, desired: int) -> list[str]:
        group = FakeGroup(name, min_size, max_size, desired)
        self.groups[name] = group
        return group.launch(desired)

    def fail(self, operation: str, kind: str = "throttled") -> None:
        self.failures[operation] = AwsError(operation, kind, f"injected {kind} failure")

    def mutations(self) -> list[Call]:
        return [c for c in self.calls if not c.operation.startswith("Describe")]

    def _enter(self, operation: str, *args: object) -> None:
        self.calls.append(Call(operation, args))
        if operation in self.failures:
            raise self.failures[operation]

    def _group(self, operation: str, name: str) -> FakeGroup:
        if name not in self.groups:
            raise AwsError(operation, "not-found", f"no group {name!r}")
        return self.groups[name]

    def _owner(self, operation: str, instance_id: str) -> FakeGroup:
        for group in self.groups.values():
            if instance_id in group.instances:
                return group
        raise AwsError(operation, "not-found", f"no instance {instance_id!r}")

    async def describe_group(self, name: str) -> AsgView:
        self._enter("DescribeAutoScalingGroups", name)
        g = self._group("DescribeAutoScalingGroups", name)
        members = tuple(g.instances.values())
        return AsgView(
            name, g.min_size, g.max_size, g.desired, members, g.template_id, g.template_version
        )

    async def set_bounds(self, name: str, min_size: int, max_size: int) -> None:
        self._enter("UpdateAutoScalingGroup", name, min_size, max_size)
        g = self._group("UpdateAutoScalingGroup", name)
        if min_size > max_size:
            raise AwsError("UpdateAutoScalingGroup", "validation", "min > max")
        g.min_size, g.max_size = min_size, max_size
        g.desired = min(max(g.desired, min_size), max_size)
        g.settle()

    async def set_desired_capacity(self, name: str, capacity: int) -> None:
        self._enter("SetDesiredCapacity", name, capacity)
        g = self._group("SetDesiredCapacity", name)
        if not g.min_size <= capacity <= g.max_size:
            raise AwsError("SetDesiredCapacity", "validation", f"{capacity} outside [min, max]")
        g.desired = capacity
        g.settle()

    async def set_instance_protection(
        self, name: str, instance_ids: Sequence[str], protected: bool
    ) -> None:
        self._enter("SetInstanceProtection", name, tuple(instance_ids), protected)
        g = self._group("SetInstanceProtection", name)
        if len(instance_ids) > PROTECTION_BATCH:
            raise AwsError("SetInstanceProtection", "validation", "more than 50 instance ids")
        for instance_id in instance_ids:
            instance = g.instances[instance_id]
            g.instances[instance_id] = AsgInstance(
                instance_id, instance.lifecycle_state, instance.health_status, protected
            )

    async def terminate_instance(self, instance_id: str, *, decrement: bool) -> None:
        self._enter("TerminateInstanceInAutoScalingGroup", instance_id, decrement)
        g = self._owner("TerminateInstanceInAutoScalingGroup", instance_id)
        if decrement:
            if g.desired - 1 < g.min_size:
                raise AwsError("TerminateInstanceInAutoScalingGroup", "validation", "below min")
            g.desired -= 1
        del g.instances[instance_id]
        g.settle()

    async def put_warm_pool(self, name: str, config: WarmPoolConfig) -> None:
        self._enter("PutWarmPool", name, config)
        g = self._group("PutWarmPool", name)
        g.warm_pool = config
        g.fill_warm()

    async def describe_warm_pool(self, name: str) -> WarmPoolView:
        self._enter("DescribeWarmPool", name)
        g = self._group("DescribeWarmPool", name)
        return WarmPoolView(g.warm_pool, tuple(g.warm.values()))

    async def delete_warm_pool(self, name: str) -> None:
        self._enter("DeleteWarmPool", name)
        g = self._group("DeleteWarmPool", name)
        if g.warm_pool is None:
            raise AwsError("DeleteWarmPool", "validation", "the group has no warm pool")
        g.warm_pool = None
        g.warm.clear()

    async def group_tag(self, name: str, key: str) -> str | None:
        self._enter("DescribeTags", name, key)
        return self._group("DescribeTags", name).tags.get(key)

    async def set_group_tag(self, name: str, key: str, value: str) -> None:
        self._enter("CreateOrUpdateTags", name, key, value)
        self._group("CreateOrUpdateTags", name).tags[key] = value

    async def delete_group_tag(self, name: str, key: str) -> None:
        self._enter("DeleteTags", name, key)
        self._group("DeleteTags", name).tags.pop(key, None)

    async def set_template_version(self, name: str, template_id: str, version: str) -> None:
        self._enter("UpdateAutoScalingGroup", name, template_id, version)
        g = self._group("UpdateAutoScalingGroup", name)
        if template_id != g.template_id:
            raise AwsError("UpdateAutoScalingGroup", "validation", f"no template {template_id}")
        g.template_version = version

    async def scaling_activities(self, name: str, token: str | None) -> ActivityPage:
        """DescribeScalingActivities, newest first, `activity_page` a page (NextToken an
        offset, opaque to the caller)."""
        self._enter("DescribeScalingActivities", name, token)
        listed = self._group("DescribeScalingActivities", name).activities
        start = int(token) if token else 0
        end = start + self.activity_page
        return ActivityPage(tuple(listed[start:end]), str(end) if end < len(listed) else None)

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]:
        self._enter("DescribeLifecycleHooks", name)
        return self._group("DescribeLifecycleHooks", name).hooks

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None:
        self._enter("RecordLifecycleActionHeartbeat", name, hook, instance_id, token)

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None:
        self._enter("CompleteLifecycleAction", name, hook, instance_id, token, result)
        g = self._group("CompleteLifecycleAction", name)
        g.instances.pop(instance_id, None)
        g.warm.pop(instance_id, None)
        g.settle()


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def as_clock(self) -> HandClock:
        """This clock as a `common.aiokits.clock.Clock`, for a controller whose passes the
        test runs itself."""
        return HandClock(self)


class HandClock:
    """A `Clock` that reads a `ManualClock`. Time passes only when the test moves it, so its
    sleeps end only when interrupted: for tests that run passes themselves, not the loop."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now

    async def sleep(self, delay: float, interrupt: asyncio.Event | None = None) -> bool:
        if delay <= 0:
            return interrupt is not None and interrupt.is_set()
        await (interrupt or asyncio.Event()).wait()
        return True

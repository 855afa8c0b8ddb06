"""The simulated Auto Scaling group behind the controller's own `AutoScaling` Protocol, so the
simulated controller runs the real observe → plan → act code against it.

The calls answer at once (nothing in them awaits), which lets the discrete-event simulation
drive the controller's coroutines to completion synchronously with `run_now`. Calls AWS would
refuse raise `AwsError` as AWS's would, after the world has counted them.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from bench.sim.fleet import SimulatedWorld
from controller.aws import PROTECTION_BATCH, AwsError, TerminationHook
from controller.model import AsgView

T = TypeVar("T")


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (everything it awaits answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    coroutine.close()
    raise RuntimeError("a simulated call suspended; the simulation has no event loop")


class SimulatedAutoScaling:
    """`controller.aws.AutoScaling` over one `SimulatedWorld` (no lifecycle hooks)."""

    def __init__(self, world: SimulatedWorld) -> None:
        self.world = world

    def _check(self, name: str, operation: str) -> None:
        if name != self.world.name:
            raise AwsError(operation, "not-found", f"Auto Scaling group {name!r} does not exist")

    async def describe_group(self, name: str) -> AsgView:
        self._check(name, "DescribeAutoScalingGroups")
        return self.world.asg_view()

    async def set_bounds(self, name: str, min_size: int, max_size: int) -> None:
        self._check(name, "UpdateAutoScalingGroup")
        if min_size > max_size:
            raise AwsError("UpdateAutoScalingGroup", "validation", "min > max")
        self.world.set_bounds(min_size, max_size)

    async def set_desired_capacity(self, name: str, capacity: int) -> None:
        self._check(name, "SetDesiredCapacity")
        world = self.world
        if not world.min_size <= capacity <= world.max_size:
            world.tally.rejected_calls += 1
            raise AwsError("SetDesiredCapacity", "validation", f"{capacity} outside [min, max]")
        world.set_desired(capacity)

    async def set_instance_protection(
        self, name: str, instance_ids: Sequence[str], protected: bool
    ) -> None:
        self._check(name, "SetInstanceProtection")
        if len(instance_ids) > PROTECTION_BATCH:
            self.world.tally.rejected_calls += 1
            raise AwsError("SetInstanceProtection", "validation", "more than 50 instance ids")
        self.world.set_protection(instance_ids, protected)

    async def terminate_instance(self, instance_id: str, *, decrement: bool) -> None:
        if not self.world.terminate(instance_id, decrement=decrement):
            raise AwsError(
                "TerminateInstanceInAutoScalingGroup",
                "validation",
                f"{instance_id} cannot be terminated{' with decrement' if decrement else ''}",
            )

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]:
        return ()

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None:
        raise AwsError("RecordLifecycleActionHeartbeat", "validation", "no lifecycle hooks")

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None:
        raise AwsError("CompleteLifecycleAction", "validation", "no lifecycle hooks")

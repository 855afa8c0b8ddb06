"""An AutoScaling fake with a termination lifecycle hook that really holds instances.

moto stores lifecycle hooks but never makes an instance wait, and has no heartbeat or complete
calls. This fake does what AWS does: a terminating instance waits in `Terminating:Wait` until
CompleteLifecycleAction, or until its heartbeat timeout passes and the hook's default result
lets it go. Expiry is checked against an injected clock whenever the fake is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.aws import AwsError, TerminationHook
from controller.model import AsgInstance, AsgView
from tests.support.fake_autoscaling import FakeAutoScaling

WAIT = "Terminating:Wait"


@dataclass
class Hold:
    deadline: float
    heartbeats: int = 0


class HookedAutoScaling(FakeAutoScaling):
    def __init__(self, clock: Callable[[], float], hook: TerminationHook) -> None:
        super().__init__()
        self.clock = clock
        self.hook = hook
        self.holds: dict[str, Hold] = {}
        self.completed: dict[str, str] = {}
        self.expired: list[str] = []
        """Instances let go by the heartbeat timeout: the controller failed to hold them."""

    def add_group(self, name: str, *, min_size: int, max_size: int, desired: int) -> list[str]:
        ids = super().add_group(name, min_size=min_size, max_size=max_size, desired=desired)
        self.groups[name].hooks = (self.hook,)
        return ids

    def begin_termination(self, instance_id: str) -> None:
        """Someone else (a person, a rebalance, a health check) terminates the instance."""
        group = self._owner("TerminateInstanceInAutoScalingGroup", instance_id)
        instance = group.instances[instance_id]
        group.instances[instance_id] = AsgInstance(
            instance_id, WAIT, instance.health_status, instance.protected
        )
        self.holds[instance_id] = Hold(self.clock() + self.hook.heartbeat_timeout)

    def _expire(self) -> None:
        now = self.clock()
        for instance_id, hold in list(self.holds.items()):
            if now >= hold.deadline:
                del self.holds[instance_id]
                self.expired.append(instance_id)
                self._owner("Expire", instance_id).instances.pop(instance_id)

    async def describe_group(self, name: str) -> AsgView:
        self._expire()
        return await super().describe_group(name)

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None:
        self._expire()
        await super().record_lifecycle_heartbeat(name, hook, instance_id, token)
        if instance_id not in self.holds or hook != self.hook.name:
            raise AwsError("RecordLifecycleActionHeartbeat", "validation", "no lifecycle action")
        hold = self.holds[instance_id]
        hold.deadline = self.clock() + self.hook.heartbeat_timeout
        hold.heartbeats += 1

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None:
        self._expire()
        if instance_id not in self.holds or hook != self.hook.name:
            raise AwsError("CompleteLifecycleAction", "validation", "no lifecycle action")
        del self.holds[instance_id]
        self.completed[instance_id] = result
        await super().complete_lifecycle_action(name, hook, instance_id, token, result)

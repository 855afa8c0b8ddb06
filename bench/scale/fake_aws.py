"""A fast in-process AWS for the scale benchmark, behind the controller's own Protocols.

moto serves one request at a time and takes most of a second to describe a hundred
instances, so it cannot stand in for a 10,000-instance group. This fake keeps the group in
memory, answers at once (plus an optional fixed latency per call, to let passes take as long
as real AWS calls make them), and counts calls the way AWS bills and throttles them: one
SetInstanceProtection request per 50 instance ids.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from controller.aws import PROTECTION_BATCH, AwsError, TerminationHook
from controller.cloudwatch.datapoints import Datum
from controller.model import AsgInstance, AsgView


def instance_id(n: int) -> str:
    return f"i-{n:017x}"


class FastAutoScaling:
    """`controller.aws.AutoScaling` over an in-memory group that launches instantly."""

    def __init__(self, group: str, *, instances: int, latency: float = 0.0) -> None:
        self.group = group
        self.latency = latency
        self.min_size = 0
        self.max_size = instances
        self._next = instances + 1
        self._rows: dict[str, AsgInstance] = {
            instance_id(n): AsgInstance(instance_id(n), "InService")
            for n in range(1, instances + 1)
        }
        self._view: AsgView | None = None
        self.desired = instances
        self.calls: Counter[str] = Counter()

    async def _call(self, operation: str, count: int = 1) -> None:
        self.calls[operation] += count
        if self.latency:
            await asyncio.sleep(self.latency * count)

    def _check(self, name: str) -> None:
        if name != self.group:
            raise AwsError("DescribeAutoScalingGroups", "not-found", f"no group {name!r}")

    async def describe_group(self, name: str) -> AsgView:
        await self._call("DescribeAutoScalingGroups")
        self._check(name)
        if self._view is None:
            self._view = AsgView(
                name, self.min_size, self.max_size, self.desired, tuple(self._rows.values())
            )
        return self._view

    async def set_bounds(self, name: str, min_size: int, max_size: int) -> None:
        await self._call("UpdateAutoScalingGroup")
        self._check(name)
        self.min_size, self.max_size = min_size, max_size
        await self._set(min(max(self.desired, min_size), max_size))

    async def set_desired_capacity(self, name: str, capacity: int) -> None:
        await self._call("SetDesiredCapacity")
        self._check(name)
        if not self.min_size <= capacity <= self.max_size:
            raise AwsError("SetDesiredCapacity", "validation", "outside [min, max]")
        await self._set(capacity)

    async def _set(self, capacity: int) -> None:
        while len(self._rows) < capacity:
            row = AsgInstance(instance_id(self._next), "InService")
            self._rows[row.instance_id] = row
            self._next += 1
        unprotected = [i for i, row in self._rows.items() if not row.protected]
        for victim in unprotected[: max(0, len(self._rows) - capacity)]:
            del self._rows[victim]
        self.desired = capacity
        self._view = None

    async def set_instance_protection(
        self, name: str, instance_ids: Sequence[str], protected: bool
    ) -> None:
        await self._call("SetInstanceProtection", math.ceil(len(instance_ids) / PROTECTION_BATCH))
        self._check(name)
        for iid in instance_ids:
            row = self._rows.get(iid)
            if row is not None:
                self._rows[iid] = AsgInstance(
                    iid, row.lifecycle_state, row.health_status, protected
                )
        self._view = None

    async def terminate_instance(self, instance_id: str, *, decrement: bool) -> None:
        await self._call("TerminateInstanceInAutoScalingGroup")
        if self._rows.pop(instance_id, None) is None:
            raise AwsError("TerminateInstanceInAutoScalingGroup", "validation", "no such instance")
        if decrement:
            self.desired -= 1
        self._view = None
        await self._set(self.desired)

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]:
        await self._call("DescribeLifecycleHooks")
        return ()

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None:
        await self._call("RecordLifecycleActionHeartbeat")

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None:
        await self._call("CompleteLifecycleAction")


class FastCloudWatch:
    """`controller.cloudwatch.api.CloudWatchApi` and `ScalingPolicyApi` that only count."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self.alarms: dict[str, dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}

    async def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.latency:
            await asyncio.sleep(self.latency)

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None:
        await self._call("PutMetricData")

    async def describe_alarms(self, prefix: str) -> list[Mapping[str, Any]]:
        await self._call("DescribeAlarms")
        return [a for name, a in self.alarms.items() if name.startswith(prefix)]

    async def put_metric_alarm(self, request: Mapping[str, Any]) -> None:
        await self._call("PutMetricAlarm")
        self.alarms[request["AlarmName"]] = {
            **request,
            "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{request['AlarmName']}",
        }

    async def delete_alarms(self, names: Sequence[str]) -> None:
        await self._call("DeleteAlarms")
        for name in names:
            self.alarms.pop(name, None)

    async def alarm_tags(self, arn: str) -> dict[str, str]:
        await self._call("ListTagsForResource")
        return {}

    async def tag_alarm(self, arn: str, tags: Mapping[str, str]) -> None:
        await self._call("TagResource")

    async def describe_policy(self, group: str, name: str) -> Mapping[str, Any] | None:
        await self._call("DescribePolicies")
        return self.policies.get((group, name))

    async def put_policy(self, request: Mapping[str, Any]) -> None:
        await self._call("PutScalingPolicy")
        key = (request["AutoScalingGroupName"], request["PolicyName"])
        self.policies[key] = {**request, "PolicyARN": f"arn:policy:{key[1]}"}

    async def delete_policy(self, group: str, name: str) -> None:
        await self._call("DeletePolicy")
        self.policies.pop((group, name), None)

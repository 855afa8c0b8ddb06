"""In-memory CloudWatch and scaling-policy APIs with AWS's semantics where moto differs or
cannot fail on demand: tags only apply on creation, limits are checked, and any operation can
be made to fail."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.aws import AwsError
from controller.cloudwatch.datapoints import MAX_DATA_PER_REQUEST, Datum

ACCOUNT = "123456789012"


class _Failing:
    def __init__(self) -> None:
        self.failing: dict[str, str] = {}
        """operation -> error kind; the operation fails until removed."""
        self.calls: list[str] = []

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if operation in self.failing:
            raise AwsError(operation, self.failing[operation], f"{operation} refused")


class FakeCloudWatch(_Failing):
    def __init__(self) -> None:
        super().__init__()
        self.alarms: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.published: list[tuple[str, tuple[Datum, ...]]] = []
        self.gate: asyncio.Event | None = None
        """When set, put_metric_data waits for it (to hold a round under way)."""
        self.entered = asyncio.Event()
        """Set once put_metric_data has been called."""

    @staticmethod
    def arn(name: str) -> str:
        return f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{name}"

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self._enter("PutMetricData")
        assert 0 < len(data) <= MAX_DATA_PER_REQUEST
        self.published.append((namespace, tuple(data)))

    async def describe_alarms(self, prefix: str) -> list[Mapping[str, Any]]:
        self._enter("DescribeAlarms")
        return [dict(a) for name, a in sorted(self.alarms.items()) if name.startswith(prefix)]

    async def put_metric_alarm(self, request: Mapping[str, Any]) -> None:
        self._enter("PutMetricAlarm")
        name = request["AlarmName"]
        alarm = {k: v for k, v in request.items() if k != "Tags"}
        alarm["AlarmArn"] = self.arn(name)
        previous = self.alarms.get(name)
        alarm["StateValue"] = "INSUFFICIENT_DATA" if previous is None else previous["StateValue"]
        alarm["StateReason"] = "Unchecked: Initial alarm creation"
        alarm["StateUpdatedTimestamp"] = datetime(2026, 1, 1, tzinfo=UTC)
        if previous is None:
            self.tags[alarm["AlarmArn"]] = {t["Key"]: t["Value"] for t in request.get("Tags", [])}
        self.alarms[name] = alarm

    async def delete_alarms(self, names: Sequence[str]) -> None:
        self._enter("DeleteAlarms")
        assert len(names) <= 100
        for name in names:
            self.alarms.pop(name, None)
            self.tags.pop(self.arn(name), None)

    async def alarm_tags(self, arn: str) -> dict[str, str]:
        self._enter("ListTagsForResource")
        return dict(self.tags.get(arn, {}))

    async def tag_alarm(self, arn: str, tags: Mapping[str, str]) -> None:
        self._enter("TagResource")
        self.tags.setdefault(arn, {}).update(tags)

    def add_by_hand(self, name: str, tags: Mapping[str, str] | None = None, **fields: Any) -> None:
        """An alarm someone made outside the controller."""
        alarm = {
            "AlarmName": name,
            "AlarmArn": self.arn(name),
            "MetricName": "CPUUtilization",
            "Namespace": "AWS/EC2",
            "Statistic": "Average",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 90.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "StateValue": "OK",
            **fields,
        }
        self.alarms[name] = alarm
        self.tags[alarm["AlarmArn"]] = dict(tags or {})


class FakePolicies(_Failing):
    def __init__(self) -> None:
        super().__init__()
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}

    async def describe_policy(self, group: str, name: str) -> Mapping[str, Any] | None:
        self._enter("DescribePolicies")
        policy = self.policies.get((group, name))
        return None if policy is None else dict(policy)

    async def put_policy(self, request: Mapping[str, Any]) -> None:
        self._enter("PutScalingPolicy")
        key = (request["AutoScalingGroupName"], request["PolicyName"])
        arn = self.policies.get(key, {}).get("PolicyARN") or (
            f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:scalingPolicy:{len(self.policies)}:"
            f"autoScalingGroupName/{key[0]}:policyName/{key[1]}"
        )
        self.policies[key] = {**request, "PolicyARN": arn}

    async def delete_policy(self, group: str, name: str) -> None:
        self._enter("DeletePolicy")
        self.policies.pop((group, name), None)

"""The AWS boundary of the CloudWatch side: two narrow Protocols (CloudWatch, and the scaling
policy calls of Auto Scaling) and their aiobotocore implementations.

Every call goes through `controller.aws.instrumented`, so it is counted and timed in
aws_requests_total / aws_request_duration_seconds and fails as `AwsError` with a kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from controller.aws import AwsClients, Instrumented
from controller.cloudwatch.datapoints import Datum
from controller.prometheus import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient
    from types_aiobotocore_cloudwatch import CloudWatchClient


CLOUDWATCH_OPERATIONS: Final = (
    "PutMetricData",
    "DescribeAlarms",
    "PutMetricAlarm",
    "DeleteAlarms",
    "ListTagsForResource",
    "TagResource",
    "GetMetricData",
)
POLICY_OPERATIONS: Final = ("DescribePolicies", "PutScalingPolicy", "DeletePolicy")
DELETE_BATCH: Final = 100
"""DeleteAlarms takes at most 100 names per call."""


class CloudWatchApi(Protocol):
    """The CloudWatch calls the controller makes."""

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None: ...

    async def describe_alarms(self, prefix: str) -> list[Mapping[str, Any]]:
        """Every metric alarm whose name starts with `prefix` (all pages)."""
        ...

    async def put_metric_alarm(self, request: Mapping[str, Any]) -> None: ...

    async def delete_alarms(self, names: Sequence[str]) -> None: ...

    async def alarm_tags(self, arn: str) -> dict[str, str]: ...

    async def tag_alarm(self, arn: str, tags: Mapping[str, str]) -> None: ...


class ScalingPolicyApi(Protocol):
    """The Auto Scaling calls behind fallback scaling."""

    async def describe_policy(self, group: str, name: str) -> Mapping[str, Any] | None: ...

    async def put_policy(self, request: Mapping[str, Any]) -> None: ...

    async def delete_policy(self, group: str, name: str) -> None: ...


class AioCloudWatch(Instrumented):
    """`CloudWatchApi` over an aiobotocore client."""

    _client: CloudWatchClient

    SERVICE: ClassVar[str] = "cloudwatch"
    OPERATIONS: ClassVar[tuple[str, ...]] = CLOUDWATCH_OPERATIONS

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None:
        await self._call(
            "PutMetricData",
            self._client.put_metric_data(
                Namespace=namespace,
                MetricData=[
                    {
                        "MetricName": d.metric_name,
                        "Dimensions": [{"Name": n, "Value": v} for n, v in d.dimensions],
                        "Timestamp": datetime.fromtimestamp(d.timestamp, UTC),
                        "Value": d.value,
                        "Unit": d.unit,  # type: ignore[typeddict-item]
                        "StorageResolution": d.storage_resolution,
                    }
                    for d in data
                ],
            ),
        )

    async def describe_alarms(self, prefix: str) -> list[Mapping[str, Any]]:
        alarms: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._call(
                "DescribeAlarms",
                self._client.describe_alarms(
                    AlarmNamePrefix=prefix,
                    AlarmTypes=["MetricAlarm"],
                    MaxRecords=100,
                    NextToken=token,
                )
                if token
                else self._client.describe_alarms(
                    AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"], MaxRecords=100
                ),
            )
            alarms.extend(page.get("MetricAlarms", []))
            token = page.get("NextToken")
            if not token:
                return alarms

    async def put_metric_alarm(self, request: Mapping[str, Any]) -> None:
        await self._call("PutMetricAlarm", self._client.put_metric_alarm(**request))

    async def delete_alarms(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), DELETE_BATCH):
            batch = list(names[start : start + DELETE_BATCH])
            await self._call("DeleteAlarms", self._client.delete_alarms(AlarmNames=batch))

    async def alarm_tags(self, arn: str) -> dict[str, str]:
        answer = await self._call(
            "ListTagsForResource", self._client.list_tags_for_resource(ResourceARN=arn)
        )
        return {tag["Key"]: tag["Value"] for tag in answer.get("Tags", [])}

    async def tag_alarm(self, arn: str, tags: Mapping[str, str]) -> None:
        await self._call(
            "TagResource",
            self._client.tag_resource(
                ResourceARN=arn, Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())]
            ),
        )

    async def get_metric_data(
        self, queries: Sequence[Mapping[str, Any]], start: float, end: float
    ) -> dict[str, list[tuple[float, float]]]:
        """Each query's (timestamp, value) points in [start, end), oldest first (all pages)."""
        points: dict[str, list[tuple[float, float]]] = {q["Id"]: [] for q in queries}
        request: dict[str, Any] = {
            "MetricDataQueries": list(queries),
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampAscending",
        }
        while True:
            page = await self._call("GetMetricData", self._client.get_metric_data(**request))
            for result in page.get("MetricDataResults", []):
                points.setdefault(result["Id"], []).extend(
                    (stamp.timestamp(), value)
                    for stamp, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    )
                )
            token = page.get("NextToken")
            if not token:
                for series in points.values():
                    series.sort()
                return points
            request["NextToken"] = token


class AioScalingPolicies(Instrumented):
    """`ScalingPolicyApi` over an aiobotocore Auto Scaling client."""

    _client: AutoScalingClient

    SERVICE: ClassVar[str] = "autoscaling"
    OPERATIONS: ClassVar[tuple[str, ...]] = POLICY_OPERATIONS

    async def describe_policy(self, group: str, name: str) -> Mapping[str, Any] | None:
        answer = await self._call(
            "DescribePolicies",
            self._client.describe_policies(AutoScalingGroupName=group, PolicyNames=[name]),
        )
        for policy in answer.get("ScalingPolicies", []):
            if policy.get("PolicyName") == name and policy.get("AutoScalingGroupName") == group:
                return policy
        return None

    async def put_policy(self, request: Mapping[str, Any]) -> None:
        await self._call("PutScalingPolicy", self._client.put_scaling_policy(**request))

    async def delete_policy(self, group: str, name: str) -> None:
        await self._call(
            "DeletePolicy",
            self._client.delete_policy(AutoScalingGroupName=group, PolicyName=name),
        )


class CloudWatchClients:
    """Both APIs per region, over the clients of the controller's `AwsClients` (which closes
    them)."""

    def __init__(self, clients: AwsClients, metrics: Metrics) -> None:
        self._clients = clients
        self._metrics = metrics
        metrics.add_aws_operations(AioCloudWatch.SERVICE, CLOUDWATCH_OPERATIONS)
        metrics.add_aws_operations(AioScalingPolicies.SERVICE, POLICY_OPERATIONS)
        self._apis: dict[str | None, tuple[AioCloudWatch, AioScalingPolicies]] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, region: str | None) -> tuple[CloudWatchApi, ScalingPolicyApi]:
        async with self._lock:
            if region not in self._apis:
                cloudwatch = await self._clients.cloudwatch(region)
                autoscaling = await self._clients.autoscaling_client(region)
                self._apis[region] = (
                    AioCloudWatch(cloudwatch, self._metrics),
                    AioScalingPolicies(autoscaling, self._metrics),
                )
            return self._apis[region]

    async def close(self) -> None:
        async with self._lock:
            self._apis.clear()

"""The few AWS calls of the classic fallback, on aiobotocore (standard credential chain and
`AWS_ENDPOINT_URL`), behind `agent.fallback.FallbackAws`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from agent.fallback import JIBRI_FREE, FallbackAwsError, Membership

if TYPE_CHECKING:  # type stubs: a development dependency, absent from a production install
    from types_aiobotocore_autoscaling import AutoScalingClient
    from types_aiobotocore_cloudwatch import CloudWatchClient

_CONFIG = AioConfig(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10
)


class AioAws:
    def __init__(self, autoscaling: AutoScalingClient, cloudwatch: CloudWatchClient) -> None:
        self._autoscaling = autoscaling
        self._cloudwatch = cloudwatch

    async def membership(self, instance_id: str) -> Membership | None:
        try:
            answer = await self._autoscaling.describe_auto_scaling_instances(
                InstanceIds=[instance_id]
            )
        except (BotoCoreError, ClientError) as exc:
            raise FallbackAwsError(f"DescribeAutoScalingInstances failed: {exc}") from exc
        for instance in answer.get("AutoScalingInstances", []):
            if instance["InstanceId"] == instance_id:
                return Membership(
                    asg_name=instance["AutoScalingGroupName"],
                    protected=bool(instance.get("ProtectedFromScaleIn", False)),
                )
        return None

    async def set_protection(self, asg_name: str, instance_id: str, protected: bool) -> None:
        try:
            await self._autoscaling.set_instance_protection(
                AutoScalingGroupName=asg_name,
                InstanceIds=[instance_id],
                ProtectedFromScaleIn=protected,
            )
        except (BotoCoreError, ClientError) as exc:
            raise FallbackAwsError(f"SetInstanceProtection failed: {exc}") from exc

    async def put_jibri_free(self, namespace: str, asg_name: str, free: bool) -> None:
        try:
            await self._cloudwatch.put_metric_data(
                Namespace=namespace,
                MetricData=[
                    {
                        "MetricName": JIBRI_FREE,
                        "Dimensions": [{"Name": "AutoScalingGroupName", "Value": asg_name}],
                        "Value": 1.0 if free else 0.0,
                        "Unit": "Count",
                    }
                ],
            )
        except (BotoCoreError, ClientError) as exc:
            raise FallbackAwsError(f"PutMetricData failed: {exc}") from exc


@asynccontextmanager
async def open_aws(region: str | None) -> AsyncIterator[AioAws]:
    """Clients for the fallback, closed on exit."""
    session = get_session()
    async with AsyncExitStack() as stack:
        autoscaling = await stack.enter_async_context(
            session.create_client("autoscaling", region_name=region, config=_CONFIG)
        )
        cloudwatch = await stack.enter_async_context(
            session.create_client("cloudwatch", region_name=region, config=_CONFIG)
        )
        yield AioAws(autoscaling, cloudwatch)

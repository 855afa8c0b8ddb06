"""The Auto Scaling warm-pool calls (docs/warm-pools.md): a narrow `WarmPoolApi` Protocol and
the aiobotocore implementation that `controller.aws.AioAutoScaling` mixes in.

A separate Protocol from `AutoScaling`, so the scaling path and its in-process stand-ins need
not know about warm pools. Each call is counted and timed like every other AWS call.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from controller.warm_pool.rules import WarmInstance as WarmInstance
from controller.warm_pool.rules import WarmPoolConfig as WarmPoolConfig
from controller.warm_pool.rules import WarmPoolView as WarmPoolView

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient

    from controller.aws import TerminationHook

T = TypeVar("T")

WARM_POOL_OPERATIONS: Final = (
    "PutWarmPool",
    "DescribeWarmPool",
    "DeleteWarmPool",
    "DescribeTags",
    "CreateOrUpdateTags",
    "DeleteTags",
)
PAGE: Final = 50
"""DescribeWarmPool's largest page."""


class WarmPoolApi(Protocol):
    """The warm-pool, group-tag and lifecycle calls the warm-pool step makes."""

    async def put_warm_pool(self, name: str, config: WarmPoolConfig) -> None: ...

    async def describe_warm_pool(self, name: str) -> WarmPoolView: ...

    async def delete_warm_pool(self, name: str) -> None: ...

    async def group_tag(self, name: str, key: str) -> str | None: ...

    async def set_group_tag(self, name: str, key: str, value: str) -> None: ...

    async def delete_group_tag(self, name: str, key: str) -> None: ...

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]: ...

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None: ...


def config_of(answer: dict[str, Any]) -> WarmPoolView:
    """Parse one DescribeWarmPool page's configuration (instances are added by the caller)."""
    raw = answer.get("WarmPoolConfiguration")
    if not raw:
        return WarmPoolView(None)
    cap = raw.get("MaxGroupPreparedCapacity")
    config = WarmPoolConfig(
        min_size=int(raw.get("MinSize", 0)),
        max_prepared_capacity=None if cap is None or int(cap) < 0 else int(cap),
        state=str(raw.get("PoolState", "Stopped")),
        reuse_on_scale_in=bool(raw.get("InstanceReusePolicy", {}).get("ReuseOnScaleIn", False)),
    )
    return WarmPoolView(config, pending_delete=raw.get("Status") == "PendingDelete")


class AioWarmPools:
    """`WarmPoolApi` over the aiobotocore client of `controller.aws.AioAutoScaling`."""

    _client: AutoScalingClient

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        raise NotImplementedError

    async def put_warm_pool(self, name: str, config: WarmPoolConfig) -> None:
        await self._call(
            "PutWarmPool",
            self._client.put_warm_pool(
                AutoScalingGroupName=name,
                MinSize=config.min_size,
                # -1 is AWS's own "the group's MaxSize": it clears an earlier explicit value.
                MaxGroupPreparedCapacity=-1
                if config.max_prepared_capacity is None
                else config.max_prepared_capacity,
                PoolState=config.state,  # type: ignore[arg-type]
                InstanceReusePolicy={"ReuseOnScaleIn": config.reuse_on_scale_in},
            ),
        )

    async def describe_warm_pool(self, name: str) -> WarmPoolView:
        view: WarmPoolView | None = None
        instances: list[WarmInstance] = []
        token: str | None = None
        while True:
            extra = {"NextToken": token} if token else {}
            page = await self._call(
                "DescribeWarmPool",
                self._client.describe_warm_pool(
                    AutoScalingGroupName=name, MaxRecords=PAGE, **extra
                ),
            )
            if view is None:
                view = config_of(dict(page))
            instances += (
                WarmInstance(i["InstanceId"], i["LifecycleState"])
                for i in page.get("Instances", [])
            )
            token = page.get("NextToken")
            if not token:
                break
        return WarmPoolView(view.config, tuple(instances), view.pending_delete)

    async def delete_warm_pool(self, name: str) -> None:
        await self._call(
            "DeleteWarmPool",
            # ForceDelete would terminate warmed instances without their lifecycle hooks.
            self._client.delete_warm_pool(AutoScalingGroupName=name, ForceDelete=False),
        )

    async def group_tag(self, name: str, key: str) -> str | None:
        answer = await self._call(
            "DescribeTags",
            self._client.describe_tags(
                Filters=[
                    {"Name": "auto-scaling-group", "Values": [name]},
                    {"Name": "key", "Values": [key]},
                ]
            ),
        )
        for tag in answer.get("Tags", []):
            if tag.get("ResourceId") == name and tag.get("Key") == key:
                return str(tag.get("Value", ""))
        return None

    async def set_group_tag(self, name: str, key: str, value: str) -> None:
        await self._call(
            "CreateOrUpdateTags",
            self._client.create_or_update_tags(
                Tags=[
                    {
                        "ResourceId": name,
                        "ResourceType": "auto-scaling-group",
                        "Key": key,
                        "Value": value,
                        "PropagateAtLaunch": False,
                    }
                ]
            ),
        )

    async def delete_group_tag(self, name: str, key: str) -> None:
        await self._call(
            "DeleteTags",
            self._client.delete_tags(
                Tags=[{"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": key}]
            ),
        )

"""The warm-pool configuration round trip against the AWS emulator over HTTP: what the step
writes with PutWarmPool comes back from DescribeWarmPool, drift is corrected, and a dropped
warm pool is deleted only when the group carries the pool's tag. The emulator stores the
configuration but warms no instance (tests/unit/controller/test_warm_pool_step.py covers that
with the fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from controller.aws import AioAutoScaling
from controller.prometheus import Metrics
from controller.spec import JibriPool
from controller.warm_pool.api import WarmPoolApi, WarmPoolConfig
from controller.warm_pool.rules import OWNER_TAG
from controller.warm_pool.step import WarmPoolSync
from tests.support.aws import REGION, Emulator, create_asg

GROUP = "jibri-warm"


def pool(warm: dict[str, Any] | None) -> JibriPool:
    spec: dict[str, Any] = {
        "autoScalingGroupName": GROUP,
        "capacity": {"min": 0, "max": 10},
        "targetFree": 1,
    }
    if warm is not None:
        spec["warmPool"] = warm
    return JibriPool.model_validate(
        {
            "apiVersion": "jibri-autoscaler/v1",
            "kind": "JibriPool",
            "metadata": {"name": "recorders"},
            "spec": spec,
        }
    )


@asynccontextmanager
async def autoscaling(endpoint: str) -> AsyncIterator[AioAutoScaling]:
    async with get_session().create_client(
        "autoscaling",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    ) as client:
        yield AioAutoScaling(client, Metrics(CollectorRegistry()))


def sync(api: AioAutoScaling) -> WarmPoolSync:
    async def apis(region: str | None) -> WarmPoolApi:
        return api

    return WarmPoolSync(apis=apis, metrics=Metrics(CollectorRegistry()))


async def test_warm_pool_round_trip(emulator: Emulator) -> None:
    """The spec's warm pool is written, read back equal, corrected after drift, and deleted
    with its tag once the spec drops it."""
    create_asg(emulator, GROUP, min_size=0, max_size=10, desired=1)
    wanted = {"minSize": 2, "maxPreparedCapacity": 6, "state": "Hibernated", "reuseOnScaleIn": True}
    async with autoscaling(emulator.endpoint) as api:
        step = sync(api)
        await step.run_once(pool(wanted))
        view = await api.describe_warm_pool(GROUP)
        assert view.config == WarmPoolConfig(2, 6, "Hibernated", True)
        assert await api.group_tag(GROUP, OWNER_TAG) == "recorders"

        await api.put_warm_pool(GROUP, WarmPoolConfig(0, None, "Running", False))
        await step.run_once(pool(wanted))
        assert (await api.describe_warm_pool(GROUP)).config == WarmPoolConfig(
            2, 6, "Hibernated", True
        )

        await step.run_once(pool(None))
        assert (await api.describe_warm_pool(GROUP)).config is None
        assert await api.group_tag(GROUP, OWNER_TAG) is None
        status = step.pool_status("recorders")
        assert status is not None
        assert (status["change"], status["error"]) == ("delete", None)


async def test_a_foreign_warm_pool_survives(emulator: Emulator) -> None:
    """A warm pool the controller did not make stays when the spec has none."""
    create_asg(emulator, GROUP, min_size=0, max_size=10, desired=1)
    async with autoscaling(emulator.endpoint) as api:
        await api.put_warm_pool(GROUP, WarmPoolConfig(1))
        await sync(api).run_once(pool(None))
        assert (await api.describe_warm_pool(GROUP)).config == WarmPoolConfig(1)

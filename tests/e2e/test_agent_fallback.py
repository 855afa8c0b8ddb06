"""The classic fallback of a real agent process against the AWS emulator: JibriFree data
points, and its own scale-in protection while the controller is away."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_process import agent_env, make_recorder, shutdown
from tests.support.aws import Emulator, create_asg
from tests.support.controller import TOKEN, pool_yaml, running_controller
from tests.support.loopback import eventually, eventually_async

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
PERIOD = 2.0


def protected(emulator: Emulator, instance_id: str) -> bool:
    autoscaling = emulator.boto3_client("autoscaling")
    answer = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
    return bool(answer["AutoScalingInstances"][0]["ProtectedFromScaleIn"])


def jibri_free(emulator: Emulator) -> list[dict[str, Any]]:
    cloudwatch = emulator.boto3_client("cloudwatch")
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_statistics(
        Namespace="Jibri",
        MetricName="JibriFree",
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": GROUP}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Minimum", "Maximum", "SampleCount"],
    )
    points: list[dict[str, Any]] = answer["Datapoints"]
    return points


async def test_silent_controller_hands_protection_to_the_agent(
    emulator: Emulator, tmp_path: Path
) -> None:
    """With the controller stopped, a recording protects its instance within one fallback
    period and its end unprotects it; JibriFree data points reach CloudWatch all along."""
    (instance,) = await asyncio.to_thread(
        create_asg, emulator, GROUP, min_size=1, max_size=2, desired=1
    )
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=2, target_free=0, stale_after="5s"))
    recorder = await make_recorder(instance, tmp_path)
    try:
        with running_controller(emulator, config) as controller:
            agent = await recorder.start_agent(
                controller.url,
                agent_env(emulator, TOKEN),
                (
                    "--fallback",
                    "--fallback-period",
                    f"{PERIOD}s",
                    "--fallback-after",
                    "3s",
                ),
            )
            await eventually_async(
                lambda: agent.metric("jibri_agent_reports_total", outcome="ok"),
                what="an accepted report",
            )
            health = await agent.health()
            assert health is not None and not health["fallbackActive"]
            await asyncio.to_thread(controller.stop)
        await eventually(
            lambda: agent.events("fallback active", instance=instance) != [],
            what="the fallback to take over",
        )
        assert not await asyncio.to_thread(protected, emulator, instance)
        started = time.monotonic()
        await recorder.jibri.start_recording("fallback-1")
        await eventually(
            lambda: protected(emulator, instance), within=30, what="protection by the agent"
        )
        print(f"\nbusy → protected by the fallback in {time.monotonic() - started:.2f} s")
        await eventually(
            lambda: any(p["Minimum"] == 0.0 for p in jibri_free(emulator)),
            what="a JibriFree 0 while busy",
        )
        await recorder.jibri.stop_recording()
        await eventually(lambda: not protected(emulator, instance), within=30, what="unprotection")

        points = await asyncio.to_thread(jibri_free, emulator)
        assert max(p["Maximum"] for p in points) == 1.0
        assert agent.alive
    finally:
        await shutdown([recorder])

"""The scale benchmark's in-process AWS fake keeps AWS's semantics and counts calls as AWS does."""

from __future__ import annotations

import pytest

from bench.scale.fake_aws import FastAutoScaling, instance_id
from bench.scale.plan_timing import observation
from controller.aws import AutoScaling, AwsError
from controller.planner import plan


def fake(instances: int = 120) -> FastAutoScaling:
    aws = FastAutoScaling("bench", instances=instances)
    aws.min_size, aws.max_size = 1, instances + 10
    return aws


async def test_protection_counts_one_request_per_fifty_ids() -> None:
    """Protecting 120 instances is three SetInstanceProtection requests, as AWS bills them."""
    aws: AutoScaling = fake()
    ids = [instance_id(n) for n in range(1, 121)]
    await aws.set_instance_protection("bench", ids, True)
    view = await aws.describe_group("bench")
    assert all(row.protected for row in view.instances)
    assert isinstance(aws, FastAutoScaling)
    assert aws.calls["SetInstanceProtection"] == 3


async def test_scale_in_by_desired_capacity_spares_protected_instances() -> None:
    """Lowering desired capacity removes only unprotected instances."""
    aws = fake(4)
    aws.min_size = 0
    await aws.set_instance_protection("bench", [instance_id(1), instance_id(2)], True)
    await aws.set_desired_capacity("bench", 1)
    remaining = {row.instance_id for row in (await aws.describe_group("bench")).instances}
    assert remaining == {instance_id(1), instance_id(2)}


async def test_capacity_outside_bounds_and_unknown_group_are_refused() -> None:
    """The fake refuses what AWS refuses, with the controller's AwsError."""
    aws = fake(3)
    with pytest.raises(AwsError):
        await aws.set_desired_capacity("bench", 99)
    with pytest.raises(AwsError):
        await aws.describe_group("other")


async def test_terminate_with_decrement_shrinks_the_group() -> None:
    """TerminateInstanceInAutoScalingGroup with decrement removes it for good."""
    aws = fake(3)
    await aws.terminate_instance(instance_id(2), decrement=True)
    view = await aws.describe_group("bench")
    assert view.desired == 2
    assert instance_id(2) not in {row.instance_id for row in view.instances}


def test_plan_timing_observation_gives_the_planner_work() -> None:
    """The plan() benchmark's observation is realistic: protection fixes, no scale-out."""
    spec, observed = observation(1000)
    result = plan(spec, observed, 100_000.0)
    names = {action.name for action in result.actions}
    assert "protect" in names or "unprotect" in names
    assert "scale-out" not in names

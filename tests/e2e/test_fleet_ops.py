"""Fleet operations end to end (docs/fleet-operations.md): the real controller process against
the AWS emulator (moto over HTTP), with agents reporting over HTTP.

Recycling runs here against moto. moto lists no scaling activities, so launch failures are
tested against tests/support/fake_autoscaling.py through the reconcile loop
(tests/unit/controller/test_launches.py); here only that reading them against moto's empty
answer costs a pass nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    Agent,
    ReportingAgents,
    RunningController,
    pool_yaml,
    running_controller,
    wait_for,
)

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
RECYCLE = "  recycle: {maxRecordings: 5}\n"


def group(emulator: Emulator) -> dict[str, Any]:
    answer = emulator.boto3_client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )
    found: dict[str, Any] = answer["AutoScalingGroups"][0]
    return found


def members(emulator: Emulator) -> set[str]:
    return {i["InstanceId"] for i in group(emulator)["Instances"]}


def condition(controller: RunningController, kind: str) -> dict[str, Any] | None:
    _, status = controller.get_json("/status")
    for pool in status["pools"]:
        for found in pool["conditions"]:
            if found["type"] == kind:
                return dict(found)
    return None


def test_worn_recorder_is_replaced_first_then_drained_and_busy_one_kept(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Past maxRecordings, an idle recorder gets its replacement launched first, is drained
    with reason recycle-recordings once the replacement is idle, and is terminated; a busy
    recorder past the limit is never asked to drain."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    worn, busy, fresh = ids
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1, stale_after="5s", idle_for="60s") + RECYCLE)
    with running_controller(emulator, config) as controller:
        agents = [
            Agent(controller, worn, extra={"recordingsFinished": 5}),
            Agent(controller, busy, busy="BUSY", extra={"recordingsFinished": 9}),
            Agent(controller, fresh, busy="BUSY", extra={"recordingsFinished": 1}),
        ]
        with ReportingAgents(agents, interval=0.3) as fleet:
            # No idle recorder but the worn one: a replacement comes first, no drain yet.
            wait_for(lambda: group(emulator)["DesiredCapacity"] == 4, what="a replacement")
            held = wait_for(lambda: condition(controller, "Retiring"), what="Retiring")
            assert held["reason"] == "WaitingForReplacement"
            assert controller.actions("drain") == []
            (new,) = members(emulator) - set(ids)
            fleet.add(Agent(controller, new))
            wait_for(lambda: worn not in members(emulator), what="the worn one terminated")
        drains = controller.actions("drain")
        assert [(d["instance_ids"], d["reason"]) for d in drains] == [
            ([worn], "recycle-recordings")
        ]
        assert agents[1].drain_answers == 0 and busy in members(emulator)
        assert (
            controller.metric(
                "jibri_autoscaler_actions_total",
                pool="recorders",
                action="drain",
                reason="recycle-recordings",
            )
            == 1.0
        )


def test_empty_scaling_activities_leave_launches_healthy(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Against moto (no scaling activities), LaunchFailing stays false and nothing is held."""
    create_asg(emulator, GROUP, min_size=0, max_size=10, desired=0)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=2))
    with running_controller(emulator, config) as controller:
        wait_for(lambda: group(emulator)["DesiredCapacity"] == 2, what="scale-out")
        found = wait_for(lambda: condition(controller, "LaunchFailing"), what="LaunchFailing")
        assert found["status"] in (False, "False")
        assert controller.metric(
            "jibri_autoscaler_aws_requests_total",
            service="autoscaling",
            operation="DescribeScalingActivities",
            outcome="success",
        )

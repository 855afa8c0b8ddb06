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
    controller_env,
    pool_yaml,
    run_command,
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


def rollout_condition(controller: RunningController, reason: str) -> dict[str, Any] | None:
    found = condition(controller, "RollingOut")
    return found if found is not None and found["reason"] == reason else None


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


OLD_AMI, NEW_AMI = "ami-00000000000000001", "ami-00000000000000002"


def add_template_version(emulator: Emulator) -> None:
    ec2 = emulator.boto3_client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template_version(
        LaunchTemplateName=f"{GROUP}-template",
        LaunchTemplateData={"ImageId": image, "InstanceType": "c5.large"},
    )


def test_rollout_canary_first_then_old_idle_ones_never_the_busy_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`controller rollout` sets spec.rollout; the running controller switches the group to
    version 2, launches one canary, waits for it to report idle and healthy on the new AMI,
    then drains the old idle recorders (reason rollout) and leaves the busy one until it is
    idle, and /status says the rollout is complete."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    add_template_version(emulator)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1, stale_after="5s", idle_for="1h"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, i, extra={"amiId": OLD_AMI}) for i in ids]
        agents[0].busy = "BUSY"
        with ReportingAgents(agents, interval=0.3) as fleet:
            started = run_command(
                [
                    "rollout",
                    "recorders",
                    "--config",
                    str(config),
                    "--launch-template-version",
                    "2",
                    "--image-id",
                    NEW_AMI,
                    "--healthy-for",
                    "1s",
                ],
                controller_env(emulator),
            )
            assert started.returncode == 0, started.stderr
            wait_for(lambda: group(emulator)["LaunchTemplate"]["Version"] == "2", what="version 2")
            wait_for(lambda: len(members(emulator)) == 4, what="the canary")
            canary = condition(controller, "RollingOut")
            assert canary is not None and canary["reason"] in ("Canary", "Switching")
            assert controller.actions("drain") == []  # nothing old leaves before the canary
            (new,) = members(emulator) - set(ids)
            fleet.add(Agent(controller, new, extra={"amiId": NEW_AMI}))
            wait_for(lambda: not ({ids[1], ids[2]} & members(emulator)), what="old idle ones gone")
            assert ids[0] in members(emulator) and agents[0].drain_answers == 0
            fleet.set(ids[0], busy="IDLE")
            wait_for(lambda: ids[0] not in members(emulator), what="the once-busy one gone")
            done = wait_for(
                lambda: rollout_condition(controller, "Complete"), what="rollout complete"
            )
            assert done
        drains = controller.actions("drain")
        assert {d["instance_ids"][0] for d in drains} == set(ids)
        assert {d["reason"] for d in drains} == {"rollout"}
        assert [a for a in controller.actions("drain") if a["instance_ids"] == [new]] == []
        events = [line.get("event") for line in controller.logs()]
        assert events.index("launch template version") < events.index("rollout canaries healthy")


def test_canary_that_never_boots_rolls_back(emulator: Emulator, tmp_path: Path) -> None:
    """A canary that never reports within bootTimeout aborts the rollout: the group goes
    back to its previous version, RollingOut says why, and no old recorder is drained."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=2)
    add_template_version(emulator)
    config = tmp_path / "pools.yaml"
    rollout = "  rollout: {launchTemplateVersion: '2', healthyFor: 1s}\n"
    config.write_text(pool_yaml(target_free=1, boot_timeout="3s", idle_for="1h") + rollout)
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, i) for i in ids]
        with ReportingAgents(agents, interval=0.3):
            wait_for(lambda: len(members(emulator)) == 3, what="the canary")
            back = wait_for(
                lambda: rollout_condition(controller, "RolledBack"), what="the rollback"
            )
            assert "did not boot" in back["message"]
            wait_for(
                lambda: group(emulator)["LaunchTemplate"]["Version"] == "$Latest",
                what="the previous version back",
            )
        assert controller.actions("drain") == []
        assert set(ids) <= members(emulator)

"""A recorder speaking for another (docs/identity.md), against the real controller process
and the AWS emulator over HTTP, with the busy instance's agent reporting BUSY throughout.

The attack: one report for the busy instance's id, a fresh bootId and seq 1, saying drained,
draining and drained, EXPIRED, or plain IDLE. Whether the report is refused (without that
instance's credential) or accepted (the credential layer bypassed: the shared token any
recorder holds), the busy instance stays protected, in the group, never asked to drain, and
the desired capacity is never lowered. Accepted, it makes the instance `conflicted` (a
/status condition naming both boots, the pool_instances gauge) until the fresh boot has been
silent for staleAfter.
"""

from __future__ import annotations

import uuid
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
ATTACKS: dict[str, dict[str, Any]] = {
    "drained": {"drained": True},
    "draining-drained": {"draining": True, "drained": True},
    "expired": {"busy": "EXPIRED"},
    "idle": {},
}


def group(emulator: Emulator) -> dict[str, Any]:
    autoscaling = emulator.boto3_client("autoscaling")
    answer = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    groups: list[dict[str, Any]] = answer["AutoScalingGroups"]
    return groups[0]


def forged(instance_id: str, **said: Any) -> dict[str, Any]:
    """A first report of a boot nobody has seen, for someone else's instance."""
    return {
        "instanceId": instance_id,
        "bootId": str(uuid.uuid4()),
        "seq": 1,
        "jibri": {"busyStatus": said.pop("busy", "IDLE"), "healthStatus": "HEALTHY"},
        "draining": said.pop("draining", False),
        "drained": said.pop("drained", False),
        "pendingUploads": 0,
    }


def pool_of(controller: RunningController) -> dict[str, Any]:
    _, document = controller.get_json("/status")
    pool: dict[str, Any] = document["pools"][0]
    return pool


def instance_state(controller: RunningController, instance_id: str) -> str | None:
    for view in pool_of(controller)["instances"]:
        if view["instanceId"] == instance_id:
            return str(view["state"])
    return None


def touching(controller: RunningController, instance_id: str) -> list[dict[str, Any]]:
    """Every action the controller logged that drains, ends or unprotects the instance."""
    return [
        action
        for name in ("drain", "terminate", "replace", "unprotect")
        for action in controller.actions(name)
        if instance_id in action.get("instance_ids", ())
    ]


def test_fresh_boot_reports_make_the_busy_recorder_conflicted_never_ended(
    emulator: Emulator, tmp_path: Path
) -> None:
    """With the credential layer bypassed (reports take the shared token), each forged
    report is accepted, and the planner's defence keeps the busy recorder: conflicted with
    both boots named, counted, protected, in the group, never drained; capacity not lowered."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    busy, peers = ids[0], ids[1:]
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=2, idle_for="2s", stale_after="3s"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, busy, busy="BUSY")] + [Agent(controller, i) for i in peers]
        with ReportingAgents(agents, interval=0.3) as fleet:
            wait_for(lambda: group(emulator)["Instances"], what="the group's instances")
            wait_for(
                lambda: all(
                    i["ProtectedFromScaleIn"]
                    for i in group(emulator)["Instances"]
                    if i["InstanceId"] == busy
                ),
                what="the busy recorder protected",
            )
            desired = group(emulator)["DesiredCapacity"]
            genuine = fleet.agents[busy].boot_id
            for name, said in ATTACKS.items():
                wait_for(
                    lambda: instance_state(controller, busy) == "busy",
                    what=f"busy before the {name} attack",
                )
                attack = forged(busy, **dict(said))
                status, _ = controller.post(attack)
                assert status == 200, name
                pool = wait_for(
                    lambda: (p := pool_of(controller))["counts"]["conflicted"] == 1 and p,
                    what=f"conflicted after the {name} attack",
                )
                (condition,) = [c for c in pool["conditions"] if c["type"] == "Conflicted"]
                assert busy in condition["message"]
                assert genuine in condition["message"]
                assert attack["bootId"] in condition["message"]
                wait_for(
                    lambda: (
                        controller.metric(
                            "jibri_autoscaler_pool_instances", pool="recorders", state="conflicted"
                        )
                        == 1.0
                    ),
                    what=f"the conflicted gauge after the {name} attack",
                )
                # The forged boot falls silent: after staleAfter the genuine one wins.
                wait_for(
                    lambda: instance_state(controller, busy) == "busy",
                    what=f"the genuine boot winning after the {name} attack",
                )
                members = {i["InstanceId"]: i for i in group(emulator)["Instances"]}
                assert members[busy]["ProtectedFromScaleIn"], name
                assert group(emulator)["DesiredCapacity"] >= desired, name
            assert fleet.errors == []
        assert fleet.agents[busy].drain_answers == 0
        assert touching(controller, busy) == []
        assert busy in {i["InstanceId"] for i in group(emulator)["Instances"]}

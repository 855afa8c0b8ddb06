"""Per-instance identity end to end: the real controller against the AWS emulator, agents
registering with signed identity documents, and a recorder that tries to speak for another."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import Emulator, create_asg
from tests.support.controller import Agent, ReportingAgents, pool_yaml, running_controller, wait_for
from tests.support.fake_imds import SigningAuthority
from tests.support.identity import register

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"


def instances(emulator: Emulator) -> dict[str, dict[str, Any]]:
    autoscaling = emulator.boto3_client("autoscaling")
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    return {i["InstanceId"]: i for i in group["AutoScalingGroups"][0]["Instances"]}


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param({"drained": True}, id="drained"),
        pytest.param({"draining": True, "drained": True}, id="draining-and-drained"),
        pytest.param({"busy": "EXPIRED"}, id="expired"),
        pytest.param({}, id="plain-idle"),
    ],
)
def test_a_recorder_cannot_report_for_another(
    emulator: Emulator, tmp_path: Path, forged: dict[str, Any]
) -> None:
    """Reports for a busy instance sent with another instance's credential and a fresh boot
    are refused (403) and counted; the busy instance stays protected and in service."""
    victim, attacker = create_asg(emulator, GROUP, min_size=2, max_size=4, desired=2)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=0, idle_for="1s", stale_after="5s"))
    with running_controller(emulator, config) as controller:
        busy = Agent(controller, victim, busy="BUSY")
        # Registration waits for the first observation of the group (403 not-managed before).
        wait_for(lambda: busy.report()[0] == 200, what="the victim's first accepted report")
        with ReportingAgents([busy], interval=0.3) as fleet:
            wait_for(lambda: instances(emulator)[victim]["ProtectedFromScaleIn"], what="protect")
            thief = Agent(controller, attacker)
            assert thief.report()[0] == 200
            stolen = Agent(controller, victim, seq=100, credential=thief.credential, **forged)
            for _ in range(5):
                status, answer = stolen.report()
                assert status == 403 and answer["error"] == "wrong-instance"
                stolen.credential = thief.credential
            shared = controller.post(
                {
                    "instanceId": victim,
                    "bootId": str(uuid.uuid4()),
                    "seq": 1,
                    "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
                    "drained": True,
                }
            )
            assert shared[0] == 401
            assert (
                controller.metric("jibri_autoscaler_report_auth_total", outcome="wrong-instance")
                == 5
            )
            assert fleet.errors == []
            wait_for(lambda: len(controller.actions()) > 0, what="a pass")
        state = instances(emulator)[victim]
        assert state["LifecycleState"] == "InService" and state["ProtectedFromScaleIn"]
        assert not [a for a in controller.actions("terminate") + controller.actions("replace")]


@pytest.mark.parametrize(
    ("kw", "outcome"),
    [
        pytest.param({"authority": SigningAuthority.generate()}, "bad-signature", id="other-key"),
        pytest.param({"account": "210987654321"}, "account-not-allowed", id="foreign-account"),
        pytest.param({"instance": "i-0fffffffffffffff0"}, "not-managed", id="unmanaged"),
    ],
)
def test_bad_registrations_are_refused(
    emulator: Emulator, tmp_path: Path, kw: dict[str, Any], outcome: str
) -> None:
    """A document signed by another key, from another account or for an instance in no
    managed group earns no credential."""
    (managed,) = create_asg(emulator, GROUP, min_size=1, max_size=1, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=1, target_free=0))
    with running_controller(emulator, config) as controller:
        instance = kw.pop("instance", managed)
        wait_for(
            lambda: (
                controller.metric("jibri_autoscaler_pool_desired_capacity", pool="recorders") == 1
            ),
            what="a pass",
        )
        status, answer = register(controller.url, instance, "boot-1", token=controller.token, **kw)
        assert status == 403 and isinstance(answer, dict) and answer["error"] == outcome
        assert controller.metric("jibri_autoscaler_registrations_total", outcome=outcome) == 1


def test_a_restarted_agent_registers_again(emulator: Emulator, tmp_path: Path) -> None:
    """A new boot of an instance registers and its next report is accepted at once; the old
    boot's credential no longer speaks for it."""
    (instance,) = create_asg(emulator, GROUP, min_size=1, max_size=1, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=1, target_free=0))
    with running_controller(emulator, config) as controller:
        first = Agent(controller, instance)
        wait_for(lambda: first.report()[0] == 200, what="the first boot to report")
        old = first.credential
        second = Agent(controller, instance)
        assert second.report()[0] == 200
        stale = Agent(controller, instance, boot_id=second.boot_id, seq=50, credential=old)
        assert stale.report()[0] == 401

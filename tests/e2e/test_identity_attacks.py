"""A recorder speaking for another (docs/identity.md), against the real controller process
and the AWS emulator over HTTP, with the busy instance's agent reporting BUSY throughout.

The attack: one report for the busy instance's id, a fresh bootId and seq 1, saying drained,
draining and drained, EXPIRED, or plain IDLE. Whether the report is refused (without that
instance's credential) or accepted (the credential layer bypassed), the busy instance stays
protected, in the group, never asked to drain, and the desired capacity is never lowered.
Accepted, it makes the instance `conflicted` (a /status condition naming both boots, the
pool_instances gauge) until the fresh boot has been silent for staleAfter.

"Bypassed" is `--insecure-identity`: a document for the instance signed by any key
registers a new boot of it, the way a stolen document would.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.wire import RegisterAnswer
from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    TOKEN,
    Agent,
    ReportingAgents,
    RunningController,
    http,
    pool_yaml,
    running_controller,
    wait_for,
)
from tests.support.fake_imds import SigningAuthority
from tests.support.identity import (
    register,
    registration_body,
)

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
ATTACKS: dict[str, dict[str, Any]] = {
    "drained": {"drained": True},
    "draining-drained": {"draining": True, "drained": True},
    "expired": {"busy": "EXPIRED"},
    "idle": {},
}


INSECURE = ("--insecure-identity",)


def credential(
    controller: RunningController,
    instance_id: str,
    boot_id: str,
    authority: SigningAuthority | None = None,
) -> str:
    """Register `instance_id` as `boot_id` (retried while the pool has not seen it yet)."""

    def registered() -> RegisterAnswer | None:
        status, answer = register(
            controller.url, instance_id, boot_id, authority=authority, token=TOKEN
        )
        return answer if status == 200 and isinstance(answer, RegisterAnswer) else None

    answer: RegisterAnswer = wait_for(registered, what=f"{instance_id} registered")
    return answer.credential


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
    with running_controller(emulator, config, extra_args=INSECURE) as controller:
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
                # Insecure mode: a document for the instance signed by any key registers a
                # new boot of it, with a credential for that boot.
                key = SigningAuthority.generate()
                token = credential(controller, busy, attack["bootId"], key)
                status, _ = dataclasses.replace(controller, token=token).post(attack)
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


def test_forged_reports_without_the_instance_credential_are_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The attacker is the peer recorder: it holds its own credential and the shared token.
    Each forged report for the busy instance is refused (403 with the peer's credential, 401
    with the token or none), and so is registering as the busy instance with a document
    signed by another key or with its own document; the busy instance stays busy, protected,
    in the group, never asked to drain, capacity not lowered, each refusal counted."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    busy, peers = ids[0], ids[1:]
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=2, idle_for="2s", stale_after="3s"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, busy, busy="BUSY")] + [Agent(controller, i) for i in peers]
        with ReportingAgents(agents, interval=0.3) as fleet:
            wait_for(lambda: instance_state(controller, busy) == "busy", what="busy")
            desired = group(emulator)["DesiredCapacity"]
            stolen: str = wait_for(lambda: fleet.agents[peers[0]].credential, what="a credential")
            thief = dataclasses.replace(controller, token=stolen)
            refusals: list[tuple[str, int, object]] = []
            for name, said in ATTACKS.items():
                attack = forged(busy, **dict(said))
                refusals.append((f"{name}/peer-credential", *thief.post(attack)))
                refusals.append((f"{name}/shared-token", *controller.post(attack)))
                status, body = http_post(controller.url + "/v1/reports", attack)
                refusals.append((f"{name}/no-credential", status, body))
            fresh = str(uuid.uuid4())
            other_key = register(
                controller.url, busy, fresh, authority=SigningAuthority.generate(), token=TOKEN
            )
            refusals.append(("register/other-key", other_key[0], other_key[1]))
            own = registration_body(peers[0], fresh)
            own["instanceId"] = busy
            refusals.append(
                ("register/own-document", *http_post(controller.url + "/v1/register", own, TOKEN))
            )
            statuses = {case: status for case, status, _ in refusals}
            assert all(status in (401, 403) for status in statuses.values()), statuses
            assert all(statuses[f"{n}/peer-credential"] == 403 for n in ATTACKS), statuses
            assert statuses["register/other-key"] == 403
            assert statuses["register/own-document"] == 403
            members = {i["InstanceId"]: i for i in group(emulator)["Instances"]}
            assert members[busy]["ProtectedFromScaleIn"]
            assert group(emulator)["DesiredCapacity"] >= desired
            assert instance_state(controller, busy) == "busy"
            assert fleet.errors == []
        wrong = controller.metric("jibri_autoscaler_report_auth_total", outcome="wrong-instance")
        assert wrong == len(ATTACKS)
        assert fleet.agents[busy].drain_answers == 0
        assert touching(controller, busy) == []
        assert pool_of(controller)["counts"]["conflicted"] == 0


def http_post(url: str, document: object, token: str | None = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, body = http("POST", url, json.dumps(document).encode(), headers)
    return status, json.loads(body) if body else None


def test_agent_restart_is_no_conflict(emulator: Emulator, tmp_path: Path) -> None:
    """The busy recorder's agent restarts (its boot falls silent, a new boot reports IDLE):
    the new boot's reports are taken, the instance stays busy and protected until the last
    busy report is staleAfter old, then idle; no state seen on the way is conflicted."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    busy, peers = ids[0], ids[1:]
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1, idle_for="60s", stale_after="3s"))
    with running_controller(emulator, config, extra_args=INSECURE) as controller:
        agents = [Agent(controller, busy, busy="BUSY")] + [Agent(controller, i) for i in peers]
        with ReportingAgents(agents, interval=0.3) as fleet:
            wait_for(lambda: instance_state(controller, busy) == "busy", what="busy")
            old_boot = fleet.agents[busy].boot_id
            restarted = Agent(controller, busy)
            fleet.add(restarted)
            seen: list[str | None] = []

            def idle() -> bool:
                seen.append(instance_state(controller, busy))
                return seen[-1] == "idle"

            wait_for(idle, what="the restarted boot's idle report counting")
            assert restarted.boot_id != old_boot
            assert "conflicted" not in seen and seen[0] == "busy"
            assert fleet.errors == []
        # Once idle and settled it may be unprotected; nothing else.
        assert [a for a in touching(controller, busy) if a["action"] != "unprotect"] == []

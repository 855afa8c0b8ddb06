"""The real controller process against the AWS emulator over HTTP, with agents reporting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    TOKEN,
    Agent,
    ReportingAgents,
    controller_env,
    pool_yaml,
    run_command,
    running_controller,
    wait_for,
)

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"


def group(emulator: Emulator, name: str = GROUP) -> dict[str, Any]:
    autoscaling = emulator.boto3_client("autoscaling")
    answer = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    groups: list[dict[str, Any]] = answer["AutoScalingGroups"]
    return groups[0]


def protected(emulator: Emulator) -> dict[str, bool]:
    return {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in group(emulator)["Instances"]}


def _accepted(agent: Agent) -> Callable[[], bool]:
    """A check that reports once and says whether the report was accepted (200)."""
    return lambda: agent.report()[0] == 200


def test_busy_pool_scales_out_by_the_gap_in_one_pass(emulator: Emulator, tmp_path: Path) -> None:
    """targetFree 2 with 3 busy instances: desired goes 3 → 5 in a single scale-out, and the
    3 busy instances are protected."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=3)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(group=GROUP, target_free=2, stale_after="30s"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, i, busy="BUSY") for i in ids]
        # Each agent registers once the controller has read the group (403 not-managed before).
        for agent in agents:
            wait_for(_accepted(agent), what=f"{agent.instance_id} to report")

        wait_for(lambda: group(emulator)["DesiredCapacity"] == 5, what="desired capacity 5")
        wait_for(lambda: all(protected(emulator)[i] for i in ids), what="busy ones protected")
        scale_outs = controller.actions("scale-out")
        assert [(a["previous"], a["capacity"], a["reason"]) for a in scale_outs] == [
            (3, 5, "below-target-free")
        ]
        protects = controller.actions("protect")
        assert sorted(i for a in protects for i in a["instance_ids"]) == ids
        assert all(a["reason"] == "busy" for a in protects)
        assert (
            controller.metric(
                "jibri_autoscaler_actions_total",
                pool="recorders",
                action="scale-out",
                reason="below-target-free",
            )
            == 1.0
        )


def test_idle_excess_is_drained_then_terminated_and_busy_is_kept(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Idle instances beyond targetFree get drain:true after idleFor; once they report drained
    they are terminated with decrement; the busy instance is never asked or touched."""
    ids = create_asg(emulator, GROUP, min_size=1, max_size=10, desired=4)
    busy, idle = ids[0], ids[1:]
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, target_free=1, idle_for="2s", stale_after="3s"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, busy, busy="BUSY")] + [Agent(controller, i) for i in idle]
        with ReportingAgents(agents, interval=0.5) as fleet:
            wait_for(
                lambda: group(emulator)["DesiredCapacity"] == 2,
                within=60,
                what="two idle instances drained and terminated",
            )
            remaining = {i["InstanceId"] for i in group(emulator)["Instances"]}
            terminated = set(ids) - remaining
            assert len(terminated) == 2 and busy in remaining
            assert fleet.errors == []

        assert fleet.agents[busy].drain_answers == 0
        assert protected(emulator)[busy] is True
        for instance_id in terminated:
            assert fleet.agents[instance_id].drain_answers >= 1
        terminations = controller.actions("terminate")
        assert sorted(i for a in terminations for i in a["instance_ids"]) == sorted(terminated)
        assert all(a["reason"] == "drained" for a in terminations)
        drains = controller.actions("drain")
        assert {i for a in drains for i in a["instance_ids"]} == terminated
        for name in ("drain", "terminate", "replace", "unprotect"):
            assert all(busy not in a["instance_ids"] for a in controller.actions(name)), name


def test_capacity_is_brought_back_within_bounds(emulator: Emulator, tmp_path: Path) -> None:
    """Capacity and the ASG's own bounds set outside [min, max] by hand are corrected."""
    create_asg(emulator, GROUP, min_size=1, max_size=4, desired=2)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=4, target_free=0, stale_after="30s"))
    autoscaling = emulator.boto3_client("autoscaling")
    with running_controller(emulator, config) as controller:
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=GROUP, MinSize=0, MaxSize=20, DesiredCapacity=7
        )
        wait_for(
            lambda: (
                (g := group(emulator))["DesiredCapacity"] == 4
                and (g["MinSize"], g["MaxSize"]) == (1, 4)
            ),
            what="capacity back to max 4 with bounds restored",
        )
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=GROUP, MinSize=0, DesiredCapacity=0
        )
        wait_for(
            lambda: (g := group(emulator))["DesiredCapacity"] == 1 and g["MinSize"] == 1,
            what="capacity raised back to min 1",
        )
        # The emulator raises desired to the restored MinSize itself, so the pass's own
        # below-min action may be logged just after the group already shows it.
        wait_for(
            lambda: (
                {"above-max", "below-min"}
                <= {a["reason"] for a in controller.actions() if "capacity" in a}
            ),
            what="above-max and below-min capacity actions logged",
        )
        capacities = [a["capacity"] for a in controller.actions() if "capacity" in a]
        assert capacities and all(1 <= c <= 4 for c in capacities)
        assert controller.actions("set-bounds")


def test_bad_token_and_bad_json_are_refused(emulator: Emulator, tmp_path: Path) -> None:
    """A report without its instance's credential gets 401, and a body that is not JSON
    gets 400 with a reason."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=3, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1))
    with running_controller(emulator, config) as controller:
        agent = Agent(controller, ids[0])
        wait_for(lambda: agent.report()[0] == 200, what="the agent to register and report")
        report = {
            "instanceId": ids[0],
            "bootId": agent.boot_id,
            "seq": 100,
            "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
        }
        assert controller.post(report, token=TOKEN)[0] == 401, "the shared token is no credential"
        status, answer = controller.post(b'{"instanceId": ', token=agent.credential)
        assert status == 400 and "JSON" in answer["error"]
        status, answer = controller.post({**report, "seq": "first"}, token=agent.credential)
        assert status == 400 and answer["field"] == "seq"
        assert (
            controller.metric("jibri_autoscaler_agent_reports_total", outcome="unauthorized") == 1
        )


def test_invalid_config_exits_nonzero_naming_the_field(emulator: Emulator, tmp_path: Path) -> None:
    """`run` and `validate` refuse an invalid file with a message naming document and field;
    `run` also refuses to start without a token."""
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml().replace("targetFree: 2", "targetFree: 2\n  targetFre: 3"))
    env = controller_env(emulator)
    run = run_command(["run", "--config", str(config), "--listen", "127.0.0.1:0"], env)
    assert run.returncode != 0
    assert f"{config}: document 1: spec.targetFre: unknown field" in run.stderr
    assert "Traceback" not in run.stderr

    validate = run_command(["validate", str(config)], env)
    assert validate.returncode != 0 and "spec.targetFre" in validate.stderr

    config.write_text(pool_yaml())
    validate = run_command(["validate", str(config)], env)
    assert validate.returncode == 0 and validate.stdout.strip() == f"{config}: 1 pool OK"

    tokenless = run_command(["run", "--config", str(config)], controller_env(emulator, None))
    assert tokenless.returncode != 0 and "JIBRI_AUTOSCALER_TOKEN" in tokenless.stderr


def test_config_edit_takes_effect_without_restart(emulator: Emulator, tmp_path: Path) -> None:
    """Raising targetFree in the file scales out without a restart; a broken edit afterwards
    keeps the last good state and is counted as invalid."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=10, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1, stale_after="30s"))
    with running_controller(emulator, config) as controller:
        with ReportingAgents([Agent(controller, ids[0])]):
            wait_for(
                lambda: controller.get_json("/status")[1]["pools"][0]["counts"]["idle"] == 1,
                what="the instance reported idle",
            )
            assert group(emulator)["DesiredCapacity"] == 1
            pid = controller.process.pid

            config.write_text(pool_yaml(target_free=3, stale_after="30s"))
            wait_for(lambda: group(emulator)["DesiredCapacity"] == 3, what="scale-out to 3")
            assert controller.process.pid == pid and controller.process.poll() is None
            reloads = controller.metric("jibri_autoscaler_config_reloads_total", outcome="success")
            assert reloads == 1.0

            config.write_text(pool_yaml(target_free=5, stale_after="30s") + "  bogus: 1\n")
            wait_for(
                lambda: (
                    controller.metric("jibri_autoscaler_config_reloads_total", outcome="invalid")
                    == 1.0
                ),
                what="the invalid edit to be counted",
            )
            pool = controller.get_json("/status")[1]["pools"][0]
            assert pool["spec"]["targetFree"] == 3
            assert group(emulator)["DesiredCapacity"] == 3
        invalid = [line for line in controller.logs() if line["event"].startswith("config invalid")]
        assert "spec.bogus: unknown field" in invalid[0]["problems"][0]


def test_status_health_and_status_command(emulator: Emulator, tmp_path: Path) -> None:
    """/healthz is 200 once reconciling, and `controller status` prints the pool as a table."""
    create_asg(emulator, GROUP, min_size=0, max_size=3, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1))
    with running_controller(emulator, config) as controller:
        wait_for(lambda: controller.get_json("/healthz")[0] == 200, what="healthy")
        wait_for(
            lambda: controller.get_json("/status")[1]["pools"][0]["instances"],
            what="instances in /status",
        )
        shown = run_command(["status", "--url", controller.url], controller_env(emulator))
        assert shown.returncode == 0, shown.stderr
        header = shown.stdout.splitlines()[0].split()
        assert header[:6] == ["POOL", "GROUP", "DESIRED", "MIN", "MAX", "TARGET-FREE"]
        assert "recorders: conditions" in shown.stdout and "Reconciled" in shown.stdout


def test_dry_run_plans_and_logs_but_changes_nothing(emulator: Emulator, tmp_path: Path) -> None:
    """With --dry-run, a needed scale-out and protection are logged and counted as planned,
    and the ASG is left exactly as it was."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=5, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=2, stale_after="30s"))
    with running_controller(emulator, config, extra_args=("--dry-run",)) as controller:
        busy = Agent(controller, ids[0], busy="BUSY")
        wait_for(lambda: busy.report()[0] == 200, what="the busy agent to register and report")
        planned = wait_for(lambda: controller.actions("scale-out"), what="a planned scale-out")
        assert planned[0]["dry_run"] is True and planned[0]["outcome"] == "planned"
        assert controller.get_json("/status")[1]["dryRun"] is True
        # The busy report can come only after the first pass (registration waits for the
        # group to be read), so the protection is planned by a later pass.
        wait_for(
            lambda: (
                (
                    controller.metric(
                        "jibri_autoscaler_actions_total",
                        pool="recorders",
                        action="protect",
                        reason="busy",
                    )
                    or 0
                )
                >= 1.0
            ),
            what="a planned protection",
        )
    after = group(emulator)
    assert after["DesiredCapacity"] == 1
    assert [i["ProtectedFromScaleIn"] for i in after["Instances"]] == [False]


def test_address_in_use_is_a_clear_error(emulator: Emulator, tmp_path: Path) -> None:
    """A --listen address that is taken stops the controller with a message, not a traceback."""
    create_asg(emulator, GROUP, min_size=0, max_size=3, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1))
    with running_controller(emulator, config) as controller:
        taken = controller.url.removeprefix("http://")
        clash = run_command(
            ["run", "--config", str(config), "--listen", taken, "--insecure-identity"],
            controller_env(emulator),
        )
    assert clash.returncode == 1
    assert f"error: cannot listen on {taken.rpartition(':')[0]}" in clash.stderr
    assert "Traceback" not in clash.stderr

"""The real controller process and CloudWatch in the AWS emulator: pool metrics, declared
alarms kept in place, and fallback scaling."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    Agent,
    ReportingAgents,
    RunningController,
    running_controller,
    wait_for,
)

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
PREFIX = "jibri-autoscaler/recorders/"
FEW_FREE = """\
      - name: few-free
        metricName: FreeInstances
        statistic: Minimum
        period: 1m
        evaluationPeriods: 3
        datapointsToAlarm: 2
        threshold: 1
        comparisonOperator: LessThanThreshold
        treatMissingData: breaching
"""


def pool_yaml(cloud_watch: str, *, target_free: int = 2) -> str:
    return f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata:
  name: recorders
spec:
  autoScalingGroupName: {GROUP}
  region: us-east-1
  capacity: {{min: 0, max: 6}}
  targetFree: {target_free}
  scaleIn: {{idleFor: 1h}}
  instances: {{bootTimeout: 60s, staleAfter: 5s}}
  resync: 1s
  cloudWatch:
{cloud_watch}"""


def gauge(emulator: Emulator, metric: str, stat: str, namespace: str = "Jibri") -> list[float]:
    cloudwatch = emulator.boto3_client("cloudwatch")
    now = dt.datetime.now(dt.UTC)
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": "AutoScalingGroupName", "Value": GROUP}],
                    },
                    "Period": 60,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=1),
    )
    values: list[float] = answer["MetricDataResults"][0]["Values"]
    return values


def alarms(emulator: Emulator) -> dict[str, dict[str, Any]]:
    cloudwatch = emulator.boto3_client("cloudwatch")
    found = cloudwatch.describe_alarms()["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def definition(alarm: dict[str, Any]) -> dict[str, Any]:
    """An alarm without what changes on its own (state and timestamps)."""
    return {
        k: v for k, v in alarm.items() if not k.startswith("State") and not k.endswith("Timestamp")
    }


def put_by_hand(emulator: Emulator, alarm: dict[str, Any], **changes: Any) -> None:
    """Write an alarm with boto3, as someone in the console would."""
    keys = (
        "AlarmName",
        "AlarmDescription",
        "ActionsEnabled",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "Statistic",
        "Dimensions",
        "Period",
        "EvaluationPeriods",
        "DatapointsToAlarm",
        "Threshold",
        "ComparisonOperator",
        "TreatMissingData",
    )
    request = {k: alarm[k] for k in keys if k in alarm}
    request.update(changes)
    emulator.boto3_client("cloudwatch").put_metric_alarm(**request)


def no_step_failures(controller: RunningController) -> None:
    failures = [line for line in controller.logs() if line.get("event") == "cloudwatch step failed"]
    assert failures == []


def test_pool_metrics_are_published_with_the_right_values(
    emulator: Emulator, tmp_path: Path
) -> None:
    """After passes with 1 busy and 2 idle recorders, CloudWatch holds Free 2, Busy 1,
    Starting 0 and Draining 0 for the ASG, and nothing else was ever published."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=6, desired=3)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml("    storageResolution: 1\n"))
    with running_controller(emulator, config) as controller:
        agents = [Agent(controller, ids[0], busy="BUSY")] + [Agent(controller, i) for i in ids[1:]]
        with ReportingAgents(agents, interval=0.5):
            wait_for(
                lambda: gauge(emulator, "DrainingInstances", "SampleCount"),
                within=60,
                what="pool metrics in CloudWatch",
            )
            expected = {
                "FreeInstances": 2.0,
                "BusyInstances": 1.0,
                "StartingInstances": 0.0,
                "DrainingInstances": 0.0,
            }
            for metric, value in expected.items():
                assert set(gauge(emulator, metric, "Minimum")) == {value}, metric
                assert set(gauge(emulator, metric, "Maximum")) == {value}, metric
            wait_for(
                lambda: (
                    (
                        controller.metric(
                            "jibri_autoscaler_aws_requests_total",
                            service="cloudwatch",
                            operation="PutMetricData",
                            outcome="success",
                        )
                        or 0
                    )
                    >= 2
                ),
                what="PutMetricData counted on /metrics",
            )
        status = controller.get_json("/status")[1]["pools"][0]["cloudWatch"]
        assert status["lastPublishedAt"] is not None and status["errors"] == {}
        no_step_failures(controller)


def test_declared_alarm_is_created_corrected_and_deleted(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A declared alarm is created and tagged; a hand edit of its threshold is reverted; once
    removed from the file it is deleted; unmanaged alarms stay untouched throughout."""
    create_asg(emulator, GROUP, min_size=0, max_size=6, desired=0)
    cloudwatch = emulator.boto3_client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="cpu-high",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=300,
        EvaluationPeriods=2,
        Threshold=90.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.put_metric_alarm(
        AlarmName=PREFIX + "by-hand",
        MetricName="FreeInstances",
        Namespace="Jibri",
        Statistic="Minimum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.0,
        ComparisonOperator="LessThanOrEqualToThreshold",
    )
    unmanaged = {name: definition(a) for name, a in alarms(emulator).items()}
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml("    alarms:\n" + FEW_FREE, target_free=0))
    with running_controller(emulator, config) as controller:
        name = PREFIX + "few-free"
        created = wait_for(lambda: alarms(emulator).get(name), what="the declared alarm")
        assert (created["Threshold"], created["Statistic"], created["Period"]) == (
            1.0,
            "Minimum",
            60,
        )
        assert (created["EvaluationPeriods"], created["DatapointsToAlarm"]) == (3, 2)
        assert created["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": GROUP}]
        assert created["TreatMissingData"] == "breaching"
        tags = cloudwatch.list_tags_for_resource(ResourceARN=created["AlarmArn"])["Tags"]
        assert {"Key": "jibri-autoscaler:pool", "Value": "recorders"} in tags

        def shown() -> dict[str, Any] | None:
            block = controller.get_json("/status")[1]["pools"][0]["cloudWatch"]
            return next((a for a in block["alarms"] if a["name"] == name and a["state"]), None)

        assert wait_for(shown, what="the alarm in /status")["state"] == created["StateValue"]

        put_by_hand(emulator, created, Threshold=5.0)
        assert alarms(emulator)[name]["Threshold"] == 5.0
        wait_for(lambda: alarms(emulator)[name]["Threshold"] == 1.0, what="threshold restored")
        assert definition(alarms(emulator)[name]) == definition(created)

        config.write_text(pool_yaml("    alarms: []\n", target_free=0))
        wait_for(lambda: name not in alarms(emulator), what="the removed alarm deleted")
        assert controller.metric(
            "jibri_autoscaler_cloudwatch_changes_total",
            pool="recorders",
            object="alarm",
            change="update",
        ) == pytest.approx(1.0)
        no_step_failures(controller)
    left = {name: definition(a) for name, a in alarms(emulator).items()}
    assert left == unmanaged


def test_fallback_scaling_creates_policy_and_alarm_that_triggers_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """fallbackScaling creates a step scale-out policy and an alarm on Sum(JibriFree) whose
    action is that policy's ARN; dropping it from the file deletes both."""
    create_asg(emulator, GROUP, min_size=0, max_size=6, desired=0)
    autoscaling = emulator.boto3_client("autoscaling")
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml("    fallbackScaling: {maxStep: 3}\n", target_free=0))

    def policies() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = autoscaling.describe_policies(AutoScalingGroupName=GROUP)[
            "ScalingPolicies"
        ]
        return found

    with running_controller(emulator, config) as controller:
        name = PREFIX + "fallback-scale-out"
        alarm = wait_for(lambda: alarms(emulator).get(name), what="the fallback alarm")
        (policy,) = policies()
        assert policy["PolicyName"] == "jibri-autoscaler-fallback-scale-out"
        assert (policy["PolicyType"], policy["AdjustmentType"]) == (
            "StepScaling",
            "ChangeInCapacity",
        )
        assert policy["StepAdjustments"] == [
            {"MetricIntervalUpperBound": 0.0, "ScalingAdjustment": 1}
        ]
        assert policy["EstimatedInstanceWarmup"] == 60
        assert alarm["AlarmActions"] == [policy["PolicyARN"]]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
            "Jibri",
            "JibriFree",
            "Sum",
        )
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1.0, "LessThanThreshold")
        assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
            60,
            4,
            4,
        )
        assert alarm["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": GROUP}]
        block = controller.get_json("/status")[1]["pools"][0]["cloudWatch"]
        assert block["fallbackScaling"]["policyArn"] == policy["PolicyARN"]

        config.write_text(pool_yaml("    alarms: []\n", target_free=0))
        wait_for(
            lambda: name not in alarms(emulator) and not policies(),
            what="fallback alarm and policy deleted",
        )
        no_step_failures(controller)

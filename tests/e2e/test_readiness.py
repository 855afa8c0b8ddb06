"""The real controller process against the AWS emulator, with demand history already in
CloudWatch: at start it reads the history back and holds more free recorders than targetFree,
and says why in /status and /metrics."""

from __future__ import annotations

import datetime as dt
import time
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
NAMESPACE = "Jibri"
TARGET_FREE = 2
MISSED_ALARM = """\
      - name: missed
        metricName: RecordingsMissed
        statistic: Sum
        period: 1m
        evaluationPeriods: 1
        threshold: 1
        comparisonOperator: GreaterThanOrEqualToThreshold
        treatMissingData: notBreaching
"""


def pool_yaml() -> str:
    return f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata:
  name: recorders
spec:
  autoScalingGroupName: {GROUP}
  region: us-east-1
  capacity: {{min: 0, max: 20}}
  targetFree: {TARGET_FREE}
  scaleIn: {{idleFor: 1h}}
  instances: {{bootTimeout: 10m, staleAfter: 5s}}
  resync: 1s
  readiness: {{horizon: 5m}}
  cloudWatch:
    namespace: {NAMESPACE}
    publishMetrics: false
    alarms:
{MISSED_ALARM}"""


def publish_history(emulator: Emulator, now: float) -> None:
    """One recording a minute around this time of day on the same weekday one and two weeks
    ago, as an earlier controller of the pool would have published it."""
    cloudwatch = emulator.boto3_client("cloudwatch")
    minute = int(now // 60)
    for weeks in (1, 2):
        past = minute - weeks * 7 * 1440
        data: list[dict[str, Any]] = [
            {
                "MetricName": "RecordingsStarted",
                "Dimensions": [{"Name": "AutoScalingGroupName", "Value": GROUP}],
                "Timestamp": dt.datetime.fromtimestamp(m * 60, dt.UTC),
                "Value": 1.0,
                "Unit": "Count",
            }
            for m in range(past - 30, past + 30)
        ]
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data)


def readiness(controller: RunningController) -> dict[str, Any] | None:
    status, document = controller.get_json("/status")
    assert status == 200
    block: dict[str, Any] | None = document["pools"][0]["readiness"]
    return block


def test_history_in_cloudwatch_holds_more_free_recorders(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Backfilled history of one recording a minute makes the pool hold a forecast's spares
    (well above targetFree 2), raising the group at once; /status and /metrics show the parts."""
    ids = create_asg(emulator, GROUP, min_size=0, max_size=20, desired=TARGET_FREE)
    publish_history(emulator, time.time())
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml())
    with (
        running_controller(emulator, config) as controller,
        ReportingAgents([Agent(controller, i) for i in ids], interval=0.5),
    ):

        def forecast() -> dict[str, Any] | None:
            block = readiness(controller)
            target = block and block["target"]
            return block if target and target["forecast"] > 0 else None

        block = wait_for(forecast, within=60, what="a forecast from the backfilled history")
        target = block["target"]
        assert target["samples"] == 2
        assert target["total"] == max(TARGET_FREE, target["forecast"] + target["reactive"])
        assert target["total"] > TARGET_FREE + 3
        assert target["floor"] == TARGET_FREE
        assert block["history"]["backfilled"] is True
        assert block["history"]["minutes"] >= 120
        assert block["bootHorizonSeconds"] == 300.0

        autoscaling = emulator.boto3_client("autoscaling")

        def raised() -> int:
            group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
            desired: int = group["AutoScalingGroups"][0]["DesiredCapacity"]
            return desired if desired >= target["total"] else 0

        wait_for(raised, within=30, what="the group raised to the target in force")
        metric = controller.metric
        assert metric(
            "jibri_autoscaler_pool_target_part", pool="recorders", part="forecast"
        ) == float(target["forecast"])
        assert (metric("jibri_autoscaler_pool_target_free", pool="recorders") or 0) > 2
        assert (metric("jibri_autoscaler_demand_history_seconds", pool="recorders") or 0) >= 7200
        assert metric("jibri_autoscaler_pool_boot_horizon_seconds", pool="recorders") == 300.0
        assert metric("jibri_autoscaler_recordings_missed_total", pool="recorders") == 0.0
    alarms = emulator.boto3_client("cloudwatch").describe_alarms()["MetricAlarms"]
    [missed] = [a for a in alarms if a["AlarmName"] == "jibri-autoscaler/recorders/missed"]
    assert (missed["MetricName"], missed["Statistic"]) == ("RecordingsMissed", "Sum")

"""Validation of spec.cloudWatch: alarms as AWS would check them, fallback scaling, pool metrics."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller.spec import ConfigError, parse_desired_state


def _pool_yaml(cloud_watch: dict[str, Any]) -> str:
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": "recorders"},
        "spec": {
            "autoScalingGroupName": "jibri-recorders",
            "capacity": {"min": 1, "max": 10},
            "targetFree": 2,
            "cloudWatch": cloud_watch,
        },
    }
    return yaml.safe_dump(document)


def _alarm(**fields: Any) -> dict[str, Any]:
    alarm: dict[str, Any] = {
        "name": "few-free",
        "metricName": "FreeInstances",
        "statistic": "Minimum",
        "threshold": 1,
        "comparisonOperator": "LessThanThreshold",
    }
    alarm.update(fields)
    return alarm


def _errors(cloud_watch: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(_pool_yaml(cloud_watch), "pools.yaml")
    return str(caught.value).splitlines()


INVALID = [
    pytest.param(
        {"alarms": [_alarm(period=45)]},
        "spec.cloudWatch.alarms[0].period: must be 10, 20 or 30 seconds or a multiple of 60 "
        "seconds (got 45 s)",
        id="period-not-allowed",
    ),
    pytest.param(
        {"alarms": [_alarm(period="90s")]},
        "spec.cloudWatch.alarms[0].period: must be 10, 20 or 30 seconds or a multiple of 60 "
        "seconds (got 90 s)",
        id="period-duration-not-a-minute-multiple",
    ),
    pytest.param(
        {"alarms": [_alarm(period="1.5s")]},
        "spec.cloudWatch.alarms[0].period: must be a whole number of seconds (got 1.5 s)",
        id="period-fraction",
    ),
    pytest.param(
        {"alarms": [_alarm(period=0)]},
        "spec.cloudWatch.alarms[0].period: must be 10, 20 or 30 seconds or a multiple of 60 "
        "seconds (got 0 s)",
        id="period-zero",
    ),
    pytest.param(
        {"alarms": [_alarm(period="5m", evaluationPeriods=289)]},
        "spec.cloudWatch.alarms[0].evaluationPeriods: period * evaluationPeriods is 86700 s; "
        "AWS allows at most 86400 s (one day) when the period is under an hour",
        id="range-over-a-day",
    ),
    pytest.param(
        {"alarms": [_alarm(period="1h", evaluationPeriods=169)]},
        "spec.cloudWatch.alarms[0].evaluationPeriods: period * evaluationPeriods is 608400 s; "
        "AWS allows at most 604800 s (seven days)",
        id="range-over-a-week",
    ),
    pytest.param(
        {"alarms": [_alarm(evaluationPeriods=3, datapointsToAlarm=4)]},
        "spec.cloudWatch.alarms[0].datapointsToAlarm: must not exceed evaluationPeriods (3)",
        id="datapoints-over-evaluation-periods",
    ),
    pytest.param(
        {"alarms": [_alarm(evaluationPeriods=0)]},
        "spec.cloudWatch.alarms[0].evaluationPeriods: Input should be greater than or equal to 1",
        id="no-evaluation-period",
    ),
    pytest.param(
        {"alarms": [_alarm(threshold=float("nan"))]},
        "spec.cloudWatch.alarms[0].threshold: Input should be a finite number",
        id="threshold-nan",
    ),
    pytest.param(
        {"alarms": [_alarm(comparisonOperator="Below")]},
        "spec.cloudWatch.alarms[0].comparisonOperator: Input should be "
        "'GreaterThanOrEqualToThreshold', 'GreaterThanThreshold', 'LessThanThreshold' or "
        "'LessThanOrEqualToThreshold' (got 'Below')",
        id="unknown-comparison",
    ),
    pytest.param(
        {"alarms": [_alarm(treshold=1)]},
        "spec.cloudWatch.alarms[0].treshold: unknown field (check the spelling)",
        id="typo",
    ),
    pytest.param(
        {"alarms": [_alarm(alarmActions=["sns-topic"])]},
        "spec.cloudWatch.alarms[0].alarmActions[0]: String should match pattern '^arn:[^\\s]+$'",
        id="action-not-an-arn",
    ),
    pytest.param(
        {"alarms": [_alarm(okActions=[f"arn:aws:sns:us-east-1:1:t{i}" for i in range(6)])]},
        "spec.cloudWatch.alarms[0].okActions: Tuple should have at most 5 items after "
        "validation, not 6",
        id="too-many-actions",
    ),
    pytest.param(
        {"alarms": [_alarm(name="x" * 175)]},
        "spec.cloudWatch.alarms[0].name: String should have at most 174 characters",
        id="name-too-long-for-any-prefix",
    ),
    pytest.param(
        {"alarms": [_alarm(name="bad\tname")]},
        "spec.cloudWatch.alarms[0].name: String should match pattern '^[^\\x00-\\x1f\\x7f]*$'",
        id="name-control-character",
    ),
    pytest.param(
        {"alarms": [_alarm(), _alarm(metricName="BusyInstances")]},
        "spec.cloudWatch.alarms[1].name: duplicate alarm name (also alarms[0])",
        id="duplicate-name",
    ),
    pytest.param(
        {"alarms": [_alarm(name="fallback-scale-out")]},
        "spec.cloudWatch.alarms[0].name: is reserved for the fallbackScaling alarm",
        id="reserved-name",
    ),
    pytest.param(
        {"alarms": [_alarm(statistic="Sum")]},
        "spec.cloudWatch.alarms[0].statistic: FreeInstances is a gauge published on every pass, "
        "so its Sum follows the pass rate: use Minimum, Maximum or Average",
        id="sum-of-pool-gauge",
    ),
    pytest.param(
        {"alarms": [_alarm(period=10)]},
        "spec.cloudWatch.alarms[0].period: a 10 s period needs storageResolution: 1 "
        "(pool metrics are otherwise stored per minute)",
        id="high-resolution-alarm-on-minute-metrics",
    ),
    pytest.param(
        {"publishMetrics": False, "alarms": [_alarm()]},
        "spec.cloudWatch.alarms[0].metricName: pool metrics are off (publishMetrics: false)",
        id="alarm-on-unpublished-metric",
    ),
    pytest.param(
        {"namespace": "AWS/EC2"},
        "spec.cloudWatch.namespace: namespaces starting with AWS/ are reserved",
        id="reserved-namespace",
    ),
    pytest.param(
        {"storageResolution": 5},
        "spec.cloudWatch.storageResolution: Input should be 1 or 60 (got 5)",
        id="storage-resolution",
    ),
    pytest.param(
        {"fallbackScaling": {"after": "90s"}},
        "spec.cloudWatch.fallbackScaling.after: must be a whole number of 60 s alarm periods, "
        "from 120 s to 86400 s (got 90 s)",
        id="fallback-after-not-whole-minutes",
    ),
    pytest.param(
        {"fallbackScaling": {"after": "1m"}},
        "spec.cloudWatch.fallbackScaling.after: must be a whole number of 60 s alarm periods, "
        "from 120 s to 86400 s (got 60 s)",
        id="fallback-after-too-short",
    ),
    pytest.param(
        {"fallbackScaling": {"after": "2d"}},
        "spec.cloudWatch.fallbackScaling.after: must be a whole number of 60 s alarm periods, "
        "from 120 s to 86400 s (got 172800 s)",
        id="fallback-after-too-long",
    ),
    pytest.param(
        {"fallbackScaling": {"agentPeriod": "2m", "after": "3m"}},
        "spec.cloudWatch.fallbackScaling.after: must be a whole number of 120 s alarm periods, "
        "from 240 s to 86400 s (got 180 s)",
        id="fallback-after-not-whole-agent-periods",
    ),
    pytest.param(
        {"fallbackScaling": {"agentPeriod": "45s"}},
        "spec.cloudWatch.fallbackScaling.agentPeriod: must divide 60 s or be a multiple of 60 s "
        "up to 1h (got 45 s), so that every alarm period holds the same number of samples per "
        "agent",
        id="fallback-agent-period-uneven",
    ),
    pytest.param(
        {"fallbackScaling": {"agentPeriod": 0}},
        "spec.cloudWatch.fallbackScaling.agentPeriod: must divide 60 s or be a multiple of 60 s "
        "up to 1h (got 0 s), so that every alarm period holds the same number of samples per "
        "agent",
        id="fallback-agent-period-zero",
    ),
    pytest.param(
        {"fallbackScaling": {"threshold": 0}},
        "spec.cloudWatch.fallbackScaling.threshold: Input should be greater than or equal to 1",
        id="fallback-threshold-zero",
    ),
    pytest.param(
        {"fallbackScaling": {"scaleIn": True}},
        "spec.cloudWatch.fallbackScaling.scaleIn: unknown field (check the spelling)",
        id="fallback-never-scales-in",
    ),
]


@pytest.mark.parametrize(("cloud_watch", "expected"), INVALID)
def test_invalid_cloudwatch_spec_is_refused_with_path_and_reason(
    cloud_watch: dict[str, Any], expected: str
) -> None:
    """An invalid spec.cloudWatch fails with the file, document, field path and reason."""
    assert f"pools.yaml: document 1: {expected}" in _errors(cloud_watch)


VALID = [
    pytest.param({"alarms": [_alarm(period=10)], "storageResolution": 1}, id="high-resolution"),
    pytest.param({"alarms": [_alarm(period=20)], "storageResolution": 1}, id="twenty-seconds"),
    pytest.param({"alarms": [_alarm(period="5m", evaluationPeriods=288)]}, id="exactly-a-day"),
    pytest.param({"alarms": [_alarm(period="1h", evaluationPeriods=168)]}, id="exactly-a-week"),
    pytest.param(
        {"alarms": [_alarm(metricName="JibriFree", statistic="Sum")]}, id="sum-of-agent-metric"
    ),
    pytest.param(
        {"alarms": [_alarm(statistic="Sum", namespace="Other")]}, id="sum-in-other-namespace"
    ),
    pytest.param({"alarms": [_alarm(period=10, namespace="Other")]}, id="other-high-resolution"),
    pytest.param(
        {"alarms": [_alarm(evaluationPeriods=5, datapointsToAlarm=5)]}, id="all-datapoints"
    ),
    pytest.param({"fallbackScaling": {}}, id="fallback-defaults"),
    pytest.param({"fallbackScaling": {"after": "15m", "threshold": 3}}, id="fallback-explicit"),
    pytest.param({"fallbackScaling": {"agentPeriod": "30s"}}, id="fallback-fast-agents"),
    pytest.param({"fallbackScaling": {"agentPeriod": "5m", "after": "1h"}}, id="fallback-slow"),
]


@pytest.mark.parametrize("cloud_watch", VALID)
def test_valid_cloudwatch_spec_is_accepted(cloud_watch: dict[str, Any]) -> None:
    """Specs that AWS would accept pass validation."""
    cw = parse_desired_state(_pool_yaml(cloud_watch)).pools[0].spec.cloudWatch
    assert len(cw.alarms) == len(cloud_watch.get("alarms", ()))
    assert (cw.fallbackScaling is None) == ("fallbackScaling" not in cloud_watch)


def test_alarm_defaults_and_durations() -> None:
    """A period may be written as a duration; unset fields take AWS-friendly defaults."""
    state = parse_desired_state(_pool_yaml({"alarms": [_alarm(period="5m")]}))
    alarm = state.pools[0].spec.cloudWatch.alarms[0]
    assert (alarm.period, alarm.evaluationPeriods, alarm.datapointsToAlarm) == (300, 1, None)
    assert (alarm.namespace, alarm.dimensions, alarm.treatMissingData) == (None, None, "missing")
    assert state.pools[0].spec.cloudWatch.fallbackScaling is None

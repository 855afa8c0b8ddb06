"""Declared alarms: defaults, the field-by-field drift diff, and the create/update/retire plan."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller.cloudwatch.alarms import (
    AlarmDefinition,
    AlarmPlan,
    AlarmUpdate,
    alarm_diff,
    declared_alarms,
    described,
    is_owned,
    ownership_tags,
    plan_alarms,
    put_request,
)
from controller.spec import JibriPool, parse_desired_state


def _pool(alarms: list[dict[str, Any]], name: str = "recorders") -> JibriPool:
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": name},
        "spec": {
            "autoScalingGroupName": "jibri-recorders",
            "capacity": {"min": 1, "max": 10},
            "targetFree": 2,
            "cloudWatch": {"namespace": "Jibri/Pools", "alarms": alarms},
        },
    }
    return parse_desired_state(yaml.safe_dump(document)).pools[0]


FEW_FREE = {
    "name": "few-free",
    "metricName": "FreeInstances",
    "statistic": "Minimum",
    "period": "1m",
    "evaluationPeriods": 3,
    "threshold": 1,
    "comparisonOperator": "LessThanThreshold",
    "alarmActions": [
        "arn:aws:sns:us-east-1:123456789012:b",
        "arn:aws:sns:us-east-1:123456789012:a",
    ],
}


def _desired() -> AlarmDefinition:
    return declared_alarms(_pool([FEW_FREE]))[0]


def _as_described(alarm: AlarmDefinition) -> dict[str, Any]:
    """What DescribeAlarms returns for an alarm written with `put_request` (AWS's shape)."""
    request = put_request(alarm, {})
    request.pop("Tags")
    request["AlarmArn"] = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm.name}"
    request["StateValue"] = "OK"
    return request


def test_declared_alarm_takes_pool_defaults() -> None:
    """A declared alarm is prefixed with its pool and defaults to the pool's namespace and ASG."""
    alarm = _desired()
    assert alarm.name == "jibri-autoscaler/recorders/few-free"
    assert alarm.namespace == "Jibri/Pools"
    assert alarm.dimensions == (("AutoScalingGroupName", "jibri-recorders"),)
    assert (alarm.period, alarm.evaluation_periods, alarm.datapoints_to_alarm) == (60, 3, 3)
    assert alarm.alarm_actions == (
        "arn:aws:sns:us-east-1:123456789012:a",
        "arn:aws:sns:us-east-1:123456789012:b",
    )


def test_declared_alarm_keeps_explicit_dimensions_and_namespace() -> None:
    """Explicit dimensions and namespace replace the pool's defaults."""
    alarm = declared_alarms(
        _pool(
            [
                {
                    **FEW_FREE,
                    "metricName": "CPUUtilization",
                    "statistic": "Average",
                    "namespace": "AWS/EC2",
                    "dimensions": {"InstanceType": "c5.xlarge", "AutoScalingGroupName": "g"},
                }
            ]
        )
    )[0]
    assert alarm.namespace == "AWS/EC2"
    assert alarm.dimensions == (("AutoScalingGroupName", "g"), ("InstanceType", "c5.xlarge"))


DRIFT = [
    pytest.param({}, (), id="unchanged"),
    pytest.param({"Threshold": 2.0}, ("threshold",), id="threshold"),
    pytest.param({"Period": 300}, ("period",), id="period"),
    pytest.param({"Statistic": "Average"}, ("statistic",), id="statistic"),
    pytest.param(
        {"ComparisonOperator": "LessThanOrEqualToThreshold"},
        ("comparison_operator",),
        id="comparison",
    ),
    pytest.param({"EvaluationPeriods": 5}, ("evaluation_periods",), id="evaluation-periods"),
    pytest.param({"DatapointsToAlarm": 2}, ("datapoints_to_alarm",), id="datapoints"),
    pytest.param({"DatapointsToAlarm": None}, (), id="datapoints-absent-means-evaluation-periods"),
    pytest.param(
        {"DatapointsToAlarm": None, "EvaluationPeriods": 4},
        ("evaluation_periods", "datapoints_to_alarm"),
        id="datapoints-absent-follow-evaluation-periods",
    ),
    pytest.param({"TreatMissingData": None}, (), id="missing-data-absent-means-missing"),
    pytest.param(
        {"TreatMissingData": "breaching"}, ("treat_missing_data",), id="treat-missing-data"
    ),
    pytest.param({"MetricName": "BusyInstances"}, ("metric_name",), id="metric-name"),
    pytest.param({"Namespace": "Jibri"}, ("namespace",), id="namespace"),
    pytest.param(
        {"Dimensions": [{"Name": "AutoScalingGroupName", "Value": "other"}]},
        ("dimensions",),
        id="dimension-value",
    ),
    pytest.param({"Dimensions": []}, ("dimensions",), id="dimension-removed"),
    pytest.param(
        {
            "AlarmActions": [
                "arn:aws:sns:us-east-1:123456789012:b",
                "arn:aws:sns:us-east-1:123456789012:a",
            ]
        },
        (),
        id="action-order-does-not-matter",
    ),
    pytest.param(
        {"AlarmActions": ["arn:aws:sns:us-east-1:123456789012:a"]},
        ("alarm_actions",),
        id="action-removed",
    ),
    pytest.param(
        {"OKActions": ["arn:aws:sns:us-east-1:123456789012:a"]}, ("ok_actions",), id="ok-action"
    ),
    pytest.param(
        {"InsufficientDataActions": ["arn:aws:sns:us-east-1:123456789012:a"]},
        ("insufficient_data_actions",),
        id="insufficient-data-action",
    ),
    pytest.param({"ActionsEnabled": False}, ("actions_enabled",), id="actions-disabled"),
    pytest.param({"AlarmDescription": "edited"}, ("description",), id="description"),
    pytest.param({"AlarmDescription": None}, (), id="empty-description-absent"),
    pytest.param({"Unit": "Seconds"}, ("unit",), id="unit-added"),
    pytest.param(
        {"Statistic": None, "ExtendedStatistic": "p90"},
        ("statistic", "uses_math"),
        id="extended-statistic",
    ),
    pytest.param(
        {"Metrics": [{"Id": "m1", "Expression": "SUM(METRICS())"}]},
        ("uses_math",),
        id="metric-math",
    ),
    pytest.param(
        {"Threshold": 2.0, "Period": 120, "StateValue": "ALARM"},
        ("period", "threshold"),
        id="several-fields-state-ignored",
    ),
]


@pytest.mark.parametrize(("changes", "drift"), DRIFT)
def test_alarm_diff_names_exactly_the_fields_that_drifted(
    changes: dict[str, Any], drift: tuple[str, ...]
) -> None:
    """The diff compares the described alarm to the desired one field by field."""
    desired = _desired()
    actual = _as_described(desired)
    for key, value in changes.items():
        if value is None:
            actual.pop(key, None)
        else:
            actual[key] = value
    assert alarm_diff(desired, described(actual)) == drift


def test_put_request_round_trips_without_drift() -> None:
    """An alarm written with put_request describes back equal to what was declared."""
    for alarm in declared_alarms(
        _pool(
            [
                FEW_FREE,
                {**FEW_FREE, "name": "b", "datapointsToAlarm": 2, "treatMissingData": "ignore"},
                {**FEW_FREE, "name": "c", "description": "d", "actionsEnabled": False},
            ]
        )
    ):
        assert alarm_diff(alarm, described(_as_described(alarm))) == ()


def test_put_request_sends_every_field_and_the_tags() -> None:
    """PutMetricAlarm replaces the whole alarm, so the request carries every field."""
    alarm = _desired()
    request = put_request(alarm, ownership_tags(_pool([])))
    assert request["DatapointsToAlarm"] == 3
    assert request["TreatMissingData"] == "missing"
    assert request["Tags"] == [
        {"Key": "jibri-autoscaler:asg", "Value": "jibri-recorders"},
        {"Key": "jibri-autoscaler:pool", "Value": "recorders"},
    ]
    assert "Unit" not in request


def _existing(name: str, **changes: Any) -> AlarmDefinition:
    actual = _as_described(_desired())
    actual.update(changes)
    actual["AlarmName"] = name
    return described(actual)


PREFIX = "jibri-autoscaler/recorders/"
PLANS = [
    pytest.param([], AlarmPlan(), id="nothing-declared-nothing-there"),
    pytest.param(
        [_existing("unrelated"), _existing("jibri-autoscaler/recorders-b/few-free")],
        AlarmPlan(),
        id="other-names-are-never-ours",
    ),
    pytest.param(
        [_existing(PREFIX + "few-free")],
        AlarmPlan(retire=(PREFIX + "few-free",)),
        id="undeclared-prefixed-alarm-is-a-retire-candidate",
    ),
]


@pytest.mark.parametrize(("existing", "expected"), PLANS)
def test_plan_with_nothing_declared(existing: list[AlarmDefinition], expected: AlarmPlan) -> None:
    """With no alarm declared, only prefixed alarms become candidates for retirement."""
    assert plan_alarms("recorders", (), existing) == expected


def test_plan_creates_updates_and_retires() -> None:
    """Missing alarms are created, drifted ones updated with their drift, stale ones retired."""
    pool = _pool([FEW_FREE, {**FEW_FREE, "name": "second"}, {**FEW_FREE, "name": "third"}])
    first, second, third = declared_alarms(pool)
    existing = [
        described(_as_described(first)),
        _existing(second.name, Threshold=5.0),
        _existing(PREFIX + "removed"),
        _existing("hand-made"),
    ]
    plan = plan_alarms("recorders", (first, second, third), existing)
    assert plan == AlarmPlan(
        create=(third,),
        update=(AlarmUpdate(second, ("threshold",)),),
        retire=(PREFIX + "removed",),
    )
    assert not plan.empty


def test_plan_keeps_alarms_it_cannot_define_this_time() -> None:
    """A kept alarm is neither rewritten nor retired (its definition is unknown this pass)."""
    fallback = PREFIX + "fallback-scale-out"
    plan = plan_alarms("recorders", (), [_existing(fallback)], keep={fallback})
    assert plan.empty


def test_ownership_needs_the_pool_tag() -> None:
    """Only the pool tag proves an alarm is managed by that pool."""
    tags = ownership_tags(_pool([]))
    assert is_owned("recorders", tags)
    assert not is_owned("other", tags)
    assert not is_owned("recorders", {"jibri-autoscaler:asg": "jibri-recorders"})

"""Declared CloudWatch alarms: the desired definitions, what AWS describes, and the pure diff
and plan that keep one equal to the other.

Ownership: a managed alarm is named `jibri-autoscaler/<pool>/<name>` and tagged
`jibri-autoscaler:pool=<pool>`. Only alarms with both are ever deleted; an alarm that only
shares the prefix is left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from controller.spec import AlarmSpec, JibriPool
from controller.spec import cloudwatch as cw_names


@dataclass(frozen=True)
class AlarmDefinition:
    """Everything PutMetricAlarm sets, normalised so that equal alarms compare equal: action
    lists and dimensions sorted, datapointsToAlarm and treatMissingData filled with AWS's own
    defaults."""

    name: str
    metric_name: str
    namespace: str
    statistic: str | None
    """None when the alarm in AWS uses what we never declare (extended statistic, math)."""
    dimensions: tuple[tuple[str, str], ...]
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison_operator: str
    treat_missing_data: str = "missing"
    description: str = ""
    actions_enabled: bool = True
    alarm_actions: tuple[str, ...] = ()
    ok_actions: tuple[str, ...] = ()
    insufficient_data_actions: tuple[str, ...] = ()
    unit: str | None = None
    uses_math: bool = False
    """Whether the alarm in AWS evaluates metric math or an anomaly band (we never do)."""


COMPARED_FIELDS = tuple(f.name for f in fields(AlarmDefinition) if f.name != "name")


def declared(pool: JibriPool, alarm: AlarmSpec) -> AlarmDefinition:
    """The definition a declared alarm stands for, with the pool's defaults filled in."""
    cloud_watch = pool.spec.cloudWatch
    dimensions = (
        alarm.dimensions
        if alarm.dimensions is not None
        else {cw_names.DIMENSION: pool.spec.autoScalingGroupName}
    )
    return AlarmDefinition(
        name=cw_names.alarm_name(pool.name, alarm.name),
        metric_name=alarm.metricName,
        namespace=alarm.namespace or cloud_watch.namespace,
        statistic=alarm.statistic,
        dimensions=tuple(sorted(dimensions.items())),
        period=alarm.period,
        evaluation_periods=alarm.evaluationPeriods,
        datapoints_to_alarm=alarm.datapointsToAlarm or alarm.evaluationPeriods,
        threshold=alarm.threshold,
        comparison_operator=alarm.comparisonOperator,
        treat_missing_data=alarm.treatMissingData,
        description=alarm.description,
        actions_enabled=alarm.actionsEnabled,
        alarm_actions=tuple(sorted(set(alarm.alarmActions))),
        ok_actions=tuple(sorted(set(alarm.okActions))),
        insufficient_data_actions=tuple(sorted(set(alarm.insufficientDataActions))),
    )


def declared_alarms(pool: JibriPool) -> tuple[AlarmDefinition, ...]:
    return tuple(declared(pool, alarm) for alarm in pool.spec.cloudWatch.alarms)


def described(alarm: Mapping[str, Any]) -> AlarmDefinition:
    """An alarm as DescribeAlarms returns it (a MetricAlarms entry), normalised."""
    evaluation_periods = int(alarm.get("EvaluationPeriods", 0))
    return AlarmDefinition(
        name=str(alarm["AlarmName"]),
        metric_name=str(alarm.get("MetricName", "")),
        namespace=str(alarm.get("Namespace", "")),
        statistic=alarm.get("Statistic"),
        dimensions=tuple(
            sorted((str(d["Name"]), str(d["Value"])) for d in alarm.get("Dimensions", []))
        ),
        period=int(alarm.get("Period", 0)),
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=int(alarm.get("DatapointsToAlarm") or evaluation_periods),
        threshold=float(alarm.get("Threshold", float("nan"))),
        comparison_operator=str(alarm.get("ComparisonOperator", "")),
        treat_missing_data=str(alarm.get("TreatMissingData") or "missing"),
        description=str(alarm.get("AlarmDescription") or ""),
        actions_enabled=bool(alarm.get("ActionsEnabled", True)),
        alarm_actions=tuple(sorted(set(alarm.get("AlarmActions", [])))),
        ok_actions=tuple(sorted(set(alarm.get("OKActions", [])))),
        insufficient_data_actions=tuple(sorted(set(alarm.get("InsufficientDataActions", [])))),
        unit=alarm.get("Unit"),
        uses_math=bool(
            alarm.get("Metrics") or alarm.get("ExtendedStatistic") or alarm.get("ThresholdMetricId")
        ),
    )


def alarm_diff(desired: AlarmDefinition, actual: AlarmDefinition) -> tuple[str, ...]:
    """The fields in which `actual` differs from `desired` (empty: nothing to correct)."""
    return tuple(
        name for name in COMPARED_FIELDS if getattr(desired, name) != getattr(actual, name)
    )


def put_request(alarm: AlarmDefinition, tags: Mapping[str, str]) -> dict[str, Any]:
    """PutMetricAlarm's arguments. PutMetricAlarm replaces the whole definition, so every
    field is sent; AWS applies `tags` only when it creates the alarm."""
    request: dict[str, Any] = {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description,
        "ActionsEnabled": alarm.actions_enabled,
        "OKActions": list(alarm.ok_actions),
        "AlarmActions": list(alarm.alarm_actions),
        "InsufficientDataActions": list(alarm.insufficient_data_actions),
        "MetricName": alarm.metric_name,
        "Namespace": alarm.namespace,
        "Statistic": alarm.statistic,
        "Dimensions": [{"Name": name, "Value": value} for name, value in alarm.dimensions],
        "Period": alarm.period,
        "EvaluationPeriods": alarm.evaluation_periods,
        "DatapointsToAlarm": alarm.datapoints_to_alarm,
        "Threshold": alarm.threshold,
        "ComparisonOperator": alarm.comparison_operator,
        "TreatMissingData": alarm.treat_missing_data,
        "Tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())],
    }
    if alarm.unit is not None:
        request["Unit"] = alarm.unit
    return request


def ownership_tags(pool: JibriPool) -> dict[str, str]:
    return {cw_names.TAG_POOL: pool.name, cw_names.TAG_ASG: pool.spec.autoScalingGroupName}


def is_owned(pool_name: str, tags: Mapping[str, str]) -> bool:
    return tags.get(cw_names.TAG_POOL) == pool_name


@dataclass(frozen=True)
class AlarmUpdate:
    alarm: AlarmDefinition
    drift: tuple[str, ...]
    """The fields that differed from the spec."""


@dataclass(frozen=True)
class AlarmPlan:
    """What one sync should do to a pool's alarms."""

    create: tuple[AlarmDefinition, ...] = ()
    update: tuple[AlarmUpdate, ...] = ()
    retire: tuple[str, ...] = ()
    """Prefixed alarms no longer declared; deleted only once their tags prove them ours."""

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.retire)


def plan_alarms(
    pool_name: str,
    desired: Sequence[AlarmDefinition],
    existing: Sequence[AlarmDefinition],
    *,
    keep: Collection[str] = (),
) -> AlarmPlan:
    """Compare the desired alarms with those that exist under the pool's prefix.

    `keep` names alarms that are wanted but could not be defined this time (the fallback
    alarm while its policy is unreadable): they are neither written nor retired.
    """
    prefix = cw_names.alarm_prefix(pool_name)
    by_name = {alarm.name: alarm for alarm in existing if alarm.name.startswith(prefix)}
    wanted = {alarm.name for alarm in desired}
    create: list[AlarmDefinition] = []
    update: list[AlarmUpdate] = []
    for alarm in desired:
        if alarm.name in keep:
            continue
        current = by_name.get(alarm.name)
        if current is None:
            create.append(alarm)
        elif drift := alarm_diff(alarm, current):
            update.append(AlarmUpdate(alarm, drift))
    retire = sorted(name for name in by_name if name not in wanted and name not in keep)
    return AlarmPlan(tuple(create), tuple(update), tuple(retire))

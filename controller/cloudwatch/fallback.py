"""Fallback scaling: AWS's own scale-out, declared as a safety net for when the controller is
down. A step scaling policy on the ASG adds the shortfall of free recorders, and an alarm on
the agents' Sum(JibriFree) triggers it once free has stayed below the threshold for longer than
a live controller could ever leave it there (docs/cloudwatch.md explains the numbers).
Scale-in is never delegated to AWS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from controller.cloudwatch.alarms import AlarmDefinition
from controller.spec import JibriPool
from controller.spec import cloudwatch as cw_names

MINUTE: Final = 60
SLACK: Final = 60
"""Allowance for late datapoints, on top of an agent's first publish and one full period."""


@dataclass(frozen=True)
class FallbackSettings:
    """The fallback of one pool, every default resolved from its spec."""

    namespace: str
    metric_name: str
    threshold: int
    period: int
    """The alarm's period: a minute, or the agents' period if that is longer."""
    samples: int
    """JibriFree samples each agent sends per alarm period (Sum counts each of them)."""
    evaluation_periods: int
    max_step: int
    warmup: int
    treat_missing_data: str


def resolve(pool: JibriPool) -> FallbackSettings | None:
    spec = pool.spec
    fallback = spec.cloudWatch.fallbackScaling
    if fallback is None:
        return None
    period = fallback.alarmPeriod
    after = fallback.after
    if after is None:
        # A booted agent's first JibriFree can take one agent period to be sent and one alarm
        # period to fill; beyond that, allow SLACK for late datapoints.
        wait = math.ceil(spec.instances.bootTimeout) + fallback.agentPeriod + period + SLACK
        after = math.ceil(wait / period) * period
    return FallbackSettings(
        namespace=fallback.namespace,
        metric_name=fallback.metricName,
        threshold=fallback.threshold or max(1, spec.targetFree),
        period=period,
        samples=max(1, MINUTE // fallback.agentPeriod),
        evaluation_periods=min(after, 86_400) // period,
        max_step=fallback.maxStep or spec.scaleOut.maxStep,
        warmup=fallback.warmup
        if fallback.warmup is not None
        else math.ceil(spec.instances.bootTimeout),
        treat_missing_data=fallback.treatMissingData,
    )


@dataclass(frozen=True)
class Step:
    """One step adjustment; bounds are relative to the alarm threshold."""

    lower: float | None
    upper: float | None
    adjustment: int


def steps(threshold: int, max_step: int, samples: int = 1) -> tuple[Step, ...]:
    """Add exactly the shortfall `threshold - free`, at most `max_step` at once.

    The alarm compares Sum(JibriFree) = samples * free with samples * threshold, so a
    shortfall of s sits at -samples * s relative to the threshold. The bounds sit halfway
    between shortfalls; below the threshold AWS takes each interval as (lower, upper].
    """
    top = max(1, min(threshold, max_step))
    result: list[Step] = []
    for shortfall in range(1, top + 1):
        upper = 0.0 if shortfall == 1 else -samples * (shortfall - 0.5)
        lower = None if shortfall == top else -samples * (shortfall + 0.5)
        result.append(Step(lower, upper, shortfall))
    return tuple(result)


@dataclass(frozen=True)
class PolicyDefinition:
    """What PutScalingPolicy sets for the fallback policy, normalised for comparison."""

    group: str
    name: str
    steps: tuple[Step, ...]
    warmup: int | None
    policy_type: str = "StepScaling"
    adjustment_type: str = "ChangeInCapacity"
    metric_aggregation_type: str = "Average"
    enabled: bool = True


POLICY_FIELDS = tuple(f.name for f in fields(PolicyDefinition))


def desired_policy(pool: JibriPool, settings: FallbackSettings) -> PolicyDefinition:
    return PolicyDefinition(
        group=pool.spec.autoScalingGroupName,
        name=cw_names.FALLBACK_POLICY,
        steps=steps(settings.threshold, settings.max_step, settings.samples),
        warmup=settings.warmup,
    )


def _bound(value: Any) -> float | None:
    return None if value is None else float(value)


def described_policy(policy: Mapping[str, Any]) -> PolicyDefinition:
    """A ScalingPolicies entry of DescribePolicies, normalised."""
    warmup = policy.get("EstimatedInstanceWarmup")
    return PolicyDefinition(
        group=str(policy["AutoScalingGroupName"]),
        name=str(policy["PolicyName"]),
        steps=tuple(
            sorted(
                (
                    Step(
                        _bound(s.get("MetricIntervalLowerBound")),
                        _bound(s.get("MetricIntervalUpperBound")),
                        int(s["ScalingAdjustment"]),
                    )
                    for s in policy.get("StepAdjustments", [])
                ),
                key=lambda step: step.adjustment,
            )
        ),
        warmup=None if warmup is None else int(warmup),
        policy_type=str(policy.get("PolicyType", "SimpleScaling")),
        adjustment_type=str(policy.get("AdjustmentType", "")),
        metric_aggregation_type=str(policy.get("MetricAggregationType") or "Average"),
        enabled=bool(policy.get("Enabled", True)),
    )


def policy_diff(desired: PolicyDefinition, actual: PolicyDefinition) -> tuple[str, ...]:
    return tuple(name for name in POLICY_FIELDS if getattr(desired, name) != getattr(actual, name))


def policy_request(policy: PolicyDefinition) -> dict[str, Any]:
    """PutScalingPolicy's arguments (it creates or replaces the policy; the ARN stays)."""
    step_adjustments: list[dict[str, Any]] = []
    for step in policy.steps:
        item: dict[str, Any] = {"ScalingAdjustment": step.adjustment}
        if step.lower is not None:
            item["MetricIntervalLowerBound"] = step.lower
        if step.upper is not None:
            item["MetricIntervalUpperBound"] = step.upper
        step_adjustments.append(item)
    request: dict[str, Any] = {
        "AutoScalingGroupName": policy.group,
        "PolicyName": policy.name,
        "PolicyType": policy.policy_type,
        "AdjustmentType": policy.adjustment_type,
        "MetricAggregationType": policy.metric_aggregation_type,
        "StepAdjustments": step_adjustments,
        "Enabled": policy.enabled,
    }
    if policy.warmup is not None:
        request["EstimatedInstanceWarmup"] = policy.warmup
    return request


def fallback_alarm(pool: JibriPool, settings: FallbackSettings, policy_arn: str) -> AlarmDefinition:
    periods = settings.evaluation_periods
    minutes = periods * settings.period // MINUTE
    return AlarmDefinition(
        name=cw_names.alarm_name(pool.name, cw_names.FALLBACK_ALARM),
        metric_name=settings.metric_name,
        namespace=settings.namespace,
        statistic="Sum",
        dimensions=((cw_names.DIMENSION, pool.spec.autoScalingGroupName),),
        period=settings.period,
        evaluation_periods=periods,
        datapoints_to_alarm=periods,
        threshold=float(settings.threshold * settings.samples),
        comparison_operator="LessThanThreshold",
        treat_missing_data=settings.treat_missing_data,
        description=(
            f"Fallback scale-out of pool {pool.name}: fewer than {settings.threshold} free "
            f"recorders for {minutes} minutes in a row, longer than the controller ever "
            "leaves it so. Managed by jibri-autoscaler; edits are reverted."
        ),
        alarm_actions=(policy_arn,),
    )

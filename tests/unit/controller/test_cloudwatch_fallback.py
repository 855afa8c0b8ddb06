"""Fallback scaling: defaults derived from the pool, the step ladder, and the policy diff."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller.cloudwatch.fallback import (
    FallbackSettings,
    Step,
    described_policy,
    desired_policy,
    fallback_alarm,
    policy_diff,
    policy_request,
    resolve,
    steps,
)
from controller.spec import JibriPool, parse_desired_state


def _pool(fallback: dict[str, Any] | None, **spec: Any) -> JibriPool:
    body: dict[str, Any] = {
        "autoScalingGroupName": "jibri-recorders",
        "capacity": {"min": 1, "max": 10},
        "targetFree": 2,
        "scaleOut": {"maxStep": 5},
        "instances": {"bootTimeout": "10m"},
        "cloudWatch": {} if fallback is None else {"fallbackScaling": fallback},
    }
    body.update(spec)
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": "recorders"},
        "spec": body,
    }
    return parse_desired_state(yaml.safe_dump(document)).pools[0]


def test_no_fallback_unless_declared() -> None:
    """Without spec.cloudWatch.fallbackScaling nothing is delegated to AWS."""
    assert resolve(_pool(None)) is None


RESOLVED = [
    pytest.param(
        {},
        {},
        FallbackSettings("Jibri", "JibriFree", 2, 60, 1, 13, 5, 600, "notBreaching"),
        id="defaults-from-pool",
    ),
    pytest.param(
        {},
        {"instances": {"bootTimeout": 270}},
        FallbackSettings("Jibri", "JibriFree", 2, 60, 1, 8, 5, 270, "notBreaching"),
        id="boot-timeout-rounded-up-to-the-minute",
    ),
    pytest.param(
        {},
        {"targetFree": 0},
        FallbackSettings("Jibri", "JibriFree", 1, 60, 1, 13, 5, 600, "notBreaching"),
        id="threshold-at-least-one",
    ),
    pytest.param(
        {
            "namespace": "Recorders",
            "metricName": "Free",
            "threshold": 3,
            "after": "20m",
            "maxStep": 2,
            "warmup": "5m",
            "treatMissingData": "breaching",
        },
        {},
        FallbackSettings("Recorders", "Free", 3, 60, 1, 20, 2, 300, "breaching"),
        id="explicit",
    ),
    pytest.param(
        {"agentPeriod": "15s"},
        {},
        FallbackSettings("Jibri", "JibriFree", 2, 60, 4, 13, 5, 600, "notBreaching"),
        id="agents-publishing-every-15s",
    ),
    pytest.param(
        {"agentPeriod": "2m"},
        {},
        FallbackSettings("Jibri", "JibriFree", 2, 120, 1, 8, 5, 600, "notBreaching"),
        id="agents-publishing-every-2m",
    ),
]


@pytest.mark.parametrize(("fallback", "spec", "expected"), RESOLVED)
def test_resolved_settings(
    fallback: dict[str, Any], spec: dict[str, Any], expected: FallbackSettings
) -> None:
    """Unset fields are derived from targetFree, bootTimeout and scaleOut.maxStep."""
    assert resolve(_pool(fallback, **spec)) == expected


@pytest.mark.parametrize("boot", ["1m", "3m", "10m", 601, "59m"])
@pytest.mark.parametrize("agent_period", ["10s", "30s", "1m", "5m"])
def test_default_wait_outlasts_a_boot_with_margin(boot: str | int, agent_period: str) -> None:
    """By default the alarm waits longer than any launch the controller makes can take,
    plus an agent's first publish, one full alarm period and a minute of slack."""
    pool = _pool({"agentPeriod": agent_period}, instances={"bootTimeout": boot})
    settings = resolve(pool)
    fallback = pool.spec.cloudWatch.fallbackScaling
    assert settings is not None and fallback is not None
    needed = pool.spec.instances.bootTimeout + fallback.agentPeriod + settings.period + 60
    assert settings.evaluation_periods * settings.period >= needed


STEPS = [
    pytest.param(1, 5, 1, (Step(None, 0.0, 1),), id="threshold-one"),
    pytest.param(2, 5, 1, (Step(-1.5, 0.0, 1), Step(None, -1.5, 2)), id="shortfall-of-one-or-two"),
    pytest.param(
        4,
        3,
        1,
        (Step(-1.5, 0.0, 1), Step(-2.5, -1.5, 2), Step(None, -2.5, 3)),
        id="capped-at-max-step",
    ),
    pytest.param(5, 1, 1, (Step(None, 0.0, 1),), id="max-step-one"),
    pytest.param(2, 5, 4, (Step(-6.0, 0.0, 1), Step(None, -6.0, 2)), id="four-samples-per-period"),
]


@pytest.mark.parametrize(("threshold", "max_step", "samples", "expected"), STEPS)
def test_steps_add_the_shortfall(
    threshold: int, max_step: int, samples: int, expected: tuple[Step, ...]
) -> None:
    """The policy adds threshold - free instances, at most max_step."""
    assert steps(threshold, max_step, samples) == expected


@pytest.mark.parametrize("threshold", range(1, 12))
@pytest.mark.parametrize("max_step", range(1, 8))
@pytest.mark.parametrize("samples", [1, 2, 6])
def test_steps_cover_every_shortfall_without_gap_or_overlap(
    threshold: int, max_step: int, samples: int
) -> None:
    """Each possible Sum below the threshold falls in exactly one step, as AWS requires."""
    ladder = steps(threshold, max_step, samples)
    assert sum(1 for s in ladder if s.lower is None) == 1
    for below, above in zip(ladder[1:], ladder, strict=False):
        assert below.upper == above.lower
    for total in range(threshold):
        relative = samples * (total - threshold)
        matching = [
            s
            for s in ladder
            if (s.lower is None or s.lower < relative) and (s.upper is None or relative <= s.upper)
        ]
        assert len(matching) == 1
        assert matching[0].adjustment == min(threshold - total, max_step)


def _described(request: dict[str, Any], **changes: Any) -> dict[str, Any]:
    policy = {**request, "PolicyARN": "arn:aws:autoscaling:policy/x", **changes}
    return {k: v for k, v in policy.items() if v is not None}


POLICY_DRIFT = [
    pytest.param({}, (), id="unchanged"),
    pytest.param({"EstimatedInstanceWarmup": 60}, ("warmup",), id="warmup"),
    pytest.param({"EstimatedInstanceWarmup": None}, ("warmup",), id="warmup-removed"),
    pytest.param(
        {"StepAdjustments": [{"MetricIntervalUpperBound": 0.0, "ScalingAdjustment": 1}]},
        ("steps",),
        id="steps",
    ),
    pytest.param({"Enabled": False}, ("enabled",), id="disabled-by-hand"),
    pytest.param({"AdjustmentType": "ExactCapacity"}, ("adjustment_type",), id="adjustment"),
    pytest.param({"PolicyType": "SimpleScaling"}, ("policy_type",), id="type"),
    pytest.param({"MetricAggregationType": None}, (), id="aggregation-default"),
]


@pytest.mark.parametrize(("changes", "drift"), POLICY_DRIFT)
def test_policy_diff(changes: dict[str, Any], drift: tuple[str, ...]) -> None:
    """A policy edited by hand is found different in exactly the edited fields."""
    pool = _pool({})
    settings = resolve(pool)
    assert settings is not None
    desired = desired_policy(pool, settings)
    actual = described_policy(_described(policy_request(desired), **changes))
    assert policy_diff(desired, actual) == drift


def test_fallback_alarm_points_at_the_policy() -> None:
    """The fallback alarm watches Sum(JibriFree) of the ASG and triggers the policy."""
    pool = _pool({})
    settings = resolve(pool)
    assert settings is not None
    alarm = fallback_alarm(pool, settings, "arn:policy")
    assert alarm.name == "jibri-autoscaler/recorders/fallback-scale-out"
    assert (alarm.namespace, alarm.metric_name, alarm.statistic) == ("Jibri", "JibriFree", "Sum")
    assert alarm.dimensions == (("AutoScalingGroupName", "jibri-recorders"),)
    assert (alarm.period, alarm.evaluation_periods, alarm.datapoints_to_alarm) == (60, 13, 13)
    assert (alarm.threshold, alarm.comparison_operator) == (2.0, "LessThanThreshold")
    assert alarm.alarm_actions == ("arn:policy",)
    assert alarm.ok_actions == alarm.insufficient_data_actions == ()


def test_fallback_alarm_counts_every_sample_of_faster_agents() -> None:
    """Agents publishing every 15 s send 4 samples a minute: threshold and steps scale by 4."""
    pool = _pool({"agentPeriod": "15s", "threshold": 2})
    settings = resolve(pool)
    assert settings is not None
    alarm = fallback_alarm(pool, settings, "arn:policy")
    assert (alarm.period, alarm.threshold) == (60, 8.0)
    assert desired_policy(pool, settings).steps == (Step(-6.0, 0.0, 1), Step(None, -6.0, 2))

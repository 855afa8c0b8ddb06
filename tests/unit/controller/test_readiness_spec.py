"""spec.readiness and spec.demand: defaults that change nothing, and located errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller.spec import ConfigError, PoolSpec, parse_desired_state


def pool(**spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "jibri-autoscaler/v1",
            "kind": "JibriPool",
            "metadata": {"name": "a"},
            "spec": {
                "autoScalingGroupName": "g",
                "capacity": {"min": 0, "max": 20},
                "targetFree": 2,
                **spec,
            },
        }
    )


def loaded(**spec: Any) -> PoolSpec:
    return parse_desired_state(pool(**spec)).pools[0].spec


def test_defaults() -> None:
    """Without the sections: readiness on at a 0.5 % miss target, spares capped by max,
    the horizon measured, history kept, and no jicofo."""
    spec = loaded()
    assert spec.readiness.enabled
    assert spec.readiness.missTarget == 0.005
    assert spec.readiness.horizon is None
    assert spec.max_spares == 20
    assert spec.demand.history
    assert spec.demand.jicofo is None


def test_written_sections_are_read() -> None:
    """Durations take the usual spelling, and maxSpares replaces capacity.max as the cap."""
    spec = loaded(
        readiness={"missTarget": 0.01, "maxSpares": 8, "horizon": "150s"},
        demand={"jicofo": {"urls": ["http://jicofo-1:8888/metrics"], "interval": "30s"}},
    )
    assert (spec.readiness.missTarget, spec.max_spares, spec.readiness.horizon) == (
        0.01,
        8,
        150.0,
    )
    assert spec.demand.jicofo is not None
    assert spec.demand.jicofo.urls == ("http://jicofo-1:8888/metrics",)
    assert spec.demand.jicofo.interval == 30.0


@pytest.mark.parametrize(
    ("section", "path", "reason"),
    [
        pytest.param(
            {"readiness": {"missTarget": 0}},
            "spec.readiness.missTarget",
            "greater than 0",
            id="miss-target-zero",
        ),
        pytest.param(
            {"readiness": {"missTarget": 0.7}},
            "spec.readiness.missTarget",
            "less than 0.5",
            id="miss-target-too-high",
        ),
        pytest.param(
            {"readiness": {"maxSpares": 21}},
            "spec.readiness.maxSpares",
            "maxSpares (21) must not exceed capacity.max (20)",
            id="max-spares-above-max",
        ),
        pytest.param(
            {"readiness": {"horizon": "2h"}},
            "spec.readiness.horizon",
            "less than or equal to 3600",
            id="horizon-too-long",
        ),
        pytest.param(
            {"readiness": {"horizon": "soon"}},
            "spec.readiness.horizon",
            "soon",
            id="horizon-unparseable",
        ),
        pytest.param(
            {"readiness": {"missTarge": 0.01}},
            "spec.readiness.missTarge",
            "unknown field",
            id="typo",
        ),
        pytest.param(
            {"demand": {"jicofo": {"urls": []}}},
            "spec.demand.jicofo.urls",
            "at least 1 item",
            id="no-urls",
        ),
        pytest.param(
            {"demand": {"jicofo": {"urls": ["jicofo:8888/metrics"]}}},
            "spec.demand.jicofo.urls[0]",
            "is not an http(s) URL",
            id="not-a-url",
        ),
        pytest.param(
            {"demand": {"jicofo": {"urls": ["http://j/metrics"], "format": "xml"}}},
            "spec.demand.jicofo.format",
            "'xml'",
            id="unknown-format",
        ),
    ],
)
def test_bad_sections_name_the_field(section: dict[str, Any], path: str, reason: str) -> None:
    """Each bad readiness or demand setting fails with its field path and the reason."""
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(pool(**section), "pools.yaml")
    message = str(caught.value)
    assert f"pools.yaml: document 1: {path}: " in message
    assert reason in message


MISSED_ALARM = {
    "name": "recordings-missed",
    "metricName": "RecordingsMissed",
    "statistic": "Sum",
    "threshold": 1,
    "comparisonOperator": "GreaterThanOrEqualToThreshold",
}


def test_alarm_on_missed_recordings_is_valid() -> None:
    """RecordingsMissed is a count per minute: an alarm on its Sum is accepted."""
    spec = loaded(cloudWatch={"alarms": [MISSED_ALARM]})
    assert spec.cloudWatch.alarms[0].metricName == "RecordingsMissed"


@pytest.mark.parametrize(
    ("section", "path", "reason"),
    [
        pytest.param(
            {"cloudWatch": {"alarms": [MISSED_ALARM]}, "demand": {"history": False}},
            "spec.cloudWatch.alarms[0].metricName",
            "demand history is off",
            id="history-off",
        ),
        pytest.param(
            {
                "cloudWatch": {
                    "storageResolution": 1,
                    "alarms": [{**MISSED_ALARM, "period": "10s"}],
                }
            },
            "spec.cloudWatch.alarms[0].period",
            "published once a minute",
            id="sub-minute-period",
        ),
    ],
)
def test_alarms_on_history_metrics_that_cannot_work(
    section: dict[str, Any], path: str, reason: str
) -> None:
    """An alarm on a demand history metric that is not published, or finer than a minute,
    fails with its field path."""
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(pool(**section), "pools.yaml")
    assert f"pools.yaml: document 1: {path}: " in str(caught.value)
    assert reason in str(caught.value)

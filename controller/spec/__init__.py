"""Desired state: the JibriPool documents of config/desired-state.yaml (docs/design.md).

Split by part: `base` (the strict model base and shared types), `pool` (the pool spec and
document), `cloudwatch` (spec.cloudWatch and the names it owns in AWS), `schedule`
(time-of-day targets and dated overrides), `readiness` (spec.readiness and spec.demand),
`warm_pool` (spec.warmPool), `loading` (files to validated documents, with located errors).
Every public name is re-exported here, so `from controller.spec import X` is the usual import.
"""

from __future__ import annotations

from common.durations import Duration, PositiveDuration, parse_duration
from controller.spec import cloudwatch
from controller.spec.base import Name, SpecModel, WholeSeconds
from controller.spec.cloudwatch import (
    AlarmSpec,
    CloudWatch,
    FallbackScaling,
    evaluation_range_problem,
    period_problem,
)
from controller.spec.loading import (
    ConfigError,
    ConfigProblem,
    load_desired_state,
    parse_desired_state,
)
from controller.spec.pool import (
    Capacity,
    DesiredState,
    DrainSettings,
    Instances,
    JibriPool,
    Metadata,
    PoolSpec,
    ScaleIn,
    ScaleOut,
)
from controller.spec.readiness import Demand, Jicofo, Readiness
from controller.spec.schedule import (
    Override,
    Schedule,
    ScheduleRule,
    TargetInForce,
    Window,
    effective_target,
)
from controller.spec.warm_pool import WarmPool, WarmState

__all__ = [
    "AlarmSpec",
    "Capacity",
    "CloudWatch",
    "ConfigError",
    "ConfigProblem",
    "Demand",
    "DesiredState",
    "DrainSettings",
    "Duration",
    "FallbackScaling",
    "Instances",
    "JibriPool",
    "Jicofo",
    "Metadata",
    "Name",
    "Override",
    "PoolSpec",
    "PositiveDuration",
    "Readiness",
    "ScaleIn",
    "ScaleOut",
    "Schedule",
    "ScheduleRule",
    "SpecModel",
    "TargetInForce",
    "WarmPool",
    "WarmState",
    "WholeSeconds",
    "Window",
    "cloudwatch",
    "effective_target",
    "evaluation_range_problem",
    "load_desired_state",
    "parse_desired_state",
    "parse_duration",
    "period_problem",
]

"""Names the controller gives to what it owns in CloudWatch and Auto Scaling.

Kept in one place (and free of imports) because the config validation, the pure planners and
the AWS shell all need them, and because the docs promise exactly these names to operators.
"""

from __future__ import annotations

from typing import Final

DIMENSION: Final = "AutoScalingGroupName"
"""The dimension of every pool metric and, by default, of every declared alarm."""

FREE: Final = "FreeInstances"
BUSY: Final = "BusyInstances"
STARTING: Final = "StartingInstances"
DRAINING: Final = "DrainingInstances"
POOL_METRICS: Final = (FREE, BUSY, STARTING, DRAINING)
"""Gauges the controller publishes for each pool (DESIGN §9)."""

ALARM_PREFIX: Final = "jibri-autoscaler/"
"""Every managed alarm is named `jibri-autoscaler/<pool>/<name>`."""
TAG_POOL: Final = "jibri-autoscaler:pool"
"""Tag on every managed alarm, naming its pool: only alarms that carry it are ever deleted."""
TAG_ASG: Final = "jibri-autoscaler:asg"

FALLBACK_ALARM: Final = "fallback-scale-out"
"""Short name of the fallback alarm; reserved, so a declared alarm cannot take it."""
FALLBACK_POLICY: Final = "jibri-autoscaler-fallback-scale-out"
"""Name of the step scaling policy on the pool's ASG (unique per group, so no pool part)."""

MAX_ALARM_NAME: Final = 255
MAX_POOL_NAME: Final = 63


def alarm_prefix(pool: str) -> str:
    """The name prefix of the alarms a pool manages (the trailing slash keeps `a` from `ab`)."""
    return f"{ALARM_PREFIX}{pool}/"


def alarm_name(pool: str, name: str) -> str:
    return f"{alarm_prefix(pool)}{name}"


MAX_SHORT_ALARM_NAME: Final = MAX_ALARM_NAME - len(alarm_prefix("x" * MAX_POOL_NAME))
"""Longest declared alarm name that still fits AWS's 255 characters with any pool's prefix."""

"""A `spec.schedule` written ahead of time from a previous day's arrivals, as a user would
write it from last week's data.

The day is cut into fixed windows (5 minutes by default). A window's targetFree is the
forecast's (bench/sim/policies/forecast.py) at the window's worst moment: the most requests
the previous day saw arrive within one look-ahead (the longest boot plus a pass) of any instant
in it, plus Poisson-style headroom. Windows that need no more than spec.targetFree get no rule.
Adjacent windows with the same target merge into one minutes range, and equal minute ranges
with equal targets in different hours merge into one rule, so a regular day gives a short list.
The planner keeps following the spec as written: nothing is replaced at run time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from bench.sim.demand import Recording
from bench.sim.policies.forecast import Forecast, ForecastSettings, spares
from controller.config import PoolSpec, ScheduleRule

DAY = 86_400.0


@dataclass(frozen=True)
class ScheduleSettings:
    window: int = 300
    """Seconds per rule window: a whole number of minutes that divides an hour."""
    days: str = "Mon-Fri"
    """Weekdays the rules apply on (the reference is a weekday; the simulated day a Tuesday)."""

    def __post_init__(self) -> None:
        if self.window <= 0 or self.window % 60 or 3600 % self.window:
            raise ValueError(
                f"schedule window must be a whole number of minutes dividing an hour, "
                f"got {self.window} s"
            )


def window_targets(
    forecast: Forecast, tuning: ForecastSettings, *, lead: float, window: int
) -> list[int]:
    """For each window of the day, the spares its worst moment asks for: the most arrivals
    expected within `lead` of any instant in it (checked at each bucket of the forecast)."""
    step = forecast.bucket
    # An instant inside a bucket sees up to one more bucket ahead than the bucket's start does.
    reach = lead + step
    targets: list[int] = []
    for start in range(0, int(DAY), window):
        moments = (start + k * step for k in range(math.ceil(window / step)))
        worst = max(forecast.arrivals(t, reach) for t in moments)
        targets.append(spares(worst, tuning))
    return targets


def _ranges(values: Iterable[int]) -> str:
    """Sorted integers as a cron field: `9-11,14`."""
    ordered = sorted(set(values))
    parts: list[str] = []
    first = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(first) if first == previous else f"{first}-{previous}")
        if value is not None:
            first = previous = value
    return ",".join(parts)


def merge_rules(
    targets: Sequence[int], *, base: int, window: int, days: str = "*"
) -> tuple[ScheduleRule, ...]:
    """Rules for per-window targets over a day (window seconds each, from 00:00): one per
    run of equal targets within an hour, the same run in different hours sharing a rule;
    windows at or below `base` (spec.targetFree) need none."""
    per_hour = 3600 // window
    if len(targets) != 24 * per_hour:
        raise ValueError(f"expected {24 * per_hour} window targets, got {len(targets)}")
    minutes = window // 60
    hours_of: dict[tuple[int, int, int], list[int]] = {}
    for hour in range(24):
        row = targets[hour * per_hour : (hour + 1) * per_hour]
        k = 0
        while k < per_hour:
            end = k
            while end + 1 < per_hour and row[end + 1] == row[k]:
                end += 1
            if row[k] > base:
                key = (k * minutes, (end + 1) * minutes - 1, row[k])
                hours_of.setdefault(key, []).append(hour)
            k = end + 1
    ordered = sorted(hours_of.items(), key=lambda item: (item[1][0], item[0][0], item[0][2]))
    return tuple(
        ScheduleRule(
            days=days,
            hours="*" if len(hours) == 24 else _ranges(hours),
            minutes="*" if (first, last) == (0, 59) else f"{first}-{last}",
            targetFree=target,
        )
        for (first, last, target), hours in ordered
    )


def scheduled_spec(
    spec: PoolSpec,
    reference: Sequence[Recording],
    tuning: ForecastSettings,
    settings: ScheduleSettings,
    *,
    longest_boot: float,
) -> PoolSpec:
    """`spec` with a schedule learned from `reference`, and scaleOut.maxStep raised so one
    pass can add the largest scheduled target at once."""
    lead = tuning.lead if tuning.lead is not None else longest_boot + 30.0
    targets = window_targets(Forecast(reference), tuning, lead=lead, window=settings.window)
    ceiling = spec.capacity.max
    targets = [min(ceiling, t) for t in targets]
    rules = merge_rules(targets, base=spec.targetFree, window=settings.window, days=settings.days)
    document = spec.model_dump()
    document["schedule"] = {
        "timezone": "UTC",
        "rules": [rule.model_dump() for rule in rules],
    }
    step = max([spec.scaleOut.maxStep, *(rule.targetFree for rule in rules)])
    document["scaleOut"] = {**document["scaleOut"], "maxStep": step}
    # Validated like a config file, so the simulation never runs a spec users could not write.
    return PoolSpec.model_validate(document)


def _flow(value: Any) -> Any:
    """Durations and other floats that are whole numbers print as integers."""
    if isinstance(value, dict):
        return {k: _flow(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_flow(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def schedule_yaml(name: str, spec: PoolSpec, *, comment: str) -> str:
    """A JibriPool document for `spec` (`python -m controller validate` reads it back)."""
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": name},
        "spec": _flow(spec.model_dump(mode="json", exclude_defaults=True)),
    }
    header = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    return header + body

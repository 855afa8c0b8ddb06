"""A `spec.schedule` written ahead of time from a previous day's demand, as a user would
write it from last week's data; the planner then follows the spec as written, and nothing
replaces it during the day.

For every moment of the reference day, the spares it asks for are those a recorder launched
then could not arrive in time for: what happens within one look-ahead (the longest boot plus
a pass), with Poisson-style headroom (bench/sim/policies/forecast.py). Two bases:

- `arrivals`, the forecast's own: every request expected within the look-ahead, plus
  headroom x sqrt(requests);
- `net`: requests minus recordings that end meanwhile (a recorder that finishes is free
  again), plus headroom x sqrt(requests + endings) for the noise of both, taken at the worst
  point of the look-ahead.

Each window of the day (a minute by default) keeps the most its moments ask for, and
bench/sim/schedule_rules.py fits that profile into a budget of cron-like rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from bench.sim.demand import Recording
from bench.sim.policies.forecast import ForecastSettings
from bench.sim.schedule_rules import MIN_RULE_BUDGET, fit_rules
from controller.spec import PoolSpec

DAY = 86_400
BUCKET = 10
"""Seconds per bucket of the reference day's counts."""

Basis = Literal["arrivals", "net"]
BASES: tuple[Basis, ...] = ("arrivals", "net")


@dataclass(frozen=True)
class ScheduleSettings:
    window: int = 60
    """Seconds per step of the learned profile: whole minutes dividing an hour."""
    rules: int = 150
    """At most this many rules."""
    basis: Basis = "net"
    headroom: float = 2.0
    """Extra spares per square root of the requests (and, for `net`, endings) in view."""
    days: str = "Mon-Fri"
    """Weekdays the rules apply on (the reference is a weekday; the simulated day a Tuesday)."""

    def __post_init__(self) -> None:
        if self.window <= 0 or self.window % 60 or 3600 % self.window:
            raise ValueError(
                f"schedule window must be a whole number of minutes dividing an hour, "
                f"got {self.window} s"
            )
        if self.rules < MIN_RULE_BUDGET:
            raise ValueError(f"a schedule needs a budget of at least {MIN_RULE_BUDGET} rules")
        if self.basis not in BASES:
            raise ValueError(f"schedule basis must be one of {', '.join(BASES)}")
        if self.headroom < 0:
            raise ValueError("schedule headroom must not be negative")


class DemandProfile:
    """Requests and recording ends of a reference day, counted per bucket by time of day."""

    def __init__(self, reference: Sequence[Recording]) -> None:
        size = DAY // BUCKET
        self.arrivals = [0] * size
        self.endings = [0] * size
        for r in reference:
            self.arrivals[int(r.start % DAY) // BUCKET] += 1
            self.endings[int(r.end % DAY) // BUCKET] += 1

    def spares(
        self, bucket: int, *, lead: float, basis: Basis, safety: float, headroom: float
    ) -> int:
        """Spares a moment in `bucket` asks for: what the next `lead` seconds bring."""
        size = len(self.arrivals)
        # A moment inside a bucket sees up to one more bucket ahead than the bucket's start.
        reach = math.ceil(lead / BUCKET) + 1
        counted = basis == "net"
        arrived = ended = 0
        worst = 0.0
        for k in range(bucket, bucket + reach):
            arrived += self.arrivals[k % size]
            ended += self.endings[k % size] if counted else 0
            bound = arrived * safety - ended + headroom * math.sqrt(arrived + ended)
            worst = max(worst, bound)
        return math.ceil(worst)


def window_targets(
    profile: DemandProfile,
    *,
    lead: float,
    window: int,
    basis: Basis = "arrivals",
    safety: float = 1.0,
    headroom: float = 3.0,
) -> list[int]:
    """For each window of the day, the spares its worst moment asks for."""
    per_window = window // BUCKET
    targets: list[int] = []
    for first in range(0, DAY // BUCKET, per_window):
        targets.append(
            max(
                profile.spares(b, lead=lead, basis=basis, safety=safety, headroom=headroom)
                for b in range(first, first + per_window)
            )
        )
    return targets


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
    targets = window_targets(
        DemandProfile(reference),
        lead=lead,
        window=settings.window,
        basis=settings.basis,
        safety=tuning.safety,
        headroom=settings.headroom,
    )
    targets = [min(spec.capacity.max, t) for t in targets]
    rules = fit_rules(
        targets,
        base=spec.targetFree,
        window=settings.window,
        budget=settings.rules,
        days=settings.days,
    )
    document = spec.model_dump()
    document["schedule"] = {"timezone": "UTC", "rules": [rule.model_dump() for rule in rules]}
    step = max([spec.scaleOut.maxStep, *(rule.targetFree for rule in rules)])
    document["scaleOut"] = {**document["scaleOut"], "maxStep": step}
    # Validated like a config file, so the simulation never runs a spec users could not write.
    return PoolSpec.model_validate(document)


def _plain(value: Any) -> Any:
    """Whole-number floats (durations in seconds) print as integers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def schedule_yaml(name: str, spec: PoolSpec, *, comment: str) -> str:
    """A JibriPool document for `spec` (`python -m controller validate` reads it back)."""
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": name},
        "spec": _plain(spec.model_dump(mode="json", exclude_defaults=True)),
    }
    header = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    return header + body

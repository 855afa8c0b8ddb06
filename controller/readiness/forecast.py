"""How many free recorders to hold now: the floor, the forecast, and a reactive term.

- The **floor** is what the spec says today: targetFree, or the schedule rule or dated
  override in force. The target never goes below it.
- The **forecast** covers the requests expected before a recorder launched now is ready (the
  boot horizon), at this minute of the week: the same window on the same weekday of recent
  weeks, in the schedule's time zone (so DST does not shift it an hour). Where fewer than two
  such weeks are recorded, the recent days of the same kind (weekday or weekend) stand in. Of
  three or more samples the highest is dropped, so one odd day (an event that will not
  recur) does not set the target for weeks, while an odd quiet day (a holiday) changes
  nothing.
- The **reactive** term covers a burst nobody predicted: the arrivals of the last few
  minutes beyond what the history predicted for them, as a rate over the horizon.

Expected arrivals become spares through an upper Poisson quantile at spec.readiness.missTarget,
capped by maxSpares (capacity.max by default). With no history at all the forecast and reactive
terms are zero, so the target is exactly the floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

from controller.readiness.poisson import poisson_quantile
from controller.spec import PoolSpec

REACTIVE_MINUTES: Final = 5
"""Complete minutes (plus the current one) whose arrivals measure the recent rate."""
MIN_WEEKS: Final = 2
"""Same-weekday samples below which recent days of the same kind stand in."""
FALLBACK_DAYS: Final = 6


class History(Protocol):
    """A pool's demand per epoch minute (`int(wall_time // 60)`)."""

    def arrivals(self, minute: int) -> float | None:
        """Requests for a recorder in that minute (recordings started plus requests that found
        none), or None where nothing was recorded (the controller was not running)."""
        ...


@dataclass(frozen=True)
class ReadinessTarget:
    """The target in force and its parts, for the planner, /status and metrics."""

    floor: int
    """spec.targetFree, or the schedule's target in force."""
    schedule_rule: int | None
    override: int | None
    forecast: int
    """Spares the expected arrivals ask for (capped)."""
    reactive: int
    """Further spares for the recent arrivals the history did not predict (capped)."""
    total: int
    """The target in force: max(floor, forecast + reactive)."""
    horizon: float
    expected: float
    """Arrivals the history expects within the horizon."""
    surprise: float
    """Arrivals beyond the history's, expected within the horizon at the recent rate."""
    samples: int
    """Past days the forecast drew on (0: no history for this moment)."""
    later: int
    """The most the floor and forecast ask for at any minute within scaleIn.idleFor."""
    drain_early: bool
    """Spares above max(total, later) may be drained without waiting out idleFor."""

    @property
    def keep(self) -> int:
        """Free recorders scale-in should keep: with drain_early, those needed within idleFor."""
        return max(self.total, self.later) if self.drain_early else self.total


def robust_high(samples: Iterable[float]) -> float | None:
    """The highest sample, or the second highest of three or more: one odd busy day does not
    raise the forecast, and no quiet day lowers it. None without samples."""
    ordered = sorted(samples, reverse=True)
    if not ordered:
        return None
    return ordered[1] if len(ordered) >= 3 else ordered[0]


def _window_sum(history: History, first: int, count: int) -> float | None:
    total = 0.0
    for minute in range(first, first + count):
        value = history.arrivals(minute)
        if value is None:
            return None
        total += value
    return total


def _sample_starts(now: float, zone: ZoneInfo, weeks: int) -> list[float]:
    """Wall times of the same local moment on the same weekday of past weeks, then (if fewer
    than MIN_WEEKS) on recent days of the same kind. Local-time arithmetic keeps DST right."""
    local = datetime.fromtimestamp(now, zone)
    same = [(local - timedelta(days=7 * k)).timestamp() for k in range(1, weeks + 1)]
    weekend = local.weekday() >= 5
    days = [
        (local - timedelta(days=d)).timestamp()
        for d in range(1, FALLBACK_DAYS + 1)
        if ((local - timedelta(days=d)).weekday() >= 5) == weekend
    ]
    return same + days


def _expected(
    history: History, starts: list[float], weeks: int, offset: int, count: int
) -> tuple[float, int]:
    """Robust arrivals over `count` minutes from `offset` minutes after each sample start."""
    found = [
        s
        for t in starts[:weeks]
        if (s := _window_sum(history, int(t // 60) + offset, count)) is not None
    ]
    if len(found) < MIN_WEEKS:
        found += [
            s
            for t in starts[weeks:]
            if (s := _window_sum(history, int(t // 60) + offset, count)) is not None
        ]
    value = robust_high(found)
    return (0.0, 0) if value is None else (value, len(found))


def _spares(expected: float, miss: float, cap: int) -> int:
    return min(cap, poisson_quantile(expected, miss))


def readiness_target(
    spec: PoolSpec, history: History, now: float, horizon: float
) -> ReadinessTarget:
    """The free recorders to hold at wall time `now` (epoch seconds), given the pool's demand
    history and the boot horizon in seconds."""
    in_force = spec.target_in_force(now)
    floor = in_force.value
    settings = spec.readiness
    if not settings.enabled:
        return ReadinessTarget(
            floor=floor,
            schedule_rule=in_force.rule,
            override=in_force.override,
            forecast=0,
            reactive=0,
            total=floor,
            horizon=horizon,
            expected=0.0,
            surprise=0.0,
            samples=0,
            later=floor,
            drain_early=False,
        )
    miss, cap, weeks = settings.missTarget, spec.max_spares, settings.lookbackWeeks
    zone = spec.schedule.zone
    minute = int(now // 60)
    # Every minute the horizon touches counts whole: bursts land on the minute's first seconds.
    span = int((now + horizon) // 60) - minute + 1
    starts = _sample_starts(now, zone, weeks)
    expected, samples = _expected(history, starts, weeks, 0, span)

    # What arrived lately beyond what the same minutes of the past predicted.
    elapsed = now - minute * 60.0
    observed = 0.0
    for m in range(minute - REACTIVE_MINUTES, minute + 1):
        observed += history.arrivals(m) or 0.0
    predicted, _ = _expected(history, starts, weeks, -REACTIVE_MINUTES, REACTIVE_MINUTES)
    current, _ = _expected(history, starts, weeks, 0, 1)
    predicted += current * elapsed / 60.0
    duration = REACTIVE_MINUTES * 60.0 + elapsed
    surprise = max(0.0, observed - predicted) * horizon / duration

    forecast = _spares(expected, miss, cap)
    learned = _spares(expected + surprise, miss, cap)
    later, confident = _later(spec, history, now, horizon, forecast=forecast, samples=samples)
    return ReadinessTarget(
        floor=floor,
        schedule_rule=in_force.rule,
        override=in_force.override,
        forecast=forecast,
        reactive=learned - forecast,
        total=max(floor, learned),
        horizon=horizon,
        expected=expected,
        surprise=surprise,
        samples=samples,
        later=later,
        drain_early=settings.drainEarly and confident,
    )


def _later(
    spec: PoolSpec, history: History, now: float, horizon: float, *, forecast: int, samples: int
) -> tuple[int, bool]:
    """The most floor and forecast ask for at each minute start within scaleIn.idleFor, and
    whether the history covered every one of those moments (only then may scale-in trust it)."""
    settings = spec.readiness
    most = max(spec.target_in_force(now).value, forecast)
    confident = samples > 0
    steps = math.ceil(spec.scaleIn.idleFor / 60.0)
    for step in range(1, steps + 1):
        moment = (int(now // 60) + step) * 60.0
        starts = _sample_starts(moment, spec.schedule.zone, settings.lookbackWeeks)
        span = int((moment + horizon) // 60) - int(moment // 60) + 1
        expected, found = _expected(history, starts, settings.lookbackWeeks, 0, span)
        confident = confident and found > 0
        spares = _spares(expected, settings.missTarget, spec.max_spares)
        most = max(most, spec.target_in_force(moment).value, spares)
    return most, confident

"""How many free recorders to hold now: the floor, the forecast, and a reactive term.

- The **floor** is what the spec says today: targetFree, or the schedule rule or dated
  override in force. The target never goes below it.
- The **forecast** covers the requests expected before a recorder launched now is ready (the
  boot horizon), at this minute of the week: the same window on the same weekday of recent
  weeks, in the schedule's time zone (so DST does not shift it an hour). Where fewer than two
  such weeks are recorded, the recent days of the same kind (weekday or weekend) stand in. Of
  three or more samples the highest is dropped, so one odd day (an event that will not
  recur) does not set the target for weeks, while an odd quiet day (a holiday) changes
  nothing. Recordings the same samples saw end before a request are counted on to serve it
  (robustly low, and never more than the recorders busy now).
- The **reactive** term covers a burst nobody predicted: the arrivals of the last few
  minutes beyond what the history predicted for them, as a rate over the horizon.

Expected requests become spares through an upper Poisson quantile at
spec.readiness.missTarget, less the endings counted on, capped by maxSpares (capacity.max by
default). With no history at all the forecast and reactive terms are zero, so the target is
exactly the floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
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
    """A pool's demand per epoch minute (`int(wall_time // 60)`); None where nothing was
    recorded (the controller was not running)."""

    def arrivals(self, minute: int) -> float | None:
        """Requests for a recorder: recordings started plus requests that found none."""
        ...

    def endings(self, minute: int) -> float | None:
        """Recordings that ended, freeing their recorder."""
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
    ending: float
    """Recordings the history expects to end (and free their recorder) in time to serve them,
    at most the recorders busy now."""
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


def robust_low(samples: Iterable[float]) -> float | None:
    """The mirror of robust_high, for what frees recorders: no odd day raises it."""
    ordered = sorted(samples)
    if not ordered:
        return None
    return ordered[1] if len(ordered) >= 3 else ordered[0]


@dataclass(frozen=True)
class Profile:
    """What the past says of the minutes from a moment on: arrivals through each minute
    (robustly high) and recordings ended before it (robustly low)."""

    arrivals: tuple[float, ...]
    ended_before: tuple[float, ...]
    samples: int


def _sample(history: History, first: int, span: int) -> tuple[list[float], list[float]] | None:
    """Cumulative arrivals through, and endings before, each of `span` minutes from `first`."""
    arrived: list[float] = []
    ended: list[float] = [0.0]
    total_a = total_e = 0.0
    for minute in range(first, first + span):
        a = history.arrivals(minute)
        e = history.endings(minute)
        if a is None:
            return None
        total_a += a
        total_e += e or 0.0
        arrived.append(total_a)
        ended.append(total_e)
    return arrived, ended[:span]


def _sample_starts(now: float, zone: ZoneInfo, weeks: int) -> tuple[list[float], list[float]]:
    """Wall times of the same local moment on the same weekday of past weeks, and on recent
    days of the same kind (weekday or weekend). Local-time arithmetic keeps DST right."""
    local = datetime.fromtimestamp(now, zone)
    same = [(local - timedelta(days=7 * k)).timestamp() for k in range(1, weeks + 1)]
    weekend = local.weekday() >= 5
    days = [
        (local - timedelta(days=d)).timestamp()
        for d in range(1, FALLBACK_DAYS + 1)
        if ((local - timedelta(days=d)).weekday() >= 5) == weekend
    ]
    return same, days


def profile(
    history: History, now: float, zone: ZoneInfo, weeks: int, offset: int, span: int
) -> Profile:
    """The robust profile of `span` minutes from `offset` minutes after now's minute, drawn
    from past weeks, or recent days where fewer than MIN_WEEKS weeks were recorded."""
    same, days = _sample_starts(now, zone, weeks)
    found = [x for t in same if (x := _sample(history, int(t // 60) + offset, span))]
    if len(found) < MIN_WEEKS:
        found += [x for t in days if (x := _sample(history, int(t // 60) + offset, span))]
    if not found:
        return Profile((0.0,) * span, (0.0,) * span, 0)
    arrivals = tuple(robust_high(a[j] for a, _ in found) or 0.0 for j in range(span))
    ended = tuple(robust_low(e[j] for _, e in found) or 0.0 for j in range(span))
    return Profile(arrivals, ended, len(found))


@lru_cache(maxsize=4096)
def _quantile(expected: float, miss: float) -> int:
    return poisson_quantile(expected, miss)


def spares_needed(
    past: Profile, miss: float, *, extra: float = 0.0, busy: int | None = None
) -> tuple[int, float]:
    """Spares for the worst minute of the profile: the upper quantile of the arrivals through
    it (plus `extra` spread evenly over the span), less the recorders freed before it, which
    can be at most the `busy` recorders there are now (no endings are counted without it).
    Returns the spares and the endings counted at that minute."""
    span = len(past.arrivals)
    worst, credit = 0, 0.0
    previous = -1.0
    for j in range(span):
        arrived = past.arrivals[j] + extra * (j + 1) / span
        if arrived <= previous:
            continue  # endings only grow, so a minute with no new arrival needs no more
        previous = arrived
        freed = 0.0 if busy is None else min(float(busy), past.ended_before[j])
        need = _quantile(round(arrived, 3), miss) - math.floor(freed)
        if need > worst:
            worst, credit = need, freed
    return worst, credit


def less_seen(past: Profile, arrived: float, ended: float) -> Profile:
    """The profile without what the current minute (its first) has already brought: requests
    that came are served or waiting, and recorders already freed are free, so neither is
    still ahead. At most the minute's own prediction is taken off."""
    if not past.arrivals:
        return past
    came = min(arrived, past.arrivals[0])
    freed = min(ended, past.ended_before[1]) if len(past.ended_before) > 1 else 0.0
    if came <= 0.0 and freed <= 0.0:
        return past
    return Profile(
        tuple(a - came for a in past.arrivals),
        tuple(e if j == 0 else e - freed for j, e in enumerate(past.ended_before)),
        past.samples,
    )


def _observed_surprise(
    history: History, now: float, zone: ZoneInfo, weeks: int, horizon: float
) -> float:
    """Arrivals of the last minutes beyond what the same minutes of the past predicted, as the
    arrivals expected at that rate within the horizon."""
    minute = int(now // 60)
    elapsed = now - minute * 60.0
    observed = 0.0
    for m in range(minute - REACTIVE_MINUTES, minute + 1):
        observed += history.arrivals(m) or 0.0
    past = profile(history, now, zone, weeks, -REACTIVE_MINUTES, REACTIVE_MINUTES + 1)
    before = past.arrivals[REACTIVE_MINUTES - 1]
    predicted = before + (past.arrivals[REACTIVE_MINUTES] - before) * elapsed / 60.0
    duration = REACTIVE_MINUTES * 60.0 + elapsed
    return max(0.0, observed - predicted) * horizon / duration


def _span(moment: float, horizon: float) -> int:
    # Every minute the horizon touches counts whole: bursts land on the minute's first seconds.
    return int((moment + horizon) // 60) - int(moment // 60) + 1


def readiness_target(
    spec: PoolSpec, history: History, now: float, horizon: float, busy: int | None = None
) -> ReadinessTarget:
    """The free recorders to hold at wall time `now` (epoch seconds), given the pool's demand
    history, the boot horizon in seconds, and the recorders busy now (which bounds the
    recordings that can end; None counts no endings)."""
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
            ending=0.0,
            surprise=0.0,
            samples=0,
            later=floor,
            drain_early=False,
        )
    miss, cap, weeks = settings.missTarget, spec.max_spares, settings.lookbackWeeks
    zone = spec.schedule.zone
    ends = busy if settings.countEndings else None
    minute = int(now // 60)
    past = less_seen(
        profile(history, now, zone, weeks, 0, _span(now, horizon)),
        history.arrivals(minute) or 0.0,
        history.endings(minute) or 0.0,
    )
    surprise = _observed_surprise(history, now, zone, weeks, horizon)
    forecast, ending = spares_needed(past, miss, busy=ends)
    learned, _ = spares_needed(past, miss, extra=surprise, busy=ends)
    forecast, learned = min(cap, forecast), min(cap, learned)
    later, confident = _later(spec, history, now, horizon, forecast=forecast, busy=ends)
    return ReadinessTarget(
        floor=floor,
        schedule_rule=in_force.rule,
        override=in_force.override,
        forecast=forecast,
        reactive=learned - forecast,
        total=max(floor, learned),
        horizon=horizon,
        expected=past.arrivals[-1],
        ending=ending,
        surprise=surprise,
        samples=past.samples,
        later=later,
        drain_early=settings.drainEarly and confident and past.samples > 0,
    )


def _later(
    spec: PoolSpec, history: History, now: float, horizon: float, *, forecast: int, busy: int | None
) -> tuple[int, bool]:
    """The most floor and forecast ask for at each minute start within scaleIn.idleFor, and
    whether the history covered every one of those moments (only then may scale-in trust it)."""
    settings = spec.readiness
    most = max(spec.target_in_force(now).value, forecast)
    confident = True
    for step in range(1, math.ceil(spec.scaleIn.idleFor / 60.0) + 1):
        moment = (int(now // 60) + step) * 60.0
        past = profile(
            history, moment, spec.schedule.zone, settings.lookbackWeeks, 0, _span(moment, horizon)
        )
        confident = confident and past.samples > 0
        spares, _ = spares_needed(past, settings.missTarget, busy=busy)
        most = max(most, spec.target_in_force(moment).value, min(spec.max_spares, spares))
    return most, confident

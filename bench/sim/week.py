"""Synthetic weeks of demand: several days in a row, as a pool serving two regions sees them.

Each day is `synthetic_day` of two regions: most recordings burst on the full and half hour,
a second region (an hour later) on the quarter hours (:15 and :45). Weekends are quiet; every
day's volume and office hours vary a little (day-to-day noise), and one day may carry an
event nobody scheduled: a burst of requests at an odd time, which no history predicts.
Everything is drawn from the seed, so the same arguments always give the same week.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bench.sim.demand import DayShape, Recording, synthetic_day

DAY = 86_400.0
FIRST_DATE = datetime(2025, 1, 6, tzinfo=UTC)
"""Day 1 of a synthetic week is Monday 6 January 2025 (UTC)."""
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class WeekShape:
    recordings: int = 3_000
    """Expected recordings on an ordinary weekday (before the day's noise)."""
    weekend: float = 0.2
    """Weekend volume relative to a weekday."""
    noise: float = 0.1
    """Sigma of the day's lognormal volume factor."""
    shift: float = 0.5
    """Office hours start and end up to this many hours earlier or later, per day."""
    quarter_share: float = 0.3
    """Share of the recordings from the second region, whose bursts come at :15 and :45."""
    quarter_lag: float = 1.0
    """Hours by which the second region's office hours follow the first's."""
    surprise_day: int | None = None
    """1-based day with an unannounced burst (None: none)."""
    surprise_at: float = 15 * 3600 + 40 * 60
    """Seconds into that day when the burst begins (15:40: no meeting boundary)."""
    surprise_share: float = 0.02
    """Extra requests in the burst, as a share of the day's expected recordings."""
    surprise_spread: float = 60.0
    """Mean delay (s) of the burst's requests after its start (exponential, capped at 5x)."""


@dataclass(frozen=True)
class Day:
    number: int
    """1-based day of the run."""
    date: datetime
    recordings: tuple[Recording, ...]
    """Starts in seconds from this day's midnight."""
    surprise: int = 0
    """Requests of the unannounced burst in this day (already in `recordings`)."""

    @property
    def weekday(self) -> str:
        return WEEKDAYS[self.date.weekday()]


def synthetic_week(days: int, shape: WeekShape, seed: int) -> tuple[Day, ...]:
    """`days` consecutive days from Monday FIRST_DATE; the same shape and seed, the same days."""
    if days <= 0 or shape.recordings <= 0:
        raise ValueError("a week needs a positive number of days and recordings")
    if not 0.0 <= shape.quarter_share < 1.0 or shape.weekend <= 0 or shape.noise < 0:
        raise ValueError("quarter_share must lie in [0, 1), weekend be positive, noise >= 0")
    rng = random.Random(f"week:{seed}")
    out: list[Day] = []
    for number in range(1, days + 1):
        date = FIRST_DATE + timedelta(days=number - 1)
        volume = shape.recordings * (shape.weekend if date.weekday() >= 5 else 1.0)
        volume *= math.exp(rng.gauss(0.0, shape.noise))
        start = 8.0 + rng.uniform(-shape.shift, shape.shift)
        end = 18.0 + rng.uniform(-shape.shift, shape.shift)
        base = DayShape(recordings=max(1, round(volume)), day_start=start, day_end=end)
        main = replace(base, recordings=max(1, round(volume * (1.0 - shape.quarter_share))))
        quarter = replace(
            base,
            recordings=max(1, round(volume * shape.quarter_share)),
            day_start=start + shape.quarter_lag,
            day_end=end + shape.quarter_lag,
            burst_offset=900.0,
        )
        starts = [
            *synthetic_day(main, seed * 1_000 + 2 * number),
            *synthetic_day(quarter, seed * 1_000 + 2 * number + 1),
        ]
        pairs = [(r.start, r.duration) for r in starts]
        surprise = 0
        if shape.surprise_day == number:
            surprise = _burst(rng, shape, pairs)
        pairs.sort()
        recordings = tuple(Recording(i, s, d) for i, (s, d) in enumerate(pairs))
        out.append(Day(number, date, recordings, surprise))
    return tuple(out)


def _burst(rng: random.Random, shape: WeekShape, pairs: list[tuple[float, float]]) -> int:
    """Add the unannounced burst's requests (durations like the day's: lognormal, median 30
    min); returns how many."""
    count = max(1, round(shape.surprise_share * shape.recordings))
    cap = 5.0 * shape.surprise_spread
    for _ in range(count):
        at = shape.surprise_at + min(cap, rng.expovariate(1.0 / shape.surprise_spread))
        duration = min(4 * 3600.0, max(60.0, rng.lognormvariate(math.log(1800.0), 0.7)))
        pairs.append((at, duration))
    return count


def joined(days: tuple[Day, ...]) -> tuple[Recording, ...]:
    """The days as one run: day k's starts shifted by k days (k from 0)."""
    pairs = [(k * DAY + r.start, r.duration) for k, day in enumerate(days) for r in day.recordings]
    pairs.sort()
    return tuple(Recording(i, s, d) for i, (s, d) in enumerate(pairs))

"""Recording demand: a synthetic working day, or a CSV trace of `start_seconds,duration_seconds`.

The synthetic day has the three features that make recorders hard to provision: a diurnal
swell (quiet nights, busy office hours), bursts on the hour and half hour (meetings start on
the clock, and people press "record" in the first minutes), and long-tailed durations.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recording:
    index: int
    start: float
    """Seconds from the start of the day when someone asks for a recorder."""
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class DayShape:
    """Parameters of the synthetic day; the defaults give about 10,000 recordings."""

    recordings: int = 10_000
    """Expected number of recordings over the day."""
    hours: float = 24.0
    night_floor: float = 0.06
    """Arrival rate at night, relative to office hours."""
    day_start: float = 8.0
    day_end: float = 18.0
    on_the_hour: float = 0.35
    """Share of each hour's recordings that start in a burst just after the full hour."""
    on_the_half_hour: float = 0.10
    burst_offset: float = 0.0
    """Seconds after the full and half hour at which the bursts start (900: :15 and :45)."""
    burst_spread: float = 60.0
    """Mean delay (s) between a meeting's start and its recording request; capped at 5x."""
    median_duration: float = 1800.0
    duration_sigma: float = 0.7
    """Sigma of the lognormal duration: 0.7 gives a mean of about 1.28x the median."""
    min_duration: float = 60.0
    max_duration: float = 4 * 3600.0


class TraceError(ValueError):
    """A demand trace could not be read; the message names the file and the line."""


def _rate_weight(shape: DayShape, hour: float) -> float:
    """Relative arrival rate at a time of day: a floor plus an office-hours plateau."""
    h = hour % 24.0
    rise = 1.0 / (1.0 + math.exp(-(h - shape.day_start) / 0.7))
    fall = 1.0 / (1.0 + math.exp(-(shape.day_end - h) / 0.9))
    return shape.night_floor + (1.0 - shape.night_floor) * rise * fall


def _poisson(rng: random.Random, mean: float) -> int:
    """Poisson sample by counting unit-rate arrivals (exact; O(mean), fine for these sizes)."""
    count, t = 0, rng.expovariate(1.0)
    while t < mean:
        count += 1
        t += rng.expovariate(1.0)
    return count


def _duration(rng: random.Random, shape: DayShape) -> float:
    value = rng.lognormvariate(math.log(shape.median_duration), shape.duration_sigma)
    return min(shape.max_duration, max(shape.min_duration, value))


def synthetic_day(shape: DayShape, seed: int) -> tuple[Recording, ...]:
    """A reproducible day of demand: the same shape and seed always give the same recordings."""
    if shape.recordings <= 0 or shape.hours <= 0:
        raise ValueError("a day needs a positive number of recordings and hours")
    if shape.on_the_hour + shape.on_the_half_hour > 1.0:
        raise ValueError("burst shares must not exceed 1")
    rng = random.Random(f"demand:{seed}")
    slots = math.ceil(shape.hours)
    weights = [
        sum(_rate_weight(shape, h + m / 60.0) for m in range(60)) / 60.0 * min(1.0, shape.hours - h)
        for h in range(slots)
    ]
    scale = shape.recordings / sum(weights)
    end = shape.hours * 3600.0
    cap = 5.0 * shape.burst_spread
    starts: list[float] = []
    for hour, weight in enumerate(weights):
        expected = weight * scale
        base = hour * 3600.0
        for offset, share in ((0.0, shape.on_the_hour), (1800.0, shape.on_the_half_hour)):
            at = base + offset + shape.burst_offset
            for _ in range(_poisson(rng, expected * share)):
                starts.append(at + min(cap, rng.expovariate(1.0 / shape.burst_spread)))
        steady = expected * (1.0 - shape.on_the_hour - shape.on_the_half_hour)
        if steady > 0:
            t = base + rng.expovariate(steady / 3600.0)
            while t < base + 3600.0:
                starts.append(t)
                t += rng.expovariate(steady / 3600.0)
    starts = sorted(s for s in starts if s < end)
    return tuple(Recording(i, s, _duration(rng, shape)) for i, s in enumerate(starts))


def load_trace(path: Path) -> tuple[Recording, ...]:
    """Read `start_seconds,duration_seconds` rows (a header row is allowed); sorted by start."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_trace(text.splitlines(), str(path))


def parse_trace(lines: Iterable[str], source: str = "<trace>") -> tuple[Recording, ...]:
    rows: list[tuple[float, float]] = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise TraceError(
                f"{source}:{number}: expected 2 columns start_seconds,duration_seconds, "
                f"got {len(row)}"
            )
        try:
            start, duration = float(row[0]), float(row[1])
        except ValueError as exc:
            if number == 1 and not rows:
                continue  # a header row
            raise TraceError(f"{source}:{number}: not a number: {','.join(row)!r}") from exc
        if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration <= 0:
            raise TraceError(
                f"{source}:{number}: start must be >= 0 and duration > 0, got {start}, {duration}"
            )
        rows.append((start, duration))
    if not rows:
        raise TraceError(f"{source}: no recordings in the trace")
    rows.sort()
    return tuple(Recording(i, s, d) for i, (s, d) in enumerate(rows))


def concurrency_steps(recordings: Iterable[Recording], until: float) -> list[tuple[float, int]]:
    """The number of recordings in progress as (time, level) steps, clipped to [0, until]."""
    deltas: list[tuple[float, int]] = []
    for r in recordings:
        if r.start < until:
            deltas.append((r.start, 1))
            if r.end < until:
                deltas.append((r.end, -1))
    deltas.sort(key=lambda d: (d[0], d[1]))
    steps: list[tuple[float, int]] = []
    level = 0
    for t, delta in deltas:
        level += delta
        if steps and steps[-1][0] == t:
            steps[-1] = (t, level)
        else:
            steps.append((t, level))
    return steps


def peak_concurrency(recordings: Iterable[Recording], until: float) -> int:
    return max((level for _, level in concurrency_steps(recordings, until)), default=0)

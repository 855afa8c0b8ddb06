"""Recording demand for the sandbox: a day-shaped pattern compressed into minutes, or a CSV trace.

Both yield `Recording(start, duration)` in order of start, in seconds since the run began. The
pattern is a Poisson process whose rate follows the hour-by-hour shape of a working day (quiet
night, morning ramp, lunch dip, afternoon, evening tail); by Little's law a rate of
`concurrency / mean_duration` keeps about `concurrency` recordings running at once.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Share of the peak concurrency at each hour of the day (00:00 … 23:00).
DAY_SHAPE: Final = (
    0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.10, 0.25,
    0.55, 0.90, 1.00, 0.95, 0.60, 0.80, 0.95, 0.90,
    0.70, 0.45, 0.25, 0.15, 0.10, 0.05, 0.05, 0.05,
)  # fmt: skip

TRACE_COLUMNS: Final = ("start_seconds", "duration_seconds")
MAX_REPORTED_PROBLEMS: Final = 20


@dataclass(frozen=True)
class Recording:
    """One recording request: when it arrives and how long it runs once started."""

    start: float
    duration: float


@dataclass(frozen=True)
class DayPattern:
    """A working day compressed into `day_length` seconds, repeating."""

    day_length: float = 300.0
    peak: float = 4.0
    """Recordings running at once at the busiest hour."""
    mean_duration: float = 15.0
    """Mean recording length in seconds; each is drawn uniformly from 0.5 to 1.5 times it."""
    offset: float = 0.0
    """Seconds into the day at which the run starts (0 is midnight)."""

    def __post_init__(self) -> None:
        for name in ("day_length", "peak", "mean_duration"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number (got {value!r})")
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise ValueError(f"offset must be zero or more (got {self.offset!r})")

    def concurrency(self, t: float) -> float:
        """Expected recordings running at `t` seconds into the run (linear between hours)."""
        hour = ((t + self.offset) % self.day_length) / self.day_length * len(DAY_SHAPE)
        low = int(hour) % len(DAY_SHAPE)
        high = (low + 1) % len(DAY_SHAPE)
        share = DAY_SHAPE[low] + (DAY_SHAPE[high] - DAY_SHAPE[low]) * (hour - int(hour))
        return self.peak * share

    def arrivals(self, rng: random.Random) -> Iterator[Recording]:
        """An endless, seeded stream of recordings (Poisson arrivals, thinned to the shape)."""
        ceiling = self.peak * max(DAY_SHAPE) / self.mean_duration
        t = 0.0
        while True:
            t += rng.expovariate(ceiling)
            rate = self.concurrency(t) / self.mean_duration
            if rng.random() * ceiling < rate:
                duration = self.mean_duration * rng.uniform(0.5, 1.5)
                yield Recording(start=t, duration=duration)


class TraceError(Exception):
    """A demand trace could not be read; the message names every bad row."""


def _number(text: str, column: str, *, positive: bool) -> tuple[float | None, str | None]:
    try:
        value = float(text)
    except ValueError:
        return None, f"{column} is not a number (got {text.strip()!r})"
    if not math.isfinite(value):
        return None, f"{column} must be finite (got {text.strip()!r})"
    if positive and value <= 0:
        return None, f"{column} must be greater than 0 (got {text.strip()!r})"
    if value < 0:
        return None, f"{column} must not be negative (got {text.strip()!r})"
    return value, None


def _is_header(row: Sequence[str]) -> bool:
    return tuple(cell.strip().lower() for cell in row) == TRACE_COLUMNS


def parse_trace(text: str, source: str = "<trace>") -> tuple[Recording, ...]:
    """Parse `start_seconds,duration_seconds` rows, sorted by start; raise TraceError.

    An optional header row naming the two columns, blank lines and `#` comments are allowed.
    """
    problems: list[str] = []
    recordings: list[Recording] = []
    first = True
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        number = reader.line_num
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if first and _is_header(row):
            first = False
            continue
        first = False
        if len(row) != 2:
            columns = ",".join(TRACE_COLUMNS)
            problems.append(f"{source}:{number}: expected 2 columns ({columns}), got {len(row)}")
            continue
        start, start_problem = _number(row[0], TRACE_COLUMNS[0], positive=False)
        duration, duration_problem = _number(row[1], TRACE_COLUMNS[1], positive=True)
        for problem in (start_problem, duration_problem):
            if problem:
                problems.append(f"{source}:{number}: {problem}")
        if start is not None and duration is not None:
            recordings.append(Recording(start=start, duration=duration))
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(f"… and {len(problems) - len(shown)} more bad rows")
        raise TraceError("\n".join(shown))
    if not recordings:
        raise TraceError(f"{source}: no recordings (expected rows of {','.join(TRACE_COLUMNS)})")
    return tuple(sorted(recordings, key=lambda r: r.start))


def load_trace(path: Path) -> tuple[Recording, ...]:
    """Read and parse a CSV trace file; raise TraceError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return parse_trace(text, str(path))

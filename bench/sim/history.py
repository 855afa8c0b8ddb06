"""Previous days of demand as the controller's demand history.

A running controller backfills its history from CloudWatch at start (controller/demand):
per covered minute, recordings started, requests missed and recordings ended, zeros
included. A previous day given as a trace (or a synthetic day the run does not score) is
turned into exactly that: every minute of the day covered, each request a recording started
in the minute it arrived (jicofo would count the ones no recorder took as missed, which are
demand all the same), each recording's end in the minute it ended. Busy counts are left out:
the forecast does not read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.sim.demand import Recording, TraceError, load_trace

DAY = 86_400.0
MINUTES_PER_DAY = 1_440


@dataclass(frozen=True)
class Backfill:
    """What GetMetricData would give back for the previous days, keyed by epoch minute."""

    started: dict[int, float] = field(default_factory=dict)
    ended: dict[int, float] = field(default_factory=dict)
    days: int = 0

    @property
    def requests(self) -> int:
        return round(sum(self.started.values()))


def load_history(paths: Sequence[Path]) -> tuple[tuple[Recording, ...], ...]:
    """Read the previous days' traces, oldest first; each day's start_seconds from 0."""
    days = []
    for path in paths:
        day = load_trace(path)
        late = next((r for r in day if r.start >= DAY), None)
        if late is not None:
            raise TraceError(
                f"{path}: a history file holds one day: start_seconds {late.start:g} is past "
                f"{DAY:g}"
            )
        days.append(day)
    return tuple(days)


def backfill(days: Sequence[Sequence[Recording]], epoch: float) -> Backfill:
    """The minutes of `days`, the last of which ends at wall time `epoch` (epoch seconds)."""
    out = Backfill(days=len(days))
    first = epoch - len(days) * DAY
    last_minute = int(epoch // 60) - 1
    for k, day in enumerate(days):
        midnight = int((first + k * DAY) // 60)
        for minute in range(midnight, midnight + MINUTES_PER_DAY):
            out.started.setdefault(minute, 0.0)
            out.ended.setdefault(minute, 0.0)
        for r in day:
            start = int((first + k * DAY + r.start) // 60)
            out.started[start] = out.started.get(start, 0.0) + 1.0
            end = int((first + k * DAY + r.end) // 60)
            # A recording still running when the history ends ended in no minute of it.
            if end <= last_minute:
                out.ended[end] = out.ended.get(end, 0.0) + 1.0
    return out

"""A pool's demand per epoch minute: the in-memory copy of what CloudWatch holds, plus the
minutes this controller has recorded and not yet published.

A minute is *covered* once the controller ran through it (or CloudWatch has a
RecordingsStarted value for it): covered minutes without a recording count as zero demand;
uncovered ones are unknown, and the forecast leaves them out rather than read them as quiet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

RETENTION_MINUTES: Final = 63 * 24 * 60
"""CloudWatch keeps 5-minute data 63 days; older minutes are dropped."""


@dataclass(frozen=True)
class MinuteCounts:
    """One covered minute: recordings started, requests missed, the most busy recorders, and
    recordings ended."""

    started: float = 0.0
    missed: float = 0.0
    busy: float | None = None
    ended: float = 0.0


class DemandHistory:
    """Per-minute counts of one pool, keyed by epoch minute (`int(wall_time // 60)`).

    Mutated only on the event loop (the recorder, the CloudWatch sync); the forecast reads it
    there too, so no lock is needed."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._missed: dict[int, float] = {}
        self._busy: dict[int, float] = {}
        self._ended: dict[int, float] = {}

    def arrivals(self, minute: int) -> float | None:
        """Requests in `minute`: recordings started plus requests that found no recorder."""
        started = self._started.get(minute)
        if started is None:
            return None
        return started + self._missed.get(minute, 0.0)

    def endings(self, minute: int) -> float | None:
        """Recordings that ended in `minute` (a recorder went from busy to free)."""
        if minute not in self._started:
            return None
        return self._ended.get(minute, 0.0)

    def counts(self, minute: int) -> MinuteCounts | None:
        started = self._started.get(minute)
        if started is None:
            return None
        return MinuteCounts(
            started,
            self._missed.get(minute, 0.0),
            self._busy.get(minute),
            self._ended.get(minute, 0.0),
        )

    def cover(self, minute: int) -> None:
        """The controller watched the pool through (part of) `minute`."""
        self._started.setdefault(minute, 0.0)

    def add_started(self, minute: int, count: float = 1.0) -> None:
        self._started[minute] = self._started.get(minute, 0.0) + count

    def add_ended(self, minute: int, count: float = 1.0) -> None:
        self.cover(minute)
        self._ended[minute] = self._ended.get(minute, 0.0) + count

    def add_missed(self, minute: int, count: float) -> None:
        self.cover(minute)
        self._missed[minute] = self._missed.get(minute, 0.0) + count

    def note_busy(self, minute: int, busy: float) -> None:
        self.cover(minute)
        self._busy[minute] = max(busy, self._busy.get(minute, 0.0))

    def merge(
        self,
        started: Mapping[int, float],
        missed: Mapping[int, float] = {},
        busy: Mapping[int, float] = {},
        ended: Mapping[int, float] = {},
    ) -> int:
        """Take minutes read back from CloudWatch. Where this controller also counted a minute
        (one published while it ran), the larger count wins, so a merge never loses a
        recording nor double-counts one. Returns how many minutes were new."""
        new = 0
        for minute, value in started.items():
            if minute not in self._started:
                new += 1
            self._started[minute] = max(value, self._started.get(minute, 0.0))
        for minute, value in missed.items():
            self.cover(minute)
            self._missed[minute] = max(value, self._missed.get(minute, 0.0))
        for minute, value in ended.items():
            self.cover(minute)
            self._ended[minute] = max(value, self._ended.get(minute, 0.0))
        for minute, value in busy.items():
            if minute in self._started:
                self._busy[minute] = max(value, self._busy.get(minute, 0.0))
        return new

    def minutes(self, first: int, last: int) -> Iterable[tuple[int, MinuteCounts]]:
        """Covered minutes in [first, last], in order."""
        for minute in sorted(m for m in self._started if first <= m <= last):
            counts = self.counts(minute)
            assert counts is not None
            yield minute, counts

    def prune(self, now_minute: int) -> None:
        oldest = now_minute - RETENTION_MINUTES
        for series in (self._started, self._missed, self._busy, self._ended):
            for minute in [m for m in series if m < oldest]:
                del series[minute]

    def __len__(self) -> int:
        return len(self._started)

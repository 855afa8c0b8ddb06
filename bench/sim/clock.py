"""The simulated clock: a heap of timed callbacks, run in time order, ties in scheduling order."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Simulation:
    """Deterministic event loop: nothing reads the wall clock, so a seed fixes the whole run."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.events = 0

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        if when < self.now:
            raise ValueError(f"cannot schedule in the past: {when} < {self.now}")
        heapq.heappush(self._queue, (when, next(self._order), callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def every(self, period: float, callback: Callable[[], None], *, start: float = 0.0) -> None:
        """Call `callback` at start, start + period, … for as long as the run lasts."""

        def tick() -> None:
            callback()
            self.after(period, tick)

        self.at(start, tick)

    def run(self, until: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, callback, args = heapq.heappop(queue)
            self.now = when
            self.events += 1
            callback(*args)
        self.now = until

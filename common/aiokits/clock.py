"""Time as a dependency: read it and sleep on it, so tests can drive it by hand.

`MonotonicClock` is the real one. `ManualClock` moves only when `advance` is called, and wakes
the sleepers whose deadline it passes, so a loop under test runs through hours of schedule in
no real time and a test can say "nothing happened before t" without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a sleep that an event can cut short."""

    def now(self) -> float:
        """Seconds on this clock (monotonic; the origin means nothing)."""
        ...

    async def sleep(self, delay: float, interrupt: asyncio.Event | None = None) -> bool:
        """Sleep `delay` seconds or until `interrupt` is set; True when interrupted."""
        ...


class MonotonicClock:
    """The process's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, delay: float, interrupt: asyncio.Event | None = None) -> bool:
        if interrupt is not None and interrupt.is_set():
            return True
        if delay <= 0:
            await asyncio.sleep(0)
            return False
        if interrupt is None:
            await asyncio.sleep(delay)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupt.wait(), timeout=delay)
        return interrupt.is_set()


class ManualClock:
    """A clock that moves only when told to; sleepers wake as `advance` passes their deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to pass."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def next_deadline(self) -> float | None:
        """The earliest deadline of a waiting sleep, if any."""
        live = [deadline for deadline, _, fut in self._sleepers if not fut.done()]
        return min(live) if live else None

    async def sleep(self, delay: float, interrupt: asyncio.Event | None = None) -> bool:
        if interrupt is not None and interrupt.is_set():
            return True
        if delay <= 0:
            await asyncio.sleep(0)
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + delay, next(self._order), fut))
        waiters: set[asyncio.Future[object]] = {fut}  # type: ignore[arg-type]
        stopper: asyncio.Task[bool] | None = None
        if interrupt is not None:
            stopper = asyncio.ensure_future(interrupt.wait())
            waiters.add(stopper)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopper is not None:
                stopper.cancel()
            if not fut.done():
                fut.cancel()
        return interrupt is not None and interrupt.is_set() and not _woke(fut)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline in order, and let them run."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


def _woke(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled()


async def _settle(rounds: int = 20) -> None:
    """Give woken tasks a few turns of the event loop to run up to their next await."""
    for _ in range(rounds):
        await asyncio.sleep(0)

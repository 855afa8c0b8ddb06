"""The boot horizon: how long a recorder launched now takes to be ready, measured.

Spares must cover the requests that arrive before a launch made now could serve one: the
time from launch to the agent's first idle report, at a high percentile over recent launches,
plus a margin for the pass that notices and the Auto Scaling group that acts. Too few launches
measured (a new pool) fall back to a default.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container, Sequence
from typing import Final

DEFAULT_HORIZON: Final = 180.0
"""Seconds assumed before enough launches are measured: a cold EC2 boot plus Jibri start
(60-120 s) and the margin."""
MARGIN: Final = 30.0
"""Seconds added to the measured boot: the pass that raises the target and the group's launch."""
MIN_SAMPLES: Final = 5
PERCENTILE: Final = 0.9
KEEP: Final = 50
"""Recent launches kept: about the last few scale-outs, so a new AMI shows within a day."""


def boot_horizon(
    boot_times: Sequence[float],
    *,
    percentile: float = PERCENTILE,
    min_samples: int = MIN_SAMPLES,
    default: float = DEFAULT_HORIZON,
    margin: float = MARGIN,
) -> float:
    """Seconds from now that spares must cover: the `percentile` of the measured launch → first
    idle durations (nearest rank) plus `margin`, or `default` with fewer than `min_samples`."""
    valid = sorted(t for t in boot_times if math.isfinite(t) and t >= 0.0)
    if len(valid) < min_samples:
        return default
    rank = max(1, math.ceil(percentile * len(valid)))
    return min(3600.0, valid[rank - 1] + margin)


class BootTimes:
    """Launch → first idle report of the pool's recent launches (wall-clock seconds).

    Fed per pass with what observe knows of each instance; an instance counts once, when it is
    first seen idle, and only if it was seen starting (so a controller restart does not take
    an old instance's age for a boot time) and never seen in the warm pool (a warm start takes
    a fraction of a cold boot and would shorten the horizon)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._durations: deque[float] = deque(maxlen=keep)
        self._starting: dict[str, float] = {}
        self._done: set[str] = set()

    def starting(self, instance: str, launched_at: float) -> None:
        if instance not in self._done:
            self._starting.setdefault(instance, launched_at)

    def warm(self, instance: str) -> None:
        """The instance is in the warm pool: whenever it enters the group, its start is a warm
        one (the warm-pool step measures those), never a cold boot."""
        self._starting.pop(instance, None)
        self._done.add(instance)

    def ready(self, instance: str, first_idle_at: float) -> float | None:
        """Record the instance's boot, once; the duration, or None if not measurable."""
        launched = self._starting.pop(instance, None)
        if launched is None or instance in self._done:
            return None
        self._done.add(instance)
        duration = max(0.0, first_idle_at - launched)
        self._durations.append(duration)
        return duration

    def forget(self, live: Container[str], size: int) -> None:
        """Drop instances that have left the group (`live`, `size` of them). Called every pass
        with the whole fleet: the few booting are checked each time, the booted only once
        they outnumber the fleet twice over (an instance id is never reused)."""
        if self._starting:
            self._starting = {i: t for i, t in self._starting.items() if i in live}
        if len(self._done) > 2 * size + 64:
            self._done = {i for i in self._done if i in live}

    def is_starting(self, instance: str) -> bool:
        return instance in self._starting

    @property
    def durations(self) -> tuple[float, ...]:
        return tuple(self._durations)

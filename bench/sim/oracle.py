"""The oracle: a lower bound on instance-hours for serving every recording at once.

It knows the future and may move recordings between recorders, so it needs exactly
max(concurrent recordings, min) recorders at every moment. Think of the k-th recorder as a
level: it is needed whenever demand reaches k. Between two such spells a recorder either
stays up (paying the idle gap) or is terminated and relaunched (paying a boot, since an
instance is billed while it boots): the oracle pays min(gap, boot) for every gap, and one
boot for each level's first spell unless that level was already up when the day began. No
real policy can beat this, because no recorder can serve two recordings at once and none is
ready sooner than a boot after its launch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.sim.demand import Recording, concurrency_steps

DAY = 86_400.0


@dataclass(frozen=True)
class OracleResult:
    instance_seconds: float
    capacity: tuple[tuple[float, int], ...]
    """Recorders up (booting, idle or busy) sampled every `sample_period` seconds."""
    per_day: tuple[float, ...] = ()
    """instance_seconds split by day of the run (a boot before time 0 counts in the first)."""


def oracle(
    recordings: Sequence[Recording],
    *,
    until: float,
    boot: float,
    min_size: int,
    initial: int,
    sample_period: float = 60.0,
) -> OracleResult:
    """Cost of the ideal fleet; `initial` recorders are up and booted when the day begins."""
    steps = concurrency_steps(recordings, until)
    level = min_size
    on_since: dict[int, float] = dict.fromkeys(range(1, level + 1), 0.0)
    # Recorders up beyond min when the day begins may be kept for a demand that comes soon.
    off_since: dict[int, float] = dict.fromkeys(range(level + 1, initial + 1), 0.0)
    spells: list[tuple[float, float]] = []
    """Intervals during which one level's recorder is up, boot and kept gaps included."""
    cost = 0.0
    for t, demand in steps:
        wanted = max(demand, min_size)
        if wanted > level:
            for k in range(level + 1, wanted + 1):
                last_off = off_since.pop(k, None)
                if last_off is not None and t - last_off < boot:
                    cost += t - last_off
                    spells.append((last_off, t))
                else:
                    cost += boot
                    spells.append((t - boot, t))
                on_since[k] = t
        elif wanted < level:
            for k in range(wanted + 1, level + 1):
                start = on_since.pop(k)
                cost += t - start
                spells.append((start, t))
                off_since[k] = t
        level = wanted
    for start in on_since.values():
        cost += until - start
        spells.append((start, until))
    return OracleResult(cost, _sample(spells, until, sample_period), _per_day(spells, until))


def _per_day(spells: list[tuple[float, float]], until: float) -> tuple[float, ...]:
    days = [0.0] * max(1, math.ceil(until / DAY))
    for start, end in spells:
        if start < 0.0:
            days[0] += -start
            start = 0.0
        while start < end:
            k = min(len(days) - 1, int(start // DAY))
            stop = min(end, (k + 1) * DAY) if k < len(days) - 1 else end
            days[k] += stop - start
            start = stop
    return tuple(days)


def _sample(
    spells: list[tuple[float, float]], until: float, period: float
) -> tuple[tuple[float, int], ...]:
    events = sorted([(max(0.0, s), 1) for s, _ in spells] + [(e, -1) for _, e in spells])
    samples: list[tuple[float, int]] = []
    up, i, t = 0, 0, 0.0
    while t <= until:
        while i < len(events) and events[i][0] <= t:
            up += events[i][1]
            i += 1
        samples.append((t, up))
        t += period
    return tuple(samples)

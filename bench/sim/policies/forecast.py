"""What-if: the same real planner, with targetFree following a time-of-day forecast.

Nothing in the planner changes. Every `step` seconds the pool's spec is replaced, as a
config reload would replace it, by one whose targetFree covers the requests expected to
arrive before a recorder launched now could be ready (the forecast is the previous day's
arrivals at the same time of day, plus Poisson-style headroom), and whose scaleOut.maxStep lets the
planner add that many at once. It answers "what would time-of-day targets buy?" with numbers;
it never sees the day it is scored on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.sim.demand import Recording
from bench.sim.fleet import SimulatedWorld
from bench.sim.policies.planner import ControllerSettings, PlannerPolicy
from controller.spec import PoolSpec


@dataclass(frozen=True)
class ForecastSettings:
    lead: float | None = None
    """Look-ahead: a launch now is ready after at most the longest boot plus the reaction;
    None takes the simulated world's longest boot + 30 s."""
    safety: float = 1.0
    """Spares per expected arrival."""
    headroom: float = 3.0
    """Extra spares per square root of the expected arrivals: arrivals are Poisson-like, so
    a quiet hour needs proportionally more headroom than a busy one."""
    step: float = 30.0


def spares(expected: float, tuning: ForecastSettings) -> int:
    """Spares that cover `expected` arrivals: `safety` each, plus `headroom` x sqrt(expected)."""
    return math.ceil(expected * tuning.safety + tuning.headroom * math.sqrt(expected))


class Forecast:
    """Arrival counts of a reference day, queried by time-of-day window."""

    def __init__(self, reference: Sequence[Recording], bucket: float = 10.0) -> None:
        self.bucket = bucket
        size = math.ceil(86_400.0 / bucket)
        self.counts = [0] * size
        for r in reference:
            self.counts[int((r.start % 86_400.0) // bucket)] += 1
        self.cumulative = [0]
        for c in self.counts:
            self.cumulative.append(self.cumulative[-1] + c)

    def arrivals(self, start: float, length: float) -> int:
        first = int((start % 86_400.0) // self.bucket)
        last = min(len(self.counts), first + math.ceil(length / self.bucket))
        return self.cumulative[last] - self.cumulative[first]


class ForecastPlannerPolicy(PlannerPolicy):
    name = "planner-forecast"
    label = "what-if: real planner, targetFree from yesterday's arrivals (config reloads)"

    def __init__(
        self,
        spec: PoolSpec,
        settings: ControllerSettings,
        forecast: Forecast,
        tuning: ForecastSettings,
        *,
        longest_boot: float,
    ) -> None:
        super().__init__(spec, settings)
        self.base = spec
        self.forecast = forecast
        self.tuning = tuning
        self.lead = tuning.lead if tuning.lead is not None else longest_boot + 30.0
        self.max_target = spec.targetFree

    def attach(self, fleet: SimulatedWorld) -> None:
        super().attach(fleet)
        fleet.sim.every(self.tuning.step, self._retarget)

    def target_at(self, now: float) -> int:
        """The targetFree the forecast asks for at `now`."""
        expected = self.forecast.arrivals(now, self.lead + self.tuning.step)
        wanted = spares(expected, self.tuning)
        return min(self.base.capacity.max, max(self.base.targetFree, wanted))

    def _retarget(self) -> None:
        target = self.target_at(self.fleet.sim.now)
        if target == self.spec.targetFree:
            return
        self.max_target = max(self.max_target, target)
        step = max(self.base.scaleOut.maxStep, target)
        self.spec = self.base.model_copy(
            update={
                "targetFree": target,
                "scaleOut": self.base.scaleOut.model_copy(update={"maxStep": step}),
            }
        )
        self._trigger()

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "max_target_free": self.max_target}

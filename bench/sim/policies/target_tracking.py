"""AWS target tracking on the classic per-VM metric: the busy share 100 * (1 - Avg(JibriFree))
(target tracking needs a metric that rises with load per instance, so the free count is turned
into a utilisation by metric math). The cron still toggles protection each minute, so the
classic race remains.

Modelled as EC2 Auto Scaling does it: the policy's two alarms, high (3 of 3 one-minute
datapoints above target) and low (15 of 15 below 90 % of target); scale-out to
ceil(reporting * metric / target) counting instances still warming up as capacity already on
its way; no scale-in while any instance warms up."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.sim.fleet import Event, Instance, SimulatedWorld
from bench.sim.policies.base import cron_minute


@dataclass(frozen=True)
class TargetTrackingSettings:
    target: float = 85.0
    """Target busy share, percent."""
    high_periods: int = 3
    low_periods: int = 15
    low_fraction: float = 0.9
    warmup: float = 300.0
    period: float = 60.0


class TargetTrackingPolicy:
    name = "target-tracking"
    label = "AWS target tracking on 100*(1-Avg(JibriFree)), cron protection"

    def __init__(self, settings: TargetTrackingSettings) -> None:
        self.settings = settings
        self._points: list[tuple[float, int]] = []
        self._fleet: SimulatedWorld | None = None
        self.activities = 0

    def attach(self, fleet: SimulatedWorld) -> None:
        self._fleet = fleet
        fleet.listener = self
        fleet.sim.every(self.settings.period, self._minute)

    def on_instance(self, instance: Instance, event: Event) -> None:
        """Target tracking sees only the published metric."""

    def _minute(self) -> None:
        fleet = self._fleet
        assert fleet is not None
        s = self.settings
        now = fleet.sim.now
        warming = sum(1 for i in fleet.live() if not i.prebooted and now - i.launched_at < s.warmup)
        high = self._points[-s.high_periods :]
        low = self._points[-s.low_periods :]
        if len(high) == s.high_periods and all(u > s.target for u, _ in high):
            utilisation, reporting = high[-1]
            needed = math.ceil(reporting * utilisation / s.target)
            if needed > fleet.desired:
                self._set(fleet, needed)
        elif (
            len(low) == s.low_periods
            and all(u < s.target * s.low_fraction for u, _ in low)
            and warming == 0
        ):
            utilisation, reporting = low[-1]
            needed = max(1, math.ceil(reporting * utilisation / s.target))
            if needed < fleet.desired:
                self._set(fleet, needed)
        free, reporting = cron_minute(fleet)
        if reporting:
            self._points.append((100.0 * (reporting - free) / reporting, reporting))

    def _set(self, fleet: SimulatedWorld, capacity: int) -> None:
        before = fleet.desired
        fleet.set_desired(capacity)
        if fleet.desired != before:
            self.activities += 1

    def stats(self) -> dict[str, float]:
        return {"scaling_activities": self.activities}

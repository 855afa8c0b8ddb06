"""The classic recipe: a per-VM cron publishes JibriFree and toggles scale-in protection each
minute; CloudWatch alarms on Sum(JibriFree) drive simple scaling policies of +1/-1 with a
cooldown. It races: a VM whose protection was dropped can start a recording before the ASG
kills it."""

from __future__ import annotations

from dataclasses import dataclass

from bench.sim.fleet import Event, Instance, SimulatedWorld
from bench.sim.policies.base import cron_minute


@dataclass(frozen=True)
class ClassicSettings:
    out_below: float = 2.0
    """Scale-out alarm: Sum(JibriFree) < out_below ..."""
    out_periods: int = 1
    """... for this many consecutive 60 s periods."""
    in_above: float = 2.0
    """Scale-in alarm: Sum(JibriFree) > in_above ..."""
    in_periods: int = 5
    cooldown: float = 300.0
    """Simple scaling: no further activity within this long of the last one."""
    period: float = 60.0


class ClassicPolicy:
    name = "classic"
    label = "cron 1/0 metric + CloudWatch alarms + simple scaling +-1, 300 s cooldown"

    def __init__(self, settings: ClassicSettings) -> None:
        self.settings = settings
        self._sums: list[int] = []
        self._cooldown_until = float("-inf")
        self._fleet: SimulatedWorld | None = None
        self.activities = 0

    def attach(self, fleet: SimulatedWorld) -> None:
        self._fleet = fleet
        fleet.listener = self
        fleet.sim.every(self.settings.period, self._minute)

    def on_instance(self, instance: Instance, event: Event) -> None:
        """The classic recipe reacts to nothing but the minute's cron and alarms."""

    def _minute(self) -> None:
        fleet = self._fleet
        assert fleet is not None
        s = self.settings
        # Alarms see the periods that have closed: every datapoint before this minute's.
        now = fleet.sim.now
        if now >= self._cooldown_until:
            recent_out = self._sums[-s.out_periods :]
            recent_in = self._sums[-s.in_periods :]
            if len(recent_out) == s.out_periods and all(v < s.out_below for v in recent_out):
                self._scale(fleet, +1)
            elif len(recent_in) == s.in_periods and all(v > s.in_above for v in recent_in):
                self._scale(fleet, -1)
        free, _ = cron_minute(fleet)
        self._sums.append(free)

    def _scale(self, fleet: SimulatedWorld, step: int) -> None:
        before = fleet.desired
        fleet.set_desired(fleet.desired + step)
        if fleet.desired != before:
            self.activities += 1
            self._cooldown_until = fleet.sim.now + self.settings.cooldown

    def stats(self) -> dict[str, float]:
        return {"scaling_activities": self.activities}

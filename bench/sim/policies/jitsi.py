"""A jitsi-autoscaler-like policy (jitsi/jitsi-autoscaler, group type `jibri`).

Sidecars report each Jibri's status every 30 s (1 when idle). Every 30 s the autoscaler job
sums, per `scalePeriod` window, each instance's mean value ("available"); it raises the
group's desired count by `scaleUpQuantity` when every one of the last `scaleUpPeriodsCount`
windows had available < `scaleUpThreshold`, lowers it by `scaleDownQuantity` when each of the
last `scaleDownPeriodsCount` windows had available > `scaleDownThreshold`, and then holds
still for `gracePeriodTTLSec`. It also waits while the launcher has not yet matched the
desired count. The launcher launches, or marks instances for shutdown (provisioning first,
then idle, then busy); a marked Jibri learns it at its sidecar's next shutdown poll and shuts
down gracefully, finishing any recording first.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.sim.fleet import Event, Instance, SimulatedWorld


@dataclass(frozen=True)
class JitsiSettings:
    """Defaults: the `jibri` group of jitsi-autoscaler's sample groups.json, its job interval
    (GROUP_JOBS_CREATION_INTERVAL_SEC) and the sidecar's polling intervals."""

    scale_up_quantity: int = 1
    scale_down_quantity: int = 1
    scale_up_threshold: float = 1.0
    scale_down_threshold: float = 2.0
    scale_period: float = 60.0
    scale_up_periods: int = 2
    scale_down_periods: int = 4
    grace_period: float = 480.0
    job_interval: float = 30.0
    stats_interval: float = 30.0
    shutdown_poll: float = 60.0


@dataclass(frozen=True)
class _Tick:
    at: float
    reporting: frozenset[str]
    idle: frozenset[str]


class JitsiAutoscalerPolicy:
    name = "jitsi-autoscaler"
    label = "jitsi-autoscaler thresholds on available count per scalePeriod, 480 s grace"

    def __init__(
        self, settings: JitsiSettings, *, min_desired: int, max_desired: int, initial: int
    ) -> None:
        self.settings = settings
        self.min_desired = min_desired
        self.max_desired = max_desired
        self.desired = initial
        self._ticks: list[_Tick] = []
        self._marked: set[str] = set()
        self._grace_until = float("-inf")
        self._fleet: SimulatedWorld | None = None
        self.activities = 0

    def attach(self, fleet: SimulatedWorld) -> None:
        self._fleet = fleet
        fleet.listener = self
        s = self.settings
        # Stats land between job runs, so every window holds whole samples.
        fleet.sim.every(s.stats_interval, self._stats, start=s.stats_interval / 2)
        fleet.sim.every(s.job_interval, self._jobs, start=s.job_interval)

    def on_instance(self, instance: Instance, event: Event) -> None:
        if event is Event.STOPPED and instance.instance_id in self._marked:
            assert self._fleet is not None
            self._fleet.terminate(instance.instance_id, decrement=True)
        elif event is Event.GONE:
            self._marked.discard(instance.instance_id)

    def _stats(self) -> None:
        fleet = self._fleet
        assert fleet is not None
        reporting = [i for i in fleet.instances.values() if i.jibri_up and not i.shutting_down]
        self._ticks.append(
            _Tick(
                fleet.sim.now,
                frozenset(i.instance_id for i in reporting),
                frozenset(i.instance_id for i in reporting if i.recording is None),
            )
        )
        horizon = max(self.settings.scale_up_periods, self.settings.scale_down_periods)
        keep = fleet.sim.now - horizon * self.settings.scale_period - self.settings.stats_interval
        while self._ticks and self._ticks[0].at < keep:
            self._ticks.pop(0)

    def _available(self, period: int, now: float) -> float:
        """Sum over instances of their mean value in window `period` (0 = the latest)."""
        length = self.settings.scale_period
        lo, hi = now - (period + 1) * length, now - period * length
        ticks = [t for t in self._ticks if lo < t.at <= hi]
        total = 0.0
        for instance_id in frozenset().union(*(t.idle for t in ticks)):
            ones = sum(1 for t in ticks if instance_id in t.idle)
            total += ones / sum(1 for t in ticks if instance_id in t.reporting)
        return total

    def _inventory(self, fleet: SimulatedWorld) -> list[Instance]:
        return [i for i in fleet.live() if i.instance_id not in self._marked]

    def _jobs(self) -> None:
        fleet = self._fleet
        assert fleet is not None
        self._autoscale(fleet)
        self._launch(fleet)

    def _autoscale(self, fleet: SimulatedWorld) -> None:
        s, now = self.settings, fleet.sim.now
        count = len(self._inventory(fleet))
        if now < self._grace_until or count == 0 or self.desired != count:
            return
        lo, hi = self.min_desired, self.max_desired
        up = all(
            (count < hi and self._available(p, now) < s.scale_up_threshold) or count < lo
            for p in range(s.scale_up_periods)
        )
        if up:
            self.desired = min(hi, self.desired + s.scale_up_quantity)
        elif all(
            count > lo and self._available(p, now) > s.scale_down_threshold
            for p in range(s.scale_down_periods)
        ):
            self.desired = max(lo, self.desired - s.scale_down_quantity)
        else:
            return
        self.activities += 1
        self._grace_until = now + s.grace_period

    def _launch(self, fleet: SimulatedWorld) -> None:
        inventory = self._inventory(fleet)
        count = len(inventory)
        if count < self.desired and count < self.max_desired:
            fleet.set_desired(fleet.desired + min(self.max_desired, self.desired) - count)
        elif count > self.desired and count > self.min_desired:
            quantity = count - max(self.min_desired, self.desired)
            provisioning = [i for i in inventory if not i.jibri_up]
            idle = [i for i in inventory if i.jibri_up and i.recording is None]
            busy = [i for i in inventory if i.jibri_up and i.recording is not None]
            for victim in (provisioning + idle + busy)[:quantity]:
                self._marked.add(victim.instance_id)
                if not victim.jibri_up:
                    fleet.terminate(victim.instance_id, decrement=True)
                else:
                    poll = fleet.rng.uniform(0.0, self.settings.shutdown_poll)
                    fleet.sim.after(poll, fleet.graceful_shutdown, victim.instance_id)

    def stats(self) -> dict[str, float]:
        return {"scaling_activities": self.activities}

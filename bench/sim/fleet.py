"""The world every policy acts on: an Auto Scaling group of Jibri VMs, and Jicofo handing each
recording request to an idle Jibri.

What it models, because the comparison depends on it:
- Launches take a boot time drawn per instance; a VM reports and takes recordings only once
  booted. Desired capacity is clamped to [min, max].
- When desired capacity drops below the live count, the ASG itself picks unprotected victims
  (at random, as the default termination policy does within one AZ and template). Protected
  instances are skipped until their protection is dropped, then the ASG takes them.
- A terminating VM keeps running for `shutdown_delay`; its Jibri stays in the brewery and can be
  handed a recording, which is lost when the VM dies. Any termination decision taken on a VM
  that is recording, or that starts one before it dies, is a busy termination.
- Jicofo hands a request to the first idle Jibri in join order (its JibriDetector picks the
  first available instance); with none idle the request waits up to `grace`, then is missed.
- With a warm pool (`warm_pool`), the group keeps max(minSize, maxPreparedCapacity - desired)
  instances outside it, launched (a cold boot, billed in full) and then stopped (billed at
  `warm_cost` of a running instance: EBS only). A rise in desired capacity draws on them
  first (a warm start), then launches cold; scale-in terminates (no reuseOnScaleIn).
- Costs and counts are kept per day of the run (a request by the day it arrived).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from heapq import heappop, heappush
from typing import Protocol

from bench.sim.clock import Simulation
from bench.sim.demand import Recording
from controller.model import AsgInstance, AsgView

PENDING = "Pending"
IN_SERVICE = "InService"
TERMINATING = "Terminating"
BOUNDARY_PERIOD = 1800.0
BOUNDARY_WINDOW = 600.0


@dataclass(frozen=True)
class WorldSettings:
    boot_mean: float = 90.0
    boot_spread: float = 30.0
    """Boot time is uniform in [boot_mean - boot_spread, boot_mean + boot_spread]."""
    shutdown_delay: float = 30.0
    """From the start of a termination until the VM is gone."""
    jibri_exit: float = 2.0
    """An idle Jibri asked to shut down gracefully leaves after this long."""
    grace: float = 30.0
    """How long a request waits for a recorder before it counts as missed."""
    sample_period: float = 60.0
    warm_pool: bool = False
    warm_start_mean: float = 30.0
    warm_start_spread: float = 10.0
    """A warmed instance drawn into the group is ready after a uniform draw in this range."""
    warm_cost: float = 0.02
    """Price of a stopped warmed instance per hour, as a share of a running one's (EBS)."""
    warm_min_size: int = 0
    warm_max_prepared: int | None = None
    """Group plus warm pool at most (AWS's MaxGroupPreparedCapacity); None: the group's max."""


class Event(StrEnum):
    BOOTED = "booted"
    BUSY = "busy"
    IDLE = "idle"
    STOPPED = "stopped"
    """Jibri exited after a graceful shutdown."""
    GONE = "gone"


@dataclass(slots=True, eq=False)
class Instance:
    instance_id: str
    seq: int
    launched_at: float
    ready_at: float
    lifecycle: str = PENDING
    protected: bool = False
    jibri_up: bool = False
    shutting_down: bool = False
    recording: Recording | None = None
    doomed_busy: bool = False
    """A termination decision was taken while it recorded, or it recorded after one."""
    prebooted: bool = False
    """Running since before the simulated day began."""
    warm: str | None = None
    """In the warm pool: PENDING (booting, to be stopped) or STOPPED; None once in the group."""
    billed_at: float = 0.0
    token: int = 0
    """Bumped when the instance's ready time changes, so a superseded callback does nothing."""

    @property
    def available(self) -> bool:
        return self.jibri_up and not self.shutting_down and self.recording is None


class Listener(Protocol):
    def on_instance(self, instance: Instance, event: Event) -> None: ...


@dataclass(slots=True, eq=False)
class _Wait:
    recording: Recording
    arrived: float
    done: bool = False


@dataclass
class Sample:
    t: float
    capacity: int
    busy: int


DAY = 86_400.0
STOPPED = "Stopped"


@dataclass
class DayTally:
    requests: int = 0
    missed: int = 0
    lost: int = 0
    busy_terminations: int = 0
    instance_seconds: float = 0.0
    warm_seconds: float = 0.0
    """Seconds of stopped warmed instances (billed at warm_cost)."""


@dataclass
class Tally:
    requests: int = 0
    missed: int = 0
    missed_near_boundary: int = 0
    """Missed requests made in the first 10 minutes after a full or half hour."""
    waited: int = 0
    """Served, but not at once."""
    lost: int = 0
    """Recordings cut short because their VM was terminated."""
    busy_terminations: int = 0
    launches: int = 0
    rejected_calls: int = 0
    """API calls AWS would refuse (e.g. a decrement below min)."""
    instance_seconds: float = 0.0
    warm_seconds: float = 0.0
    warm_launches: int = 0
    warm_starts: int = 0
    """Instances drawn from the warm pool into the group."""
    days: dict[int, DayTally] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def day(self, t: float) -> DayTally:
        key = int(t // DAY)
        found = self.days.get(key)
        if found is None:
            found = self.days[key] = DayTally()
        return found

    def bill(self, start: float, end: float, *, warm: bool) -> None:
        """Add [start, end) of one instance to the days it spans."""
        while start < end:
            stop = min(end, (int(start // DAY) + 1) * DAY)
            day = self.day(start)
            if warm:
                day.warm_seconds += stop - start
                self.warm_seconds += stop - start
            else:
                day.instance_seconds += stop - start
                self.instance_seconds += stop - start
            start = stop


def instance_id_for(seq: int) -> str:
    return f"i-{seq:017x}"


class SimulatedWorld:
    def __init__(
        self,
        sim: Simulation,
        settings: WorldSettings,
        *,
        name: str,
        min_size: int,
        max_size: int,
        rng: random.Random,
    ) -> None:
        self.sim = sim
        self.settings = settings
        self.name = name
        self.min_size = min_size
        self.max_size = max_size
        self.desired = min_size
        self.rng = rng
        self.instances: dict[str, Instance] = {}
        self.warm: dict[str, Instance] = {}
        """The warm pool: instances outside the group, in launch order."""
        self.listener: Listener | None = None
        self.tally = Tally()
        self._rows: dict[str, AsgInstance] = {}
        self._idle: list[tuple[int, str]] = []
        self._waiting: deque[_Wait] = deque()
        self._seq = 0
        self._busy = 0

    # --- the Auto Scaling group -----------------------------------------------------------

    def start(self, initial: int) -> None:
        """Begin the day with `initial` instances already booted and idle."""
        self.desired = min(max(initial, self.min_size), self.max_size)
        for _ in range(self.desired):
            instance = self._launch(booted=True)
            instance.prebooted = True
            self._boot(instance, instance.token)
        if self.settings.warm_pool:
            for _ in range(self._warm_wanted()):
                instance = self._launch(booted=True, warm=True)
                instance.warm = STOPPED
        self.sim.every(self.settings.sample_period, self._sample)

    def live(self) -> list[Instance]:
        """Instances that count towards desired capacity (not terminating)."""
        return [i for i in self.instances.values() if i.lifecycle != TERMINATING]

    def asg_view(self) -> AsgView:
        return AsgView(
            self.name, self.min_size, self.max_size, self.desired, tuple(self._rows.values())
        )

    def set_bounds(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size
        self.set_desired(self.desired)

    def set_desired(self, capacity: int) -> None:
        self.desired = min(max(capacity, self.min_size), self.max_size)
        self._converge()

    def set_protection(self, instance_ids: Iterable[str], protected: bool) -> None:
        for instance_id in instance_ids:
            instance = self.instances.get(instance_id)
            if instance is None or instance.protected == protected:
                continue
            instance.protected = protected
            self._row(instance)
        if not protected:
            self._converge()

    def terminate(self, instance_id: str, *, decrement: bool) -> bool:
        """TerminateInstanceInAutoScalingGroup; False where AWS would refuse the call."""
        instance = self.instances.get(instance_id)
        if instance is None or instance.lifecycle == TERMINATING:
            self.tally.rejected_calls += 1
            return False
        if decrement:
            if self.desired <= self.min_size:
                self.tally.rejected_calls += 1
                return False
            self.desired -= 1
        self._begin_termination(instance)
        self._converge()
        return True

    def _converge(self) -> None:
        live = self.live()
        if len(live) < self.desired:
            for _ in range(self.desired - len(live)):
                if not self._draw_warm():
                    self._launch(booted=False)
        elif len(live) > self.desired:
            unprotected = [i for i in live if not i.protected]
            excess = min(len(live) - self.desired, len(unprotected))
            for victim in self.rng.sample(unprotected, excess):
                self._begin_termination(victim)
        if self.settings.warm_pool:
            self._fill_warm()

    # --- the warm pool ------------------------------------------------------------------------

    def _warm_wanted(self) -> int:
        s = self.settings
        prepared = self.max_size if s.warm_max_prepared is None else s.warm_max_prepared
        return max(s.warm_min_size, prepared - self.desired)

    def _fill_warm(self) -> None:
        """Launch into the warm pool, or terminate stopped warmed instances, to its size."""
        wanted = self._warm_wanted()
        for _ in range(wanted - len(self.warm)):
            self._launch(booted=False, warm=True)
        if len(self.warm) > wanted:
            surplus = len(self.warm) - wanted
            # The newest go first, those still booting before those stopped.
            for instance in sorted(self.warm.values(), key=lambda i: (i.warm == STOPPED, -i.seq)):
                if surplus == 0:
                    break
                del self.warm[instance.instance_id]
                self.tally.bill(instance.billed_at, self.sim.now, warm=instance.warm == STOPPED)
                surplus -= 1

    def _draw_warm(self) -> bool:
        """Move a warmed instance into the group (a stopped one first); False if none."""
        if not self.warm:
            return False
        instance = min(self.warm.values(), key=lambda i: (i.warm != STOPPED, i.seq))
        del self.warm[instance.instance_id]
        now, s = self.sim.now, self.settings
        start = max(
            1.0,
            self.rng.uniform(
                s.warm_start_mean - s.warm_start_spread, s.warm_start_mean + s.warm_start_spread
            ),
        )
        if instance.warm == STOPPED:
            self.tally.bill(instance.billed_at, now, warm=True)
            instance.billed_at = now
        # One still booting into the warm pool goes on into service when its boot ends.
        instance.ready_at = max(instance.ready_at, now + start)
        instance.warm = None
        instance.token += 1
        self.instances[instance.instance_id] = instance
        self._row(instance)
        self.tally.warm_starts += 1
        self.sim.at(instance.ready_at, self._boot, instance, instance.token)
        return True

    def _warmed(self, instance: Instance, token: int) -> None:
        """A warm-pool launch has booted: the instance stops and waits, billed at warm_cost."""
        if instance.token != token or self.warm.get(instance.instance_id) is not instance:
            return
        self.tally.bill(instance.billed_at, self.sim.now, warm=False)
        instance.billed_at = self.sim.now
        instance.warm = STOPPED

    def warm_view(self) -> tuple[tuple[str, str], ...]:
        """(instance id, DescribeWarmPool lifecycle state) of the warm pool's instances."""
        return tuple(
            (i.instance_id, "Warmed:Stopped" if i.warm == STOPPED else "Warmed:Pending")
            for i in self.warm.values()
        )

    # --- launches -----------------------------------------------------------------------------

    def _launch(self, *, booted: bool, warm: bool = False) -> Instance:
        self._seq += 1
        boot = 0.0
        if not booted:
            s = self.settings
            boot = max(
                1.0, self.rng.uniform(s.boot_mean - s.boot_spread, s.boot_mean + s.boot_spread)
            )
        now = self.sim.now
        instance = Instance(instance_id_for(self._seq), self._seq, now, now + boot, billed_at=now)
        self.tally.launches += 1
        if warm:
            instance.warm = "Pending"
            self.warm[instance.instance_id] = instance
            self.tally.warm_launches += 1
            if not booted:
                self.sim.at(instance.ready_at, self._warmed, instance, instance.token)
            return instance
        self.instances[instance.instance_id] = instance
        self._row(instance)
        if not booted:
            self.sim.at(instance.ready_at, self._boot, instance, instance.token)
        return instance

    def _boot(self, instance: Instance, token: int) -> None:
        if instance.instance_id not in self.instances or instance.token != token:
            return
        if instance.lifecycle == PENDING:
            instance.lifecycle = IN_SERVICE
            self._row(instance)
        instance.jibri_up = True
        self._notify(instance, Event.BOOTED)
        self._became_idle(instance)

    def _begin_termination(self, instance: Instance) -> None:
        instance.lifecycle = TERMINATING
        if instance.recording is not None:
            instance.doomed_busy = True
        self._row(instance)
        self.sim.after(self.settings.shutdown_delay, self._kill, instance)

    def _kill(self, instance: Instance) -> None:
        today = self.tally.day(self.sim.now)
        if instance.recording is not None:
            self.tally.lost += 1
            today.lost += 1
            self._busy -= 1
            instance.recording = None
        if instance.doomed_busy:
            self.tally.busy_terminations += 1
            today.busy_terminations += 1
        instance.jibri_up = False
        del self.instances[instance.instance_id]
        del self._rows[instance.instance_id]
        self.tally.bill(instance.billed_at, self.sim.now, warm=False)
        self._notify(instance, Event.GONE)

    def _row(self, instance: Instance) -> None:
        self._rows[instance.instance_id] = AsgInstance(
            instance.instance_id, instance.lifecycle, "Healthy", instance.protected
        )

    # --- Jibri --------------------------------------------------------------------------------

    def graceful_shutdown(self, instance_id: str) -> None:
        """Jibri's gracefulShutdown: finish a recording in progress, take no new one, exit."""
        instance = self.instances.get(instance_id)
        if instance is None or not instance.jibri_up or instance.shutting_down:
            return
        instance.shutting_down = True
        if instance.recording is None:
            self.sim.after(self.settings.jibri_exit, self._jibri_stopped, instance)

    def _jibri_stopped(self, instance: Instance) -> None:
        if not instance.jibri_up:
            return
        instance.jibri_up = False
        self._notify(instance, Event.STOPPED)

    def _became_idle(self, instance: Instance) -> None:
        while self._waiting:
            wait = self._waiting.popleft()
            if not wait.done:
                wait.done = True
                self.tally.waited += 1
                self.tally.waits.append(self.sim.now - wait.arrived)
                self._start(instance, wait.recording)
                return
        heappush(self._idle, (instance.seq, instance.instance_id))

    # --- Jicofo -------------------------------------------------------------------------------

    def request(self, recording: Recording) -> None:
        self.tally.requests += 1
        self.tally.day(recording.start).requests += 1
        instance = self._pick()
        if instance is not None:
            self.tally.waits.append(0.0)
            self._start(instance, recording)
            return
        if self.settings.grace <= 0:
            self._missed(recording)
            return
        wait = _Wait(recording, self.sim.now)
        self._waiting.append(wait)
        self.sim.after(self.settings.grace, self._give_up, wait)

    def _pick(self) -> Instance | None:
        while self._idle:
            _, instance_id = heappop(self._idle)
            instance = self.instances.get(instance_id)
            if instance is not None and instance.available:
                return instance
        return None

    def _give_up(self, wait: _Wait) -> None:
        if not wait.done:
            wait.done = True
            self._missed(wait.recording)

    def _missed(self, recording: Recording) -> None:
        self.tally.missed += 1
        self.tally.day(recording.start).missed += 1
        if recording.start % BOUNDARY_PERIOD < BOUNDARY_WINDOW:
            self.tally.missed_near_boundary += 1
        self.tally.waits.append(float("inf"))

    def _start(self, instance: Instance, recording: Recording) -> None:
        instance.recording = recording
        self._busy += 1
        if instance.lifecycle == TERMINATING:
            instance.doomed_busy = True
        self.sim.at(max(self.sim.now, recording.end), self._finish, instance, recording)
        self._notify(instance, Event.BUSY)

    def _finish(self, instance: Instance, recording: Recording) -> None:
        if instance.recording is not recording:
            return  # the VM died under it
        instance.recording = None
        self._busy -= 1
        if instance.shutting_down:
            self.sim.after(self.settings.jibri_exit, self._jibri_stopped, instance)
            self._notify(instance, Event.IDLE)
            return
        self._notify(instance, Event.IDLE)
        self._became_idle(instance)

    # --- bookkeeping --------------------------------------------------------------------------

    def _notify(self, instance: Instance, event: Event) -> None:
        if self.listener is not None:
            self.listener.on_instance(instance, event)

    def _sample(self) -> None:
        self.tally.samples.append(Sample(self.sim.now, len(self.instances), self._busy))

    @property
    def busy_count(self) -> int:
        return self._busy

    def finish(self) -> None:
        """Close the books at the end of the run: bill the instances still running."""
        now = self.sim.now
        for instance in self.instances.values():
            self.tally.bill(instance.billed_at, now, warm=False)
        for instance in self.warm.values():
            self.tally.bill(instance.billed_at, now, warm=instance.warm == STOPPED)

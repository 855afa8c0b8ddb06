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
    waits: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


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
            self._boot(instance)
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
                self._launch(booted=False)
        elif len(live) > self.desired:
            unprotected = [i for i in live if not i.protected]
            excess = min(len(live) - self.desired, len(unprotected))
            for victim in self.rng.sample(unprotected, excess):
                self._begin_termination(victim)

    def _launch(self, *, booted: bool) -> Instance:
        self._seq += 1
        boot = 0.0
        if not booted:
            s = self.settings
            boot = max(
                1.0, self.rng.uniform(s.boot_mean - s.boot_spread, s.boot_mean + s.boot_spread)
            )
        now = self.sim.now
        instance = Instance(instance_id_for(self._seq), self._seq, now, now + boot)
        self.instances[instance.instance_id] = instance
        self._row(instance)
        self.tally.launches += 1
        if not booted:
            self.sim.at(instance.ready_at, self._boot, instance)
        return instance

    def _boot(self, instance: Instance) -> None:
        if instance.instance_id not in self.instances:
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
        if instance.recording is not None:
            self.tally.lost += 1
            self._busy -= 1
            instance.recording = None
        if instance.doomed_busy:
            self.tally.busy_terminations += 1
        instance.jibri_up = False
        del self.instances[instance.instance_id]
        del self._rows[instance.instance_id]
        self.tally.instance_seconds += self.sim.now - instance.launched_at
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
            self.tally.instance_seconds += now - instance.launched_at

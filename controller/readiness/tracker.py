"""One pool's readiness between passes: what the loop keeps and calls.

Before each plan, `target` gives the readiness target for the planner (from the history as of
the last pass); after it, `record` feeds the plan's instance states to the demand history and
the boot times. Recording after the plan reuses the states the plan derived, so readiness adds
no second derivation of a large fleet; its view of demand lags by one pass (seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from controller.demand.history import DemandHistory
from controller.demand.recorder import DemandRecorder
from controller.model import InstanceState, InstanceView, Observed
from controller.readiness.boot import BootTimes, boot_horizon
from controller.readiness.forecast import ReadinessTarget, readiness_target
from controller.spec import PoolSpec

_BUSY_STATE: Final = InstanceState.BUSY
_IDLE_STATE: Final = InstanceState.IDLE
_STARTING_STATE: Final = InstanceState.STARTING
"""Busy is recording, idle and starting are free; the other states say nothing of it."""
_WARMED_STATE: Final = InstanceState.WARMED
"""In the warm pool (the warm-pool step adds those to the plan's instances): its start into
the group is a warm one, kept out of the boot horizon."""


class PoolReadiness:
    def __init__(self, history: DemandHistory | None = None) -> None:
        self.history = history if history is not None else DemandHistory()
        self.recorder = DemandRecorder(self.history)
        self.boots = BootTimes()
        self.busy: int | None = None
        """Recorders busy at the last pass recorded (None before the first)."""
        self.last: ReadinessTarget | None = None
        self._before_us: set[str] | None = None
        """Instances of the first pass recorded: their launch predates what we saw."""

    def horizon(self, spec: PoolSpec) -> float:
        return spec.readiness.horizon or boot_horizon(self.boots.durations)

    def target(self, spec: PoolSpec, wall_time: float | None) -> ReadinessTarget | None:
        """The readiness target at `wall_time`, or None without a wall clock (the planner then
        keeps targetFree, as before)."""
        if wall_time is None:
            return None
        self.last = readiness_target(
            spec, self.history, wall_time, self.horizon(spec), busy=self.busy
        )
        return self.last

    def record(self, observed: Observed, instances: Iterable[InstanceView], now: float) -> int:
        """Feed one pass's instance states (`Plan.instances`); returns recordings started.

        Boot times use the controller's own clock (`now`, `Observed.first_seen`), counting
        only instances that appeared after the first pass: an instance already booting at a
        restart would otherwise pass for a quick boot. Nor do instances seen warmed count:
        their warm starts are measured by the warm-pool step (`Observed.warm`)."""
        # One scan of the fleet, on the event loop: 10,000 instances in a few ms.
        first = self._before_us is None
        before = self._before_us or set()
        boots, first_seen = self.boots, observed.first_seen
        states: dict[str, bool | None] = {}
        busy = 0
        for view in instances:
            instance, state = view[0], view[1]
            if state is _BUSY_STATE:
                states[instance] = True
                busy += 1
            elif state is _IDLE_STATE:
                states[instance] = False
                if boots.is_starting(instance):
                    boots.ready(instance, now)
            elif state is _STARTING_STATE:
                states[instance] = False
                seen = first_seen.get(instance)
                if seen is not None and not first and instance not in before:
                    boots.starting(instance, seen)
            else:
                states[instance] = None
                if state is _WARMED_STATE:
                    boots.warm(instance)
        boots.forget(states, len(states))
        if first:
            self._before_us = set(states)
        elif len(before) > 2 * len(states) + 64:
            self._before_us = {i for i in before if i in states}
        self.busy = busy
        if observed.wall_time is None:
            return 0
        return self.recorder.observe(observed.wall_time, states, recording=busy)

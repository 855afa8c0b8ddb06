"""This project's controller, simulated around the real `controller.planner.plan`.

Agents report through a real `ReportStore` at once on every change (boot, busy, idle,
draining, drained); each change that the store says matters triggers a reconcile pass after
`reaction` seconds (changes meanwhile fold into that pass), and every pass schedules the
next one after the plan's `requeue_after`, as the controller's loop does. Periodic 5 s
heartbeats carry nothing new, so instead of sending each one the simulation moves the held
report's receive time to the agent's latest heartbeat before a pass (once it matters to the
plan: see `_observe`).

The plan's actions are applied to the fleet as the actuator applies them to AWS. A drain
goes through the handshake: the agent learns it from the answer to its next report (a
heartbeat or a change), asks Jibri to shut down gracefully (a recording that started
meanwhile runs to its end), reports drained once Jibri has exited, and only then does a
later plan terminate it, with decrement.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bench.sim.fleet import Event, Instance, SimulatedWorld
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.model import (
    DrainInstance,
    Observed,
    Plan,
    ReportView,
    SetBounds,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.planner import plan
from controller.spec import PoolSpec
from controller.store import ReportStore

_IDLE = JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY)
_BUSY = JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY)
_GONE = JibriStatus(busyStatus=BusyStatus.UNKNOWN, healthStatus=HealthStatus.UNKNOWN)

SIMULATED_DATE = datetime(2025, 1, 7, tzinfo=UTC)
"""The simulated day is Tuesday 7 January 2025 (UTC), so weekday schedule rules apply."""


@dataclass(frozen=True)
class ControllerSettings:
    heartbeat: float = 5.0
    """Agents report this often, and at once on a change."""
    reaction: float = 0.5
    """From a state-changing report to the start of the pass it triggers (reading the ASG)."""
    started_at: float = -3600.0
    """The controller has been running for an hour when the day begins."""
    epoch: float = SIMULATED_DATE.timestamp()
    """Wall-clock time (epoch seconds) at simulated time 0, for `spec.schedule`."""


@dataclass(slots=True, eq=False)
class _Agent:
    instance: Instance
    phase: float
    seq: int = 0
    drain_answer: bool = False
    """The controller's next answer to this agent says drain."""
    draining: bool = False
    drained: bool = False


@dataclass
class PassStats:
    passes: int = 0
    plan_seconds: float = 0.0
    plan_max_seconds: float = 0.0
    instances_planned: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    drains_caught_recording: int = 0
    """Drains whose agent was handed a recording between the plan and the handshake."""


class PlannerPolicy:
    name = "planner"
    label = "this project: real planner, event-driven passes, drain handshake"

    def __init__(self, spec: PoolSpec, settings: ControllerSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.store = ReportStore()
        self.views: dict[str, ReportView] = {}
        self._refresh_due: list[tuple[float, str]] = []
        self.first_seen: dict[str, float] = {}
        self.drain_requested: dict[str, float] = {}
        self.last_scale_out_at: float | None = None
        self.agents: dict[str, _Agent] = {}
        self.stats_ = PassStats()
        self._fleet: SimulatedWorld | None = None
        self._pending = False
        self._generation = 0

    @property
    def fleet(self) -> SimulatedWorld:
        assert self._fleet is not None
        return self._fleet

    def attach(self, fleet: SimulatedWorld) -> None:
        self._fleet = fleet
        fleet.listener = self
        self._trigger()

    # --- the agents -------------------------------------------------------------------------

    def on_instance(self, instance: Instance, event: Event) -> None:
        instance_id = instance.instance_id
        if event is Event.GONE:
            self.agents.pop(instance_id, None)
            self.views.pop(instance_id, None)
            self.first_seen.pop(instance_id, None)
            self.drain_requested.pop(instance_id, None)
            self.store.release([instance_id])
            self._trigger()
            return
        if event is Event.BOOTED:
            phase = self.fleet.rng.uniform(0.0, self.settings.heartbeat)
            self.agents[instance_id] = _Agent(instance, phase)
            heapq.heappush(self._refresh_due, (self.fleet.sim.now, instance_id))
        agent = self.agents[instance_id]
        if event is Event.STOPPED:
            agent.drained = True
        self._report(agent)

    def _report(self, agent: _Agent) -> None:
        instance, now = agent.instance, self.fleet.sim.now
        if not instance.jibri_up:
            jibri = _GONE
        else:
            jibri = _BUSY if instance.recording is not None else _IDLE
        agent.seq += 1
        report = Report(
            instanceId=instance.instance_id,
            bootId=f"boot-{instance.seq}",
            seq=agent.seq,
            jibri=jibri,
            draining=agent.draining,
            drained=agent.drained,
        )
        accepted = self.store.accept(report, now, managed=True)
        view = self.store.get(instance.instance_id)
        assert view is not None
        self.views[instance.instance_id] = view
        if accepted.changed:
            self._trigger()
        if agent.drain_answer:
            self._start_drain(agent)

    def _heartbeat_due(self, agent: _Agent) -> None:
        """The agent's next periodic report, which carries a pending drain answer back."""
        if self.agents.get(agent.instance.instance_id) is agent and agent.drain_answer:
            self._start_drain(agent)

    def _start_drain(self, agent: _Agent) -> None:
        agent.drain_answer = False
        if agent.draining:
            return
        agent.draining = True
        if agent.instance.recording is not None:
            self.stats_.drains_caught_recording += 1
        self.fleet.graceful_shutdown(agent.instance.instance_id)
        self._report(agent)

    def _latest_heartbeat(self, agent: _Agent, now: float) -> float:
        beat = self.settings.heartbeat
        return agent.phase + beat * math.floor((now - agent.phase) / beat)

    # --- the controller -----------------------------------------------------------------------

    def _trigger(self) -> None:
        if not self._pending:
            self._pending = True
            self.fleet.sim.after(self.settings.reaction, self._pass)

    def _timer(self, generation: int) -> None:
        if generation == self._generation and not self._pending:
            self._pass()

    def _observe(self, now: float) -> Observed:
        # The planner reads a report's receive time only to judge it fresh (age within
        # staleAfter) and to requeue when it would turn stale; a report younger than
        # staleAfter - resync is fresh and its stale deadline lies beyond the resync deadline.
        # Moving only older ones to the latest heartbeat yields the plans of every-5-s
        # heartbeats at a fraction of the cost.
        # Each held report has one entry in `_refresh_due`, at the time it may need moving.
        refresh = max(self.settings.heartbeat, self.spec.instances.staleAfter - self.spec.resync)
        views, due = self.views, self._refresh_due
        while due and due[0][0] <= now:
            _, instance_id = heapq.heappop(due)
            view = views.get(instance_id)
            if view is None:
                continue
            if now - view.received_at >= refresh:
                beat = self._latest_heartbeat(self.agents[instance_id], now)
                view = views[instance_id] = replace(view, received_at=beat)
            heapq.heappush(due, (view.received_at + refresh, instance_id))
        asg = self.fleet.asg_view()
        first_seen = self.first_seen
        # Gone instances leave first_seen, so equal sizes mean every instance is in it.
        if len(first_seen) != len(asg.instances):
            seen = max(now, self.settings.started_at)
            for row in asg.instances:
                if row.instance_id not in first_seen:
                    first_seen[row.instance_id] = seen
        return Observed(
            asg=asg,
            reports=dict(views),
            first_seen=dict(first_seen),
            drain_requested=dict(self.drain_requested),
            controller_started_at=self.settings.started_at,
            last_scale_out_at=self.last_scale_out_at,
            wall_time=self.settings.epoch + now,
        )

    def _pass(self) -> None:
        self._pending = False
        now = self.fleet.sim.now
        observed = self._observe(now)
        started = time.perf_counter()
        result = plan(self.spec, observed, now)
        elapsed = time.perf_counter() - started
        stats = self.stats_
        stats.passes += 1
        stats.plan_seconds += elapsed
        stats.plan_max_seconds = max(stats.plan_max_seconds, elapsed)
        stats.instances_planned += len(observed.asg.instances)
        self._act(result, now)
        self._generation += 1
        self.fleet.sim.after(result.requeue_after, self._timer, self._generation)

    def _act(self, result: Plan, now: float) -> None:
        fleet, counts = self.fleet, self.stats_.actions
        for action in result.actions:
            counts[action.name] = counts.get(action.name, 0) + 1
            if isinstance(action, SetBounds):
                fleet.set_bounds(action.min_size, action.max_size)
            elif isinstance(action, SetProtection):
                fleet.set_protection(action.instance_ids, action.protected)
            elif isinstance(action, Terminate):
                fleet.terminate(action.instance_id, decrement=action.decrement)
            elif isinstance(action, SetDesiredCapacity):
                fleet.set_desired(action.capacity)
                if action.capacity > action.previous:
                    self.last_scale_out_at = now
            elif isinstance(action, DrainInstance):
                self._request_drain(action.instance_id, now)
            else:
                raise AssertionError(f"no lifecycle hooks in the simulation, got {action}")

    def _request_drain(self, instance_id: str, now: float) -> None:
        self.drain_requested.setdefault(instance_id, now)
        agent = self.agents.get(instance_id)
        if agent is None or agent.draining:
            return
        agent.drain_answer = True
        beat = self.settings.heartbeat
        self.fleet.sim.at(self._latest_heartbeat(agent, now) + beat, self._heartbeat_due, agent)

    def stats(self) -> dict[str, float]:
        s = self.stats_
        out: dict[str, float] = {
            "passes": s.passes,
            "plan_seconds_total": round(s.plan_seconds, 3),
            "plan_ms_mean": round(1000 * s.plan_seconds / max(1, s.passes), 3),
            "plan_ms_max": round(1000 * s.plan_max_seconds, 3),
            "instances_per_pass_mean": round(s.instances_planned / max(1, s.passes), 1),
            "drains_caught_recording": s.drains_caught_recording,
        }
        out.update({f"actions_{name}": n for name, n in sorted(s.actions.items())})
        return out


class SchedulePlannerPolicy(PlannerPolicy):
    """The same planner and loop; the spec carries a `schedule` written ahead of time
    (bench/sim/learned_schedule.py), and nothing replaces it during the day."""

    name = "planner-schedule"
    label = "this project: real planner, spec.schedule written from yesterday's arrivals"

"""This project's controller, simulated around its real observe → plan → act path.

Each pass runs the controller's own code: `controller.loop.observe_pool` (observe, then the
report store and actuation record settled), `controller.planner.plan`, and
`controller.actuator.Actuator`, against the simulated group behind the controller's
`AutoScaling` Protocol (bench/sim/autoscaling.py). Only the loop's timing is simulated: agents
report through the real `ReportStore` at once on every change (boot, busy, idle, draining,
drained); each change that the store says matters triggers a pass after `reaction` seconds
(changes meanwhile fold into that pass), and every pass schedules the next one after the
plan's `requeue_after`, as the controller's loop does. Periodic 5 s heartbeats carry nothing
new, so instead of sending each one the simulation delivers an agent's latest heartbeat to the
store before a pass once it matters to the plan (see `_refresh`).

A drain goes through the handshake: the actuator records the request, and the agent learns it
from the controller's answer (`controller.actuation.drain_answer`) to its next report (a
heartbeat or a change), asks Jibri to shut down gracefully (a recording that started
meanwhile runs to its end), reports drained once Jibri has exited, and only then does a later
plan terminate it, with decrement.

Readiness runs as in the controller's loop: the pool's `controller.demand.service.PoolDemand`
puts the readiness target into the observation before each plan and records the plan's
instance states as demand and boot times after it, so the history grows as the day runs.
Previous days (`history`) enter it as the CloudWatch backfill does, through
`DemandHistory.merge`. The CloudWatch and jicofo tasks are not started (no API is given):
the history stays in memory. With `jicofo`, the requests the world missed are fed to the
recorder every 15 s as the jicofo scraper would (spec.demand.jicofo).

With a warm pool in the world and spec.warmPool, `Observed.warm` is what the controller's
warm-pool step hands the planner, built from the same pure parts (`controller.warm_pool.rules`:
warm_count, WarmStarts, WarmCapacity); the step's DescribeWarmPool read is made every 5 s
(its MIN_INTERVAL) at the pass, instead of on a worker task.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bench.sim.autoscaling import SimulatedAutoScaling, run_now
from bench.sim.fleet import Event, Instance, SimulatedWorld
from bench.sim.history import Backfill
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.actuation import ActuationStatus, drain_answer
from controller.actuator import ActuationError, Actuator
from controller.demand.service import DemandSources, PoolDemand
from controller.loop import UNMANAGED_TTL_STALE_AFTERS, observe_pool
from controller.model import DrainInstance, InstanceState, Observed, Plan
from controller.observe import PoolMemory, read_group
from controller.planner import plan
from controller.prometheus import Metrics
from controller.spec import PoolSpec
from controller.store import ReportStore
from controller.warm_pool.api import WarmInstance
from controller.warm_pool.rules import WarmCapacity, WarmStarts, warm_count
from controller.warm_pool.step import MIN_INTERVAL

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
    history: Backfill | None = None
    """Previous days, as the CloudWatch backfill gives them to the demand history."""
    jicofo: bool = False
    """Feed the world's missed requests to the demand history, as spec.demand.jicofo does."""
    jicofo_interval: float = 15.0


@dataclass(slots=True, eq=False)
class _Agent:
    instance: Instance
    phase: float
    seq: int = 0
    draining: bool = False
    drained: bool = False


@dataclass
class PassStats:
    passes: int = 0
    plan_seconds: float = 0.0
    plan_max_seconds: float = 0.0
    instances_planned: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    failed_passes: int = 0
    """Passes in which AWS refused an action (the actuator raised ActuationError)."""
    drains_caught_recording: int = 0
    """Drains whose agent was handed a recording between the plan and the handshake."""
    readiness_seconds: float = 0.0
    """Time in the readiness target and the demand recording (before and after plan())."""


class PlannerPolicy:
    name = "planner"
    label = "this project: real observe, planner and actuator, event-driven passes, drain handshake"

    def __init__(self, spec: PoolSpec, settings: ControllerSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.store = ReportStore()
        self.memory = PoolMemory(started_at=settings.started_at)
        self.actuation = ActuationStatus()
        self.agents: dict[str, _Agent] = {}
        self.stats_ = PassStats()
        self._refresh_due: list[tuple[float, str]] = []
        self._world: SimulatedWorld | None = None
        self._autoscaling: SimulatedAutoScaling | None = None
        self._actuator: Actuator | None = None
        self._pending = False
        self._generation = 0
        self.metrics = Metrics()
        self.demand = PoolDemand(
            "sim",
            sources=DemandSources(history_apis=None, publish=False),
            metrics=self.metrics,
            clock=_NoClock(),
            wall_clock=lambda: settings.epoch + self.fleet.sim.now,
        )
        if settings.history is not None:
            backfill = settings.history
            self.demand.readiness.history.merge(backfill.started, ended=backfill.ended)
        self._warm_starts = WarmStarts()
        self._warm_view: tuple[WarmInstance, ...] | None = None
        self._warm_read_at = -math.inf
        self._jicofo_seen = 0
        self.targets: list[tuple[float, int]] = []
        """(time, readiness total) each time the total changed."""
        # The actuator logs every action; a simulated day has hundreds of thousands.
        logging.getLogger("controller.actuator").setLevel(logging.WARNING)

    @property
    def fleet(self) -> SimulatedWorld:
        assert self._world is not None
        return self._world

    def attach(self, fleet: SimulatedWorld) -> None:
        self._world = fleet
        self._autoscaling = SimulatedAutoScaling(fleet)
        self._actuator = Actuator(metrics=self.metrics, clock=lambda: fleet.sim.now, dry_run=False)
        fleet.listener = self
        if self.settings.jicofo:
            fleet.sim.every(self.settings.jicofo_interval, self._scrape_jicofo)
        self._trigger()

    def _scrape_jicofo(self) -> None:
        """jicofo's no-instance failure counter, read as the controller's scraper does."""
        missed = self.fleet.tally.missed
        if missed > self._jicofo_seen:
            wall = self.settings.epoch + self.fleet.sim.now
            self.demand.readiness.recorder.missed(wall, missed - self._jicofo_seen)
            self._jicofo_seen = missed

    # --- the agents -------------------------------------------------------------------------

    def on_instance(self, instance: Instance, event: Event) -> None:
        instance_id = instance.instance_id
        if event is Event.GONE:
            # The next pass sees it gone from the group and releases what is held of it.
            self.agents.pop(instance_id, None)
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
        """The agent reports its state now, and acts on the controller's answer."""
        self._deliver(agent, self._next_report(agent), self.fleet.sim.now)

    @staticmethod
    def _next_report(agent: _Agent) -> Report:
        """The agent's next report: every change is reported at once, so a heartbeat's
        content is the agent's current state too."""
        instance = agent.instance
        if not instance.jibri_up:
            jibri = _GONE
        else:
            jibri = _BUSY if instance.recording is not None else _IDLE
        agent.seq += 1
        return Report(
            instanceId=instance.instance_id,
            bootId=f"boot-{instance.seq}",
            seq=agent.seq,
            jibri=jibri,
            draining=agent.draining,
            drained=agent.drained,
        )

    def _deliver(self, agent: _Agent, report: Report, received_at: float) -> None:
        instance_id = report.instanceId
        accepted = self.store.accept(report, received_at, managed=True)
        if accepted.changed:
            self._trigger()
        if not agent.draining and drain_answer(
            self.actuation, instance_id, self.store.get(instance_id)
        ):
            self._start_drain(agent)

    def _heartbeat_due(self, agent: _Agent) -> None:
        """The agent's next periodic report, which carries a pending drain answer back."""
        if self.agents.get(agent.instance.instance_id) is agent:
            self._report(agent)

    def _start_drain(self, agent: _Agent) -> None:
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

    def _refresh(self, now: float) -> None:
        """Deliver to the store the latest heartbeat of agents whose held report has aged.

        The planner reads a report's receive time only to judge it fresh (age within
        staleAfter) and to requeue when it would turn stale; a report younger than
        staleAfter - resync is fresh and its stale deadline lies beyond the resync deadline.
        Delivering heartbeats only for older ones yields the plans of every-5-s heartbeats at a
        fraction of the cost. Each agent has one entry in `_refresh_due`, at the time its held
        report may need one."""
        refresh = max(self.settings.heartbeat, self.spec.instances.staleAfter - self.spec.resync)
        due, store = self._refresh_due, self.store
        while due and due[0][0] <= now:
            _, instance_id = heapq.heappop(due)
            agent = self.agents.get(instance_id)
            held = store.get(instance_id)
            if agent is None or held is None:
                continue
            received_at = held.received_at
            if now - received_at >= refresh:
                received_at = self._latest_heartbeat(agent, now)
                store.accept(self._next_report(agent), received_at, managed=True)
            heapq.heappush(due, (received_at + refresh, instance_id))

    def _pass(self) -> None:
        self._pending = False
        now = self.fleet.sim.now
        spec, autoscaling, actuator = self.spec, self._autoscaling, self._actuator
        assert autoscaling is not None and actuator is not None
        self._refresh(now)
        view, hooks = run_now(read_group(spec, autoscaling))
        observed = observe_pool(
            view,
            hooks,
            self.store,
            self.memory,
            self.actuation,
            now,
            unmanaged_ttl=UNMANAGED_TTL_STALE_AFTERS * spec.instances.staleAfter,
            wall_time=self.settings.epoch + now,
        )
        ready_started = time.perf_counter()
        observed = self._warm(spec, self.demand.before_plan(spec, observed), now)
        started = time.perf_counter()
        result = plan(spec, observed, now)
        elapsed = time.perf_counter() - started
        self.demand.after_plan(spec, observed, result, now)
        self._measure_warm(observed, result, now)
        stats = self.stats_
        stats.readiness_seconds += time.perf_counter() - ready_started - elapsed
        target = observed.readiness
        if target is not None and (not self.targets or self.targets[-1][1] != target.total):
            self.targets.append((now, target.total))
        stats.passes += 1
        stats.plan_seconds += elapsed
        stats.plan_max_seconds = max(stats.plan_max_seconds, elapsed)
        stats.instances_planned += len(observed.asg.instances)
        self._act(result, now)
        self._generation += 1
        self.fleet.sim.after(min(spec.resync, result.requeue_after), self._timer, self._generation)

    def _warm(self, spec: PoolSpec, observed: Observed, now: float) -> Observed:
        """What the warm-pool step's before_plan adds: the warmed instances and their start."""
        if spec.warmPool is None or not self.fleet.settings.warm_pool:
            return observed
        if now - self._warm_read_at >= MIN_INTERVAL:
            self._warm_view = tuple(WarmInstance(i, s) for i, s in self.fleet.warm_view())
            self._warm_read_at = now
            self._warm_starts.warmed([w.instance_id for w in self._warm_view])
        assert self._warm_view is not None
        in_group = frozenset(i.instance_id for i in observed.asg.instances)
        warm = WarmCapacity(
            count=warm_count(self._warm_view, in_group),
            start_seconds=self._warm_starts.start_seconds(),
            measured=len(self._warm_starts.durations),
        )
        return replace(observed, warm=warm)

    def _measure_warm(self, observed: Observed, result: Plan, now: float) -> None:
        """The warm-pool step's measure: leaving the warm pool → first idle report."""
        starts = self._warm_starts
        pending = starts.pending()
        if not pending:
            return
        for view in result.instances:
            if view.instance_id in pending and view.state is InstanceState.IDLE:
                seen = observed.first_seen.get(view.instance_id)
                if seen is not None:
                    starts.ready(view.instance_id, now - seen)
        known = {i.instance_id for i in observed.asg.instances}
        known |= {w.instance_id for w in self._warm_view or ()}
        starts.forget(known)

    def _act(self, result: Plan, now: float) -> None:
        assert self._actuator is not None and self._autoscaling is not None
        counts = self.stats_.actions
        for action in result.actions:
            counts[action.name] = counts.get(action.name, 0) + 1
        try:
            run_now(
                self._actuator.execute(
                    self.fleet.name,
                    self.spec.autoScalingGroupName,
                    result,
                    autoscaling=self._autoscaling,
                    actuation=self.actuation,
                    now=now,
                    triggered_at=None,
                )
            )
        except ActuationError:
            self.stats_.failed_passes += 1
        for action in result.actions:
            if isinstance(action, DrainInstance):
                self._request_drain(action.instance_id, now)

    def _request_drain(self, instance_id: str, now: float) -> None:
        """The actuator has recorded a drain: the agent hears of it at its next report."""
        agent = self.agents.get(instance_id)
        if agent is None or agent.draining:
            return
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
            "failed_passes": s.failed_passes,
            "readiness_ms_mean": round(1000 * s.readiness_seconds / max(1, s.passes), 3),
            "boot_horizon_seconds": round(self.demand.readiness.horizon(self.spec), 1),
            "history_minutes": len(self.demand.readiness.history),
            "warm_start_seconds": round(self._warm_starts.start_seconds(), 1),
        }
        out.update({f"actions_{name}": n for name, n in sorted(s.actions.items())})
        return out


class _NoClock:
    """The demand service's clock drives only its CloudWatch and jicofo tasks, which the
    simulation does not start."""

    def now(self) -> float:
        raise RuntimeError("the simulated controller starts no demand task")

    async def sleep(self, delay: float, interrupt: asyncio.Event | None = None) -> bool:
        raise RuntimeError("the simulated controller starts no demand task")


class SchedulePlannerPolicy(PlannerPolicy):
    """The same planner and loop; the spec carries a `schedule` written ahead of time
    (bench/sim/learned_schedule.py), and nothing replaces it during the day."""

    name = "planner-schedule"
    label = "this project: real planner, spec.schedule written from yesterday's arrivals"

"""Run every policy on the same demand and score it."""

from __future__ import annotations

import math
import multiprocessing
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from bench.sim.clock import Simulation
from bench.sim.demand import Recording
from bench.sim.fleet import DAY, SimulatedWorld, Tally, WorldSettings
from bench.sim.learned_schedule import ScheduleSettings, scheduled_spec
from bench.sim.oracle import oracle
from bench.sim.policies.base import Policy
from bench.sim.policies.classic import ClassicPolicy, ClassicSettings
from bench.sim.policies.forecast import Forecast, ForecastPlannerPolicy, ForecastSettings
from bench.sim.policies.jitsi import JitsiAutoscalerPolicy, JitsiSettings
from bench.sim.policies.planner import ControllerSettings, PlannerPolicy, SchedulePlannerPolicy
from bench.sim.policies.target_tracking import TargetTrackingPolicy, TargetTrackingSettings
from controller.spec import PoolSpec

POLICIES = ("classic", "jitsi-autoscaler", "target-tracking", "planner")
LEARNED = ("planner-schedule",)
"""Policies configured ahead of time from a previous day (the scenario's reference)."""
ORACLE = "oracle"
WHAT_IF = ("planner-forecast",)
"""Opt-in variants that answer what the planner would need; not part of the default table."""


@dataclass(frozen=True)
class Scenario:
    spec: PoolSpec
    recordings: tuple[Recording, ...]
    until: float
    seed: int
    world: WorldSettings = field(default_factory=WorldSettings)
    classic: ClassicSettings = field(default_factory=ClassicSettings)
    target_tracking: TargetTrackingSettings = field(default_factory=TargetTrackingSettings)
    jitsi: JitsiSettings = field(default_factory=JitsiSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    reference: tuple[Recording, ...] | None = None
    """A previous day of demand, for policies that forecast (never the day being scored)."""
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    day_labels: tuple[str, ...] = ()
    """One label per simulated day (e.g. `Tue 2025-01-14, unannounced burst of 60`)."""

    @property
    def longest_boot(self) -> float:
        return self.world.boot_mean + self.world.boot_spread

    @property
    def initial(self) -> int:
        """Every policy starts the day with min + targetFree recorders booted and idle."""
        capacity = self.spec.capacity
        return min(capacity.max, capacity.min + self.spec.targetFree)


@dataclass(frozen=True)
class DayResult:
    """One simulated day of a policy (requests by the day they arrived)."""

    requests: int
    missed: int
    lost: int
    busy_terminations: int
    instance_hours: float
    warm_hours: float = 0.0
    """Hours of stopped warmed instances."""


@dataclass(frozen=True)
class PolicyResult:
    name: str
    label: str
    requests: int
    missed: int
    missed_near_boundary: int
    waited: int
    lost: int
    busy_terminations: int
    instance_hours: float
    p99_wait: float
    """Seconds; infinite when more than 1 % of the requests were missed."""
    launches: int
    rejected_calls: int
    wall_seconds: float
    capacity: tuple[tuple[float, int], ...]
    busy: tuple[tuple[float, int], ...] = ()
    extra: dict[str, float] = field(default_factory=dict)
    days: tuple[DayResult, ...] = ()
    warm_hours: float = 0.0
    """Hours of stopped warmed instances (billed at world.warm_cost of a running hour)."""
    targets: tuple[tuple[float, int], ...] = ()
    """The readiness target's total over time (the planner), as (time, total) changes."""


def day_results(tally: Tally, until: float) -> tuple[DayResult, ...]:
    out = []
    for k in range(max(1, math.ceil(until / DAY))):
        d = tally.days.get(k)
        if d is None:
            out.append(DayResult(0, 0, 0, 0, 0.0))
            continue
        out.append(
            DayResult(
                d.requests,
                d.missed,
                d.lost,
                d.busy_terminations,
                d.instance_seconds / 3600.0,
                d.warm_seconds / 3600.0,
            )
        )
    return tuple(out)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def schedule_spec(scenario: Scenario) -> PoolSpec:
    """The pool spec of planner-schedule: the scenario's, with a schedule learned from the
    reference day."""
    if scenario.reference is None:
        raise ValueError("planner-schedule needs a reference day to learn its schedule from")
    return scheduled_spec(
        scenario.spec,
        scenario.reference,
        scenario.forecast,
        scenario.schedule,
        longest_boot=scenario.longest_boot,
    )


def _policy(scenario: Scenario, name: str) -> Policy:
    spec = scenario.spec
    if name == "classic":
        return ClassicPolicy(scenario.classic)
    if name == "target-tracking":
        return TargetTrackingPolicy(scenario.target_tracking)
    if name == "jitsi-autoscaler":
        return JitsiAutoscalerPolicy(
            scenario.jitsi,
            min_desired=spec.capacity.min,
            max_desired=spec.capacity.max,
            initial=scenario.initial,
        )
    if name == "planner":
        return PlannerPolicy(spec, scenario.controller)
    if name == "planner-forecast":
        if scenario.reference is None:
            raise ValueError("planner-forecast needs a reference day to learn from")
        forecast = Forecast(scenario.reference)
        return ForecastPlannerPolicy(
            spec,
            scenario.controller,
            forecast,
            scenario.forecast,
            longest_boot=scenario.longest_boot,
        )
    if name == "planner-schedule":
        # The comparison is the schedule alone: readiness, which would learn beside it, is off.
        document = schedule_spec(scenario).model_dump()
        document["readiness"]["enabled"] = False
        return SchedulePlannerPolicy(PoolSpec.model_validate(document), scenario.controller)
    known = ", ".join((*POLICIES, *LEARNED, ORACLE, *WHAT_IF))
    raise ValueError(f"unknown policy {name!r}; choose from {known}")


def run_policy(scenario: Scenario, name: str) -> PolicyResult:
    if name == ORACLE:
        return run_oracle(scenario)
    started = time.perf_counter()
    spec = scenario.spec
    sim = Simulation()
    policy = _policy(scenario, name)
    fleet = SimulatedWorld(
        sim,
        scenario.world,
        name=spec.autoScalingGroupName,
        # jitsi-autoscaler launches and terminates instances itself: the group has no floor.
        min_size=0 if name == "jitsi-autoscaler" else spec.capacity.min,
        max_size=spec.capacity.max,
        rng=random.Random(f"fleet:{scenario.seed}:{name}"),
    )
    policy.attach(fleet)
    initial = scenario.initial
    if isinstance(policy, ForecastPlannerPolicy):
        # A forecast running since yesterday would have readied midnight's spares already.
        initial = max(initial, policy.target_at(0.0))
    elif isinstance(policy, PlannerPolicy):
        # So would a schedule in force since yesterday.
        target, _ = policy.spec.target_free_at(scenario.controller.epoch)
        initial = max(initial, min(spec.capacity.max, spec.capacity.min + target))
    fleet.start(initial)
    recordings = [r for r in scenario.recordings if r.start < scenario.until]

    def arrive(index: int) -> None:
        fleet.request(recordings[index])
        if index + 1 < len(recordings):
            sim.at(recordings[index + 1].start, arrive, index + 1)

    if recordings:
        sim.at(recordings[0].start, arrive, 0)
    sim.run(scenario.until)
    fleet.finish()
    tally = fleet.tally
    return PolicyResult(
        name=name,
        label=policy.label,
        requests=tally.requests,
        missed=tally.missed,
        missed_near_boundary=tally.missed_near_boundary,
        waited=tally.waited,
        lost=tally.lost,
        busy_terminations=tally.busy_terminations,
        instance_hours=tally.instance_seconds / 3600.0,
        p99_wait=percentile(tally.waits, 0.99),
        launches=tally.launches,
        rejected_calls=tally.rejected_calls,
        wall_seconds=time.perf_counter() - started,
        capacity=tuple((s.t, s.capacity) for s in tally.samples),
        busy=tuple((s.t, s.busy) for s in tally.samples),
        extra={"events": sim.events, **policy.stats()},
        days=day_results(tally, scenario.until),
        warm_hours=tally.warm_seconds / 3600.0,
        targets=tuple(policy.targets) if isinstance(policy, PlannerPolicy) else (),
    )


def run_oracle(scenario: Scenario) -> PolicyResult:
    started = time.perf_counter()
    recordings = [r for r in scenario.recordings if r.start < scenario.until]
    world = scenario.world
    result = oracle(
        recordings,
        until=scenario.until,
        # With a warm pool, a recorder may come from it: the bound takes the warm start.
        boot=world.warm_start_mean if world.warm_pool else world.boot_mean,
        min_size=scenario.spec.capacity.min,
        initial=scenario.initial,
        sample_period=scenario.world.sample_period,
    )
    return PolicyResult(
        name=ORACLE,
        label="lower bound: knows the future, recorders exactly when needed (mean boot)",
        requests=len(recordings),
        missed=0,
        missed_near_boundary=0,
        waited=0,
        lost=0,
        busy_terminations=0,
        instance_hours=result.instance_seconds / 3600.0,
        p99_wait=0.0,
        launches=0,
        rejected_calls=0,
        wall_seconds=time.perf_counter() - started,
        capacity=result.capacity,
        days=tuple(
            DayResult(
                sum(1 for r in recordings if int(r.start // DAY) == k),
                0,
                0,
                0,
                seconds / 3600.0,
            )
            for k, seconds in enumerate(result.per_day)
        ),
    )


def run_all(scenario: Scenario, names: Sequence[str], *, jobs: int = 1) -> list[PolicyResult]:
    """Run the named policies (each on its own simulated fleet); results in `names` order.

    Each run is seeded by the scenario's seed and the policy's name alone, so running them in
    parallel processes changes nothing but the wall time."""
    for name in names:
        if name in LEARNED and scenario.reference is None:
            raise ValueError(f"{name} needs a reference day to learn from")
        if name not in (ORACLE, *LEARNED):
            _policy(scenario, name)  # raises early for unknown names or missing inputs
    if jobs <= 1 or len(names) <= 1:
        return [run_policy(scenario, name) for name in names]
    # The planner run is the longest: start it first so the others fill the other worker.
    order = sorted(names, key=lambda n: not n.startswith("planner"))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {name: pool.submit(run_policy, scenario, name) for name in order}
        return [futures[name].result() for name in names]

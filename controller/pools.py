"""All pools of the desired state: their loops, hot reload of that state, and the intake of
agents' reports (`accept_report`), which the HTTP handler calls once a report is valid and
authenticated. One pool's loop is controller/loop.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.aiokits.clock import Clock, MonotonicClock
from common.logs import event
from common.wire import Report, ReportAnswer
from controller.actuation import drain_answer
from controller.actuator import Actuator
from controller.demand.service import DemandSources
from controller.loop import (
    DEFAULT_BACKOFF,
    MIN_PASS_GAP,
    AutoScalingFactory,
    Backoff,
    ExtraStep,
    PlanInput,
    Planner,
    PoolRunner,
    StatusSource,
)
from controller.planner import plan as default_planner
from controller.prometheus import Metrics
from controller.spec import DesiredState, JibriPool
from controller.store import Outcome, ReportStore

log = logging.getLogger("controller.pools")


@dataclass(frozen=True)
class ReportReceipt:
    """What became of one agent report: the answer to send back, whether its instance is in a
    managed group (200) or held until one shows up (202), and its agent_reports_total label."""

    answer: ReportAnswer
    managed: bool
    outcome: str


class Controller:
    """All pools of the desired state, their loops, and hot reload of that state."""

    def __init__(
        self,
        *,
        state: DesiredState,
        store: ReportStore,
        metrics: Metrics,
        autoscaling: AutoScalingFactory,
        actuator: Actuator,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        planner: Planner = default_planner,
        extra_steps: Sequence[ExtraStep] = (),
        status_sources: Sequence[StatusSource] = (),
        plan_inputs: Sequence[PlanInput] = (),
        backoff: Backoff = DEFAULT_BACKOFF,
        draw: Callable[[], float] = random.random,
        stop_grace: float = 5.0,
        min_pass_gap: float = MIN_PASS_GAP,
        demand: DemandSources | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.metrics = metrics
        self.autoscaling = autoscaling
        self.actuator = actuator
        self.clock: Clock = MonotonicClock() if clock is None else clock
        self.wall_clock = wall_clock
        self.planner = planner
        self.extra_steps = tuple(extra_steps)
        self.status_sources = tuple(status_sources)
        self.plan_inputs = tuple(plan_inputs)
        self.backoff = backoff
        self._draw = draw
        self.stop_grace = stop_grace
        self.min_pass_gap = min_pass_gap
        self.demand = DemandSources() if demand is None else demand
        self.started_at = self.clock.now()
        self.pools: dict[str, PoolRunner] = {}

    def backoff_delay(self, failures: int) -> float:
        return self.backoff.delay(failures, self._draw())

    def start(self) -> None:
        for pool in self.state.pools:
            self._add(pool)

    def owner(self, instance_id: str) -> PoolRunner | None:
        """The pool whose ASG holds `instance_id`, if any."""
        for runner in self.pools.values():
            if runner.memory.owns(instance_id):
                return runner
        return None

    def accept_report(self, report: Report, received_at: float) -> ReportReceipt:
        """Hold a validated report, start the pass it calls for, and say whether to drain."""
        runner = self.owner(report.instanceId)
        accepted = self.store.accept(report, received_at, managed=runner is not None)
        if runner is None:
            if accepted.changed:
                # Likely a new instance of some pool: a pass adopts it (and protects it if it
                # is already busy) now rather than at the next resync. Repeats of an unchanged
                # held report do not trigger, so stray agents cannot keep the pools busy.
                for candidate in self.pools.values():
                    candidate.trigger(received_at)
            outcome = (
                "unmanaged" if accepted.outcome is Outcome.ACCEPTED else accepted.outcome.value
            )
            return ReportReceipt(ReportAnswer(drain=False), managed=False, outcome=outcome)
        if accepted.changed:
            runner.trigger(received_at)
        drain = drain_answer(runner.actuation, report.instanceId, self.store.get(report.instanceId))
        return ReportReceipt(
            ReportAnswer(drain=drain), managed=True, outcome=accepted.outcome.value
        )

    async def apply(self, state: DesiredState) -> None:
        """Make a new desired state take effect: add, change and remove pools in place."""
        wanted = {pool.name: pool for pool in state.pools}
        for name, runner in list(self.pools.items()):
            new = wanted.get(name)
            if new is None or _placement(new) != _placement(runner.pool):
                await self._remove(name)
        for pool in state.pools:
            existing = self.pools.get(pool.name)
            if existing is None:
                self._add(pool)
            elif existing.pool != pool:
                existing.pool = pool
                self.metrics.set_pool(pool)
                existing.kick()
                event(log, "pool changed", pool=pool.name)
        self.pools = {name: self.pools[name] for name in wanted}
        self.state = state

    def _add(self, pool: JibriPool) -> None:
        self.metrics.set_pool(pool)
        runner = PoolRunner(pool, self, started_at=self.clock.now())
        self.pools[pool.name] = runner
        runner.start()
        event(log, "pool added", pool=pool.name, group=pool.spec.autoScalingGroupName)

    async def _remove(self, name: str) -> None:
        runner = self.pools.pop(name)
        await _stop_runners([runner], self.stop_grace)
        self.store.release(list(runner.memory.first_seen))
        runner.actuation.forget(list(runner.memory.first_seen))
        self.metrics.remove_pool(name)
        event(log, "pool removed", pool=name)

    async def stop(self) -> None:
        """Let passes under way finish (up to `stop_grace` seconds), then cancel the rest."""
        await _stop_runners(list(self.pools.values()), self.stop_grace)


async def _stop_runners(runners: Sequence[PoolRunner], grace: float) -> None:
    for runner in runners:
        runner.stop()
    tasks = [runner.task for runner in runners if runner.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _placement(pool: JibriPool) -> tuple[str, str | None]:
    """What identifies the instances a pool manages; a change makes it a different pool."""
    return pool.spec.autoScalingGroupName, pool.spec.region

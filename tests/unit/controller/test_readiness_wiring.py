"""Readiness in the loop: history raises the target before a burst, no history plans as before,
jicofo's misses reach the metrics and /status, and CloudWatch never holds a pass up.

Passes run on a `ManualClock`, with a wall clock that moves with it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from common.aiokits.clock import ManualClock
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.actuator import Actuator
from controller.aws import AutoScaling
from controller.cloudwatch.datapoints import Datum
from controller.demand.history import DemandHistory
from controller.demand.service import DemandSources, HistoryApis, PoolDemand
from controller.http.status import readiness_status, render, status
from controller.loop import Planner, PoolRunner
from controller.model import Observed, Plan
from controller.planner import plan as real_plan
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.spec import DesiredState, PoolSpec
from controller.store import ReportStore
from tests.support.fake_autoscaling import FakeAutoScaling
from tests.support.fake_jicofo import running_jicofo
from tests.unit.controller.test_loop import FAST, desired, eventually, sample

# Tuesday 2026-11-24 13:55:00 UTC, at clock 1000.
WALL0 = datetime(2026, 11, 24, 13, 55, tzinfo=UTC).timestamp()
BURST = int(datetime(2026, 11, 24, 14, 0, tzinfo=UTC).timestamp() // 60)


def pool_yaml(extra: str = "") -> str:
    return f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {{name: p}}
spec:
  autoScalingGroupName: g
  capacity: {{min: 0, max: 40}}
  targetFree: 2
  resync: 60s
{extra}"""


def make_controller(
    state: DesiredState,
    fake: AutoScaling,
    clock: ManualClock,
    *,
    planner: Planner = real_plan,
    demand: DemandSources | None = None,
) -> Controller:
    metrics = Metrics()

    async def autoscaling(region: str | None) -> AutoScaling:
        return fake

    return Controller(
        state=state,
        store=ReportStore(),
        metrics=metrics,
        autoscaling=autoscaling,
        actuator=Actuator(metrics=metrics, clock=clock.now, dry_run=False),
        clock=clock,
        wall_clock=lambda: WALL0 + clock.now() - 1000.0,
        planner=planner,
        backoff=FAST,
        stop_grace=5.0,
        min_pass_gap=0.0,
        demand=demand,
    )


def tell(controller: Controller, instance: str, busy: BusyStatus, seq: int) -> None:
    """An agent report, accepted as the HTTP handler would."""
    report = Report(
        instanceId=instance,
        bootId="b",
        seq=seq,
        jibri=JibriStatus(busyStatus=busy, healthStatus=HealthStatus.HEALTHY),
    )
    controller.accept_report(report, controller.clock.now())


def tuesdays(history: DemandHistory, burst: float) -> None:
    """The four past Tuesdays watched 13:00-15:00, each with `burst` recordings at 14:00."""
    for week in range(1, 5):
        base = BURST - week * 7 * 1440
        for minute in range(base - 60, base + 60):
            history.cover(minute)
        history.add_started(base, burst)


async def two_passes(history_burst: float | None) -> tuple[Controller, int, int]:
    """Desired capacity after a pass at 13:55:00 and one at 13:57:30, two idle recorders."""
    fake = FakeAutoScaling()
    ids = fake.add_group("g", min_size=0, max_size=40, desired=2)
    clock = ManualClock()
    controller = make_controller(desired(pool_yaml()), fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now() - 600)
    controller.pools["p"] = runner
    controller.metrics.set_pool(runner.pool)
    if history_burst is not None:
        tuesdays(runner.demand.readiness.history, history_burst)
    desired_after = []
    for seq, advance in enumerate((0.0, 150.0), start=1):
        await clock.advance(advance)
        for instance in ids:
            tell(controller, instance, BusyStatus.IDLE, seq)
        await runner.step()
        desired_after.append(fake.groups["g"].desired)
    return controller, desired_after[0], desired_after[1]


async def test_history_scales_out_before_the_burst_minute() -> None:
    """Past Tuesdays' 14:00 burst raises the target at 13:57:30, in one pass, beyond maxStep."""
    controller, first, second = await two_passes(history_burst=20)
    assert first == 2  # 13:55: the burst is beyond the boot horizon
    assert second >= 30  # 13:57:30: 20 expected within 180 s, at a 0.5 % miss target
    runner = controller.pools["p"]
    target = runner.snapshot.observed.readiness if runner.snapshot.observed else None
    assert target is not None and (target.floor, target.samples) == (2, 4)
    assert second == target.total == target.forecast  # two idle + the forecast's gap
    metrics = controller.metrics
    assert sample(metrics, "pool_target_part", pool="p", part="forecast") == target.forecast
    assert sample(metrics, "pool_target_part", pool="p", part="total") == target.total
    assert sample(metrics, "pool_target_free", pool="p") == target.total
    document = status(controller, controller.clock.now(), dry_run=False)
    block = document["pools"][0]["readiness"]
    assert block["target"]["forecast"] == target.forecast
    assert block["bootHorizonSeconds"] == 180.0
    lines = render(document).splitlines()
    header = lines[lines.index("p: readiness") + 1].split()
    row = lines[lines.index("p: readiness") + 2].split()
    assert header[:4] == ["TARGET", "FLOOR", "FROM", "FORECAST"]
    assert row[:4] == [str(target.total), "2", "targetFree", str(target.forecast)]


async def test_no_history_keeps_todays_capacity() -> None:
    """Without history the same two passes leave the pool at targetFree's capacity."""
    _, first, second = await two_passes(history_burst=None)
    assert (first, second) == (2, 2)


class ComparingPlanner:
    """The real planner; also plans each observation without its readiness target and keeps
    both, so a test can compare them."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Plan, Plan]] = []

    def __call__(self, spec: PoolSpec, observed: Observed, now: float) -> Plan:
        with_target = real_plan(spec, observed, now)
        plain = real_plan(spec, dataclasses.replace(observed, readiness=None), now)
        self.pairs.append((with_target, plain))
        return with_target


async def test_no_history_plans_exactly_as_before() -> None:
    """Pass after pass with nothing recorded, the plan's actions, capacity and conditions are
    the ones the planner makes without readiness (scale-out, then idleFor drains)."""
    fake = FakeAutoScaling()
    ids = fake.add_group("g", min_size=0, max_size=40, desired=1)
    clock = ManualClock()
    planner = ComparingPlanner()
    controller = make_controller(desired(pool_yaml()), fake, clock, planner=planner)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now() - 600)
    controller.pools["p"] = runner
    group = fake.groups["g"]
    for seq in range(1, 8):
        for instance in [*group.instances]:
            tell(controller, instance, BusyStatus.IDLE, seq)
        await runner.step()
        await clock.advance(100.0)
        if seq == 3:
            group.desired = 5  # someone raised the group by hand: idle excess to drain
        group.settle()
    actions = [a.name for p, _ in planner.pairs for a in p.actions]
    assert "scale-out" in actions and "drain" in actions
    for with_target, plain in planner.pairs:
        assert with_target.actions == plain.actions
        assert with_target.desired_capacity == plain.desired_capacity
        assert with_target.conditions == plain.conditions
    assert ids and len(runner.demand.readiness.history) > 0


async def test_jicofo_misses_reach_metrics_and_status() -> None:
    """Requests jicofo found no recorder for count in recordings_missed_total and in /status's
    miss rate, beside the recordings the pool started."""
    async with running_jicofo() as jicofo:
        fake = FakeAutoScaling()
        [instance] = fake.add_group("g", min_size=0, max_size=40, desired=1)
        clock = ManualClock()
        spec = f"  demand: {{jicofo: {{urls: ['{jicofo.url}/metrics'], interval: 1s}}}}\n"
        controller = make_controller(desired(pool_yaml(spec)), fake, clock)
        controller.start()
        try:
            await eventually(lambda: jicofo.requests >= 1)
            tell(controller, instance, BusyStatus.IDLE, 1)
            await eventually(lambda: _state(controller) == "idle")
            tell(controller, instance, BusyStatus.BUSY, 2)
            await eventually(
                lambda: sample(controller.metrics, "recordings_started_total", pool="p") == 1
            )
            jicofo.fail(3)
            await clock.advance(1.0)
            await eventually(
                lambda: sample(controller.metrics, "recordings_missed_total", pool="p") == 3
            )
            document = status(controller, clock.now(), dry_run=False)
        finally:
            await controller.stop()
    missed = document["pools"][0]["readiness"]["missed"]
    assert missed["lastHour"] == {"started": 1.0, "missed": 3.0, "rate": 0.75}
    assert missed["lastDay"] == missed["lastHour"]
    assert document["pools"][0]["readiness"]["jicofo"] == {"available": 0.0, "errors": {}}


def _state(controller: Controller) -> str | None:
    plan = controller.pools["p"].snapshot.plan
    return plan.instances[0].state.value if plan is not None and plan.instances else None


class HangingCloudWatch:
    """A CloudWatch that never answers: the outage moto cannot stage (it answers or refuses)."""

    def __init__(self) -> None:
        self.calls = 0

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    async def get_metric_data(
        self, queries: Sequence[Mapping[str, Any]], start: float, end: float
    ) -> Mapping[str, Sequence[tuple[float, float]]]:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_hanging_cloudwatch_never_holds_a_pass_up() -> None:
    """With the history's CloudWatch reads hanging, passes still run and scale the pool."""
    hanging = HangingCloudWatch()

    async def apis(region: str | None) -> HangingCloudWatch:
        return hanging

    history_apis: HistoryApis = apis
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=40, desired=0)
    clock = ManualClock()
    controller = make_controller(
        desired(pool_yaml()), fake, clock, demand=DemandSources(history_apis)
    )
    controller.start()
    try:
        await eventually(lambda: hanging.calls >= 1)
        await eventually(lambda: fake.groups["g"].desired == 2)
        runner = controller.pools["p"]
        assert runner.demand.sync is not None and not runner.demand.sync.backfilled
        assert runner.snapshot.last_error is None
    finally:
        await controller.stop()


def _running(name: str) -> bool:
    return any(t.get_name() == name and not t.done() for t in asyncio.all_tasks())


async def test_reloads_start_and_stop_the_jicofo_reader() -> None:
    """A reload that adds spec.demand.jicofo starts its reader, one that drops it stops it, the
    pool's history stays, and stopping the controller ends every demand task."""
    async with running_jicofo() as jicofo:
        fake = FakeAutoScaling()
        fake.add_group("g", min_size=0, max_size=40, desired=0)
        clock = ManualClock()
        controller = make_controller(desired(pool_yaml()), fake, clock)
        controller.start()
        try:
            runner = controller.pools["p"]
            history = runner.demand.readiness.history
            assert not _running("jicofo:p")
            spec = f"  demand: {{jicofo: {{urls: ['{jicofo.url}/metrics']}}}}\n"
            await controller.apply(desired(pool_yaml(spec)))
            await eventually(lambda: jicofo.requests >= 1 and _running("jicofo:p"))
            await controller.apply(desired(pool_yaml()))
            await eventually(lambda: not _running("jicofo:p"))
            assert controller.pools["p"] is runner
            assert runner.demand.readiness.history is history
            await controller.apply(desired(pool_yaml(spec)))
            await eventually(lambda: _running("jicofo:p"))
        finally:
            await controller.stop()
        assert not _running("jicofo:p")


def test_status_names_the_override_in_force() -> None:
    """While a dated override is in force, /status gives it with its local from/to and the
    target's floor is its targetFree."""
    spec = """\
  schedule:
    timezone: Europe/Berlin
    overrides: [{from: 2026-11-24T14:30, to: 2026-11-24T16:00, targetFree: 9}]
"""
    pool = desired(pool_yaml(spec)).pools[0].spec
    demand = PoolDemand(
        "p", sources=DemandSources(), metrics=Metrics(), clock=ManualClock(), wall_clock=lambda: 0
    )
    target = demand.readiness.target(pool, WALL0)  # 13:55 UTC is 14:55 in Berlin
    assert target is not None and (target.floor, target.override, target.total) == (9, 0, 9)
    block = readiness_status(pool, target, demand, WALL0)
    assert block["override"] == {
        "index": 0,
        "from": "2026-11-24T14:30",
        "to": "2026-11-24T16:00",
        "timezone": "Europe/Berlin",
        "targetFree": 9,
    }
    assert block["missed"]["lastHour"] == {"started": 0.0, "missed": 0.0, "rate": None}


def test_readiness_series_exist_from_pool_start_and_leave_with_it() -> None:
    """Every readiness series of a pool reads zero once the pool is added, before any pass,
    and is gone once the pool is removed."""
    metrics = Metrics()
    pool = desired(pool_yaml()).pools[0]
    metrics.set_pool(pool)
    names = [
        "pool_boot_horizon_seconds",
        "recordings_started_total",
        "recordings_missed_total",
        "demand_history_seconds",
        "demand_history_dropped_total",
    ]
    for name in names:
        assert sample(metrics, name, pool="p") == 0.0, name
    for part in ("floor", "schedule", "forecast", "reactive", "later", "total"):
        assert sample(metrics, "pool_target_part", pool="p", part=part) == 0.0, part
    metrics.remove_pool("p")
    for name in names:
        assert sample(metrics, name, pool="p") is None, name
    assert sample(metrics, "pool_target_part", pool="p", part="total") is None

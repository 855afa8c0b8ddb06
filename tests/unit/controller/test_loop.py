"""The reconcile loop: passes, backoff, triggers, hot reload, extra steps and shutdown.

Loops run on a `ManualClock`: time passes only when a test advances it, and a test that says
"nothing more happened" first waits until every pool's loop is asleep on that clock (`quiet`),
so it needs no real-time sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.aiokits.clock import ManualClock
from common.aiokits.tasks import guarded_task
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.actuator import Actuator
from controller.aws import AutoScaling
from controller.loop import Backoff, ExtraStep, Planner, PoolRunner
from controller.model import AsgView, Observed, Plan
from controller.planner import plan as real_plan
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.reload import ConfigWatcher, load
from controller.spec import DesiredState, JibriPool, PoolSpec, parse_desired_state
from controller.store import ReportStore
from tests.support.fake_autoscaling import FakeAutoScaling

FAST = Backoff(base=0.01, cap=0.05)


def pool_yaml(name: str, group: str, *, target: int = 1, resync: str = "60s", low: int = 0) -> str:
    return f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {{name: {name}}}
spec:
  autoScalingGroupName: {group}
  capacity: {{min: {low}, max: 10}}
  targetFree: {target}
  resync: {resync}
"""


def desired(*docs: str) -> DesiredState:
    return parse_desired_state("---\n".join(docs), "test.yaml")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"jibri_autoscaler_{name}", labels)


class CountingPlanner:
    """The real planner, counting calls per pool group; optionally overriding requeue_after."""

    def __init__(self, requeue_after: float | None = None) -> None:
        self.calls: dict[str, int] = {}
        self._requeue_after = requeue_after

    def __call__(self, spec: PoolSpec, observed: Observed, now: float) -> Plan:
        group = spec.autoScalingGroupName
        self.calls[group] = self.calls.get(group, 0) + 1
        result = real_plan(spec, observed, now)
        if self._requeue_after is not None:
            return Plan(
                result.actions,
                self._requeue_after,
                result.instances,
                result.desired_capacity,
                result.conditions,
            )
        return result


class GatedAutoScaling(FakeAutoScaling):
    """A fake whose describe waits for `gate`, to hold a pass in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def describe_group(self, name: str) -> AsgView:
        self.waiting.set()
        await self.gate.wait()
        return await super().describe_group(name)


WALL_AT_START = 1_767_268_820.0 - 1000.0
"""2026-01-01T12:00:20Z when a ManualClock reads its default start (1000)."""


def make_controller(
    state: DesiredState,
    fake: AutoScaling,
    clock: ManualClock,
    *,
    planner: Planner = real_plan,
    extra_steps: tuple[ExtraStep, ...] = (),
    min_pass_gap: float = 0.25,
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
        # Wall time moves with the manual clock, 20 s into a minute: minute-boundary passes
        # (readiness) come only when a test advances that far, never from the real time of day.
        wall_clock=lambda: WALL_AT_START + clock.now(),
        planner=planner,
        extra_steps=extra_steps,
        backoff=FAST,
        stop_grace=5.0,
        min_pass_gap=min_pass_gap,
    )


async def eventually(predicate: Callable[[], bool], within: float = 15.0) -> None:
    """Wait for something to happen (a pass plans in a worker thread, so in real time)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def quiet(controller: Controller, clock: ManualClock) -> None:
    """Wait until every pool's loop is asleep on the clock: nothing more happens until the
    clock moves, a trigger or a spec change."""
    for _ in range(20):
        await asyncio.sleep(0)
    await eventually(lambda: clock.sleepers == len(controller.pools))


async def advance_until(
    controller: Controller,
    clock: ManualClock,
    predicate: Callable[[], bool],
    *,
    step: float = 0.01,
    limit: float = 60.0,
) -> None:
    """Move the clock in `step`s, letting the loops run between steps, until `predicate`."""
    await quiet(controller, clock)
    start = clock.now()
    while not predicate():
        if clock.now() - start > limit:
            raise AssertionError(f"condition not met within {limit} s of clock time")
        await clock.advance(step)
        await quiet(controller, clock)


async def test_reconcile_once_observes_plans_and_acts() -> None:
    """One pass reads the ASG, plans, acts, publishes gauges and says when to come back."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    clock = ManualClock()
    controller = make_controller(desired(pool_yaml("p", "g", low=3, resync="20s")), fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    controller.metrics.set_pool(runner.pool)
    delay = await runner.reconcile_once()
    assert 0 < delay <= 20.0
    assert fake.groups["g"].desired == 3
    assert fake.groups["g"].min_size == 3
    assert sample(controller.metrics, "pool_desired_capacity", pool="p") == 3
    assert sample(controller.metrics, "pool_instances", pool="p", state="unknown") == 1
    assert sample(controller.metrics, "reconcile_duration_seconds_count", pool="p") == 1


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        pytest.param(1, 0.5, 1.0, id="first"),
        pytest.param(2, 1.0, 2.0, id="doubles"),
        pytest.param(4, 4.0, 8.0, id="doubles-again"),
        pytest.param(20, 15.0, 30.0, id="capped"),
    ],
)
def test_backoff_is_capped_exponential_with_jitter(failures: int, low: float, high: float) -> None:
    """The n-th failure waits between half and all of min(cap, base·2^(n-1))."""
    backoff = Backoff(base=1.0, cap=30.0)
    assert backoff.delay(failures, 0.0) == low
    assert backoff.delay(failures, 1.0) == high


async def test_failing_pool_backs_off_without_holding_up_others() -> None:
    """A pool whose ASG is missing keeps failing and backing off; the healthy pool still runs."""
    fake = FakeAutoScaling()
    fake.add_group("good", min_size=0, max_size=10, desired=1)
    planner = CountingPlanner(requeue_after=0.02)
    state = desired(pool_yaml("good", "good"), pool_yaml("bad", "missing"))
    clock = ManualClock()
    controller = make_controller(state, fake, clock, planner=planner)
    controller.start()
    try:
        bad, good = controller.pools["bad"], controller.pools["good"]
        await advance_until(
            controller, clock, lambda: bad.failures >= 3 and planner.calls.get("good", 0) >= 3
        )
        assert good.failures == 0 and good.last_success_at is not None
        assert bad.last_error_kind == "not-found" and bad.last_success_at is None
        errors = sample(controller.metrics, "reconcile_errors_total", pool="bad", kind="not-found")
        assert errors is not None and errors >= 3
    finally:
        await controller.stop()


async def test_success_resets_backoff() -> None:
    """After failures, one successful pass clears the failure count and the last error."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    fake.fail("DescribeAutoScalingGroups", "throttled")
    clock = ManualClock()
    controller = make_controller(desired(pool_yaml("p", "g")), fake, clock)
    controller.start()
    try:
        runner = controller.pools["p"]
        await advance_until(controller, clock, lambda: runner.failures >= 2)
        assert runner.last_error_kind == "throttled"
        fake.failures.clear()
        await advance_until(controller, clock, lambda: runner.failures == 0)
        assert runner.last_error is None and runner.last_success_at is not None
    finally:
        await controller.stop()


async def test_trigger_starts_a_pass_at_once() -> None:
    """A trigger wakes a pool that would otherwise sleep for its whole resync."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    planner = CountingPlanner()
    clock = ManualClock()
    state = desired(pool_yaml("p", "g", resync="1h"))
    controller = make_controller(state, fake, clock, planner=planner)
    controller.start()
    try:
        await quiet(controller, clock)
        assert planner.calls.get("g") == 1
        controller.pools["p"].trigger(clock.now())
        # At once, once min_pass_gap (0.25 s) after the first pass has passed.
        await advance_until(controller, clock, lambda: planner.calls.get("g") == 2, limit=0.3)
    finally:
        await controller.stop()


async def test_triggers_during_a_pass_coalesce_into_one_more() -> None:
    """Many triggers while a pass runs lead to exactly one more pass, not one each."""
    fake = GatedAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    planner = CountingPlanner()
    clock = ManualClock()
    state = desired(pool_yaml("p", "g", resync="1h"))
    controller = make_controller(state, fake, clock, planner=planner)
    controller.start()
    try:
        await fake.waiting.wait()
        for _ in range(5):
            controller.pools["p"].trigger(clock.now())
        fake.gate.set()
        await advance_until(controller, clock, lambda: planner.calls.get("g") == 2, limit=0.3)
        await clock.advance(1.0)
        await quiet(controller, clock)
        assert planner.calls["g"] == 2
    finally:
        await controller.stop()


async def test_passes_keep_a_minimum_gap_under_a_stream_of_triggers() -> None:
    """Triggers arriving all the time start a pass no sooner than min_pass_gap after the last."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    starts: list[float] = []
    clock = ManualClock()

    def planner(spec: PoolSpec, observed: Observed, now: float) -> Plan:
        starts.append(clock.now())
        return real_plan(spec, observed, now)

    controller = make_controller(
        desired(pool_yaml("p", "g", resync="1h")), fake, clock, planner=planner, min_pass_gap=0.3
    )
    controller.start()
    try:
        runner = controller.pools["p"]
        await quiet(controller, clock)
        deadline = clock.now() + 1.5
        while clock.now() < deadline:
            runner.trigger(clock.now())
            await clock.advance(0.01)
            await quiet(controller, clock)
    finally:
        await controller.stop()
    assert 2 <= len(starts) <= 7
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.29


async def test_spec_change_does_not_wait_for_the_gap() -> None:
    """A trigger waits out min_pass_gap; a changed spec starts a pass at once."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    planner = CountingPlanner()
    clock = ManualClock()
    controller = make_controller(
        desired(pool_yaml("p", "g", resync="1h")),
        fake,
        clock,
        planner=planner,
        min_pass_gap=3600.0,
    )
    controller.start()
    try:
        await quiet(controller, clock)
        assert planner.calls.get("g") == 1
        controller.pools["p"].trigger(clock.now())
        await quiet(controller, clock)
        await clock.advance(60.0)
        await quiet(controller, clock)
        assert planner.calls["g"] == 1
        await controller.apply(desired(pool_yaml("p", "g", target=2, resync="1h")))
        await eventually(lambda: planner.calls.get("g") == 2)
    finally:
        await controller.stop()


async def test_planner_runs_in_a_thread_on_a_snapshot() -> None:
    """While a pass plans, the event loop keeps running, and a report or a drain request that
    arrives meanwhile does not change the observation the planner is working on."""
    fake = FakeAutoScaling()
    (instance,) = fake.add_group("g", min_size=0, max_size=10, desired=1)
    planning, release = threading.Event(), threading.Event()
    seen: list[tuple[bool, list[str], list[str]]] = []

    def planner(spec: PoolSpec, observed: Observed, now: float) -> Plan:
        planning.set()
        released = release.wait(timeout=5.0)
        seen.append((released, list(observed.reports), list(observed.drain_requested)))
        return real_plan(spec, observed, now)

    clock = ManualClock()
    controller = make_controller(desired(pool_yaml("p", "g")), fake, clock, planner=planner)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    controller.metrics.set_pool(runner.pool)
    passing = asyncio.create_task(runner.reconcile_once())
    await eventually(planning.is_set)
    report = Report(
        instanceId=instance,
        bootId="b",
        seq=1,
        jibri=JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY),
    )
    controller.store.accept(report, clock.now(), managed=True)
    runner.actuation.drain_requested_now(instance, clock.now())
    release.set()
    await asyncio.wait_for(passing, timeout=10)
    assert seen == [(True, [], [])]


async def test_each_pass_publishes_a_frozen_snapshot() -> None:
    """/status reads the snapshot a pass leaves: frozen, and what the runner records after the
    pass shows only once the next pass has replaced it."""
    fake = FakeAutoScaling()
    (instance,) = fake.add_group("g", min_size=0, max_size=10, desired=1)
    clock = ManualClock()
    controller = make_controller(desired(pool_yaml("p", "g")), fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    controller.metrics.set_pool(runner.pool)
    await runner.step()
    first = runner.snapshot
    assert first.plan is not None and first.last_success_at == clock.now()
    runner.actuation.drain_requested_now(instance, clock.now())
    assert runner.snapshot is first and first.drain_requested == frozenset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.failures = 3  # type: ignore[misc]
    await runner.step()
    assert runner.snapshot.drain_requested == {instance}


async def test_requeue_after_is_honoured_when_sooner_than_resync() -> None:
    """The plan's requeue_after brings the next pass forward from resync."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    planner = CountingPlanner(requeue_after=0.02)
    clock = ManualClock()
    state = desired(pool_yaml("p", "g", resync="1h"))
    controller = make_controller(state, fake, clock, planner=planner, min_pass_gap=0.0)
    controller.start()
    try:
        await advance_until(controller, clock, lambda: planner.calls.get("g", 0) >= 4)
        assert clock.now() < 1000.0 + 3600.0
    finally:
        await controller.stop()


async def test_apply_adds_changes_and_removes_pools() -> None:
    """A new desired state adds, changes in place (memory kept) and removes pools."""
    fake = FakeAutoScaling()
    for group in ("a", "b", "c"):
        fake.add_group(group, min_size=0, max_size=10, desired=1)
    controller = make_controller(
        desired(pool_yaml("a", "a"), pool_yaml("b", "b")), fake, ManualClock()
    )
    controller.start()
    try:
        first_a = controller.pools["a"]
        await eventually(lambda: all(r.last_success_at for r in controller.pools.values()))
        remembered = dict(first_a.memory.first_seen)
        assert remembered

        await controller.apply(desired(pool_yaml("a", "a", target=3), pool_yaml("c", "c")))
        assert list(controller.pools) == ["a", "c"]
        assert controller.pools["a"] is first_a and first_a.pool.spec.targetFree == 3
        assert first_a.memory.first_seen == remembered
        assert sample(controller.metrics, "pool_target_free", pool="a") == 3
        assert sample(controller.metrics, "pool_target_free", pool="b") is None
        assert sample(controller.metrics, "pool_target_free", pool="c") == 1
        await eventually(lambda: controller.pools["c"].last_success_at is not None)

        await controller.apply(desired(pool_yaml("a", "b"), pool_yaml("c", "c")))
        assert controller.pools["a"] is not first_a
        assert first_a.task is not None and first_a.task.done()
    finally:
        await controller.stop()


async def test_extra_steps_run_after_each_pass_and_failures_stay_contained() -> None:
    """Extra steps get (pool, observed, plan); a failing step is counted and shown but does
    not fail the pass."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=2)
    seen: list[tuple[str, int, int]] = []
    broken = True

    async def publish(pool: JibriPool, observed: Observed, plan: Plan) -> None:
        seen.append((pool.name, len(observed.asg.instances), len(plan.instances)))
        if broken:
            raise RuntimeError("metrics endpoint down")

    planner = CountingPlanner(requeue_after=0.02)
    clock = ManualClock()
    controller = make_controller(
        desired(pool_yaml("p", "g")), fake, clock, planner=planner, extra_steps=(publish,)
    )
    controller.start()
    try:
        runner = controller.pools["p"]
        await advance_until(controller, clock, lambda: len(seen) >= 2)
        assert seen[0] == ("p", 2, 2)
        assert runner.failures == 0 and runner.last_success_at is not None
        assert runner.step_errors == {"publish": "metrics endpoint down"}
        errors = sample(controller.metrics, "reconcile_errors_total", pool="p", kind="internal")
        assert errors is not None and errors >= 1
        broken = False
        await advance_until(controller, clock, lambda: not runner.step_errors)
    finally:
        await controller.stop()


async def test_stop_lets_the_pass_under_way_finish(caplog: pytest.LogCaptureFixture) -> None:
    """stop() waits for a pass in progress to complete, then ends every task quietly."""
    fake = GatedAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=1)
    controller = make_controller(desired(pool_yaml("p", "g", low=2)), fake, ManualClock())
    controller.start()
    await fake.waiting.wait()
    stopping = asyncio.create_task(controller.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()
    fake.gate.set()
    await asyncio.wait_for(stopping, timeout=10)
    runner = controller.pools["p"]
    assert runner.last_success_at is not None and fake.groups["g"].desired == 2
    assert runner.task is not None and runner.task.done() and not runner.task.cancelled()
    assert "task finished unexpectedly" not in caplog.text


@pytest.mark.parametrize(
    ("body", "may_end", "expected"),
    [
        pytest.param("return", False, "task finished unexpectedly", id="returned"),
        pytest.param("raise", False, "task has failed", id="raised"),
        pytest.param("return", True, None, id="expected-end"),
    ],
)
async def test_guarded_task_reports_unexpected_ends(
    caplog: pytest.LogCaptureFixture, body: str, may_end: bool, expected: str | None
) -> None:
    """A guarded task that stops on its own is logged as failed or finished unexpectedly."""

    async def work() -> None:
        if body == "raise":
            raise RuntimeError("boom")

    caplog.set_level(logging.INFO, "common.tasks")
    task = guarded_task(work(), name="worker", may_end=lambda: may_end)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    messages = [r.getMessage() for r in caplog.records if r.name == "common.tasks"]
    if expected is None:
        assert messages == []
    else:
        assert expected in messages


# --- hot reload of the file ---------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.applied: list[DesiredState] = []

    async def __call__(self, state: DesiredState) -> None:
        self.applied.append(state)


def watcher_for(path: Path, text: str) -> tuple[ConfigWatcher, Recorder, Metrics]:
    path.write_text(text)
    _, loaded = load(path)
    recorder, metrics = Recorder(), Metrics()
    return ConfigWatcher(path, loaded=loaded, apply=recorder, metrics=metrics), recorder, metrics


async def test_watcher_applies_a_valid_change(tmp_path: Path) -> None:
    """An edited, valid file is applied once and counted as a successful reload."""
    path = tmp_path / "pools.yaml"
    watcher, recorder, metrics = watcher_for(path, pool_yaml("p", "g"))
    assert not await watcher.check()
    path.write_text(pool_yaml("p", "g", target=4))
    assert await watcher.check()
    assert not await watcher.check()
    assert [s.pools[0].spec.targetFree for s in recorder.applied] == [4]
    assert sample(metrics, "config_reloads_total", outcome="success") == 1


async def test_watcher_keeps_last_good_state_on_invalid_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid edit is not applied, is logged with its reason once, and is counted."""
    path = tmp_path / "pools.yaml"
    watcher, recorder, metrics = watcher_for(path, pool_yaml("p", "g"))
    caplog.set_level(logging.INFO, "controller.reload")
    path.write_text(pool_yaml("p", "g") + "  targetFre: 3\n")
    assert not await watcher.check()
    assert not await watcher.check()
    assert recorder.applied == []
    assert sample(metrics, "config_reloads_total", outcome="invalid") == 1
    problems: list[Any] = [r.fields["problems"] for r in caplog.records]  # type: ignore[attr-defined]
    assert problems == [[f"{path}: document 1: spec.targetFre: unknown field (check the spelling)"]]

    path.unlink()
    assert not await watcher.check()
    assert sample(metrics, "config_reloads_total", outcome="invalid") == 2

    path.write_text(pool_yaml("p", "g", target=2))
    assert await watcher.check()
    assert sample(metrics, "config_reloads_total", outcome="success") == 1

"""Launch failures (docs/fleet-operations.md): the scaling-activity cursor, the causes, the
hold on scale-out with its backoff, and the pass that reads them.

moto returns no scaling activities, so these run against tests/support/fake_autoscaling.py,
whose DescribeScalingActivities pages like AWS's (newest first, NextToken)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from common.aiokits.clock import ManualClock
from controller.fleet.launches import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    LOOKBACK,
    QUIET,
    LaunchHealth,
    ScalingActivity,
    classify,
)
from controller.fleet.launches_step import LaunchTracker
from controller.loop import PoolRunner
from controller.model import SetDesiredCapacity
from controller.planner import plan
from controller.prometheus import Metrics
from tests.support.fake_autoscaling import FakeAutoScaling
from tests.support.observations import NOW, ObservationBuilder, report, spec
from tests.unit.controller.test_loop import desired, make_controller, sample

CAPACITY = (
    "We currently do not have sufficient m5.large capacity in the Availability Zone you "
    "requested (eu-west-1a). Launching EC2 instance failed."
)


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        pytest.param(CAPACITY, "insufficient-capacity", id="capacity"),
        pytest.param(
            "You have requested more vCPU capacity than your current vCPU limit of 32 allows "
            "for the instance bucket that the specified instance type belongs to.",
            "quota",
            id="vcpu-quota",
        ),
        pytest.param(
            "The image id '[ami-0abc]' does not exist. Launching EC2 instance failed.",
            "launch-template",
            id="missing-ami",
        ),
        pytest.param(
            "The specified launch template, with template ID lt-0abc, does not exist.",
            "launch-template",
            id="missing-template",
        ),
        pytest.param(
            "There are not enough free addresses in subnet 'subnet-0abc' to satisfy the "
            "requested number of instances.",
            "subnet-addresses",
            id="subnet-full",
        ),
        pytest.param("Something else went wrong.", "other", id="other"),
    ],
)
def test_causes_are_classified_from_aws_messages(message: str, cause: str) -> None:
    """Each failure message AWS gives maps to one cause label."""
    assert classify(message) == cause


def failing_group(fake: FakeAutoScaling, message: str = CAPACITY) -> None:
    fake.add_group("g", min_size=0, max_size=10, desired=0)
    fake.groups["g"].launch_failure = message


async def test_paging_reads_every_new_failure_once() -> None:
    """Failures spread over several pages are all counted, and a second read counts only
    what is new since the first."""
    fake = FakeAutoScaling()
    fake.activity_page = 2
    failing_group(fake)
    group = fake.groups["g"]
    for _ in range(5):
        group.record("Failed", CAPACITY)
    metrics = Metrics()
    tracker = LaunchTracker("p", metrics)
    health = await tracker.read(fake, "g", 100.0, time.time())
    assert health.failing and health.failures == 5
    tokens = [c.args[1] for c in fake.calls if c.operation == "DescribeScalingActivities"]
    assert tokens == [None, "2", "4"]
    await tracker.read(fake, "g", 101.0, time.time())
    group.record("Failed", CAPACITY)
    group.record("Successful", "Launching a new EC2 instance: i-0abc")
    for _ in range(3):
        group.record("Failed", "There are not enough free addresses in subnet 'subnet-1'")
    health = await tracker.read(fake, "g", 102.0, time.time())
    assert health.failures == 3 and health.cause == "subnet-addresses"
    count = sample(metrics, "launch_failures_total", pool="p", cause="subnet-addresses")
    assert count == 3


async def test_cursor_pages_back_to_the_last_seen() -> None:
    """With many new activities since the last read, the read pages until it meets one
    already settled, and no further."""
    fake = FakeAutoScaling()
    fake.activity_page = 3
    failing_group(fake)
    group = fake.groups["g"]
    group.record("Successful", "Launching a new EC2 instance: i-0abc")
    tracker = LaunchTracker("p")
    await tracker.read(fake, "g", 100.0, time.time())
    group.wall = lambda: time.time() + 5
    for _ in range(7):
        group.record("Failed", CAPACITY)
    fake.calls.clear()
    health = await tracker.read(fake, "g", 101.0, time.time())
    assert health.failures == 7
    assert len([c for c in fake.calls if c.operation == "DescribeScalingActivities"]) == 3


async def test_in_progress_launch_that_fails_later_is_counted() -> None:
    """An activity first seen in progress and failed by the next read counts as a failure."""
    fake = FakeAutoScaling()
    failing_group(fake)
    group = fake.groups["g"]
    pending = group.record("InProgress", "Launching a new EC2 instance: i-0abc")
    tracker = LaunchTracker("p")
    assert not (await tracker.read(fake, "g", 100.0, time.time())).failing
    group.activities[0] = ScalingActivity(
        pending.activity_id, "Failed", CAPACITY, pending.description, pending.started
    )
    assert (await tracker.read(fake, "g", 101.0, time.time())).failing


async def test_fresh_tracker_ignores_failures_older_than_lookback() -> None:
    """A restarted controller does not hold on failures from long before it started."""
    fake = FakeAutoScaling()
    failing_group(fake)
    fake.groups["g"].wall = lambda: time.time() - LOOKBACK - 60
    fake.groups["g"].record("Failed", CAPACITY)
    assert not (await LaunchTracker("p").read(fake, "g", 100.0, time.time())).failing


def fail(health: LaunchHealth, at: float) -> LaunchHealth:
    return health.failed(ScalingActivity("a", "Failed", CAPACITY, "Launching", 0.0), at)


def test_hold_backs_off_one_step_at_a_time() -> None:
    """The hold lasts 1 minute after the first failure; failures during it do not lengthen
    it; a failure after it doubles it, up to the cap."""
    health = fail(LaunchHealth(), 0.0)
    assert health.holding(BACKOFF_BASE - 1) and not health.holding(BACKOFF_BASE)
    assert fail(health, 30.0).retry_at == BACKOFF_BASE
    holds = []
    at = 0.0
    for _ in range(6):
        at = health.retry_at
        health = fail(health, at)
        holds.append(health.retry_at - at)
    assert holds == [120.0, 240.0, 480.0, BACKOFF_CAP, BACKOFF_CAP, BACKOFF_CAP]


def test_quiet_clears_the_streak() -> None:
    """With no failed launch for QUIET seconds, launches are taken to work again."""
    health = fail(LaunchHealth(), 0.0)
    assert health.settle(QUIET - 1).failing
    assert not health.settle(QUIET).failing


def test_planner_holds_capacity_while_launches_fail() -> None:
    """While the hold lasts the planner raises desired capacity no further, and says why in
    LaunchFailing; once it ends, one step is allowed."""
    fleet = ObservationBuilder()
    fleet.add(1, report())
    fleet.desired = 3
    held = fail(LaunchHealth(), NOW - 10)
    pool = spec(targetFree=6, capacity={"min": 0, "max": 10}, scaleOut={"maxStep": 1})
    result = plan(pool, dataclasses.replace(fleet.observed(), launches=held), NOW)
    assert not [a for a in result.actions if isinstance(a, SetDesiredCapacity)]
    failing = next(c for c in result.conditions if c.type == "LaunchFailing")
    assert failing.status and failing.reason == "InsufficientCapacity"
    assert "sufficient m5.large capacity" in failing.message
    later = plan(pool, dataclasses.replace(fleet.observed(), launches=held), NOW + BACKOFF_BASE)
    raised = [a.capacity for a in later.actions if isinstance(a, SetDesiredCapacity)]
    assert raised == [4]


def test_plan_requeues_for_when_the_hold_ends() -> None:
    """While launches are held the plan asks to run again when the hold ends, not a resync
    later; without a hold, or once it has ended, resync stands."""
    fleet = ObservationBuilder()
    fleet.desired = 3
    held = fail(LaunchHealth(), NOW - 10)
    pool = spec(targetFree=6, capacity={"min": 0, "max": 10}, resync="10m")
    observed = dataclasses.replace(fleet.observed(), launches=held)
    assert plan(pool, observed, NOW).requeue_after == pytest.approx(BACKOFF_BASE - 10)
    assert plan(pool, fleet.observed(), NOW).requeue_after == 600.0
    assert plan(pool, observed, NOW + BACKOFF_BASE).requeue_after == 600.0


async def test_pass_holds_after_failed_launches_and_steps_after_backoff() -> None:
    """Through the loop: the first raise fails in AWS, the next passes hold desired capacity
    and count the failures, and one more step comes after the backoff."""
    fake = FakeAutoScaling()
    failing_group(fake)
    clock = ManualClock()
    state = desired(
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {name: p}\nspec:\n"
        "  autoScalingGroupName: g\n  capacity: {min: 0, max: 10}\n  targetFree: 3\n"
        "  scaleOut: {maxStep: 1}\n"
    )
    controller = make_controller(state, fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    controller.metrics.set_pool(runner.pool)
    await runner.reconcile_once()
    assert fake.groups["g"].desired == 1
    for _ in range(3):
        await clock.advance(5)
        await runner.reconcile_once()
    assert fake.groups["g"].desired == 1
    assert runner._plan is not None
    failing = next(c for c in runner._plan.conditions if c.type == "LaunchFailing")
    assert failing.status and "holding desired capacity at 1" in failing.message
    count = sample(
        controller.metrics, "launch_failures_total", pool="p", cause="insufficient-capacity"
    )
    assert count == 1
    await clock.advance(BACKOFF_BASE)
    await runner.reconcile_once()
    assert fake.groups["g"].desired == 2


async def test_unreadable_activities_never_fail_the_pass() -> None:
    """Without DescribeScalingActivities (say, IAM lacks it), the pass scales as before."""
    fake = FakeAutoScaling()
    fake.add_group("g", min_size=0, max_size=10, desired=0)
    fake.fail("DescribeScalingActivities", "auth")
    clock = ManualClock()
    state = desired(
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {name: p}\nspec:\n"
        "  autoScalingGroupName: g\n  capacity: {min: 0, max: 10}\n  targetFree: 2\n"
    )
    controller = make_controller(state, fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    await runner.reconcile_once()
    assert fake.groups["g"].desired == 2

"""The warm-pool step against FakeAutoScaling (moto has no warmed instances): the warm pool
kept in place, deleted only when owned, dry-run, failures in /status, the count handed to the
planner, warm starts measured, and a scale-out served from the warm pool."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from controller.actuator import Actuator
from controller.aws import AutoScaling, TerminationHook
from controller.loop import PoolRunner
from controller.model import InstanceState, InstanceView, Observed, Plan
from controller.planner import plan as real_plan
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.spec import DesiredState, JibriPool, PoolSpec
from controller.store import ReportStore
from controller.warm_pool.api import WarmInstance, WarmPoolApi, WarmPoolConfig
from controller.warm_pool.rules import OWNER_TAG
from controller.warm_pool.step import WarmPoolSync
from tests.support.fake_autoscaling import FakeAutoScaling, ManualClock
from tests.support.observations import ObservationBuilder, spec

GROUP = "jibri"


def pool(**overrides: Any) -> JibriPool:
    return JibriPool.model_validate(
        {
            "apiVersion": "jibri-autoscaler/v1",
            "kind": "JibriPool",
            "metadata": {"name": "recorders"},
            "spec": spec(**overrides).model_dump(),
        }
    )


WARM = pool(warmPool={"minSize": 2, "maxPreparedCapacity": 6, "state": "Stopped"})
PLAIN = pool()


def setup(*, dry_run: bool = False) -> tuple[FakeAutoScaling, WarmPoolSync, ManualClock]:
    aws = FakeAutoScaling()
    aws.add_group(GROUP, min_size=0, max_size=10, desired=2)
    clock = ManualClock()

    async def apis(region: str | None) -> WarmPoolApi:
        return aws

    step = WarmPoolSync(
        apis=apis, metrics=Metrics(CollectorRegistry()), dry_run=dry_run, clock=clock
    )
    return aws, step, clock


def step_metric(step: WarmPoolSync, name: str, **labels: str) -> float | None:
    registry = step.base.registry
    return registry.get_sample_value(f"jibri_autoscaler_{name}", {"pool": "recorders", **labels})


def writes(aws: FakeAutoScaling) -> list[str]:
    return [c.operation for c in aws.mutations()]


async def test_an_absent_warm_pool_is_created_and_tagged() -> None:
    """PutWarmPool with the spec's values, after tagging the group as the pool's."""
    aws, step, _ = setup()
    await step.run_once(WARM)
    group = aws.groups[GROUP]
    assert writes(aws) == ["CreateOrUpdateTags", "PutWarmPool"]
    assert group.warm_pool == WarmPoolConfig(2, 6, "Stopped", False)
    assert group.tags[OWNER_TAG] == "recorders"
    assert len(group.warm) == 4


async def test_a_warm_pool_in_place_is_left_alone() -> None:
    """A second round over an unchanged warm pool writes nothing."""
    aws, step, _ = setup()
    await step.run_once(WARM)
    aws.calls.clear()
    await step.run_once(WARM)
    assert writes(aws) == []


async def test_drift_is_corrected() -> None:
    """A warm pool changed by hand is put back as the spec says, and /status names the drift."""
    aws, step, _ = setup()
    await step.run_once(WARM)
    aws.groups[GROUP].warm_pool = WarmPoolConfig(0, None, "Running", True)
    aws.calls.clear()
    await step.run_once(WARM)
    assert writes(aws) == ["CreateOrUpdateTags", "PutWarmPool"]
    assert aws.groups[GROUP].warm_pool == WarmPoolConfig(2, 6, "Stopped", False)
    assert step_metric(step, "warm_pool_changes_total", change="update") == 1
    status = step.pool_status("recorders")
    assert status is not None
    assert status["drift"] == ["minSize", "maxPreparedCapacity", "state", "reuseOnScaleIn"]


async def test_a_dropped_warm_pool_is_deleted_when_the_controller_made_it() -> None:
    """With warmPool gone from the spec, the pool's own (tagged) warm pool is deleted."""
    aws, step, _ = setup()
    await step.run_once(WARM)
    aws.calls.clear()
    await step.run_once(PLAIN)
    assert writes(aws) == ["DeleteWarmPool", "DeleteTags"]
    assert aws.groups[GROUP].warm_pool is None
    assert OWNER_TAG not in aws.groups[GROUP].tags


async def test_a_warm_pool_someone_else_made_is_left_alone() -> None:
    """A warm pool on the group without the ownership tag survives a spec without warmPool."""
    aws, step, _ = setup()
    await aws.put_warm_pool(GROUP, WarmPoolConfig(1))
    aws.calls.clear()
    await step.run_once(PLAIN)
    assert writes(aws) == []
    assert aws.groups[GROUP].warm_pool == WarmPoolConfig(1)
    status = step.pool_status("recorders")
    assert status is not None and status["change"] == "leave"


async def test_dry_run_writes_nothing() -> None:
    """In dry-run mode the step reads and decides, but neither tags nor puts."""
    aws, step, _ = setup(dry_run=True)
    await step.run_once(WARM)
    assert writes(aws) == []
    status = step.pool_status("recorders")
    assert status is not None and status["change"] == "create"


async def test_a_failing_call_shows_in_status_and_clears_on_success() -> None:
    """A throttled DescribeWarmPool is an error in /status, gone after the next good round."""
    aws, step, _ = setup()
    aws.fail("DescribeWarmPool")
    await step.run_once(WARM)
    status = step.pool_status("recorders")
    assert status is not None and "throttled" in str(status["error"])
    del aws.failures["DescribeWarmPool"]
    await step.run_once(WARM)
    status = step.pool_status("recorders")
    assert status is not None and status["error"] is None


async def test_before_plan_counts_warmed_instances_not_yet_in_the_group() -> None:
    """Observed.warm holds the warmed instances the group can draw on, with the default start."""
    aws, step, _ = setup()
    await step.run_once(WARM)
    aws.groups[GROUP].warm_up()
    await step.run_once(WARM)
    fleet = ObservationBuilder(desired=2)
    fleet.add_many(range(2))
    observed = step.before_plan(WARM.spec, fleet.observed(), "recorders")
    assert observed.warm is not None
    assert (observed.warm.count, observed.warm.start_seconds) == (4, 30.0)
    assert step.before_plan(PLAIN.spec, fleet.observed(), "recorders").warm is None


def idle_plan(instance_ids: list[str]) -> Plan:
    views = tuple(InstanceView(i, InstanceState.IDLE, False, 0.0) for i in instance_ids)
    return Plan(actions=(), requeue_after=1.0, instances=views, desired_capacity=len(views))


async def test_a_scale_out_draws_on_the_warm_pool_and_its_start_is_measured() -> None:
    """Raising desired capacity brings warmed instances in; their first idle pass times them."""
    aws, step, clock = setup()
    await step.run_once(WARM)
    group = aws.groups[GROUP]
    group.warm_up()
    await step.run_once(WARM)
    warmed = set(group.warm)
    await aws.set_desired_capacity(GROUP, 5)
    assert set(group.from_warm) <= warmed and len(group.from_warm) == 3
    fleet = ObservationBuilder(desired=5, instances=list(group.instances.values()))
    fleet.first_seen = dict.fromkeys(group.instances, clock.now)
    clock.advance(25.0)
    await step(WARM, fleet.observed(), idle_plan(list(group.instances)))
    await step.close()
    status = step.pool_status("recorders")
    assert status is not None
    assert (status["warmStartsMeasured"], status["warmStartSeconds"]) == (3, 25.0)
    assert step_metric(step, "warm_start_seconds") == 25.0


async def test_a_warmed_instance_held_by_the_termination_hook_is_let_go() -> None:
    """A Warmed:Terminating:Wait instance never recorded: its termination hook is completed
    once, and the instance is gone."""
    aws, step, _ = setup()
    group = aws.groups[GROUP]
    group.hooks = (TerminationHook("jibri-autoscaler-drain", 3600.0),)
    await step.run_once(WARM)
    leaving = next(iter(group.warm))
    group.warm[leaving] = WarmInstance(leaving, "Warmed:Terminating:Wait")
    aws.calls.clear()
    await step.run_once(WARM)
    completed = [c.args for c in aws.calls if c.operation == "CompleteLifecycleAction"]
    assert completed == [(GROUP, "jibri-autoscaler-drain", leaving, None, "CONTINUE")]
    assert leaving not in group.warm


async def test_a_pass_plans_with_the_warmed_instances() -> None:
    """The loop hands the planner Observed.warm from the step's last read of the warm pool;
    the warmed instances count as `warmed` and no action touches them."""
    aws, step, clock = setup()
    await step.run_once(WARM)
    aws.groups[GROUP].warm_up()
    await step.run_once(WARM)
    seen: list[Observed] = []

    def planner(pool_spec: PoolSpec, observed: Observed, now: float) -> Plan:
        seen.append(observed)
        return real_plan(pool_spec, observed, now)

    async def autoscaling(region: str | None) -> AutoScaling:
        return aws

    metrics = Metrics(CollectorRegistry())
    hand = clock.as_clock()
    controller = Controller(
        state=DesiredState((WARM,), "test.yaml"),
        store=ReportStore(),
        metrics=metrics,
        autoscaling=autoscaling,
        actuator=Actuator(metrics=metrics, clock=clock, dry_run=False),
        clock=hand,
        planner=planner,
        extra_steps=[step],
        plan_inputs=[step],
    )
    runner = PoolRunner(WARM, controller, started_at=clock.now)
    warmed = set(aws.groups[GROUP].warm)
    aws.calls.clear()
    await runner.reconcile_once()
    await step.close()
    assert seen[0].warm is not None and seen[0].warm.count == 4
    labels = {"pool": "recorders", "state": "warmed"}
    assert metrics.registry.get_sample_value("jibri_autoscaler_pool_instances", labels) == 4
    touched = {
        i for c in aws.mutations() for a in c.args for i in (a if isinstance(a, tuple) else (a,))
    }
    assert not touched & warmed


async def test_a_pool_without_warm_pool_is_looked_at_rarely() -> None:
    """Without warmPool the step reads the group once, then again only after 10 minutes."""
    aws, _, clock = setup()

    async def apis(region: str | None) -> WarmPoolApi:
        return aws

    step = WarmPoolSync(
        apis=apis, metrics=Metrics(CollectorRegistry()), clock=clock, min_interval=0.0
    )
    fleet = ObservationBuilder(desired=2, instances=list(aws.groups[GROUP].instances.values()))
    observed, empty = fleet.observed(), idle_plan([])

    def reads() -> int:
        return sum(1 for c in aws.calls if c.operation == "DescribeWarmPool")

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    await step(PLAIN, observed, empty)
    await settle()
    await step(PLAIN, observed, empty)
    await settle()
    assert reads() == 1
    clock.advance(600.0)
    await step(PLAIN, observed, empty)
    await settle()
    await step.close()
    assert reads() == 2

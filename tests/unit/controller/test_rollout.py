"""Rollout of a new launch template version (docs/fleet-operations.md): the phases `decide`
moves through, what the planner does in each, and the whole flow through the reconcile loop
over tests/support/fake_autoscaling.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from common.aiokits.clock import ManualClock
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.fleet.rollout import RolloutMemory, decide
from controller.loop import PoolRunner
from controller.model import (
    AsgInstance,
    DrainInstance,
    InstanceState,
    Observed,
    Plan,
    Reason,
    SetDesiredCapacity,
)
from controller.planner import plan
from controller.spec import PoolSpec
from tests.support.fake_autoscaling import FakeAutoScaling
from tests.support.observations import NOW, ObservationBuilder, iid, report, spec
from tests.unit.controller.test_loop import desired, make_controller

OLD_AMI, NEW_AMI = "ami-00000000000000001", "ami-00000000000000002"


def pool(**rollout: Any) -> PoolSpec:
    return spec(
        capacity={"min": 0, "max": 10},
        targetFree=1,
        rollout={"launchTemplateVersion": "2", "healthyFor": "60s", **rollout},
    )


class Fleet:
    """A group on launch template `lt-1` whose instances carry their version."""

    def __init__(self, version: str = "2") -> None:
        self.builder = ObservationBuilder()
        self.version = version

    def add(self, n: int, rep: Any, version: str = "1", seen: float = NOW - 3600) -> str:
        instance_id = self.builder.add(n, rep, seen=seen)
        self.builder.instances[-1] = AsgInstance(instance_id, "InService", template_version=version)
        return instance_id

    def observed(self) -> Observed:
        built = self.builder.observed()
        asg = dataclasses.replace(built.asg, template_id="lt-1", template_version=self.version)
        return dataclasses.replace(built, asg=asg)


def drains(result: Plan) -> dict[str, Reason]:
    return {a.instance_id: a.reason for a in result.actions if isinstance(a, DrainInstance)}


def test_switches_the_group_first() -> None:
    """A group on another version is set to the new one, remembering the old."""
    fleet = Fleet(version="1")
    fleet.add(1, report())
    memory = RolloutMemory()
    status, version = decide(pool(), fleet.observed(), memory, NOW)
    assert version == "2" and status is not None and status.phase == "switching"
    assert memory.previous == "1" and memory.before == {iid(1)}


def test_canaries_are_launched_on_top_of_the_target() -> None:
    """In the canary phase the planner launches the missing canaries even when the idle
    recorders already hold targetFree."""
    fleet = Fleet()
    for n in (1, 2):
        fleet.add(n, report())
    memory = RolloutMemory(target="2", previous="1", switched_at=NOW - 10, before=frozenset())
    status, version = decide(pool(canaries=2), fleet.observed(), memory, NOW)
    assert version is None and status is not None
    assert (status.phase, status.need) == ("canary", 2)
    result = plan(pool(canaries=2), dataclasses.replace(fleet.observed(), rollout=status), NOW)
    raised = [a.capacity for a in result.actions if isinstance(a, SetDesiredCapacity)]
    assert raised == [4]
    assert drains(result) == {}


def canary_memory(**kw: Any) -> RolloutMemory:
    return RolloutMemory(target="2", previous="1", switched_at=NOW - 300, **kw)


def test_healthy_canary_for_healthy_for_starts_the_rolling() -> None:
    """A canary idle and healthy for healthyFor passes; then idle instances on the old
    version retire with reason rollout, and a busy old one is left be."""
    fleet = Fleet()
    fleet.add(1, report())
    fleet.add(2, report())
    busy = fleet.add(3, report("BUSY"))
    canary = fleet.add(4, report(), version="2", seen=NOW - 200)
    memory = canary_memory(healthy_since={canary: NOW - 61})
    status, _ = decide(pool(), fleet.observed(), memory, NOW)
    assert status is not None and status.phase == "rolling" and memory.passed
    result = plan(pool(), dataclasses.replace(fleet.observed(), rollout=status), NOW)
    states = {v.instance_id: v.state for v in result.instances}
    assert states[iid(1)] is InstanceState.RETIRING and states[canary] is InstanceState.IDLE
    assert states[busy] is InstanceState.BUSY
    assert drains(result) == {iid(1): Reason.ROLLOUT}


def test_canary_not_yet_healthy_long_enough_waits() -> None:
    """A canary healthy for less than healthyFor keeps the rollout in the canary phase."""
    fleet = Fleet()
    fleet.add(1, report())
    canary = fleet.add(2, report(), version="2", seen=NOW - 200)
    memory = canary_memory(healthy_since={canary: NOW - 30})
    status, _ = decide(pool(), fleet.observed(), memory, NOW)
    assert status is not None and status.phase == "canary" and status.need == 0
    result = plan(pool(), dataclasses.replace(fleet.observed(), rollout=status), NOW)
    assert drains(result) == {}


@pytest.mark.parametrize(
    ("canary_report", "seen_ago", "switched_ago", "why"),
    [
        pytest.param(None, 700, 700, "did not boot", id="no-boot"),
        pytest.param(
            report("UNKNOWN", "UNKNOWN", jibri_seen=False), 700, 700, "did not boot", id="no-jibri"
        ),
        pytest.param(
            report("IDLE", "UNHEALTHY", unhealthy_for=301), 400, 400, "unhealthy", id="unhealthy"
        ),
        pytest.param(report("IDLE", "UNHEALTHY"), 100, 901, "canaryTimeout", id="timeout"),
    ],
)
def test_failing_canary_rolls_back(
    canary_report: Any, seen_ago: float, switched_ago: float, why: str
) -> None:
    """A canary that fails to boot, turns unhealthy, or is not healthy within canaryTimeout
    aborts the rollout: the group goes back to the previous version and the new instances
    retire."""
    fleet = Fleet()
    fleet.add(1, report())
    fleet.add(2, report())
    canary = fleet.add(3, canary_report, version="2", seen=NOW - seen_ago)
    memory = RolloutMemory(target="2", previous="1", switched_at=NOW - switched_ago)
    status, version = decide(pool(), fleet.observed(), memory, NOW)
    assert status is not None and status.phase == "rolled-back" and version == "1"
    assert memory.aborted is not None and why in memory.aborted
    assert status.new == (canary,)
    condition = status.condition()
    assert (condition.type, condition.status, condition.reason) == (
        "RollingOut",
        False,
        "RolledBack",
    )


def test_rolled_back_retires_the_new_ones_but_not_later_launches() -> None:
    """After a rollback an idle instance on the failed version retires (reason rollout);
    the replacements launched after the rollback are not mistaken for it."""
    fleet = Fleet(version="1")
    fleet.add(1, report())
    fleet.add(2, report())
    bad = fleet.add(3, report(), version="2")
    later = fleet.add(4, report(), version="1")
    memory = RolloutMemory(
        target="2",
        previous="1",
        switched_at=NOW - 900,
        before=frozenset({iid(1), iid(2)}),
        aborted="canary unhealthy",
        until=frozenset({iid(1), iid(2), bad}),
    )
    status, version = decide(pool(), fleet.observed(), memory, NOW)
    assert status is not None and version is None
    result = plan(pool(), dataclasses.replace(fleet.observed(), rollout=status), NOW)
    assert drains(result) == {bad: Reason.ROLLOUT}
    assert {v.instance_id: v.state for v in result.instances}[later] is InstanceState.IDLE


def test_image_id_judges_by_the_agents_ami() -> None:
    """With imageId, an instance is new when its agent reports that AMI, whatever the group
    says of its version."""
    fleet = Fleet()
    fleet.add(1, report()._replace(ami_id=OLD_AMI), version="2")
    fleet.add(2, report()._replace(ami_id=NEW_AMI), version="1")
    memory = canary_memory(passed=True)
    status, _ = decide(pool(imageId=NEW_AMI), fleet.observed(), memory, NOW)
    assert status is not None and status.new == (iid(2),) and status.old == 1


def test_complete_when_no_old_instance_is_left() -> None:
    """With every instance on the new version the rollout is complete and retires nothing."""
    fleet = Fleet()
    fleet.add(1, report(), version="2")
    status, _ = decide(pool(), fleet.observed(), canary_memory(passed=True), NOW)
    assert status is not None and status.phase == "complete"
    assert status.condition().status is False


def test_no_rollout_spec_means_no_status() -> None:
    """Without spec.rollout the tracker forgets and the planner sees nothing."""
    fleet = Fleet()
    memory = canary_memory(passed=True)
    assert decide(spec(), fleet.observed(), memory, NOW) == (None, None)
    assert memory.target is None


def test_group_without_launch_template_is_stuck_and_says_so() -> None:
    """A group on a launch configuration cannot be rolled: RollingOut says why, nothing moves."""
    fleet = Fleet()
    fleet.add(1, report())
    observed = fleet.observed()
    observed = dataclasses.replace(
        observed, asg=dataclasses.replace(observed.asg, template_id=None)
    )
    status, version = decide(pool(), observed, RolloutMemory(), NOW)
    assert version is None and status is not None and status.phase == "stuck"
    assert status.condition().reason == "Stuck" and "launch template" in status.message
    result = plan(pool(), dataclasses.replace(observed, rollout=status), NOW)
    assert drains(result) == {}


def test_a_new_target_version_starts_afresh() -> None:
    """Changing spec.rollout's version forgets an earlier abort and switches again."""
    fleet = Fleet(version="1")
    fleet.add(1, report())
    memory = RolloutMemory(target="2", previous="1", aborted="canary unhealthy")
    _, version = decide(pool(launchTemplateVersion="3"), fleet.observed(), memory, NOW)
    assert version == "3" and memory.aborted is None


def idle(instance_id: str, seq: int, ami: str | None = None) -> Report:
    return Report(
        instanceId=instance_id,
        bootId="b",
        seq=seq,
        jibri=JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY),
        amiId=ami,
    )


async def test_rollout_through_the_loop() -> None:
    """Through the loop over the fake: switch, one canary, canary healthy, then the old
    idle instances are drained one a pass with reason rollout after their replacements."""
    fake = FakeAutoScaling()
    old = fake.add_group("g", min_size=0, max_size=10, desired=2)
    group = fake.groups["g"]
    group.template_id, group.template_version = "lt-1", "1"
    clock = ManualClock()
    state = desired(
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {name: p}\nspec:\n"
        "  autoScalingGroupName: g\n  capacity: {min: 0, max: 10}\n  targetFree: 2\n"
        "  scaleIn: {maxStep: 1, idleFor: 1h}\n"
        "  rollout: {launchTemplateVersion: '2', canaries: 1, healthyFor: 10s}\n"
    )
    controller = make_controller(state, fake, clock)
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock.now())
    seq = 0

    async def report_all() -> None:
        nonlocal seq
        seq += 1
        for instance_id in group.instances:
            controller.store.accept(idle(instance_id, seq), clock.now(), managed=True)

    await report_all()
    await clock.advance(40)
    await report_all()
    await runner.reconcile_once()
    assert group.template_version == "2"
    await runner.reconcile_once()
    assert group.desired == 3  # the canary
    (canary,) = set(group.instances) - set(old)
    for _ in range(3):
        await clock.advance(6)
        await report_all()
        await runner.reconcile_once()
    assert runner.rollout.memory.passed
    drained: list[tuple[str, Reason, int]] = []
    for _ in range(4):
        await clock.advance(1)
        await report_all()
        await runner.reconcile_once()
        assert runner._plan is not None
        drained += [
            (a.instance_id, a.reason, group.desired)
            for a in runner._plan.actions
            if isinstance(a, DrainInstance)
        ]
    # The first old one leaves only once its replacement has come: capacity went 3 -> 4.
    assert drained[0][0] in old and drained[0][1:] == (Reason.ROLLOUT, 4)
    assert canary in group.instances

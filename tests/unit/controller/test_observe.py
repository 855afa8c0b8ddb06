"""observe(): folding an ASG view into pool memory, and what the loop then settles in the
report store and the actuation record (observe_pool)."""

from __future__ import annotations

from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.actuation import ActuationStatus
from controller.aws import TerminationHook
from controller.loop import observe_pool
from controller.model import AsgInstance, AsgView, Observed
from controller.observe import PoolMemory, read_group
from controller.spec import PoolSpec
from controller.store import ReportStore
from tests.support.fake_autoscaling import FakeAutoScaling

A, B, C = "i-0000000a", "i-0000000b", "i-0000000c"
HOOKS = (TerminationHook("a-hook", 120.0), TerminationHook("b-hook", 60.0))


def view(*instances: str | tuple[str, str]) -> AsgView:
    members = tuple(
        AsgInstance(i, "InService") if isinstance(i, str) else AsgInstance(i[0], i[1])
        for i in instances
    )
    return AsgView("jibri", 0, 10, len(members), members)


def report(instance_id: str, seq: int = 1) -> Report:
    return Report(
        instanceId=instance_id,
        bootId="b",
        seq=seq,
        jibri=JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY),
    )


def fold(
    asg: AsgView,
    hooks: tuple[TerminationHook, ...],
    store: ReportStore,
    memory: PoolMemory,
    now: float,
    actuation: ActuationStatus | None = None,
) -> Observed:
    """One pass's observation, as the loop takes it."""
    record = ActuationStatus() if actuation is None else actuation
    return observe_pool(asg, hooks, store, memory, record, now, unmanaged_ttl=60.0)


def test_first_seen_is_never_before_controller_start() -> None:
    """Instances present at start are first seen at the start, later ones when they appear."""
    memory, store = PoolMemory(started_at=100.0), ReportStore()
    fold(view(A), (), store, memory, 90.0)
    fold(view(A, B), (), store, memory, 130.0)
    observed = fold(view(A, B), (), store, memory, 150.0)
    assert observed.first_seen == {A: 100.0, B: 130.0}
    assert observed.controller_started_at == 100.0


def test_instances_that_left_are_forgotten() -> None:
    """An id gone from the ASG loses its report, drain request and first-seen time."""
    memory, store, actuation = PoolMemory(started_at=0.0), ReportStore(), ActuationStatus()
    fold(view(A, B), (), store, memory, 1.0, actuation)
    store.accept(report(B), 2.0, managed=True)
    actuation.drain_requested_now(B, 2.0)
    observed = fold(view(A), (), store, memory, 3.0, actuation)
    assert B not in observed.first_seen and B not in observed.drain_requested
    assert store.get(B) is None and not memory.owns(B)


def test_held_report_is_adopted_when_instance_appears() -> None:
    """A report received before the ASG listed the id is used once it does."""
    memory, store = PoolMemory(started_at=0.0), ReportStore()
    store.accept(report(C), 5.0, managed=False)
    observed = fold(view(C), (), store, memory, 6.0)
    assert observed.reports[C].received_at == 5.0
    assert store.unmanaged_count == 0


def test_old_unmanaged_reports_expire() -> None:
    """Held reports of ids in no ASG are dropped once older than the TTL."""
    memory, store = PoolMemory(started_at=0.0), ReportStore()
    store.accept(report(C), 5.0, managed=False)
    fold(view(A), (), store, memory, 30.0)
    assert store.get(C) is not None
    fold(view(A), (), store, memory, 70.0)
    assert store.get(C) is None


def test_lifecycle_wait_tracks_first_hook_and_keeps_its_start() -> None:
    """An instance in Terminating:Wait is held on the first uncompleted termination hook, and
    its wait keeps the time it was first seen waiting."""
    memory, store, actuation = PoolMemory(started_at=0.0), ReportStore(), ActuationStatus()
    waiting = view(A, (B, "Terminating:Wait"))
    fold(waiting, HOOKS, store, memory, 10.0, actuation)
    observed = fold(waiting, HOOKS, store, memory, 20.0, actuation)
    wait = observed.lifecycle_waits[B]
    assert (wait.hook_name, wait.started_at, wait.heartbeat_timeout) == ("a-hook", 10.0, 120.0)
    assert A not in observed.lifecycle_waits

    actuation.lifecycle_completed(B, "a-hook")
    observed = fold(waiting, HOOKS, store, memory, 30.0, actuation)
    assert observed.lifecycle_waits[B].hook_name == "b-hook"
    assert observed.lifecycle_waits[B].started_at == 30.0

    observed = fold(view(A, (B, "Terminating:Proceed")), HOOKS, store, memory, 40.0, actuation)
    assert observed.lifecycle_waits == {}


async def test_hooks_are_read_only_while_an_instance_waits() -> None:
    """DescribeLifecycleHooks is called only when some instance is in Terminating:Wait."""
    fake = FakeAutoScaling()
    ids = fake.add_group("jibri", min_size=0, max_size=5, desired=2)
    fake.groups["jibri"].hooks = HOOKS
    spec = PoolSpec.model_validate(
        {"autoScalingGroupName": "jibri", "capacity": {"min": 0, "max": 5}, "targetFree": 1}
    )
    _, hooks = await read_group(spec, fake)
    assert hooks == () and "DescribeLifecycleHooks" not in [c.operation for c in fake.calls]
    group = fake.groups["jibri"]
    group.instances[ids[0]] = AsgInstance(ids[0], "Terminating:Wait")
    _, hooks = await read_group(spec, fake)
    assert hooks == HOOKS

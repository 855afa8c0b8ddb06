"""The actuator (plan → AWS calls) and the AWS layer's own rules, behind in-actuation fakes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError

from controller.actuation import ActuationStatus
from controller.actuator import ActuationError, Actuator
from controller.aws import (
    AioAutoScaling,
    AwsError,
    AwsFailure,
    TerminationHook,
    classify,
    instrumented,
)
from controller.model import (
    Action,
    AsgInstance,
    AsgView,
    CompleteLifecycle,
    DrainInstance,
    LifecycleHeartbeat,
    Plan,
    Reason,
    SetBounds,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.observe import PoolMemory, observe
from controller.prometheus import Metrics
from tests.support.fake_autoscaling import FakeAutoScaling, ManualClock

GROUP = "jibri"


def make_plan(*actions: Action) -> Plan:
    return Plan(actions=actions, requeue_after=15.0, instances=(), desired_capacity=0)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"jibri_autoscaler_{name}", labels)
    return 0.0 if value is None else value


@pytest.fixture
def aws() -> tuple[FakeAutoScaling, list[str]]:
    fake = FakeAutoScaling()
    ids = fake.add_group(GROUP, min_size=1, max_size=10, desired=4)
    return fake, ids


async def execute(
    actuator: Actuator,
    fake: FakeAutoScaling,
    plan: Plan,
    actuation: ActuationStatus,
    *,
    now: float = 1000.0,
    triggered_at: float | None = None,
) -> None:
    await actuator.execute(
        "pool",
        GROUP,
        plan,
        autoscaling=fake,
        actuation=actuation,
        now=now,
        triggered_at=triggered_at,
    )


async def test_actions_run_in_plan_order(aws: tuple[FakeAutoScaling, list[str]]) -> None:
    """Each action becomes its AWS call, in the order the plan gives."""
    fake, ids = aws
    fake.groups[GROUP].hooks = ()
    plan = make_plan(
        SetBounds(1, 8, Reason.BOUNDS_DRIFT),
        SetProtection((ids[0],), True, Reason.BUSY),
        Terminate(ids[1], decrement=True, reason=Reason.DRAINED),
        SetDesiredCapacity(5, 3, Reason.BELOW_TARGET_FREE),
        LifecycleHeartbeat(ids[2], "hook", None, Reason.UPLOADS_PENDING),
        CompleteLifecycle(ids[3], "hook", None, Reason.LIFECYCLE_DRAINED),
    )
    await execute(
        Actuator(metrics=Metrics(), clock=ManualClock(), dry_run=False),
        fake,
        plan,
        ActuationStatus(),
    )
    assert [c.operation for c in fake.mutations()] == [
        "UpdateAutoScalingGroup",
        "SetInstanceProtection",
        "TerminateInstanceInAutoScalingGroup",
        "SetDesiredCapacity",
        "RecordLifecycleActionHeartbeat",
        "CompleteLifecycleAction",
    ]
    assert fake.mutations()[2].args == (ids[1], True)


async def test_drain_is_remembered_not_sent(aws: tuple[FakeAutoScaling, list[str]]) -> None:
    """A drain is recorded in the actuation status (for the next report answer), the latest
    request kept (it asks the boot held now); no AWS call."""
    fake, ids = aws
    actuation = ActuationStatus()
    actuation.drain_requested_now(ids[1], 5.0)
    plan = make_plan(
        DrainInstance(ids[0], Reason.IDLE_EXCESS), DrainInstance(ids[1], Reason.IDLE_EXCESS)
    )
    await execute(
        Actuator(metrics=Metrics(), clock=ManualClock(), dry_run=False),
        fake,
        plan,
        actuation,
        now=42.0,
    )
    assert fake.mutations() == []
    assert actuation.drain_requested == {ids[0]: 42.0, ids[1]: 42.0}


@pytest.mark.parametrize(
    ("capacity", "previous", "expected"),
    [
        pytest.param(6, 4, 77.0, id="up-records"),
        pytest.param(3, 4, None, id="down-does-not"),
    ],
)
async def test_scale_out_time_is_remembered(
    aws: tuple[FakeAutoScaling, list[str]], capacity: int, previous: int, expected: float | None
) -> None:
    """A successful upward SetDesiredCapacity sets last_scale_out_at; a downward one does not."""
    fake, _ = aws
    actuation = ActuationStatus()
    plan = make_plan(SetDesiredCapacity(capacity, previous, Reason.BELOW_TARGET_FREE))
    await execute(
        Actuator(metrics=Metrics(), clock=ManualClock(), dry_run=False),
        fake,
        plan,
        actuation,
        now=77.0,
    )
    assert actuation.last_scale_out_at == expected
    assert fake.groups[GROUP].desired == capacity


async def test_dry_run_changes_nothing_but_counts_and_logs(
    aws: tuple[FakeAutoScaling, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """In dry-run mode no AWS call is made and nothing is recorded; actions are counted and
    logged with dry_run: true."""
    fake, ids = aws
    metrics = Metrics()
    actuation = ActuationStatus()
    plan = make_plan(
        SetProtection((ids[0],), True, Reason.BUSY),
        SetDesiredCapacity(6, 4, Reason.BELOW_TARGET_FREE),
        DrainInstance(ids[1], Reason.IDLE_EXCESS),
    )
    caplog.set_level(logging.INFO, "controller.actuator")
    await execute(
        Actuator(metrics=metrics, clock=ManualClock(), dry_run=True),
        fake,
        plan,
        actuation,
        triggered_at=999.0,
    )
    assert fake.mutations() == []
    assert actuation.drain_requested == {} and actuation.last_scale_out_at is None
    assert (
        sample(
            metrics, "actions_total", pool="pool", action="scale-out", reason="below-target-free"
        )
        == 1
    )
    lines = [r.fields for r in caplog.records if r.getMessage() == "action"]  # type: ignore[attr-defined]
    assert [(f["action"], f["dry_run"], f["outcome"]) for f in lines] == [
        ("protect", True, "planned"),
        ("scale-out", True, "planned"),
        ("drain", True, "planned"),
    ]


async def test_one_failure_does_not_stop_independent_actions(
    aws: tuple[FakeAutoScaling, list[str]],
) -> None:
    """A failed action is reported in an aggregate error after the rest were tried."""
    fake, ids = aws
    fake.fail("SetInstanceProtection", "throttled")
    metrics = Metrics()
    actuation = ActuationStatus()
    plan = make_plan(
        SetProtection((ids[0],), True, Reason.BUSY),
        Terminate(ids[1], decrement=False, reason=Reason.UNHEALTHY),
        DrainInstance(ids[2], Reason.IDLE_EXCESS),
    )
    with pytest.raises(ActuationError) as caught:
        await execute(
            Actuator(metrics=metrics, clock=ManualClock(), dry_run=False), fake, plan, actuation
        )
    assert caught.value.kind == "throttled"
    assert [f.action.name for f in caught.value.failures] == ["protect"]
    assert ids[1] not in fake.groups[GROUP].instances
    assert ids[2] in actuation.drain_requested
    assert sample(metrics, "actions_total", pool="pool", action="protect", reason="busy") == 0
    assert sample(metrics, "actions_total", pool="pool", action="replace", reason="unhealthy") == 1


async def test_scale_in_is_skipped_after_a_failure(aws: tuple[FakeAutoScaling, list[str]]) -> None:
    """After a failed action, lowering desired capacity (the ASG would pick) is not attempted."""
    fake, ids = aws
    fake.fail("SetInstanceProtection")
    plan = make_plan(
        SetProtection((ids[0],), True, Reason.BUSY),
        SetDesiredCapacity(2, 4, Reason.ABOVE_MAX),
    )
    with pytest.raises(ActuationError):
        await execute(
            Actuator(metrics=Metrics(), clock=ManualClock(), dry_run=False),
            fake,
            plan,
            ActuationStatus(),
        )
    assert [c.operation for c in fake.mutations()] == ["SetInstanceProtection"]
    assert fake.groups[GROUP].desired == 4


async def test_decision_latency_measured_to_first_aws_call(
    aws: tuple[FakeAutoScaling, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """decision_latency_seconds observes report receipt → first AWS call, once per pass; each
    AWS action's log line says how long after the report it was issued."""
    fake, ids = aws
    metrics = Metrics()
    clock = ManualClock(100.25)
    plan = make_plan(
        DrainInstance(ids[0], Reason.IDLE_EXCESS),
        SetProtection((ids[1],), True, Reason.BUSY),
        SetDesiredCapacity(6, 4, Reason.BELOW_TARGET_FREE),
    )
    actuator = Actuator(metrics=metrics, clock=clock, dry_run=False)
    caplog.set_level(logging.INFO, "controller.actuator")
    await execute(actuator, fake, plan, ActuationStatus(), triggered_at=100.0)
    lines = [r.fields for r in caplog.records if r.getMessage() == "action"]  # type: ignore[attr-defined]
    assert [line.get("since_report_seconds") for line in lines] == [None, 0.25, 0.25]
    await execute(actuator, fake, plan, ActuationStatus(), triggered_at=None)
    assert sample(metrics, "decision_latency_seconds_count", pool="pool") == 1
    assert sample(metrics, "decision_latency_seconds_sum", pool="pool") == pytest.approx(0.25)


async def test_lifecycle_calls_feed_the_next_observation(
    aws: tuple[FakeAutoScaling, list[str]],
) -> None:
    """A sent heartbeat restarts the wait's heartbeat clock; a completed hook is remembered."""
    fake, ids = aws
    actuation, memory = ActuationStatus(), PoolMemory(started_at=0.0)
    waiting = AsgView(GROUP, 1, 10, 4, tuple(AsgInstance(i, "Terminating:Wait") for i in ids[:2]))
    hooks = (TerminationHook("hook", 60.0),)
    observe(waiting, hooks, lambda _: None, memory, actuation, 10.0)
    plan = make_plan(
        LifecycleHeartbeat(ids[0], "hook", None, Reason.BUSY),
        CompleteLifecycle(ids[1], "hook", None, Reason.LIFECYCLE_DRAINED),
    )
    await execute(
        Actuator(metrics=Metrics(), clock=ManualClock(), dry_run=False),
        fake,
        plan,
        actuation,
        now=50.0,
    )
    observed = observe(waiting, hooks, lambda _: None, memory, actuation, 55.0).observed
    assert observed.lifecycle_waits[ids[0]].last_heartbeat_at == 50.0
    assert ids[1] not in observed.lifecycle_waits
    assert actuation.completed_hooks(ids[1]) == {"hook"}


# --- the aiobotocore implementation, over a recording stand-in for the client -------------


class RecordingClient:
    """Answers the few client methods AioAutoScaling uses, recording each request."""

    def __init__(self, pages: list[dict[str, Any]] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._pages = list(pages or [])

    async def set_instance_protection(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("SetInstanceProtection", kwargs))
        return {}

    async def describe_auto_scaling_groups(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("DescribeAutoScalingGroups", kwargs))
        return self._pages.pop(0)

    async def set_desired_capacity(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("SetDesiredCapacity", kwargs))
        raise ClientError(
            {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "SetDesiredCapacity"
        )


async def test_protection_is_sent_in_batches_of_50() -> None:
    """SetInstanceProtection never carries more than 50 ids (AWS's limit; moto lets it pass)."""
    client = RecordingClient()
    autoscaling = AioAutoScaling(client, Metrics())  # type: ignore[arg-type]
    ids = [f"i-{n:017x}" for n in range(120)]
    await autoscaling.set_instance_protection(GROUP, ids, True)
    batches = [kwargs["InstanceIds"] for _, kwargs in client.requests]
    assert [len(b) for b in batches] == [50, 50, 20]
    assert [i for b in batches for i in b] == ids


async def test_describe_follows_pages_and_maps_fields() -> None:
    """describe_group follows NextToken and maps lifecycle, health and protection."""
    instance = {
        "InstanceId": "i-00000001",
        "LifecycleState": "Terminating:Wait",
        "HealthStatus": "Unhealthy",
        "ProtectedFromScaleIn": True,
    }
    group = {
        "AutoScalingGroupName": GROUP,
        "MinSize": 1,
        "MaxSize": 5,
        "DesiredCapacity": 2,
        "Instances": [instance],
    }
    client = RecordingClient(
        [{"AutoScalingGroups": [], "NextToken": "t1"}, {"AutoScalingGroups": [group]}]
    )
    metrics = Metrics()
    view = await AioAutoScaling(client, metrics).describe_group(GROUP)  # type: ignore[arg-type]
    assert [kwargs.get("NextToken") for _, kwargs in client.requests] == [None, "t1"]
    assert (view.min_size, view.max_size, view.desired) == (1, 5, 2)
    (only,) = view.instances
    assert (only.lifecycle_state, only.health_status, only.protected) == (
        "Terminating:Wait",
        "Unhealthy",
        True,
    )
    assert (
        sample(
            metrics,
            "aws_requests_total",
            service="autoscaling",
            operation="DescribeAutoScalingGroups",
            outcome="success",
        )
        == 2
    )


async def test_missing_group_is_not_found() -> None:
    """A group that does not exist is an AwsError of kind not-found, not an empty pool."""
    client = RecordingClient([{"AutoScalingGroups": []}])
    with pytest.raises(AwsError) as caught:
        await AioAutoScaling(client, Metrics()).describe_group(GROUP)  # type: ignore[arg-type]
    assert caught.value.kind == "not-found"


async def test_client_errors_become_aws_errors_and_are_counted() -> None:
    """A botocore failure is raised as AwsError with its kind, and counted as that outcome."""
    metrics = Metrics()
    autoscaling = AioAutoScaling(RecordingClient(), metrics)  # type: ignore[arg-type]
    with pytest.raises(AwsError) as caught:
        await autoscaling.set_desired_capacity(GROUP, 3)
    assert (caught.value.operation, caught.value.kind) == ("SetDesiredCapacity", "throttled")
    assert (
        sample(
            metrics,
            "aws_requests_total",
            service="autoscaling",
            operation="SetDesiredCapacity",
            outcome="throttled",
        )
        == 1
    )
    assert (
        sample(
            metrics,
            "aws_request_duration_seconds_count",
            service="autoscaling",
            operation="SetDesiredCapacity",
        )
        == 1
    )


def client_error(code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Op")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        pytest.param(client_error("Throttling"), "throttled", id="throttling"),
        pytest.param(client_error("RequestLimitExceeded"), "throttled", id="limit"),
        pytest.param(
            client_error("ValidationError", "bad capacity"), "validation", id="validation"
        ),
        pytest.param(
            client_error("ValidationError", "Instance Id not found - i-1"), "not-found", id="nf-msg"
        ),
        pytest.param(client_error("AccessDenied"), "auth", id="access-denied"),
        pytest.param(client_error("InternalFailure"), "other", id="internal-failure"),
        pytest.param(EndpointConnectionError(endpoint_url="http://x"), "transport", id="transport"),
        pytest.param(ResponseParserError("bad body"), "other", id="unparseable"),
    ],
)
def test_error_classification(exc: AwsFailure, kind: str) -> None:
    """botocore failures map to the kinds used as metric labels and in /status."""
    assert classify(exc) == kind


async def test_instrumented_passes_other_exceptions_through() -> None:
    """Non-AWS exceptions (bugs) are not disguised as AwsError, but the request is counted."""
    metrics = Metrics()

    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await instrumented(metrics, "autoscaling", "SetDesiredCapacity", broken())
    assert (
        sample(
            metrics,
            "aws_request_duration_seconds_count",
            service="autoscaling",
            operation="SetDesiredCapacity",
        )
        == 1
    )

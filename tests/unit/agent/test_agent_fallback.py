from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agent.fallback import Fallback, FallbackAwsError, Membership, wants_protection
from agent.jibri import UNKNOWN
from agent.metrics import AgentMetrics
from agent.status import LocalState, Signal
from common.wire import BusyStatus, HealthStatus, JibriStatus
from tests.support.loopback import eventually

INSTANCE = "i-0123456789abcdef0"


def jibri(busy: BusyStatus, health: HealthStatus = HealthStatus.HEALTHY) -> JibriStatus:
    return JibriStatus(busyStatus=busy, healthStatus=health)


def state(
    busy: BusyStatus = BusyStatus.IDLE,
    *,
    health: HealthStatus = HealthStatus.HEALTHY,
    draining: bool = False,
    drained: bool = False,
    pending: int = 0,
) -> LocalState:
    return LocalState(jibri(busy, health), draining, drained, pending)


@pytest.mark.parametrize(
    ("local", "protect", "free"),
    [
        pytest.param(state(), False, True, id="idle"),
        pytest.param(state(BusyStatus.BUSY), True, False, id="busy"),
        pytest.param(state(pending=1), True, False, id="uploads-pending"),
        pytest.param(LocalState(UNKNOWN, False, False, 0), True, False, id="unknown"),
        pytest.param(state(BusyStatus.EXPIRED), False, False, id="expired"),
        pytest.param(state(health=HealthStatus.UNHEALTHY), False, False, id="idle-unhealthy"),
        pytest.param(state(draining=True), True, False, id="draining"),
        pytest.param(state(draining=True, drained=True), False, False, id="drained"),
    ],
)
def test_protection_and_free_follow_the_classic_rule(
    local: LocalState, protect: bool, free: bool
) -> None:
    """Protected unless provably not recording; free only when idle, healthy and undisturbed."""
    assert wants_protection(local) is protect
    assert local.free is free


@dataclass
class FakeAws:
    membership_of: Membership | None = field(default_factory=lambda: Membership("jibri", False))
    fail: bool = False
    published: list[tuple[str, str, bool]] = field(default_factory=list)
    protections: list[bool] = field(default_factory=list)
    lookups: int = 0

    async def membership(self, instance_id: str) -> Membership | None:
        self.lookups += 1
        if self.fail:
            raise FallbackAwsError("DescribeAutoScalingInstances failed: boom")
        return self.membership_of

    async def set_protection(self, asg_name: str, instance_id: str, protected: bool) -> None:
        if self.fail:
            raise FallbackAwsError("SetInstanceProtection failed: boom")
        assert (asg_name, instance_id) == ("jibri", INSTANCE)
        self.protections.append(protected)
        if self.membership_of is not None:
            self.membership_of = Membership(asg_name, protected)

    async def put_jibri_free(self, namespace: str, asg_name: str, free: bool) -> None:
        if self.fail:
            raise FallbackAwsError("PutMetricData failed: boom")
        self.published.append((namespace, asg_name, free))


@dataclass
class Rig:
    aws: FakeAws = field(default_factory=FakeAws)
    local: LocalState = field(default_factory=state)
    silent: float = 0.0
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    signal: Signal = field(default_factory=Signal)

    def fallback(self, period: float = 60.0) -> Fallback:
        return Fallback(
            self.aws,
            instance_id=INSTANCE,
            namespace="Jibri",
            period=period,
            after=60.0,
            state=lambda: self.local,
            controller_silent_for=lambda: self.silent,
            signal=self.signal,
            metrics=self.metrics,
        )


async def test_publishes_jibri_free_per_instance() -> None:
    """JibriFree goes to the namespace with the instance's ASG as dimension: 1 free, 0 busy."""
    rig = Rig()
    fallback = rig.fallback()
    await fallback.publish()
    rig.local = state(BusyStatus.BUSY)
    await fallback.publish()
    assert rig.aws.published == [("Jibri", "jibri", True), ("Jibri", "jibri", False)]
    assert rig.aws.lookups == 1


async def test_controller_present_leaves_protection_alone() -> None:
    """While the controller accepts reports, the agent never touches protection."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=10)
    await rig.fallback().guard(refresh=True)
    assert rig.aws.protections == [] and rig.aws.lookups == 0


async def test_silent_controller_protects_busy_and_unprotects_idle() -> None:
    """With the controller away, busy → protected, idle → unprotected, sending only changes."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=61)
    fallback = rig.fallback()
    await fallback.guard(refresh=False)
    await fallback.guard(refresh=False)
    assert rig.aws.protections == [True] and fallback.active
    rig.local = state()
    await fallback.guard(refresh=False)
    assert rig.aws.protections == [True, False]
    assert rig.metrics.fallback_active._value.get() == 1


async def test_refresh_corrects_protection_changed_elsewhere() -> None:
    """A periodic refresh re-reads the ASG, so a flip made by someone else is corrected."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=61)
    fallback = rig.fallback()
    await fallback.guard(refresh=False)
    rig.aws.membership_of = Membership("jibri", False)
    await fallback.guard(refresh=False)
    assert rig.aws.protections == [True]
    await fallback.guard(refresh=True)
    assert rig.aws.protections == [True, True]


async def test_aws_errors_are_survived_and_retried() -> None:
    """Failing AWS calls are counted, and the next pass tries again."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=61)
    rig.aws.fail = True
    fallback = rig.fallback()
    await fallback.publish()
    await fallback.guard(refresh=False)
    rig.aws.fail = False
    await fallback.guard(refresh=False)
    assert rig.aws.protections == [True]
    errors = rig.metrics.registry.get_sample_value(
        "jibri_agent_fallback_actions_total", {"action": "lookup", "outcome": "error"}
    )
    assert errors == 2


async def test_instance_in_no_asg_is_skipped() -> None:
    """An instance outside any ASG publishes nothing and protects nothing."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=61)
    rig.aws.membership_of = None
    fallback = rig.fallback()
    await fallback.publish()
    await fallback.guard(refresh=True)
    assert rig.aws.published == [] and rig.aws.protections == []


@contextlib.asynccontextmanager
async def running(fallback: Fallback) -> AsyncIterator[None]:
    task = asyncio.create_task(fallback.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_loop_publishes_every_period() -> None:
    """The loop puts a JibriFree data point every period."""
    rig = Rig()
    async with running(rig.fallback(period=0.05)):
        await eventually(lambda: len(rig.aws.published) >= 3, what="three data points")


async def test_loop_acts_on_a_change_between_periods() -> None:
    """While the controller is away, a signalled change is acted on before the next period."""
    rig = Rig(silent=61)
    async with running(rig.fallback(period=3600)):
        await eventually(lambda: len(rig.aws.published) == 1, what="the first data point")
        rig.local = state(BusyStatus.BUSY)
        rig.signal.set()
        await eventually(lambda: rig.aws.protections == [True], what="protection")
    assert len(rig.aws.published) == 1


async def test_loop_takes_over_when_the_controller_falls_silent() -> None:
    """The guard starts when the silence passes the threshold, not at the next period."""
    rig = Rig(local=state(BusyStatus.BUSY), silent=59.9)
    async with running(rig.fallback(period=3600)):
        await eventually(lambda: len(rig.aws.published) == 1, what="the first data point")
        assert rig.aws.protections == []
        rig.silent = 61
        await eventually(lambda: rig.aws.protections == [True], what="protection")

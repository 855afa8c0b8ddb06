"""The termination lifecycle hook, end to end through the real loop, planner and actuator.

A fake with a real Terminating:Wait stands in for AWS (moto never makes instances wait).
"""

from __future__ import annotations

import uuid

from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.actuator import Actuator
from controller.aws import AutoScaling, TerminationHook
from controller.loop import Backoff, PoolRunner
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.spec import parse_desired_state
from controller.store import ReportStore
from tests.support.fake_autoscaling import ManualClock
from tests.support.lifecycle_fake import WAIT, HookedAutoScaling

GROUP = "jibri"
HEARTBEAT_TIMEOUT = 300.0
DRAIN_TIMEOUT = 1800.0
POOL = f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {{name: recorders}}
spec:
  autoScalingGroupName: {GROUP}
  capacity: {{min: 1, max: 10}}
  targetFree: 1
  instances: {{staleAfter: 30s, bootTimeout: 10m}}
  drain: {{timeout: {int(DRAIN_TIMEOUT)}s}}
  resync: 15s
"""


class Harness:
    """One pool runner over the hooked fake, with agents reporting through the store."""

    def __init__(self) -> None:
        self.clock = ManualClock(10_000.0)
        self.aws = HookedAutoScaling(self.clock, TerminationHook("drain-hook", HEARTBEAT_TIMEOUT))
        self.ids = self.aws.add_group(GROUP, min_size=1, max_size=10, desired=3)
        self.store = ReportStore()
        metrics = Metrics()

        async def autoscaling(region: str | None) -> AutoScaling:
            return self.aws

        self.controller = Controller(
            state=parse_desired_state(POOL, "test.yaml"),
            store=self.store,
            metrics=metrics,
            autoscaling=autoscaling,
            actuator=Actuator(metrics=metrics, clock=self.clock, dry_run=False),
            clock=self.clock.as_clock(),
            backoff=Backoff(base=0.01, cap=0.05),
        )
        self.runner = PoolRunner(
            self.controller.state.pools[0], self.controller, started_at=self.clock.now
        )
        self._boot = {i: str(uuid.uuid4()) for i in self.ids}
        self._seq = dict.fromkeys(self.ids, 0)

    def report(self, instance_id: str, busy: str = "IDLE", **fields: object) -> None:
        self._seq[instance_id] += 1
        report = Report(
            instanceId=instance_id,
            bootId=self._boot[instance_id],
            seq=self._seq[instance_id],
            jibri=JibriStatus(busyStatus=BusyStatus(busy), healthStatus=HealthStatus.HEALTHY),
            **fields,  # type: ignore[arg-type]
        )
        self.store.accept(report, self.clock.now, managed=True)

    async def advance(self, seconds: float, *, step: float = 10.0, **reports: object) -> None:
        """Let time pass in passes of `step` seconds, every agent reporting before each pass."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = min(end, self.clock.now + step)
            for instance_id, fields in reports.items():
                if instance_id in self.live():
                    self.report(instance_id, **fields)  # type: ignore[arg-type]
            await self.runner.reconcile_once()

    def live(self) -> set[str]:
        return set(self.aws.groups[GROUP].instances)

    def operations(self, name: str) -> list[tuple[object, ...]]:
        return [c.args for c in self.aws.calls if c.operation == name]


async def test_holds_with_heartbeats_while_uploads_pend_then_continues() -> None:
    """Heartbeats keep a terminating instance while uploads pend; CONTINUE once it is drained."""
    h = Harness()
    doomed, *others = h.ids
    busy = {"busy": "IDLE", "pendingUploads": 2}
    idle = {i: {"busy": "IDLE"} for i in others}
    await h.advance(40, **{doomed: busy}, **idle)
    h.aws.begin_termination(doomed)

    await h.advance(HEARTBEAT_TIMEOUT * 3, **{doomed: busy}, **idle)
    assert h.aws.groups[GROUP].instances[doomed].lifecycle_state == WAIT
    assert h.aws.expired == []
    assert h.operations("CompleteLifecycleAction") == []
    assert len(h.operations("RecordLifecycleActionHeartbeat")) >= 3
    assert doomed in h.runner.actuation.drain_requested

    # Uploading counts as busy: its drained report is believed staleAfter (30 s) later.
    await h.advance(10, **{doomed: {"busy": "IDLE", "drained": True}}, **idle)
    assert h.operations("CompleteLifecycleAction") == []
    await h.advance(30, **{doomed: {"busy": "IDLE", "drained": True}}, **idle)
    assert h.aws.completed == {doomed: "CONTINUE"}
    assert doomed not in h.live()
    assert h.aws.expired == []


async def test_no_heartbeat_before_half_the_timeout() -> None:
    """No heartbeat goes out before half the hook's heartbeat timeout has passed."""
    h = Harness()
    doomed, *others = h.ids
    idle = {i: {"busy": "IDLE"} for i in others}
    await h.advance(40, **{doomed: {"busy": "BUSY"}}, **idle)
    h.aws.begin_termination(doomed)
    await h.advance(HEARTBEAT_TIMEOUT / 2 - 20, **{doomed: {"busy": "BUSY"}}, **idle)
    assert h.operations("RecordLifecycleActionHeartbeat") == []
    assert h.operations("CompleteLifecycleAction") == []


async def test_continues_at_drain_timeout_and_not_before() -> None:
    """A recording that never ends is held until drain.timeout, then released with CONTINUE."""
    h = Harness()
    doomed, *others = h.ids
    busy = {"busy": "BUSY"}
    idle = {i: {"busy": "IDLE"} for i in others}
    await h.advance(40, **{doomed: busy}, **idle)
    h.aws.begin_termination(doomed)

    await h.advance(DRAIN_TIMEOUT - 20, **{doomed: busy}, **idle)
    assert h.operations("CompleteLifecycleAction") == []
    assert h.aws.expired == []
    assert doomed in h.live()

    await h.advance(30, **{doomed: busy}, **idle)
    assert h.aws.completed == {doomed: "CONTINUE"}
    assert h.aws.expired == []


async def test_busy_instance_is_asked_to_drain_not_released() -> None:
    """A busy instance being terminated is drained (no new recordings) and never released early."""
    h = Harness()
    doomed, *others = h.ids
    idle = {i: {"busy": "IDLE"} for i in others}
    await h.advance(40, **{doomed: {"busy": "BUSY"}}, **idle)
    h.aws.begin_termination(doomed)
    await h.advance(600, **{doomed: {"busy": "BUSY", "draining": True}}, **idle)
    assert doomed in h.runner.actuation.drain_requested
    assert h.operations("CompleteLifecycleAction") == []
    drained = {"busy": "IDLE", "draining": True, "drained": True}
    # A drained report is believed staleAfter (30 s) after the last busy one (docs/identity.md).
    await h.advance(10, **{doomed: drained}, **idle)
    assert h.operations("CompleteLifecycleAction") == []
    await h.advance(30, **{doomed: drained}, **idle)
    assert h.aws.completed == {doomed: "CONTINUE"}

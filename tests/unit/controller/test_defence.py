"""Defence in depth (controller.boots, docs/identity.md): reports from several boots of one
instance go through the real report store, then the planner. Whatever a second boot says, a
busy recorder is not drained, terminated, replaced or unprotected on its word."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.model import (
    CompleteLifecycle,
    DrainInstance,
    InstanceState,
    LifecycleWait,
    Plan,
    Reason,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.planner import plan
from controller.store import ReportStore
from tests.support.observations import NOW, ObservationBuilder, iid, report, spec

X = iid(1)
SA = 30.0
"""staleAfter of the spec used here."""


@dataclass
class Timeline:
    """Reports of instance X from named boots at given times, through a real ReportStore."""

    store: ReportStore = field(default_factory=ReportStore)
    seqs: dict[str, int] = field(default_factory=dict)
    drain_requested: dict[str, float] = field(default_factory=dict)

    def send(
        self, at: float, boot: str, busy: str = "IDLE", seq: int | None = None, **fields: Any
    ) -> None:
        self.seqs[boot] = self.seqs.get(boot, 0) + 1 if seq is None else seq
        wire = Report(
            instanceId=X,
            bootId=boot,
            seq=self.seqs[boot],
            jibri=JibriStatus(
                busyStatus=BusyStatus(busy),
                healthStatus=HealthStatus(fields.pop("health", "HEALTHY")),
            ),
            draining=fields.pop("draining", False),
            drained=fields.pop("drained", False),
            pendingUploads=fields.pop("uploads", 0),
        )
        assert not fields
        self.store.accept(wire, at, managed=True)

    def every(self, boot: str, start: float, end: float, busy: str = "IDLE", **f: Any) -> None:
        """One report a second from `start` to `end` (inclusive)."""
        at = start
        while at <= end:
            self.send(at, boot, busy, **dict(f))
            at += 1.0

    def plan(self, now: float, *, protected: bool = True, wait: float | None = None) -> Plan:
        fleet = ObservationBuilder(started_at=NOW - 3600)
        lifecycle = "Terminating:Wait" if wait is not None else "InService"
        fleet.add(1, self.store.get(X), protected=protected, lifecycle=lifecycle)
        # Three idle peers well past idleFor keep the pool above its targets.
        fleet.add_many(range(2, 5), report("IDLE", idle_for=900, now=now), seen=NOW - 3600)
        fleet.drain_requested.update(self.drain_requested)
        if wait is not None:
            fleet.lifecycle_waits[X] = LifecycleWait(X, "hook", None, wait, now, 300)
        return plan(spec(targetFree=2), fleet.observed(), now)


def state_of(result: Plan) -> InstanceState:
    return next(v.state for v in result.instances if v.instance_id == X)


def touched(result: Plan) -> list[str]:
    """What the plan does to X that could end its recording or expose it to scale-in."""
    done: list[str] = []
    for action in result.actions:
        match action:
            case Terminate(instance_id=i) if i == X:
                done.append(action.name)
            case DrainInstance(instance_id=i) if i == X:
                done.append(f"drain:{action.reason.value}")
            case SetProtection(protected=False) if X in action.instance_ids:
                done.append("unprotect")
            case CompleteLifecycle(instance_id=i) if i == X:
                done.append(f"continue:{action.reason.value}")
            case SetDesiredCapacity() if action.capacity < action.previous:
                done.append("scale-in")
    return done


T0 = NOW - 100.0
"""When the genuine boot A starts reporting in every scenario."""

ATTACKS = {
    "drained": {"drained": True},
    "draining-drained": {"draining": True, "drained": True},
    "expired": {"busy": "EXPIRED"},
    "idle": {},
    "unhealthy": {"health": "UNHEALTHY"},
}


@pytest.mark.parametrize("fields", [pytest.param(f, id=k) for k, f in ATTACKS.items()])
@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        pytest.param(0.1, InstanceState.BUSY, id="before-a-reports-again"),
        pytest.param(1.1, InstanceState.CONFLICTED, id="after-a-reports-again"),
    ],
)
def test_second_boot_cannot_touch_a_busy_recorder(
    fields: dict[str, Any], gap: float, expected: InstanceState
) -> None:
    """A fresh boot's report for a busy recorder (another boot reporting BUSY every second)
    leaves it busy, then conflicted once A reports again: never drained, terminated,
    replaced or unprotected, capacity never lowered."""
    t = Timeline()
    t.every("A", T0, NOW - 10.5, "BUSY")
    t.send(NOW - 10.0, "C", **dict(fields))
    if gap > 1.0:
        t.send(NOW - 9.5, "A", "BUSY")
    result = t.plan(NOW - 10.0 + gap)
    assert state_of(result) is expected
    assert touched(result) == []


@pytest.mark.parametrize("fields", [pytest.param(f, id=k) for k, f in ATTACKS.items()])
@pytest.mark.parametrize(
    "asked", [pytest.param(False, id="unasked"), pytest.param(True, id="asked")]
)
def test_stolen_credential_cannot_touch_a_busy_recorder(
    fields: dict[str, Any], asked: bool
) -> None:
    """A second sender with the busy recorder's own boot and credential jumps its seq ahead:
    its word waits staleAfter after the last busy report, so nothing ends the recorder; the
    genuine agent's next report (seq going back) makes it conflicted."""
    t = Timeline()
    if asked:
        t.drain_requested[X] = NOW - 60.0
    t.every("A", T0, NOW - 10.5, "BUSY")
    t.send(NOW - 10.0, "A", seq=1_000_000, **dict(fields))
    before = t.plan(NOW - 9.9)
    assert touched(before) == []
    t.send(NOW - 9.5, "A", "BUSY", seq=t.seqs["A"] - 999_000)
    after = t.plan(NOW - 9.4)
    assert state_of(after) is InstanceState.CONFLICTED and touched(after) == []


def test_attack_while_the_recorder_drains_does_not_end_it() -> None:
    """A busy recorder asked to drain: a fresh boot saying drained is not the boot asked."""
    t = Timeline()
    t.every("A", T0, NOW - 50.5, "BUSY")
    t.drain_requested[X] = NOW - 50.0
    t.every("A", NOW - 50.0, NOW - 10.5, "BUSY", draining=True)
    t.send(NOW - 10.0, "C", draining=True, drained=True)
    assert state_of(t.plan(NOW - 9.9)) is InstanceState.BUSY
    t.send(NOW - 9.5, "A", "BUSY", draining=True)
    result = t.plan(NOW - 9.4)
    assert state_of(result) is InstanceState.CONFLICTED and touched(result) == []


@pytest.mark.parametrize(
    ("second", "expected", "actions"),
    [
        pytest.param({}, InstanceState.IDLE, [], id="idle"),
        pytest.param({"busy": "BUSY"}, InstanceState.BUSY, [], id="busy"),
        pytest.param({"busy": "EXPIRED"}, InstanceState.EXPIRED, [], id="expired-waits"),
        pytest.param({"drained": True}, InstanceState.DRAINING, [], id="drained-unasked"),
    ],
)
def test_restart_is_heard_at_once(
    second: dict[str, Any], expected: InstanceState, actions: list[str]
) -> None:
    """An agent restart (A falls silent, B reports a second later) is no conflict: B's report
    gives the state at once; what would end the instance waits until B has settled."""
    t = Timeline()
    t.every("A", T0, NOW - 11.0)
    t.send(NOW - 10.0, "B", **dict(second))
    result = t.plan(NOW - 9.9, protected=False)
    assert state_of(result) is expected
    assert touched(result) == actions


def test_restart_of_a_busy_recorder_stays_busy_until_settled() -> None:
    """A restart right after BUSY reports keeps the instance busy (protected) for staleAfter
    after the last busy report, then B's word counts."""
    t = Timeline()
    t.every("A", T0, NOW - 41.0, "BUSY")
    t.every("B", NOW - 40.0, NOW - 39.0)
    unsettled = t.plan(NOW - 39.0)
    assert state_of(unsettled) is InstanceState.BUSY and touched(unsettled) == []
    t.every("B", NOW - 38.0, NOW)
    settled = t.plan(NOW)
    assert state_of(settled) is InstanceState.IDLE and touched(settled) == ["unprotect"]


@pytest.mark.parametrize(
    ("asked_at", "drainer", "expected", "actions"),
    [
        pytest.param(
            NOW - 20.0, "A", InstanceState.DRAINED, ["terminate"], id="asked-boot-drained"
        ),
        pytest.param(None, "A", InstanceState.DRAINING, ["drain:confirm-drain"], id="unasked"),
        pytest.param(NOW - 20.0, "B", InstanceState.DRAINING, [], id="new-boot-unsettled"),
        pytest.param(
            NOW - 50.0,
            "B-settled",
            InstanceState.DRAINING,
            ["drain:confirm-drain"],
            id="new-boot-settled-asked-again",
        ),
    ],
)
def test_drained_ends_only_the_boot_asked(
    asked_at: float | None, drainer: str, expected: InstanceState, actions: list[str]
) -> None:
    """A drained report terminates the instance only from the boot held when the controller
    last asked; a boot that drained unasked is asked again once settled."""
    t = Timeline()
    if asked_at is not None:
        t.drain_requested[X] = asked_at
    if drainer == "A":
        t.every("A", T0, NOW - 1.0, draining=True, drained=True)
    elif drainer == "B":
        t.every("A", T0, NOW - 11.0, draining=True)
        t.every("B", NOW - 10.0, NOW - 1.0, draining=True, drained=True)
    else:
        t.every("A", T0, NOW - 46.0, draining=True)
        t.every("B", NOW - 45.0, NOW - 1.0, draining=True, drained=True)
    result = t.plan(NOW, protected=False)
    assert state_of(result) is expected
    assert touched(result) == actions


def test_asking_again_lets_the_new_boot_finish() -> None:
    """After the confirm-drain request (recorded at the pass), the settled boot's drained
    report terminates the instance."""
    t = Timeline()
    t.drain_requested[X] = NOW - 50.0
    t.every("A", T0, NOW - 46.0, draining=True)
    t.every("B", NOW - 45.0, NOW - 1.0, draining=True, drained=True)
    t.drain_requested[X] = NOW
    result = t.plan(NOW + 0.5, protected=False)
    assert state_of(result) is InstanceState.DRAINED and touched(result) == ["terminate"]


@pytest.mark.parametrize(
    ("since", "uploads", "expected", "actions"),
    [
        pytest.param(NOW - 60, 0, InstanceState.EXPIRED, ["replace"], id="settled-empty-spool"),
        pytest.param(NOW - 60, 2, InstanceState.BUSY, [], id="settled-uploading"),
        pytest.param(NOW - 20, 0, InstanceState.EXPIRED, [], id="first-report-recent"),
    ],
)
def test_expired_is_replaced_only_from_a_settled_boot_with_empty_spool(
    since: float, uploads: int, expected: InstanceState, actions: list[str]
) -> None:
    """EXPIRED replaces the instance only once its boot has reported alone for staleAfter
    and its spool is empty."""
    t = Timeline()
    t.every("A", since, NOW - 1.0, "EXPIRED", uploads=uploads)
    result = t.plan(NOW, protected=False)
    assert state_of(result) is expected
    assert touched(result) == actions


@pytest.mark.parametrize(
    ("silent", "winner", "expected"),
    [
        pytest.param("C", "A", InstanceState.BUSY, id="attacker-silent-a-wins"),
        pytest.param("A", "C", InstanceState.IDLE, id="a-silent-c-wins"),
    ],
)
def test_conflict_ends_when_one_boot_is_silent_for_stale_after(
    silent: str, winner: str, expected: InstanceState
) -> None:
    """Two boots reporting in turn are conflicted until one has been silent for staleAfter;
    then the live one's reports count."""
    t = Timeline()
    for second in range(40):
        at = NOW - 80.0 + second
        t.send(at, "A", "BUSY")
        t.send(at + 0.5, "C")
    assert state_of(t.plan(NOW - 40.0)) is InstanceState.CONFLICTED
    busy = "BUSY" if winner == "A" else "IDLE"
    t.every(winner, NOW - 39.0, NOW - 20.0, busy)
    assert state_of(t.plan(NOW - 20.0)) is InstanceState.CONFLICTED
    t.every(winner, NOW - 19.0, NOW, busy)
    assert state_of(t.plan(NOW)) is expected


def test_rotating_fresh_boots_are_conflicted() -> None:
    """A fresh boot per report (each a takeover) is conflicted from the second takeover."""
    t = Timeline()
    t.every("A", T0, NOW - 11.0, "BUSY")
    for n in range(4):
        t.send(NOW - 10.0 + 0.2 * n, f"C{n}")
    result = t.plan(NOW - 9.0)
    assert state_of(result) is InstanceState.CONFLICTED and touched(result) == []


def test_conflict_is_a_condition_with_both_boots() -> None:
    """/status shows a Conflicted condition naming the instance and both boots."""
    t = Timeline()
    t.every("A", T0, NOW - 2.0, "BUSY")
    t.send(NOW - 1.5, "C")
    t.send(NOW - 1.0, "A", "BUSY")
    result = t.plan(NOW)
    conflicted = [c for c in result.conditions if c.type == "Conflicted"]
    assert len(conflicted) == 1 and conflicted[0].status
    assert X in conflicted[0].message
    assert "boots A and C" in conflicted[0].message


def test_conflicted_is_protected() -> None:
    """A conflicted instance the ASG does not protect is protected (reason conflicted)."""
    t = Timeline()
    t.every("A", T0, NOW - 2.0)
    t.send(NOW - 1.5, "C")
    t.send(NOW - 1.0, "A")
    result = t.plan(NOW, protected=False)
    assert SetProtection((X,), True, Reason.CONFLICTED) in result.actions


@pytest.mark.parametrize(
    ("busy_until", "drainer", "actions"),
    [
        pytest.param(NOW - 40.0, "A", ["continue:lifecycle-drained"], id="boot-held-at-wait-start"),
        pytest.param(NOW - 2.0, "A", [], id="same-boot-busy-lately"),
        pytest.param(NOW - 40.0, "C", [], id="fresh-boot"),
        pytest.param(NOW - 40.0, "A-busy", [], id="drained-but-busy"),
    ],
)
def test_lifecycle_wait_continues_only_for_the_boot_asked(
    busy_until: float, drainer: str, actions: list[str]
) -> None:
    """In Terminating:Wait, a drained report ends the wait only from the boot held when the
    wait began (or the controller last asked), never while it says BUSY, and only staleAfter
    after the instance last said busy (a stolen credential's word waits for the agent's)."""
    t = Timeline()
    t.every("A", T0, busy_until, "BUSY")
    t.every("A", busy_until + 1.0, NOW - 2.0, draining=True)
    t.drain_requested[X] = NOW - 60.0
    busy = "BUSY" if drainer == "A-busy" else "IDLE"
    t.send(NOW - 1.0, drainer[0], busy, draining=True, drained=True)
    result = t.plan(NOW, wait=NOW - 60.0)
    assert [a for a in touched(result) if a.startswith("continue")] == actions

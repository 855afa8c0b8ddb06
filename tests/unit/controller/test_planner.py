"""Table tests for the planner's rules (docs/design.md §4, §5)."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import pytest

from controller.derive import derive_all
from controller.model import (
    Action,
    CompleteLifecycle,
    DrainInstance,
    InstanceState,
    LifecycleHeartbeat,
    LifecycleWait,
    Plan,
    Reason,
    ReportView,
    SetBounds,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.planner import plan
from tests.support.observations import NOW, STARTED, ObservationBuilder, report, spec

A = TypeVar("A", bound=Action)


def of(result: Plan, kind: type[A]) -> list[A]:
    return [a for a in result.actions if isinstance(a, kind)]


def states(result: Plan) -> dict[str, InstanceState]:
    return {v.instance_id: v.state for v in result.instances}


def protected_ids(result: Plan) -> set[str]:
    return {i for a in of(result, SetProtection) if a.protected for i in a.instance_ids}


# --- state derivation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rep", "kwargs", "expected"),
    [
        pytest.param(report("IDLE"), {}, InstanceState.IDLE, id="idle"),
        pytest.param(report("BUSY"), {}, InstanceState.BUSY, id="busy"),
        pytest.param(report("IDLE", pending_uploads=2), {}, InstanceState.BUSY, id="uploads-busy"),
        pytest.param(report("EXPIRED"), {}, InstanceState.EXPIRED, id="expired"),
        pytest.param(
            report("EXPIRED", pending_uploads=1), {}, InstanceState.BUSY, id="expired-uploading"
        ),
        pytest.param(report("IDLE", "UNHEALTHY"), {}, InstanceState.UNHEALTHY, id="unhealthy"),
        pytest.param(report("UNKNOWN", "UNKNOWN"), {}, InstanceState.UNHEALTHY, id="jibri-down"),
        pytest.param(
            report("UNKNOWN", "UNKNOWN", jibri_seen=False),
            {"seen": NOW - 30},
            InstanceState.STARTING,
            id="agent-up-before-jibri",
        ),
        pytest.param(
            report("UNKNOWN", "UNKNOWN", jibri_seen=False),
            {"seen": NOW - 601},
            InstanceState.FAILED_BOOT,
            id="jibri-never-up",
        ),
        pytest.param(report("IDLE", age=31), {}, InstanceState.STALE, id="stale"),
        pytest.param(report("IDLE", draining=True), {}, InstanceState.DRAINING, id="draining"),
        pytest.param(report("BUSY", draining=True), {}, InstanceState.DRAINING, id="drain-busy"),
        pytest.param(
            report("IDLE", drained=True), {}, InstanceState.DRAINING, id="drained-unasked"
        ),
        pytest.param(
            report("IDLE", drained=True, pending_uploads=1),
            {},
            InstanceState.BUSY,
            id="drained-but-uploading-is-busy",
        ),
        pytest.param(None, {"seen": NOW - 30}, InstanceState.STARTING, id="starting"),
        pytest.param(None, {"seen": NOW - 601}, InstanceState.FAILED_BOOT, id="failed-boot"),
        pytest.param(
            None, {"protected": True}, InstanceState.STALE, id="protected-at-start-silent"
        ),
        pytest.param(
            report("BUSY"),
            {"lifecycle": "Terminating:Wait"},
            InstanceState.TERMINATING,
            id="terminating",
        ),
        pytest.param(report("IDLE"), {"lifecycle": "Standby"}, InstanceState.STANDBY, id="standby"),
    ],
)
def test_state_derivation(rep, kwargs, expected) -> None:  # type: ignore[no-untyped-def]
    """Each combination of ASG lifecycle and report maps to the state of docs/design.md §4."""
    fleet = ObservationBuilder()
    instance_id = fleet.add(1, rep, **kwargs)
    assert states(plan(spec(), fleet.observed(), NOW))[instance_id] is expected


@pytest.mark.parametrize(
    ("lineage", "expected"),
    [
        pytest.param(
            {"boot_since": NOW - 10, "rival_boot": "a", "rival_since": NOW - 20},
            InstanceState.CONFLICTED,
            id="second-takeover-within-stale-after",
        ),
        pytest.param(
            {"boot_since": NOW - 10, "rival_boot": "a", "rival_since": NOW - 50},
            InstanceState.IDLE,
            id="takeovers-far-apart",
        ),
        pytest.param(
            {"boot_since": NOW - 40, "rival_boot": "a", "rival_since": NOW - 50},
            InstanceState.IDLE,
            id="conflict-over",
        ),
        pytest.param(
            {"boot_since": NOW - 5, "rival_boot": "a", "rival_busy_at": NOW - 6},
            InstanceState.BUSY,
            id="earlier-boot-busy",
        ),
        pytest.param(
            {"boot_since": NOW - 40, "rival_boot": "a", "rival_busy_at": NOW - 41},
            InstanceState.IDLE,
            id="earlier-boot-busy-long-ago",
        ),
    ],
)
def test_state_from_boot_lineage(lineage: dict[str, Any], expected: InstanceState) -> None:
    """How the held boot came to be held can make an idle report conflicted or busy."""
    fleet = ObservationBuilder()
    instance_id = fleet.add(1, report("IDLE")._replace(boot_id="b", **lineage))
    assert states(plan(spec(), fleet.observed(), NOW))[instance_id] is expected


def test_boot_timeout_counts_from_controller_start() -> None:
    """An instance launched long before a controller restart is not failed-boot at once."""
    fleet = ObservationBuilder(started_at=NOW - 60)
    instance_id = fleet.add(1, seen=NOW - 60)
    assert states(plan(spec(), fleet.observed(), NOW))[instance_id] is InstanceState.STARTING


# --- scale out ------------------------------------------------------------------------------


def test_scale_out_by_gap_and_protect_busy() -> None:
    """Three busy instances with targetFree 2 raise desired to 5 and protect all three."""
    fleet = ObservationBuilder()
    ids = fleet.add_many(range(3), report("BUSY"))
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, SetDesiredCapacity) == [SetDesiredCapacity(5, 3, Reason.BELOW_TARGET_FREE)]
    assert protected_ids(result) == set(ids)
    assert result.desired_capacity == 5


@pytest.mark.parametrize(
    ("busy", "overrides", "expected"),
    [
        pytest.param(3, {"scaleOut": {"maxStep": 1}}, 4, id="capped-by-max-step"),
        pytest.param(9, {}, 10, id="capped-by-max"),
        pytest.param(10, {}, None, id="at-max-no-action"),
        pytest.param(2, {"targetFree": 0}, None, id="target-zero"),
    ],
)
def test_scale_out_caps(busy: int, overrides: dict[str, object], expected: int | None) -> None:
    """Scale-out is capped by scaleOut.maxStep and capacity.max."""
    fleet = ObservationBuilder()
    fleet.add_many(range(busy), report("BUSY"))
    capacity = of(plan(spec(**overrides), fleet.observed(), NOW), SetDesiredCapacity)
    assert [a.capacity for a in capacity] == ([] if expected is None else [expected])


def test_launches_owed_by_the_asg_count_as_free() -> None:
    """Desired above the live count means launches are coming: no second scale-out."""
    fleet = ObservationBuilder(desired=5)
    fleet.add_many(range(3), report("BUSY"))
    assert of(plan(spec(), fleet.observed(), NOW), SetDesiredCapacity) == []


def test_starting_instances_count_as_free() -> None:
    """Booting instances that have not reported yet are future free recorders."""
    fleet = ObservationBuilder()
    fleet.add_many(range(3), report("BUSY"))
    fleet.add_many(range(3, 5), seen=NOW - 30)
    assert of(plan(spec(), fleet.observed(), NOW), SetDesiredCapacity) == []


def test_draining_counts_as_gone() -> None:
    """A draining instance is not free, so demand arriving meanwhile is covered by scale-out."""
    fleet = ObservationBuilder()
    fleet.add(1, report("IDLE"))
    fleet.add(2, report("IDLE", draining=True))
    assert of(plan(spec(), fleet.observed(), NOW), SetDesiredCapacity) == [
        SetDesiredCapacity(3, 2, Reason.BELOW_TARGET_FREE)
    ]


def test_stale_counts_as_busy() -> None:
    """A silent instance is treated as busy: protected and not free."""
    fleet = ObservationBuilder()
    stale = fleet.add(1, report("IDLE", age=45))
    fleet.add(2, report("IDLE"))
    result = plan(spec(), fleet.observed(), NOW)
    assert protected_ids(result) == {stale}
    assert [a.capacity for a in of(result, SetDesiredCapacity)] == [3]


@pytest.mark.parametrize(
    ("desired", "expected", "reason"),
    [
        pytest.param(0, 1, Reason.BELOW_MIN, id="raised-to-min"),
        pytest.param(14, 10, Reason.ABOVE_MAX, id="lowered-to-max"),
    ],
)
def test_capacity_is_kept_within_bounds(desired: int, expected: int, reason: Reason) -> None:
    """Capacity set outside [min, max] by hand is brought back."""
    fleet = ObservationBuilder(desired=desired)
    fleet.add_many(range(min(desired, 12)), report("IDLE"))
    result = plan(spec(targetFree=0), fleet.observed(), NOW)
    assert of(result, SetDesiredCapacity) == [SetDesiredCapacity(expected, desired, reason)]


def test_asg_bounds_follow_the_spec() -> None:
    """The ASG's own MinSize/MaxSize are set to the spec's when they differ."""
    fleet = ObservationBuilder(min_size=0, max_size=3)
    fleet.add_many(range(2), report("IDLE"))
    assert of(plan(spec(), fleet.observed(), NOW), SetBounds) == [
        SetBounds(1, 10, Reason.BOUNDS_DRIFT)
    ]


# --- scale in -------------------------------------------------------------------------------


def test_scale_in_drains_longest_idle_first() -> None:
    """With excess free, the instance idle the longest is drained; the ASG never picks."""
    fleet = ObservationBuilder()
    fleet.add(1, report("IDLE", idle_for=400))
    longest = fleet.add(2, report("IDLE", idle_for=900))
    fleet.add(3, report("IDLE", idle_for=600))
    fleet.add(4, report("IDLE", idle_for=350))
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, DrainInstance) == [DrainInstance(longest, Reason.IDLE_EXCESS)]
    assert of(result, SetDesiredCapacity) == []
    assert of(result, Terminate) == []


@pytest.mark.parametrize(
    ("idle_for", "count", "overrides", "fleet_kw", "expected"),
    [
        pytest.param([100, 200, 250, 299], 4, {}, {}, 0, id="not-idle-long-enough"),
        pytest.param([900] * 6, 6, {"scaleIn": {"maxStep": 3}}, {}, 3, id="max-step"),
        pytest.param([900] * 6, 6, {"scaleIn": {"maxStep": 9}}, {}, 4, id="excess"),
        pytest.param(
            [900] * 3,
            3,
            {"targetFree": 0, "capacity": {"min": 2, "max": 10}, "scaleIn": {"maxStep": 9}},
            {},
            1,
            id="min",
        ),
        pytest.param(
            [900] * 4,
            4,
            {},
            {"last_scale_out_at": NOW - 60},
            0,
            id="delay-after-scale-out",
        ),
        pytest.param(
            [900] * 4,
            4,
            {},
            {"last_scale_out_at": NOW - 121},
            1,
            id="delay-passed",
        ),
    ],
)
def test_scale_in_limits(
    idle_for: list[float],
    count: int,
    overrides: dict[str, object],
    fleet_kw: dict[str, object],
    expected: int,
) -> None:
    """Drains are limited by idleFor, maxStep, the excess, min and delayAfterScaleOut."""
    fleet = ObservationBuilder(**fleet_kw)  # type: ignore[arg-type]
    for n in range(count):
        fleet.add(n, report("IDLE", idle_for=idle_for[n]))
    assert len(of(plan(spec(**overrides), fleet.observed(), NOW), DrainInstance)) == expected


def test_draining_instances_reduce_scale_in_room() -> None:
    """Instances already draining count against the room above min."""
    fleet = ObservationBuilder()
    fleet.add(1, report("IDLE", draining=True))
    fleet.add_many(range(2, 5), report("IDLE", idle_for=900))
    result = plan(spec(capacity={"min": 3, "max": 10}, targetFree=0), fleet.observed(), NOW)
    assert of(result, DrainInstance) == []


def test_drain_not_repeated() -> None:
    """An instance already asked to drain is not asked again."""
    fleet = ObservationBuilder()
    asked = fleet.add(1, report("IDLE", idle_for=900))
    fleet.add_many(range(2, 5), report("IDLE", idle_for=100))
    fleet.drain_requested[asked] = NOW - 5
    result = plan(spec(), fleet.observed(), NOW)
    assert states(result)[asked] is InstanceState.DRAINING
    assert of(result, DrainInstance) == []


def test_drained_is_terminated_with_decrement() -> None:
    """A drained instance is terminated and the desired capacity decremented."""
    fleet = ObservationBuilder()
    drained = fleet.add(1, report("IDLE", drained=True))
    fleet.drain_requested[drained] = NOW - 60
    fleet.add_many(range(2, 4), report("IDLE"))
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, Terminate) == [Terminate(drained, True, Reason.DRAINED)]
    assert of(result, SetDesiredCapacity) == []
    assert result.desired_capacity == 2


def test_drained_at_min_is_replaced() -> None:
    """A drained instance at min capacity is terminated without decrement (the ASG replaces)."""
    fleet = ObservationBuilder()
    drained = fleet.add(1, report("IDLE", drained=True))
    fleet.drain_requested[drained] = NOW - 60
    result = plan(spec(capacity={"min": 1, "max": 10}), fleet.observed(), NOW)
    assert of(result, Terminate) == [Terminate(drained, False, Reason.DRAINED)]


def test_scale_out_and_drained_termination_in_one_pass() -> None:
    """Terminations run before the capacity change, which targets the capacity after them."""
    fleet = ObservationBuilder()
    drained = fleet.add(1, report("IDLE", drained=True))
    fleet.drain_requested[drained] = NOW - 60
    fleet.add_many(range(2, 5), report("BUSY"))
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, Terminate) == [Terminate(drained, True, Reason.DRAINED)]
    assert of(result, SetDesiredCapacity) == [SetDesiredCapacity(5, 3, Reason.BELOW_TARGET_FREE)]
    kinds = [type(a) for a in result.actions]
    assert kinds.index(Terminate) < kinds.index(SetDesiredCapacity)


# --- replacement ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rep", "kwargs", "reason"),
    [
        pytest.param(
            report("IDLE", "UNHEALTHY", unhealthy_for=301), {}, Reason.UNHEALTHY, id="unhealthy"
        ),
        pytest.param(report("EXPIRED"), {}, Reason.EXPIRED, id="expired"),
        pytest.param(None, {"seen": NOW - 700}, Reason.FAILED_BOOT, id="failed-boot"),
    ],
)
def test_replacements_terminate_without_decrement(rep, kwargs, reason) -> None:  # type: ignore[no-untyped-def]
    """Unhealthy, expired and failed-boot instances are terminated for the ASG to replace."""
    fleet = ObservationBuilder()
    bad = fleet.add(1, rep, **kwargs)
    fleet.add_many(range(2, 4), report("IDLE"))
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, Terminate) == [Terminate(bad, False, reason)]
    assert of(result, SetDesiredCapacity) == []


def test_unhealthy_waits_for_unhealthy_for() -> None:
    """An instance unhealthy for less than unhealthyFor is left alone."""
    fleet = ObservationBuilder()
    fleet.add(1, report("IDLE", "UNHEALTHY", unhealthy_for=200))
    fleet.add_many(range(2, 4), report("IDLE"))
    assert of(plan(spec(), fleet.observed(), NOW), Terminate) == []


def test_replacements_per_pass_are_capped() -> None:
    """At most scaleOut.maxStep instances are replaced in one pass."""
    fleet = ObservationBuilder()
    fleet.add_many(range(6), report("EXPIRED"))
    assert len(of(plan(spec(scaleOut={"maxStep": 2}), fleet.observed(), NOW), Terminate)) == 2


# --- protection -----------------------------------------------------------------------------


def test_protection_goes_out_in_batches_of_fifty() -> None:
    """120 instances to protect take three calls of at most 50 ids."""
    fleet = ObservationBuilder(max_size=200)
    fleet.add_many(range(120), report("BUSY"))
    calls = of(plan(spec(capacity={"min": 1, "max": 200}), fleet.observed(), NOW), SetProtection)
    assert [len(c.instance_ids) for c in calls] == [50, 50, 20]


def test_only_protection_changes_are_sent() -> None:
    """Instances whose protection already matches get no call; idle ones get unprotected."""
    fleet = ObservationBuilder()
    fleet.add(1, report("BUSY"), protected=True)
    idle = fleet.add(2, report("IDLE"), protected=True)
    fleet.add(3, report("IDLE"))
    assert of(plan(spec(targetFree=1), fleet.observed(), NOW), SetProtection) == [
        SetProtection((idle,), False, Reason.NOT_BUSY)
    ]


# --- controller start -----------------------------------------------------------------------


def test_startup_window_only_observes() -> None:
    """Right after a start, silent instances are unknown: no scale-out, drain or unprotect."""
    fleet = ObservationBuilder(started_at=NOW - 5)
    fleet.add_many(range(3), None, seen=NOW - 5)
    fleet.add(3, report("IDLE", idle_for=900), protected=True)
    fleet.add(4, report("EXPIRED"))
    result = plan(spec(), fleet.observed(), NOW)
    assert set(states(result).values()) >= {InstanceState.UNKNOWN}
    assert result.actions == ()
    assert any(c.type == "Observing" and c.status for c in result.conditions)


def test_startup_window_still_raises_to_min_and_protects() -> None:
    """During the startup window capacity still rises to min and busy instances get protected."""
    fleet = ObservationBuilder(started_at=NOW - 5, desired=0, min_size=2)
    busy = fleet.add(1, report("BUSY"), seen=NOW - 5)
    fleet.add(2, None, seen=NOW - 5)
    result = plan(spec(capacity={"min": 3, "max": 10}), fleet.observed(), NOW)
    assert of(result, SetDesiredCapacity) == [SetDesiredCapacity(3, 0, Reason.BELOW_MIN)]
    assert protected_ids(result) == {busy}


def test_restart_keeps_protected_silent_instances() -> None:
    """After the window, an instance protected before the restart and still silent stays put."""
    fleet = ObservationBuilder(started_at=NOW - 40)
    silent = fleet.add(1, None, protected=True, seen=NOW - 40)
    fleet.add_many(range(2, 4), report("IDLE"))
    result = plan(spec(), fleet.observed(), NOW)
    assert states(result)[silent] is InstanceState.STALE
    assert of(result, SetProtection) == []
    assert of(result, Terminate) == []


# --- lifecycle hook -------------------------------------------------------------------------


def _waiting(
    fleet: ObservationBuilder,
    rep: ReportView | None,
    *,
    started: float = NOW - 60,
    beat: float = NOW - 60,
) -> str:
    instance_id = fleet.add(9, rep, lifecycle="Terminating:Wait")
    fleet.lifecycle_waits[instance_id] = LifecycleWait(
        instance_id,
        "drain-hook",
        None,
        started_at=started,
        last_heartbeat_at=beat,
        heartbeat_timeout=300,
    )
    return instance_id


def test_lifecycle_heartbeats_while_uploads_pend() -> None:
    """An instance in Terminating:Wait with pending uploads is held with a heartbeat."""
    fleet = ObservationBuilder()
    fleet.add_many(range(2), report("IDLE"))
    waiting = _waiting(fleet, report("IDLE", pending_uploads=2), beat=NOW - 200)
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, LifecycleHeartbeat) == [
        LifecycleHeartbeat(waiting, "drain-hook", None, Reason.UPLOADS_PENDING)
    ]
    assert of(result, CompleteLifecycle) == []
    assert of(result, DrainInstance) == [DrainInstance(waiting, Reason.TERMINATION_REQUESTED)]


def test_lifecycle_no_heartbeat_before_due() -> None:
    """No heartbeat is sent before half the heartbeat timeout has passed."""
    fleet = ObservationBuilder()
    fleet.add_many(range(2), report("IDLE"))
    _waiting(fleet, report("BUSY"), beat=NOW - 100)
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, LifecycleHeartbeat) == []
    assert of(result, CompleteLifecycle) == []


@pytest.mark.parametrize(
    ("rep", "started", "reason"),
    [
        pytest.param(
            report("IDLE", drained=True), NOW - 60, Reason.LIFECYCLE_DRAINED, id="drained"
        ),
        pytest.param(report("BUSY"), NOW - 6 * 3600, Reason.LIFECYCLE_TIMEOUT, id="timeout"),
        pytest.param(None, NOW - 60, Reason.LIFECYCLE_NO_AGENT, id="never-reported"),
    ],
)
def test_lifecycle_continues(rep, started: float, reason: Reason) -> None:  # type: ignore[no-untyped-def]
    """Terminating:Wait ends with CONTINUE once drained, at drain.timeout, or with no agent."""
    fleet = ObservationBuilder()
    fleet.add_many(range(2), report("IDLE"))
    waiting = _waiting(fleet, rep, started=started)
    fleet.first_seen[waiting] = STARTED
    result = plan(spec(), fleet.observed(), NOW)
    assert of(result, CompleteLifecycle) == [CompleteLifecycle(waiting, "drain-hook", None, reason)]
    assert of(result, LifecycleHeartbeat) == []


# --- timing ---------------------------------------------------------------------------------


def test_requeue_at_next_idle_maturity() -> None:
    """The plan asks to come back when the next idle instance reaches idleFor."""
    fleet = ObservationBuilder()
    fleet.add_many(range(3), report("IDLE", idle_for=295, age=1))
    result = plan(spec(), fleet.observed(), NOW)
    assert result.requeue_after == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("rep", "lifecycle", "expected"),
    [
        pytest.param(report("BUSY", age=1), "InService", NOW + 29.1, id="busy-until-stale"),
        pytest.param(report("IDLE", idle_for=299, age=1), "InService", NOW + 1, id="idle-for"),
        pytest.param(
            report("IDLE", "UNHEALTHY", unhealthy_for=290, age=1),
            "InService",
            NOW + 10,
            id="unhealthy-for",
        ),
        pytest.param(None, "InService", NOW - 60 + 600, id="boot-timeout"),
        pytest.param(report("BUSY", age=40), "InService", math.inf, id="stale-waits-for-report"),
        pytest.param(report("BUSY", age=1), "Terminating", math.inf, id="leaving"),
    ],
)
def test_derive_says_when_time_alone_changes_an_instance(
    rep: ReportView | None, lifecycle: str, expected: float
) -> None:
    """Each instance comes with the moment time alone next changes its state or what the rules
    may do with it: stale after staleAfter, idleFor, unhealthyFor, bootTimeout; never for an
    instance that only a report or AWS can change."""
    fleet = ObservationBuilder()
    fleet.add(1, rep, lifecycle=lifecycle, seen=NOW - 60)
    derived = derive_all(spec(), fleet.observed(), NOW)
    (view,) = derived.views
    assert view.next_change_at == pytest.approx(expected)
    assert derived.next_change_at == pytest.approx(expected)


def test_requeue_never_beyond_resync() -> None:
    """With nothing due, the plan comes back after resync."""
    fleet = ObservationBuilder()
    fleet.add_many(range(2), report("BUSY", age=0))
    fleet.add_many(range(2, 4), report("IDLE", idle_for=10_000, age=0))
    assert plan(spec(resync="15s"), fleet.observed(), NOW).requeue_after == pytest.approx(15.0)


def test_protection_lands_before_bounds_change() -> None:
    """Busy instances are protected before MaxSize is lowered, so AWS cannot pick them."""
    fleet = ObservationBuilder(max_size=12, desired=8)
    busy = fleet.add_many(range(8), report("BUSY"))
    result = plan(spec(capacity={"min": 1, "max": 5}), fleet.observed(), NOW)
    kinds = [type(a) for a in result.actions]
    assert kinds[0] is SetProtection and SetBounds in kinds
    assert kinds.index(SetProtection) < kinds.index(SetBounds)
    assert protected_ids(result) == set(busy)


def test_agent_reporting_before_jibri_causes_no_scale_out() -> None:
    """A new instance whose agent reports before Jibri is up counts as starting, not missing."""
    fleet = ObservationBuilder()
    fleet.add(1, report("IDLE"))
    fleet.add(2, report("UNKNOWN", "UNKNOWN", jibri_seen=False), seen=NOW - 10)
    assert of(plan(spec(), fleet.observed(), NOW), SetDesiredCapacity) == []

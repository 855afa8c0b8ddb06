"""Property tests for the planner's safety invariants (docs/planner.md), with and without a
readiness target (docs/readiness.md): whatever the forecast asks, busy, draining, stale, conflicted
and unknown recorders are never terminated and capacity stays within [min, max]. Reports
come with or without boot takeovers behind them (controller.boots)."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model import (
    NEVER_TERMINATED,
    AsgView,
    DrainInstance,
    InstanceState,
    LifecycleWait,
    Observed,
    Reason,
    ReportView,
    SetDesiredCapacity,
    SetProtection,
    Terminate,
)
from controller.planner import plan
from controller.readiness.forecast import ReadinessTarget
from tests.support.observations import NOW, ObservationBuilder, report, spec

LIFECYCLES = ["InService", "InService", "InService", "Pending", "Terminating:Wait", "Standby"]


def with_lineage(
    rep: ReportView, lineage: tuple[float, str | None, float | None, float | None] | None
) -> ReportView:
    """The report as held after boot takeovers (controller.boots): boot since `ago` before
    it was received, replacing `rival` which had taken over `gap` earlier, and an earlier
    boot busy `busy_ago` before the takeover."""
    if lineage is None:
        return rep
    ago, rival, gap, busy_ago = lineage
    since = rep.received_at - ago
    return rep._replace(
        boot_id="new",
        boot_since=since,
        rival_boot=rival,
        rival_since=None if gap is None or rival is None else since - gap,
        rival_busy_at=None if busy_ago is None or rival is None else since - busy_ago,
    )


lineages = st.one_of(
    st.none(),
    st.tuples(
        st.floats(0, 120),
        st.sampled_from([None, "old"]),
        st.one_of(st.none(), st.floats(0.1, 60)),
        st.one_of(st.none(), st.floats(0, 60)),
    ),
)

reports = st.one_of(
    st.none(),
    st.builds(
        with_lineage,
        st.builds(
            report,
            busy=st.sampled_from(["IDLE", "BUSY", "EXPIRED", "UNKNOWN"]),
            health=st.sampled_from(["HEALTHY", "UNHEALTHY", "UNKNOWN"]),
            age=st.floats(0, 120),
            idle_for=st.floats(0, 1200),
            unhealthy_for=st.floats(0, 1200),
            draining=st.booleans(),
            drained=st.booleans(),
            pending_uploads=st.sampled_from([0, 0, 0, 1, 3]),
            jibri_seen=st.booleans(),
        ),
        lineages,
    ),
)

instances = st.tuples(
    reports,
    st.sampled_from(LIFECYCLES),
    st.booleans(),  # protected
    st.floats(0, 2000),  # seen before NOW
    st.booleans(),  # drain requested
)


@st.composite
def situations(draw: st.DrawFn) -> tuple[object, Observed]:
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(lo, 15))
    target = draw(st.integers(0, hi))
    pool = spec(
        capacity={"min": lo, "max": hi},
        targetFree=target,
        scaleOut={"maxStep": draw(st.integers(1, 6))},
        scaleIn={"maxStep": draw(st.integers(0, 4)), "idleFor": "5m"},
    )
    started_ago = draw(st.sampled_from([5.0, 29.0, 31.0, 600.0, 3600.0]))
    fleet = ObservationBuilder(
        started_at=NOW - started_ago,
        desired=None,
        min_size=draw(st.integers(0, 5)),
        max_size=draw(st.integers(0, 20)),
        last_scale_out_at=draw(st.one_of(st.none(), st.floats(NOW - 600, NOW))),
    )
    members = draw(st.lists(instances, max_size=25))
    for n, (rep, lifecycle, protected, seen_ago, asked) in enumerate(members):
        instance_id = fleet.add(
            n,
            rep,
            lifecycle=lifecycle,
            protected=protected,
            seen=max(fleet.started_at, NOW - seen_ago),
        )
        if asked:
            fleet.drain_requested[instance_id] = NOW - 10
        if lifecycle == "Terminating:Wait" and draw(st.booleans()):
            fleet.lifecycle_waits[instance_id] = LifecycleWait(
                instance_id,
                "hook",
                None,
                NOW - draw(st.floats(0, 30_000)),
                NOW - draw(st.floats(0, 400)),
                300,
            )
    fleet.desired = draw(st.integers(0, 25))
    observed = fleet.observed()
    if draw(st.booleans()):
        observed = dataclasses.replace(observed, readiness=draw(readiness_targets(target, hi)))
    return pool, observed


@st.composite
def readiness_targets(draw: st.DrawFn, floor: int, cap: int) -> ReadinessTarget:
    """A target as readiness_target makes them: total = max(floor, learned ≤ cap)."""
    forecast = draw(st.integers(0, cap))
    reactive = draw(st.integers(0, cap - forecast))
    return ReadinessTarget(
        floor=floor,
        schedule_rule=None,
        override=None,
        forecast=forecast,
        reactive=reactive,
        total=max(floor, forecast + reactive),
        horizon=150.0,
        expected=float(forecast),
        ending=0.0,
        surprise=0.0,
        samples=draw(st.integers(0, 4)),
        later=draw(st.integers(floor, cap)),
        drain_early=draw(st.booleans()),
    )


@settings(max_examples=400, deadline=None)
@given(situations())
def test_never_terminates_busy_draining_stale_or_unknown(case: tuple[object, Observed]) -> None:
    """No Terminate ever targets a busy, draining, stale, conflicted or unknown instance."""
    pool, observed = case
    result = plan(pool, observed, NOW)  # type: ignore[arg-type]
    derived = {v.instance_id: v.state for v in result.instances}
    for action in result.actions:
        if isinstance(action, Terminate):
            assert derived[action.instance_id] not in NEVER_TERMINATED


@settings(max_examples=400, deadline=None)
@given(situations())
def test_capacity_stays_within_bounds(case: tuple[object, Observed]) -> None:
    """Every capacity the plan sets, and the capacity it ends at, is within [min, max]."""
    pool, observed = case
    result = plan(pool, observed, NOW)  # type: ignore[arg-type]
    lo, hi = pool.capacity.min, pool.capacity.max  # type: ignore[attr-defined]
    for action in result.actions:
        if isinstance(action, SetDesiredCapacity):
            assert lo <= action.capacity <= hi
    assert lo <= result.desired_capacity <= hi


@settings(max_examples=300, deadline=None)
@given(situations(), st.randoms(use_true_random=False))
def test_same_observation_same_plan(case: tuple[object, Observed], rnd: random.Random) -> None:
    """The plan depends only on the observation, not on the order AWS listed the instances."""
    pool, observed = case
    shuffled = list(observed.asg.instances)
    rnd.shuffle(shuffled)
    asg = observed.asg
    reordered = dataclasses.replace(
        observed,
        asg=AsgView(asg.name, asg.min_size, asg.max_size, asg.desired, tuple(shuffled)),
        reports=dict(reversed(list(observed.reports.items()))),
    )
    assert plan(pool, observed, NOW) == plan(pool, reordered, NOW)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(situations())
def test_no_action_twice(case: tuple[object, Observed]) -> None:
    """No action repeats, and no instance is named twice by actions of one kind."""
    pool, observed = case
    result = plan(pool, observed, NOW)  # type: ignore[arg-type]
    assert len(set(result.actions)) == len(result.actions)
    for kind in (Terminate, DrainInstance):
        ids = [a.instance_id for a in result.actions if isinstance(a, kind)]
        assert len(ids) == len(set(ids))
    protected = [i for a in result.actions if isinstance(a, SetProtection) for i in a.instance_ids]
    assert len(protected) == len(set(protected))
    assert sum(isinstance(a, SetDesiredCapacity) for a in result.actions) <= 1


@settings(max_examples=400, deadline=None)
@given(situations())
def test_protection_is_safe_and_batched(case: tuple[object, Observed]) -> None:
    """Busy, draining, stale and conflicted instances are never unprotected; calls carry ≤ 50
    ids."""
    pool, observed = case
    result = plan(pool, observed, NOW)  # type: ignore[arg-type]
    derived = {v.instance_id: v.state for v in result.instances}
    must_keep = {
        InstanceState.BUSY,
        InstanceState.DRAINING,
        InstanceState.STALE,
        InstanceState.UNKNOWN,
        InstanceState.CONFLICTED,
    }
    for action in result.actions:
        if isinstance(action, SetProtection):
            assert 1 <= len(action.instance_ids) <= 50
            if not action.protected:
                assert all(derived[i] not in must_keep for i in action.instance_ids)


@settings(max_examples=400, deadline=None)
@given(situations())
def test_drains_only_idle_or_terminating(case: tuple[object, Observed]) -> None:
    """Scale-in only drains idle instances (or ones the ASG is already terminating); a drained
    instance never asked is asked to confirm."""
    pool, observed = case
    result = plan(pool, observed, NOW)  # type: ignore[arg-type]
    derived = {v.instance_id: v.state for v in result.instances}
    for action in result.actions:
        if isinstance(action, DrainInstance) and action.reason is Reason.CONFIRM_DRAIN:
            assert derived[action.instance_id] is InstanceState.DRAINING
            assert observed.reports[action.instance_id].drained
        elif isinstance(action, DrainInstance):
            assert derived[action.instance_id] in (InstanceState.IDLE, InstanceState.TERMINATING)
            assert action.instance_id not in observed.drain_requested

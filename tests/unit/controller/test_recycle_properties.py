"""Property: whatever the fleet, recycling and rollout never drain or terminate a busy
recorder, and never drain more than scaleIn.maxStep a pass (docs/fleet-operations.md)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from common.wire import BusyStatus
from controller.fleet.rollout import RolloutStatus
from controller.model import DrainInstance, Observed, Reason, Terminate
from controller.planner import plan
from controller.spec import PoolSpec
from tests.support.observations import NOW, ObservationBuilder, report, spec

RECYCLE = frozenset({Reason.RECYCLE_RECORDINGS, Reason.RECYCLE_UPTIME, Reason.ROLLOUT})

# Mostly fresh, idle and healthy, so that many cases have something to retire.
reports = st.one_of(
    st.none(),
    st.builds(
        report,
        busy=st.sampled_from(["IDLE", "IDLE", "IDLE", "BUSY", "BUSY", "EXPIRED", "UNKNOWN"]),
        health=st.sampled_from(["HEALTHY", "HEALTHY", "HEALTHY", "UNHEALTHY"]),
        age=st.floats(0, 45),
        idle_for=st.floats(0, 1200),
        draining=st.sampled_from([False, False, False, True]),
        pending_uploads=st.sampled_from([0, 0, 0, 2]),
    ),
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[PoolSpec, Observed]:
    hi = draw(st.integers(1, 15))
    pool = spec(
        capacity={"min": draw(st.integers(0, hi)), "max": hi},
        targetFree=draw(st.integers(0, min(2, hi))),
        scaleIn={"maxStep": draw(st.integers(0, 3))},
        recycle={"maxRecordings": draw(st.integers(2, 8)), "maxUptime": "1h"},
    )
    fleet = ObservationBuilder(started_at=NOW - draw(st.sampled_from([5.0, 600.0, 7200.0])))
    for n in range(draw(st.integers(0, 20))):
        rep = draw(reports)
        if rep is not None:
            booted = draw(st.one_of(st.none(), st.floats(NOW - 10_000, NOW)))
            rep = rep._replace(recordings_finished=draw(st.integers(0, 8)), booted_at=booted)
        fleet.add(n, rep, seen=max(fleet.started_at, NOW - draw(st.floats(0, 9_000))))
    fleet.desired = draw(st.integers(max(0, len(fleet.instances) - 2), 20))
    observed = fleet.observed()
    phase = draw(st.sampled_from([None, "canary", "rolling", "rolled-back"]))
    if phase is not None:
        # Instances carry no template version: every one is old, so rolling retires any idle.
        status = RolloutStatus(
            phase, "2", "1", None, frozenset(), None, (), 0, draw(st.integers(0, 3))
        )
        observed = dataclasses.replace(observed, rollout=status)
    return pool, observed


def _busy(observed: Observed, instance_id: str) -> bool:
    held = observed.reports.get(instance_id)
    return held is not None and (held.busy is BusyStatus.BUSY or held.pending_uploads > 0)


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_retiring_never_touches_a_busy_recorder(case: tuple[PoolSpec, Observed]) -> None:
    """No recycle or rollout drain and no Terminate targets an instance whose report says busy
    or uploading, and those drains stay within scaleIn.maxStep."""
    pool, observed = case
    result = plan(pool, observed, NOW)
    recycled = [a for a in result.actions if isinstance(a, DrainInstance) and a.reason in RECYCLE]
    assert len(recycled) <= pool.scaleIn.maxStep
    for drain in recycled:
        assert not _busy(observed, drain.instance_id)
    for action in result.actions:
        if isinstance(action, Terminate):
            assert not _busy(observed, action.instance_id)

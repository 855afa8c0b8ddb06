"""Properties of the defence in depth (controller.boots, docs/identity.md): for any sequence
of reports of one instance from any set of boots with any fields, and drain requests at any
moments, fed through the real report store and planned on:

- a recorder a boot reported busy (or uploading) within staleAfter is never terminated,
  replaced, let out of its lifecycle wait as drained, or unprotected, even when a second
  sender holds that boot's credential;
- a drained termination follows a drain request to the boot that reports drained;
- two boots reporting in turn are conflicted, and conflicted is never touched;
- expired replaces only from a boot that has reported alone for staleAfter, spool empty;
- a restart (one boot falls silent, another reports) is never a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.model import (
    CompleteLifecycle,
    DrainInstance,
    InstanceState,
    LifecycleWait,
    Plan,
    Reason,
    SetProtection,
    Terminate,
)
from controller.planner import plan
from controller.store import ReportStore
from tests.support.observations import NOW, ObservationBuilder, iid, report, spec

X = iid(1)
SA = 30.0
START = NOW - 300.0

fields = st.fixed_dictionaries(
    {
        "busy": st.sampled_from(["IDLE", "BUSY", "EXPIRED", "UNKNOWN"]),
        "health": st.sampled_from(["HEALTHY", "HEALTHY", "UNHEALTHY"]),
        "draining": st.booleans(),
        "drained": st.booleans(),
        "uploads": st.sampled_from([0, 0, 0, 2]),
    }
)
# "A*" sends as boot A with a seq far ahead: a second sender holding A's credential.
# Steps are at least 10 ms apart: the controller's clock never gives a report and a pass
# the same instant, and a tie would make "asked before or after the takeover" moot.
steps = st.floats(0.01, 20.0)
events = st.lists(
    st.one_of(
        st.tuples(steps, st.sampled_from(["A", "A", "B", "C", "A*"]), fields),
        st.tuples(steps, st.just("drain-request"), st.just({})),
    ),
    min_size=1,
    max_size=60,
)


@dataclass
class Run:
    """The events fed to a real store, and what an observer outside it knows of them."""

    store: ReportStore = field(default_factory=ReportStore)
    t: float = START
    seqs: dict[str, int] = field(default_factory=dict)
    latest: dict[str, tuple[float, dict[str, object]]] = field(default_factory=dict)
    """Each boot's latest report: when, and what it said."""
    sequence: list[tuple[float, str]] = field(default_factory=list)
    """(time, boot) of every report, in order."""
    asked_at: float | None = None
    held_when_asked: str | None = None
    reports_since_asked: set[str] = field(default_factory=set)

    def feed(self, step: float, boot: str, said: dict[str, object]) -> None:
        self.t += step
        if boot == "drain-request":
            self.asked_at = self.t
            held = self.store.get(X)
            self.held_when_asked = None if held is None else held.boot_id
            self.reports_since_asked = set()
            return
        self.seqs[boot] = self.seqs.get(boot, 0) + 1
        wire = Report(
            instanceId=X,
            bootId=boot.rstrip("*"),
            seq=self.seqs[boot] + (1_000_000 if boot.endswith("*") else 0),
            jibri=JibriStatus(
                busyStatus=BusyStatus(str(said["busy"])),
                healthStatus=HealthStatus(str(said["health"])),
            ),
            draining=bool(said["draining"]),
            drained=bool(said["drained"]),
            pendingUploads=int(str(said["uploads"])),
        )
        self.store.accept(wire, self.t, managed=True)
        self.latest[boot] = (self.t, said)
        self.sequence.append((self.t, boot.rstrip("*")))
        self.reports_since_asked.add(boot.rstrip("*"))

    def takeovers(self) -> list[float]:
        pairs = zip(self.sequence[1:], self.sequence[:-1], strict=True)
        return [t for (t, b), (_, a) in pairs if b != a]

    def plan(self, now: float, wait_started: float | None) -> Plan:
        fleet = ObservationBuilder(started_at=NOW - 3600)
        lifecycle = "InService" if wait_started is None else "Terminating:Wait"
        fleet.add(1, self.store.get(X), protected=True, lifecycle=lifecycle, seen=START)
        fleet.add_many(range(2, 5), report("IDLE", idle_for=900, now=now), seen=START)
        if self.asked_at is not None:
            fleet.drain_requested[X] = self.asked_at
        if wait_started is not None:
            fleet.lifecycle_waits[X] = LifecycleWait(X, "hook", None, wait_started, now, 300)
        return plan(spec(targetFree=1, drain={"timeout": "6h"}), fleet.observed(), now)


recording = fields.map(lambda said: {**said, "busy": "BUSY", "drained": False})
# The genuine agent recording, reporting every few seconds, a second sender with its credential
# slipping reports in between.
genuine_with_thief = st.builds(
    list.__add__,
    st.lists(st.tuples(st.floats(0.5, 6.0), st.just("A"), recording), min_size=12, max_size=30),
    st.lists(
        st.tuples(st.floats(0.01, 6.0), st.sampled_from(["A*", "A*", "A", "C"]), fields),
        min_size=1,
        max_size=3,
    ),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[Run, float, float | None, Plan]:
    run = Run()
    sequence = draw(genuine_with_thief) if draw(st.booleans()) else draw(events)
    for step, boot, said in sequence:
        run.feed(step, boot, said)
    now = run.t + draw(st.floats(0.01, 45.0))
    wait_started = draw(st.one_of(st.none(), st.floats(START, now)))
    return run, now, wait_started, run.plan(now, wait_started)


def busy_within_stale_after(run: Run, now: float) -> bool:
    return any(
        now - at <= SA and (said["busy"] == "BUSY" or said["uploads"] != 0)
        for at, said in run.latest.values()
    )


def ends(result: Plan) -> list[object]:
    """Actions that end X, let it out of its wait as drained, or unprotect it."""
    return [
        a
        for a in result.actions
        if (isinstance(a, Terminate) and a.instance_id == X)
        or (
            isinstance(a, CompleteLifecycle)
            and a.instance_id == X
            and a.reason is Reason.LIFECYCLE_DRAINED
        )
        or (isinstance(a, SetProtection) and not a.protected and X in a.instance_ids)
    ]


def view_of(result: Plan) -> tuple[InstanceState, bool]:
    view = next(v for v in result.instances if v.instance_id == X)
    return view.state, view.protected


@settings(max_examples=400, deadline=None)
@given(runs())
def test_busy_recorder_is_never_ended(case: tuple[Run, float, float | None, Plan]) -> None:
    """A boot reported busy or uploading within staleAfter: X is not terminated, replaced,
    continued as drained or unprotected, and (in service) the plan wants it protected."""
    run, now, wait_started, result = case
    if not busy_within_stale_after(run, now):
        return
    assert ends(result) == []
    if wait_started is None:
        assert view_of(result)[1]


@settings(max_examples=400, deadline=None)
@given(runs())
def test_drained_ends_only_the_boot_asked(case: tuple[Run, float, float | None, Plan]) -> None:
    """A drained termination (or drained lifecycle continue) follows a drain request (or the
    wait's start) while the boot that reports drained was held, with no other boot since."""
    run, _, wait_started, result = case
    held = run.store.get(X)
    for action in result.actions:
        if isinstance(action, Terminate) and action.reason is Reason.DRAINED:
            assert held is not None and run.asked_at is not None
            assert run.held_when_asked == held.boot_id
            assert run.reports_since_asked <= {held.boot_id}
        if isinstance(action, CompleteLifecycle) and action.reason is Reason.LIFECYCLE_DRAINED:
            assert held is not None and wait_started is not None
            asked = max(wait_started, run.asked_at or wait_started)
            assert all(b == held.boot_id for t, b in run.sequence if t > asked)
            before = [b for t, b in run.sequence if t <= asked]
            assert before and before[-1] == held.boot_id


@settings(max_examples=400, deadline=None)
@given(runs())
def test_boots_in_turn_are_conflicted_and_untouched(
    case: tuple[Run, float, float | None, Plan],
) -> None:
    """Two takeovers within staleAfter, the latest within staleAfter, the held report fresh:
    conflicted. Conflicted is protected and never drained, terminated or replaced."""
    run, now, wait_started, result = case
    state, protected = view_of(result)
    takeovers = run.takeovers()
    fresh = now - run.sequence[-1][0] <= SA if run.sequence else False
    in_turn = len(takeovers) >= 2 and takeovers[-1] - takeovers[-2] <= SA
    if wait_started is None and fresh and in_turn and now - takeovers[-1] <= SA:
        assert state is InstanceState.CONFLICTED
    if state is InstanceState.CONFLICTED:
        assert protected and ends(result) == []
        assert not any(isinstance(a, DrainInstance) and a.instance_id == X for a in result.actions)


@settings(max_examples=400, deadline=None)
@given(runs())
def test_expired_replaces_only_from_a_settled_boot(
    case: tuple[Run, float, float | None, Plan],
) -> None:
    """Replacement for expiry: the held boot has reported alone for staleAfter and its
    spool is empty."""
    run, now, _, result = case
    held = run.store.get(X)
    for action in result.actions:
        if isinstance(action, Terminate) and action.reason is Reason.EXPIRED:
            assert held is not None and held.pending_uploads == 0
            since = max([run.sequence[0][0], *run.takeovers()])
            assert now - since > SA


@settings(max_examples=200, deadline=None)
@given(
    st.lists(fields, min_size=1, max_size=20),
    st.lists(fields, min_size=1, max_size=20),
    st.floats(0.01, 20.0),
    st.floats(0.01, 45.0),
)
def test_restart_is_no_conflict(
    before: list[dict[str, object]],
    after: list[dict[str, object]],
    gap: float,
    later: float,
) -> None:
    """Boot A reports, falls silent, boot B reports: B's reports are held at once and the
    instance is never conflicted."""
    run = Run()
    for said in before:
        run.feed(1.0, "A", said)
    run.feed(gap, "B", after[0])
    for said in after[1:]:
        run.feed(1.0, "B", said)
    held = run.store.get(X)
    assert held is not None and held.boot_id == "B"
    state, _ = view_of(run.plan(run.t + later, None))
    assert state is not InstanceState.CONFLICTED

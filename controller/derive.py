"""Derive every instance's state from one observation (docs/design.md). Pure: no clock, no I/O.

Every rule of time about an instance lives here: staleAfter, bootTimeout, unhealthyFor, and
scaleIn.idleFor. With each state, `derive_all` says when time alone will next change it
(`InstanceView.next_change_at`), so the planner's `requeue_after` reads the earliest of those
instead of recomputing the thresholds.

`derive_all` makes the pass's one scan of the group: each instance's state and the protection
that state wants, the instances grouped by state, and the few lists the planner's rules need.
The rules then read those groups instead of scanning the fleet again, which keeps a plan for
10,000 instances within a few tens of milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from common.wire import BusyStatus, HealthStatus
from controller.boots import (
    drain_asked,
    drained_report,
    guard,
    needs_confirm,
    recently_busy,
    trusted,
    trusted_at,
)
from controller.fleet.recycle import retire_reason
from controller.model import (
    PROTECTED_STATES,
    AsgInstance,
    InstanceState,
    InstanceView,
    Observed,
    Reason,
    ReportView,
)
from controller.spec import PoolSpec

_GONE_PREFIXES = ("Terminating", "Terminated")
# The plan leaves these as they are: unknowns are only observed, and the rest are leaving.
_PROTECTION_UNTOUCHED = frozenset(
    {
        InstanceState.UNKNOWN,
        InstanceState.TERMINATING,
        InstanceState.STANDBY,
        InstanceState.DRAINED,
        InstanceState.WARMED,
    }
)
_STANDBY_PREFIXES = ("Standby", "EnteredStandby", "Detaching", "Detached")
_WARMED_PREFIX = "Warmed"
_BY_ID = attrgetter("instance_id")
STALE_MARGIN = 0.1
"""A report turns stale once strictly older than staleAfter: look again this much later."""


@dataclass(frozen=True)
class Derivation:
    """Every instance's derived state, and the same instances arranged for the rules."""

    views: tuple[InstanceView, ...]
    """Every instance, in instance-id order."""
    by_state: Mapping[InstanceState, tuple[InstanceView, ...]]
    """The instances of each state (every state has an entry), each in instance-id order."""
    misprotected: tuple[InstanceView, ...]
    """Instances whose scale-in protection in the ASG differs from what their state wants."""
    replace_due: tuple[InstanceView, ...]
    """Unhealthy for unhealthyFor, expired, or failed to boot: terminate without decrement
    (in instance-id order)."""
    drainable: tuple[str, ...]
    """Idle instances idle for at least scaleIn.idleFor, longest idle first."""
    next_change_at: float
    """The earliest moment time alone changes a state, a rule's view of an instance, or the
    startup window; infinity if none."""
    retiring: Mapping[str, Reason] = field(default_factory=dict)
    """RETIRING instances (idle, due to be recycled or rolled out) and why, id order."""
    confirm_drain: tuple[str, ...] = ()
    """DRAINING instances whose trusted boot drained unasked: to be asked (controller.boots)."""

    def count(self, *states: InstanceState) -> int:
        return sum(len(self.by_state[state]) for state in states)


def in_startup_window(spec: PoolSpec, observed: Observed, now: float) -> bool:
    """True during the first staleAfter after the controller started, when silence means nothing."""
    return now < observed.controller_started_at + spec.instances.staleAfter


def is_fresh(spec: PoolSpec, report: ReportView | None, now: float) -> bool:
    """Whether a report was received within staleAfter (an instance's state aside)."""
    return report is not None and now - report.received_at <= spec.instances.staleAfter


def boot_timed_out(spec: PoolSpec, observed: Observed, instance_id: str, now: float) -> bool:
    """Whether bootTimeout has passed since the instance was first seen (or the controller
    started, if later)."""
    seen = max(observed.first_seen.get(instance_id, now), observed.controller_started_at)
    return now - seen >= spec.instances.bootTimeout


@dataclass(frozen=True)
class _Limits:
    """What the state rules compare against, read once per pass."""

    now: float
    started_at: float
    stale_after: float
    boot_timeout: float
    unhealthy_for: float
    idle_for: float
    window_end: float
    startup: bool
    first_seen: Mapping[str, float]
    drain_requested: Mapping[str, float]

    def boot_started(self, instance_id: str) -> float:
        return max(self.first_seen.get(instance_id, self.now), self.started_at)


_State = tuple[InstanceState, bool, str, float]
"""State, due for replacement, detail, and when time alone next changes it."""


def _silent_state(limits: _Limits, instance: AsgInstance) -> _State:
    """State of an instance that has sent no report since the controller started."""
    if limits.startup:
        return (
            InstanceState.UNKNOWN,
            False,
            "no report yet since controller start",
            limits.window_end,
        )
    seen = limits.boot_started(instance.instance_id)
    present_at_start = seen <= limits.started_at + limits.stale_after
    if instance.protected and present_at_start:
        # Protected by a previous controller or the agent's fallback: it may be recording.
        return (
            InstanceState.STALE,
            False,
            "protected before controller start, no report since",
            math.inf,
        )
    fails_at = seen + limits.boot_timeout
    if limits.now >= fails_at:
        return InstanceState.FAILED_BOOT, True, "no report within bootTimeout", math.inf
    return InstanceState.STARTING, False, "booting, no report yet", fails_at


def _settled_due(limits: _Limits, report: ReportView, state: _State) -> _State:
    """Replacement on a report's word waits until its boot has settled and staleAfter has
    passed since the instance last said busy (controller.boots)."""
    if trusted(report, limits.now, limits.stale_after):
        return state
    until = trusted_at(report, limits.stale_after)
    return state[0], False, f"{state[2]}; new boot or busy lately", min(state[3], until)


def _drained_state(
    limits: _Limits, instance_id: str, report: ReportView, stale_at: float
) -> _State:
    """DRAINED only from the boot the controller asked; otherwise still DRAINING."""
    asked = drain_asked(report, limits.drain_requested.get(instance_id))
    if asked and not recently_busy(report, limits.now, limits.stale_after):
        return InstanceState.DRAINED, False, "agent reports Jibri stopped and spool empty", stale_at
    detail = "drained, busy lately" if asked else "drained unasked: to be asked once trusted"
    return (
        InstanceState.DRAINING,
        False,
        detail,
        min(stale_at, trusted_at(report, limits.stale_after)),
    )


def _reported_state(limits: _Limits, instance_id: str, report: ReportView) -> _State:
    now = limits.now
    if now - report.received_at > limits.stale_after:
        return InstanceState.STALE, False, "agent silent for longer than staleAfter", math.inf
    stale_at = report.received_at + limits.stale_after + STALE_MARGIN
    if report.rival_since is not None or report.rival_busy_at is not None:
        held = guard(report, now, limits.stale_after)
        if held is not None:
            return held[0], False, held[1], min(stale_at, held[2])
    state = _report_says(limits, instance_id, report, stale_at)
    return _settled_due(limits, report, state) if state[1] else state


def _report_says(limits: _Limits, instance_id: str, report: ReportView, stale_at: float) -> _State:
    """The state a fresh report of a boot the rules believe gives (controller.boots)."""
    now = limits.now
    uploading = report.pending_uploads > 0
    if report.drained and drained_report(report):
        return _drained_state(limits, instance_id, report, stale_at)
    if report.draining or instance_id in limits.drain_requested:
        return InstanceState.DRAINING, False, "graceful shutdown in progress", stale_at
    if report.busy is BusyStatus.BUSY or uploading:
        detail = f"{report.pending_uploads} uploads pending" if uploading else "recording"
        return InstanceState.BUSY, False, detail, stale_at
    if not report.jibri_seen:
        # The agent is up but its Jibri has never answered: still booting, not unhealthy.
        fails_at = limits.boot_started(instance_id) + limits.boot_timeout
        if now >= fails_at:
            return (
                InstanceState.FAILED_BOOT,
                True,
                "Jibri never answered within bootTimeout",
                stale_at,
            )
        return InstanceState.STARTING, False, "agent up, waiting for Jibri", min(stale_at, fails_at)
    if report.busy is BusyStatus.EXPIRED:
        return InstanceState.EXPIRED, True, "single-use Jibri has expired", stale_at
    if report.health is not HealthStatus.HEALTHY or report.busy is BusyStatus.UNKNOWN:
        since = report.unhealthy_since if report.unhealthy_since is not None else now
        due_at = since + limits.unhealthy_for
        detail = f"Jibri {report.busy.value.lower()}/{report.health.value.lower()}"
        if now >= due_at:
            return InstanceState.UNHEALTHY, True, detail, stale_at
        return InstanceState.UNHEALTHY, False, detail, min(stale_at, due_at)
    return InstanceState.IDLE, False, "ready", stale_at


def derive_all(spec: PoolSpec, observed: Observed, now: float) -> Derivation:
    stale_after = spec.instances.staleAfter
    limits = _Limits(
        now=now,
        started_at=observed.controller_started_at,
        stale_after=stale_after,
        boot_timeout=spec.instances.bootTimeout,
        unhealthy_for=spec.instances.unhealthyFor,
        idle_for=spec.scaleIn.idleFor,
        window_end=observed.controller_started_at + stale_after,
        startup=in_startup_window(spec, observed, now),
        first_seen=observed.first_seen,
        drain_requested=observed.drain_requested,
    )
    reports = observed.reports
    groups: dict[InstanceState, list[InstanceView]] = {state: [] for state in InstanceState}
    views: list[InstanceView] = []
    misprotected: list[InstanceView] = []
    replace_due: list[InstanceView] = []
    drainable: list[tuple[float, str]] = []
    earliest = limits.window_end if limits.startup else math.inf
    idle_state, idle_limit = InstanceState.IDLE, limits.idle_for
    retiring: dict[str, Reason] = {}
    confirm: list[str] = []
    retire_on = spec.recycle.enabled or spec.rollout is not None
    for instance in sorted(observed.asg.instances, key=_BY_ID):
        instance_id, lifecycle = instance.instance_id, instance.lifecycle_state
        report = reports.get(instance_id)
        if lifecycle.startswith(_GONE_PREFIXES):
            state, due, detail, changes_at = InstanceState.TERMINATING, False, lifecycle, math.inf
        elif lifecycle.startswith(_STANDBY_PREFIXES):
            state, due, detail, changes_at = InstanceState.STANDBY, False, lifecycle, math.inf
        elif lifecycle.startswith(_WARMED_PREFIX):
            # In the warm pool (docs/warm-pools.md): not in service, not counted as free.
            state, due, detail, changes_at = InstanceState.WARMED, False, lifecycle, math.inf
        elif report is None:
            state, due, detail, changes_at = _silent_state(limits, instance)
        else:
            state, due, detail, changes_at = _reported_state(limits, instance_id, report)
            if state is InstanceState.DRAINING and needs_confirm(
                report, observed.drain_requested.get(instance_id), now, stale_after
            ):
                confirm.append(instance_id)
            if state is idle_state and retire_on:
                why, due_at = retire_reason(spec, observed, instance, report, now)
                if why is not None:
                    state, detail, retiring[instance_id] = InstanceState.RETIRING, why.value, why
                changes_at = min(changes_at, due_at)
            if state is idle_state:
                # scaleIn.idleFor: an idle instance becomes a drain candidate.
                since = report.idle_since
                idle_for = 0.0 if since is None else now - since
                if idle_for >= idle_limit:
                    drainable.append((-idle_for, instance_id))
                elif since is not None and since + idle_limit < changes_at:
                    changes_at = since + idle_limit
        if state in PROTECTED_STATES:
            protected = True
        elif state in _PROTECTION_UNTOUCHED:
            protected = instance.protected
        else:
            protected = False
        if not protected and instance.protected and report is not None:
            protected, changes_at = _keep_protection(report, now, stale_after, changes_at)
        if report is None:
            age = None
        else:
            age = now - report.received_at
            if not age > 0.0:
                age = 0.0
        view = InstanceView(instance_id, state, protected, age, detail, changes_at)
        views.append(view)
        groups[state].append(view)
        if protected != instance.protected:
            misprotected.append(view)
        if due:
            replace_due.append(view)
        if changes_at < earliest:
            earliest = changes_at
    drainable.sort()
    return Derivation(
        views=tuple(views),
        by_state={state: tuple(members) for state, members in groups.items()},
        misprotected=tuple(misprotected),
        replace_due=tuple(replace_due),
        drainable=tuple(instance_id for _, instance_id in drainable),
        next_change_at=earliest,
        retiring=retiring,
        confirm_drain=tuple(confirm),
    )


def _keep_protection(
    report: ReportView, now: float, stale_after: float, changes_at: float
) -> tuple[bool, float]:
    """Protection is removed only on the word of a trusted boot (controller.boots)."""
    if trusted(report, now, stale_after):
        return False, changes_at
    return True, min(changes_at, trusted_at(report, stale_after))

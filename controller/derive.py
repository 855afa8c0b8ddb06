"""Derive every instance's state from one observation (DESIGN §4). Pure: no clock, no I/O.

`derive_all` makes the pass's one scan of the group: each instance's state and the protection
that state wants, the instances grouped by state, and the few lists the planner's rules need.
The rules then read those groups instead of scanning the fleet again, which keeps a plan for
10,000 instances within a few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter

from common.wire import BusyStatus, HealthStatus
from controller.model import (
    PROTECTED_STATES,
    AsgInstance,
    InstanceState,
    InstanceView,
    Observed,
    ReportView,
)
from controller.spec import PoolSpec

_GONE_PREFIXES = ("Terminating", "Terminated")
# The plan leaves these as they are: unknowns are only observed, and the rest are leaving.
_PROTECTION_UNTOUCHED = frozenset(
    {InstanceState.UNKNOWN, InstanceState.TERMINATING, InstanceState.STANDBY, InstanceState.DRAINED}
)
_STANDBY_PREFIXES = ("Standby", "EnteredStandby", "Detaching", "Detached", "Warmed")
_BY_ID = attrgetter("instance_id")


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

    def count(self, *states: InstanceState) -> int:
        return sum(len(self.by_state[state]) for state in states)


def in_startup_window(spec: PoolSpec, observed: Observed, now: float) -> bool:
    """True during the first staleAfter after the controller started, when silence means nothing."""
    return now < observed.controller_started_at + spec.instances.staleAfter


@dataclass(frozen=True)
class _Limits:
    """What the state rules compare against, read once per pass."""

    now: float
    started_at: float
    stale_after: float
    boot_timeout: float
    unhealthy_for: float
    startup: bool
    first_seen: Mapping[str, float]
    drain_requested: Mapping[str, float]

    def boot_started(self, instance_id: str) -> float:
        return max(self.first_seen.get(instance_id, self.now), self.started_at)


def _silent_state(limits: _Limits, instance: AsgInstance) -> tuple[InstanceState, bool, str]:
    """State of an instance that has sent no report since the controller started."""
    if limits.startup:
        return InstanceState.UNKNOWN, False, "no report yet since controller start"
    seen = limits.boot_started(instance.instance_id)
    present_at_start = seen <= limits.started_at + limits.stale_after
    if instance.protected and present_at_start:
        # Protected by a previous controller or the agent's fallback: it may be recording.
        return InstanceState.STALE, False, "protected before controller start, no report since"
    if limits.now - seen >= limits.boot_timeout:
        return InstanceState.FAILED_BOOT, True, "no report within bootTimeout"
    return InstanceState.STARTING, False, "booting, no report yet"


def _reported_state(
    limits: _Limits, instance_id: str, report: ReportView
) -> tuple[InstanceState, bool, str]:
    now = limits.now
    if now - report.received_at > limits.stale_after:
        return InstanceState.STALE, False, "agent silent for longer than staleAfter"
    uploading = report.pending_uploads > 0
    if report.drained and not uploading and report.busy is not BusyStatus.BUSY:
        return InstanceState.DRAINED, False, "agent reports Jibri stopped and spool empty"
    if report.draining or instance_id in limits.drain_requested:
        return InstanceState.DRAINING, False, "graceful shutdown in progress"
    if report.busy is BusyStatus.BUSY or uploading:
        detail = f"{report.pending_uploads} uploads pending" if uploading else "recording"
        return InstanceState.BUSY, False, detail
    if not report.jibri_seen:
        # The agent is up but its Jibri has never answered: still booting, not unhealthy.
        if now - limits.boot_started(instance_id) >= limits.boot_timeout:
            return InstanceState.FAILED_BOOT, True, "Jibri never answered within bootTimeout"
        return InstanceState.STARTING, False, "agent up, waiting for Jibri"
    if report.busy is BusyStatus.EXPIRED:
        return InstanceState.EXPIRED, True, "single-use Jibri has expired"
    if report.health is not HealthStatus.HEALTHY or report.busy is BusyStatus.UNKNOWN:
        since = report.unhealthy_since if report.unhealthy_since is not None else now
        due = now - since >= limits.unhealthy_for
        detail = f"Jibri {report.busy.value.lower()}/{report.health.value.lower()}"
        return InstanceState.UNHEALTHY, due, detail
    return InstanceState.IDLE, False, "ready"


def derive_all(spec: PoolSpec, observed: Observed, now: float) -> Derivation:
    limits = _Limits(
        now=now,
        started_at=observed.controller_started_at,
        stale_after=spec.instances.staleAfter,
        boot_timeout=spec.instances.bootTimeout,
        unhealthy_for=spec.instances.unhealthyFor,
        startup=in_startup_window(spec, observed, now),
        first_seen=observed.first_seen,
        drain_requested=observed.drain_requested,
    )
    reports = observed.reports
    groups: dict[InstanceState, list[InstanceView]] = {state: [] for state in InstanceState}
    views: list[InstanceView] = []
    misprotected: list[InstanceView] = []
    replace_due: list[InstanceView] = []
    for instance in sorted(observed.asg.instances, key=_BY_ID):
        instance_id, lifecycle = instance.instance_id, instance.lifecycle_state
        report = reports.get(instance_id)
        if lifecycle.startswith(_GONE_PREFIXES):
            state, due, detail = InstanceState.TERMINATING, False, lifecycle
        elif lifecycle.startswith(_STANDBY_PREFIXES):
            state, due, detail = InstanceState.STANDBY, False, lifecycle
        elif report is None:
            state, due, detail = _silent_state(limits, instance)
        else:
            state, due, detail = _reported_state(limits, instance_id, report)
        if state in PROTECTED_STATES:
            protected = True
        elif state in _PROTECTION_UNTOUCHED:
            protected = instance.protected
        else:
            protected = False
        if report is None:
            age = None
        else:
            age = now - report.received_at
            if not age > 0.0:
                age = 0.0
        view = InstanceView(instance_id, state, protected, age, detail)
        views.append(view)
        groups[state].append(view)
        if protected != instance.protected:
            misprotected.append(view)
        if due:
            replace_due.append(view)
    return Derivation(
        views=tuple(views),
        by_state={state: tuple(members) for state, members in groups.items()},
        misprotected=tuple(misprotected),
        replace_due=tuple(replace_due),
    )

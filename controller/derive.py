"""Derive every instance's state from one observation (DESIGN §4). Pure: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import PoolSpec
from controller.model import (
    PROTECTED_STATES,
    AsgInstance,
    InstanceState,
    InstanceView,
    Observed,
    ReportView,
)
from controller.wire import BusyStatus, HealthStatus

_GONE_PREFIXES = ("Terminating", "Terminated")
# The plan leaves these as they are: unknowns are only observed, and the rest are leaving.
_PROTECTION_UNTOUCHED = frozenset(
    {InstanceState.UNKNOWN, InstanceState.TERMINATING, InstanceState.STANDBY, InstanceState.DRAINED}
)
_STANDBY_PREFIXES = ("Standby", "EnteredStandby", "Detaching", "Detached", "Warmed")


@dataclass(frozen=True)
class Derived:
    """One instance's derived state plus the facts the rules need about it."""

    view: InstanceView
    asg: AsgInstance
    report: ReportView | None
    replace_due: bool = False
    """Unhealthy for unhealthyFor, expired, or failed to boot: terminate without decrement."""


def in_startup_window(spec: PoolSpec, observed: Observed, now: float) -> bool:
    """True during the first staleAfter after the controller started, when silence means nothing."""
    return now < observed.controller_started_at + spec.instances.staleAfter


def _boot_started(spec: PoolSpec, observed: Observed, instance_id: str, now: float) -> float:
    return max(observed.first_seen.get(instance_id, now), observed.controller_started_at)


def _silent_state(
    spec: PoolSpec, observed: Observed, instance: AsgInstance, now: float
) -> tuple[InstanceState, bool, str]:
    """State of an instance that has sent no report since the controller started."""
    instance_id = instance.instance_id
    if in_startup_window(spec, observed, now):
        return InstanceState.UNKNOWN, False, "no report yet since controller start"
    seen = _boot_started(spec, observed, instance_id, now)
    present_at_start = seen <= observed.controller_started_at + spec.instances.staleAfter
    if instance.protected and present_at_start:
        # Protected by a previous controller or the agent's fallback: it may be recording.
        return InstanceState.STALE, False, "protected before controller start, no report since"
    if now - seen >= spec.instances.bootTimeout:
        return InstanceState.FAILED_BOOT, True, "no report within bootTimeout"
    return InstanceState.STARTING, False, "booting, no report yet"


def _reported_state(
    spec: PoolSpec, observed: Observed, instance_id: str, report: ReportView, now: float
) -> tuple[InstanceState, bool, str]:
    if now - report.received_at > spec.instances.staleAfter:
        return InstanceState.STALE, False, "agent silent for longer than staleAfter"
    uploading = report.pending_uploads > 0
    if report.drained and not uploading and report.busy is not BusyStatus.BUSY:
        return InstanceState.DRAINED, False, "agent reports Jibri stopped and spool empty"
    if instance_id in observed.drain_requested or report.draining:
        return InstanceState.DRAINING, False, "graceful shutdown in progress"
    if report.busy is BusyStatus.BUSY or uploading:
        detail = f"{report.pending_uploads} uploads pending" if uploading else "recording"
        return InstanceState.BUSY, False, detail
    if not report.jibri_seen:
        # The agent is up but its Jibri has never answered: still booting, not unhealthy.
        if now - _boot_started(spec, observed, instance_id, now) >= spec.instances.bootTimeout:
            return InstanceState.FAILED_BOOT, True, "Jibri never answered within bootTimeout"
        return InstanceState.STARTING, False, "agent up, waiting for Jibri"
    if report.busy is BusyStatus.EXPIRED:
        return InstanceState.EXPIRED, True, "single-use Jibri has expired"
    if report.health is not HealthStatus.HEALTHY or report.busy is BusyStatus.UNKNOWN:
        since = report.unhealthy_since if report.unhealthy_since is not None else now
        due = now - since >= spec.instances.unhealthyFor
        detail = f"Jibri {report.busy.value.lower()}/{report.health.value.lower()}"
        return InstanceState.UNHEALTHY, due, detail
    return InstanceState.IDLE, False, "ready"


def derive_instance(
    spec: PoolSpec, observed: Observed, instance: AsgInstance, now: float
) -> Derived:
    lifecycle = instance.lifecycle_state
    report = observed.reports.get(instance.instance_id)
    age = None if report is None else max(0.0, now - report.received_at)
    if lifecycle.startswith(_GONE_PREFIXES):
        state, due, detail = InstanceState.TERMINATING, False, lifecycle
    elif lifecycle.startswith(_STANDBY_PREFIXES):
        state, due, detail = InstanceState.STANDBY, False, lifecycle
    elif report is None:
        state, due, detail = _silent_state(spec, observed, instance, now)
    else:
        state, due, detail = _reported_state(spec, observed, instance.instance_id, report, now)
    if state in PROTECTED_STATES:
        protected = True
    elif state in _PROTECTION_UNTOUCHED:
        protected = instance.protected
    else:
        protected = False
    view = InstanceView(instance.instance_id, state, protected, age, detail)
    return Derived(view=view, asg=instance, report=report, replace_due=due)


def derive_all(spec: PoolSpec, observed: Observed, now: float) -> tuple[Derived, ...]:
    instances = sorted(observed.asg.instances, key=lambda i: i.instance_id)
    return tuple(derive_instance(spec, observed, i, now) for i in instances)

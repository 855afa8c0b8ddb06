"""Which boot of an instance the planner may believe (docs/identity.md, "Defence in depth").

The credential layer keeps one recorder from speaking for another. These rules keep a busy
recorder safe even if it fails (a stolen credential, a bug): the report store says, for each
instance, how the boot it holds came to be held (`ReportView.boot_since`, `rival_boot`,
`rival_since`, `rival_busy_at`), and from that alone:

- **Conflicted.** A restart takes over once: the old boot falls silent, the new one reports.
  Two live boots take over from each other again and again. A takeover within staleAfter of
  the previous one makes the instance `conflicted` (counted busy, protected, never drained,
  terminated or replaced) until one boot has been silent for staleAfter; the live one wins.
- **Busy elsewhere.** While another boot said busy (or uploading) within staleAfter, a new
  boot's word cannot lower the instance below busy.
- **Settled.** Replacement (expired, unhealthy, failed boot) and removing protection wait
  until the held boot has been the only one reporting for staleAfter.
- **Asked.** A drained report ends an instance only if its boot was the held one when the
  controller last asked it to drain (a drain request, or the start of a lifecycle wait). A
  boot that drained unasked is asked again once settled.

Pure functions of one `ReportView` and the time, cheap enough for every instance every pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from common.wire import BusyStatus
from controller.model import Condition, InstanceState, InstanceView, LifecycleWait, ReportView

MARGIN = 0.1
"""The rules compare strictly (older than staleAfter): look again this much after the edge."""
_SHOWN = 5
"""Instances a condition's message names; the rest are counted."""


def conflicted(report: ReportView, now: float, stale_after: float) -> bool:
    """Two live boots: the held one took over within staleAfter of the previous takeover,
    and has not yet reported alone for staleAfter."""
    rival_since = report.rival_since
    return (
        rival_since is not None
        and report.boot_since - rival_since <= stale_after
        and now - report.boot_since <= stale_after
    )


def settled(report: ReportView, now: float, stale_after: float) -> bool:
    """The held boot has been the only one reporting for longer than staleAfter."""
    return now - report.boot_since > stale_after


def settles_at(report: ReportView, stale_after: float) -> float:
    return report.boot_since + stale_after + MARGIN


def guard(
    report: ReportView, now: float, stale_after: float
) -> tuple[InstanceState, str, float] | None:
    """CONFLICTED or BUSY when the boots say so, with the detail and when it may end; None
    when the held report may speak for the instance."""
    if conflicted(report, now, stale_after):
        if report.rival_boot == report.boot_id:
            detail = f"two senders of boot {report.boot_id} (its seq went back)"
        else:
            detail = f"boots {report.boot_id} and {report.rival_boot} both reporting"
        return InstanceState.CONFLICTED, detail, settles_at(report, stale_after)
    busy_at = report.rival_busy_at
    if busy_at is not None and now - busy_at <= stale_after:
        # An earlier boot said busy or uploading within staleAfter.
        detail = (
            f"an earlier boot was busy {now - busy_at:.0f}s ago; "
            f"boot {report.boot_id} not yet settled"
        )
        return InstanceState.BUSY, detail, busy_at + stale_after + MARGIN
    return None


def recently_busy(report: ReportView, now: float, stale_after: float) -> bool:
    """A report of the instance (this boot's or an earlier one's) said busy or uploading
    within staleAfter: its word that Jibri stopped or expired waits that long."""
    busy_at = report.busy_at
    return (busy_at is not None and now - busy_at <= stale_after) or (
        report.rival_busy_at is not None and now - report.rival_busy_at <= stale_after
    )


def trusted_at(report: ReportView, stale_after: float) -> float:
    """When the held boot's word may end the instance: settled, and staleAfter after the
    instance's last busy report."""
    last_busy = max(
        (t for t in (report.busy_at, report.rival_busy_at) if t is not None), default=-math.inf
    )
    return max(settles_at(report, stale_after), last_busy + stale_after + MARGIN)


def trusted(report: ReportView, now: float, stale_after: float) -> bool:
    """The held boot's word may end the instance (replace it, confirm its drain, unprotect)."""
    return settled(report, now, stale_after) and not recently_busy(report, now, stale_after)


def drain_asked(report: ReportView, asked_at: float | None) -> bool:
    """The held boot was held when the controller last asked to drain, and ever since."""
    return asked_at is not None and report.boot_since <= asked_at


def drained_report(report: ReportView) -> bool:
    """The report says Jibri stopped, nothing to upload, nothing recording."""
    return report.drained and report.pending_uploads == 0 and report.busy is not BusyStatus.BUSY


def needs_confirm(
    report: ReportView, asked_at: float | None, now: float, stale_after: float
) -> bool:
    """Drained without being asked, by a boot that has settled: ask it (`CONFIRM_DRAIN`)."""
    return (
        drained_report(report)
        and not drain_asked(report, asked_at)
        and trusted(report, now, stale_after)
    )


def lifecycle_drained(
    report: ReportView,
    wait: LifecycleWait,
    requested_at: float | None,
    now: float,
    stale_after: float,
) -> bool:
    """In Terminating:Wait, the held boot drained after being asked (the wait asks too)."""
    asked_at = wait.started_at if requested_at is None else max(requested_at, wait.started_at)
    return (
        drained_report(report)
        and drain_asked(report, asked_at)
        and guard(report, now, stale_after) is None
        and not recently_busy(report, now, stale_after)
    )


def wants_drain_request(
    report: ReportView, requested_at: float | None, now: float, stale_after: float
) -> bool:
    """In Terminating:Wait: not asked yet, or asked before the held boot took over and that
    boot has settled."""
    return requested_at is None or (
        not drain_asked(report, requested_at) and settled(report, now, stale_after)
    )


def conflict_conditions(views: Sequence[InstanceView]) -> tuple[Condition, ...]:
    """A `Conflicted` condition naming the instances with two live boots, if any."""
    if not views:
        return ()
    named = "; ".join(f"{v.instance_id} ({v.detail})" for v in views[:_SHOWN])
    more = f"; and {len(views) - _SHOWN} more" if len(views) > _SHOWN else ""
    message = f"{len(views)} instances with two live boots, held busy: {named}{more}"
    return (Condition("Conflicted", True, "TwoBootsReporting", message),)

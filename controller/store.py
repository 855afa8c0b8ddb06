"""The reports the controller holds, one per instance, with the streaks the planner needs.

A report from a new boot of an instance is held at once (an agent restart must be heard
within a report), but with how it came to be held: when it took over, from which boot, and
when that one had taken over or last said busy. controller.boots reads from those whether
two boots are reporting in turn (conflicted) and what a new boot's word may change.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from common.wire import BusyStatus, HealthStatus, Report
from controller.model import ReportView


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    OUT_OF_ORDER = "out-of-order"


@dataclass(frozen=True)
class Accepted:
    outcome: Outcome
    changed: bool
    """True when the report changes what the planner derives (state, drain, uploads)."""


_HEARTBEAT = Accepted(Outcome.ACCEPTED, changed=False)


@dataclass
class _Entry:
    boot_id: str
    seq: int
    view: ReportView
    busy_at: float | None = None
    """The held boot's last busy or uploading report before the one in `view`."""


def _is_idle(report: Report) -> bool:
    return (
        report.jibri.busyStatus is BusyStatus.IDLE
        and report.jibri.healthStatus is HealthStatus.HEALTHY
        and not report.draining
        and not report.drained
        and report.pendingUploads == 0
    )


def _is_unhealthy(report: Report) -> bool:
    return (
        report.jibri.healthStatus is not HealthStatus.HEALTHY
        or report.jibri.busyStatus is BusyStatus.UNKNOWN
    )


def _since(streak_start: float | None, now: float) -> float:
    return now if streak_start is None else streak_start


def _signature(view: ReportView) -> tuple[object, ...]:
    return (
        view.busy,
        view.health,
        view.draining,
        view.drained,
        view.pending_uploads > 0,
        view.boot_since,
    )


def _busy(view: ReportView) -> bool:
    return view.busy is BusyStatus.BUSY or view.pending_uploads > 0


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


_Lineage = tuple[float, str | None, float | None, float | None]
"""A held boot's boot_since, rival_boot, rival_since and rival_busy_at (controller.boots)."""


def _last_busy(held: _Entry) -> float | None:
    """When any boot held so far last said busy or uploading."""
    view = held.view
    return _latest(view.rival_busy_at, view.received_at if _busy(view) else held.busy_at)


def _lineage(held: _Entry | None, boot_id: str, now: float) -> _Lineage:
    """How the reporting boot comes to be held: kept from the same boot, or a takeover."""
    if held is None:
        return now, None, None, None
    view = held.view
    if held.boot_id == boot_id:
        return view.boot_since, view.rival_boot, view.rival_since, view.rival_busy_at
    # A takeover. The boot it replaces had itself taken over at boot_since, unless it was
    # the first boot seen; two takeovers within staleAfter are two live boots.
    rival_since = view.boot_since if view.rival_boot is not None else None
    return now, held.boot_id, rival_since, _last_busy(held)


def _second_sender(held: _Entry, seq: int, now: float) -> None:
    """A seq below the held one: another sender of the same boot (its credential stolen, or
    a late retry). The held report stays; the instance is conflicted from now, and the
    lower seq is taken so that the genuine agent's next report is heard again."""
    held.view = held.view._replace(
        boot_since=now, rival_boot=held.boot_id, rival_since=now, rival_busy_at=_last_busy(held)
    )
    held.seq = seq


class ReportStore:
    """Latest report per instance. Reports from ids not (yet) in a managed ASG are held in a
    bounded map, oldest evicted first, until the id shows up or they age out."""

    def __init__(self, *, max_unmanaged: int = 10_000) -> None:
        self._managed: dict[str, _Entry] = {}
        self._unmanaged: OrderedDict[str, _Entry] = OrderedDict()
        self._max_unmanaged = max_unmanaged

    def __len__(self) -> int:
        return len(self._managed) + len(self._unmanaged)

    @property
    def unmanaged_count(self) -> int:
        return len(self._unmanaged)

    def accept(self, report: Report, now: float, *, managed: bool) -> Accepted:
        instance_id = report.instanceId
        held = self._managed.get(instance_id) or self._unmanaged.get(instance_id)
        if held is not None and held.boot_id == report.bootId and report.seq <= held.seq:
            if report.seq == held.seq:
                return Accepted(Outcome.OUT_OF_ORDER, changed=False)
            _second_sender(held, report.seq, now)
            return Accepted(Outcome.OUT_OF_ORDER, changed=True)
        previous = held.view if held is not None else None
        jibri = report.jibri
        same_boot = held is not None and held.boot_id == report.bootId
        if (
            managed
            and same_boot
            and held is not None
            and previous is not None
            and instance_id in self._managed
            and previous.busy is jibri.busyStatus
            and previous.health is jibri.healthStatus
            and previous.draining == report.draining
            and previous.drained == report.drained
            and previous.pending_uploads == report.pendingUploads
            and previous.recordings_finished == report.recordingsFinished
            and previous.ami_id == report.amiId
        ):
            # A heartbeat (most reports are): the same state again, only fresher. Every
            # streak and what the planner derives stay as they are.
            held.seq = report.seq
            held.view = previous._replace(received_at=now)
            return _HEARTBEAT
        boot_since, rival_boot, rival_since, rival_busy_at = _lineage(held, report.bootId, now)
        busy_at = None
        if same_boot and held is not None and previous is not None:
            busy_at = previous.received_at if _busy(previous) else held.busy_at
        idle = _is_idle(report)
        unhealthy = _is_unhealthy(report)
        idle_since = _since(previous.idle_since if previous else None, now)
        unhealthy_since = _since(previous.unhealthy_since if previous else None, now)
        view = ReportView(
            received_at=now,
            busy=report.jibri.busyStatus,
            health=report.jibri.healthStatus,
            draining=report.draining,
            drained=report.drained,
            pending_uploads=report.pendingUploads,
            idle_since=idle_since if idle else None,
            unhealthy_since=unhealthy_since if unhealthy else None,
            jibri_seen=(previous is not None and previous.jibri_seen)
            or report.jibri.busyStatus is not BusyStatus.UNKNOWN,
            recordings_finished=report.recordingsFinished,
            booted_at=None if report.uptimeSeconds is None else now - report.uptimeSeconds,
            ami_id=report.amiId,
            agent_version=report.agentVersion,
            boot_id=report.bootId,
            boot_since=boot_since,
            rival_boot=rival_boot,
            rival_since=rival_since,
            rival_busy_at=rival_busy_at,
            busy_at=busy_at,
        )
        entry = _Entry(report.bootId, report.seq, view, busy_at)
        if managed:
            self._unmanaged.pop(instance_id, None)
            self._managed[instance_id] = entry
        else:
            self._unmanaged.pop(instance_id, None)
            self._unmanaged[instance_id] = entry
            while len(self._unmanaged) > self._max_unmanaged:
                self._unmanaged.popitem(last=False)
        changed = previous is None or _signature(previous) != _signature(view)
        return Accepted(Outcome.ACCEPTED, changed=changed)

    def get(self, instance_id: str) -> ReportView | None:
        entry = self._managed.get(instance_id) or self._unmanaged.get(instance_id)
        return entry.view if entry is not None else None

    def adopt(self, instance_ids: Iterable[str]) -> None:
        """Mark ids as members of a managed ASG, so their reports are no longer evictable."""
        for instance_id in instance_ids:
            entry = self._unmanaged.pop(instance_id, None)
            if entry is not None:
                self._managed[instance_id] = entry

    def release(self, instance_ids: Iterable[str]) -> None:
        """Forget instances that have left every managed ASG."""
        for instance_id in instance_ids:
            self._managed.pop(instance_id, None)

    def settle(
        self, present: Collection[str], departed: Iterable[str], *, unmanaged_before: float
    ) -> None:
        """After a pool's observation: release the instances that left its group, adopt the
        held reports of those it now has, and drop held reports of unknown ids received
        before `unmanaged_before`."""
        self.release(departed)
        if self._unmanaged:
            self.adopt(present)
        self.expire_unmanaged(unmanaged_before)

    def expire_unmanaged(self, older_than: float) -> int:
        """Drop held reports of unknown ids received before `older_than`; return how many."""
        dropped = [i for i, e in self._unmanaged.items() if e.view.received_at < older_than]
        for instance_id in dropped:
            del self._unmanaged[instance_id]
        return len(dropped)

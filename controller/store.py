"""The reports the controller holds, one per instance, with the streaks the planner needs."""

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
    return (view.busy, view.health, view.draining, view.drained, view.pending_uploads > 0)


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
            return Accepted(Outcome.OUT_OF_ORDER, changed=False)
        previous = held.view if held is not None else None
        jibri = report.jibri
        if (
            managed
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
            held.boot_id, held.seq = report.bootId, report.seq
            held.view = previous._replace(received_at=now)
            return _HEARTBEAT
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
        )
        entry = _Entry(report.bootId, report.seq, view)
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

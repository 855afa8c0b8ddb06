"""The agent's latest view of its instance, shared by its tasks, with change notification.

The poller and the webhook both feed Jibri's status in; the reporter, the drain and the
fallback each hold a `Signal` that the board sets on every change, so a change reaches the
controller without waiting for the next period.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from agent.jibri import UNKNOWN, Outcome, Probe
from common.wire import BusyStatus, HealthStatus, JibriStatus


@dataclass(frozen=True)
class LocalState:
    """Everything a report says about the instance, at one moment."""

    jibri: JibriStatus
    draining: bool
    drained: bool
    pending_uploads: int
    recordings_finished: int = 0
    ami_id: str | None = None
    agent_version: str | None = None
    uptime_seconds: int | None = None

    @property
    def free(self) -> bool:
        """Ready for a new recording: the classic JibriFree metric is 1."""
        return (
            self.jibri.busyStatus is BusyStatus.IDLE
            and self.jibri.healthStatus is HealthStatus.HEALTHY
            and not self.draining
            and self.pending_uploads == 0
        )


class Signal:
    """A wake-up flag for one consumer: set by the board, cleared by the consumer."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, seconds: float) -> bool:
        """Wait until set or `seconds` pass; return whether it is set."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()


def _key(probe: Probe) -> tuple[JibriStatus, bool]:
    return probe.status, probe.outcome is Outcome.UNREACHABLE


class Board:
    """Latest Jibri probe and pending-upload count; sets every subscriber's signal on change."""

    def __init__(self) -> None:
        self._probe: Probe | None = None
        self._pushed_at: float | None = None
        self._pending_uploads = 0
        self._signals: list[Signal] = []
        self._recording = False
        self.recordings_finished = 0
        """Recordings finished since this agent started (it starts at boot): each time Jibri
        answers IDLE or EXPIRED after answering BUSY (a gap of UNKNOWN between counts once)."""

    @property
    def probe(self) -> Probe | None:
        """The latest accepted look at Jibri, or None before the first one."""
        return self._probe

    @property
    def jibri(self) -> JibriStatus:
        return self._probe.status if self._probe is not None else UNKNOWN

    @property
    def pending_uploads(self) -> int:
        return self._pending_uploads

    def subscribe(self) -> Signal:
        signal = Signal()
        self._signals.append(signal)
        return signal

    def notify(self) -> None:
        """Wake every subscriber (something they read elsewhere has changed)."""
        for signal in self._signals:
            signal.set()

    def observe(self, probe: Probe, *, pushed: bool = False) -> bool:
        """Take a probe in; return whether it changed anything.

        A polled probe that started before the latest webhook push is dropped: it may have
        been answered just before the change the push announced, and would undo it.
        """
        if not pushed and self._pushed_at is not None and probe.started_at < self._pushed_at:
            return False
        if pushed:
            self._pushed_at = probe.started_at
        previous, self._probe = self._probe, probe
        busy = probe.status.busyStatus
        if busy is BusyStatus.BUSY:
            self._recording = True
        elif busy in (BusyStatus.IDLE, BusyStatus.EXPIRED) and self._recording:
            self._recording = False
            self.recordings_finished += 1
        changed = previous is None or _key(previous) != _key(probe)
        if changed:
            self.notify()
        return changed

    def set_pending_uploads(self, count: int) -> bool:
        changed = count != self._pending_uploads
        self._pending_uploads = count
        if changed:
            self.notify()
        return changed

"""Turns what the controller sees into demand per minute: an instance going from idle to busy
is a recording started, and back to idle a recording ended; jicofo's failures are requests
missed."""

from __future__ import annotations

from collections.abc import Mapping

from controller.demand.history import DemandHistory


class DemandRecorder:
    """Feeds one pool's `DemandHistory` from each pass's instance states."""

    def __init__(self, history: DemandHistory) -> None:
        self.history = history
        self._busy: dict[str, bool] = {}

    def observe(
        self, wall_time: float, busy: Mapping[str, bool | None], *, recording: int | None = None
    ) -> int:
        """Record a pass at `wall_time`: `busy` maps each instance to True (recording), False
        (free: idle or starting) or None (state unknown: stale, unreported, draining). Returns
        the recordings started since the last pass.

        Only a known free → busy change counts, so an instance first met busy (after a
        controller restart) is not a new recording, and an unknown spell in between neither
        adds one nor hides one that follows. `recording`, if the caller counted them, is how
        many are True."""
        minute = int(wall_time // 60)
        started = ended = 0
        known: dict[str, bool] = {}
        previous = self._busy
        for instance, now_busy in busy.items():
            before = previous.get(instance)
            if now_busy is None:
                if before is not None:
                    known[instance] = before
                continue
            if now_busy and before is False:
                started += 1
            elif before and not now_busy:
                ended += 1
            known[instance] = now_busy
        self._busy = known
        if started:
            self.history.add_started(minute, started)
        if ended:
            self.history.add_ended(minute, ended)
        if recording is None:
            recording = sum(1 for b in busy.values() if b)
        self.history.note_busy(minute, float(recording))
        return started

    def missed(self, wall_time: float, count: float) -> None:
        """Requests that found no recorder, as jicofo counted them."""
        if count > 0:
            self.history.add_missed(int(wall_time // 60), count)

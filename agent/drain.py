"""The agent's side of the drain handshake (docs/design.md §6).

Once the controller answers `{"drain": true}`, the agent writes a marker file (atomically,
before anything else) and asks Jibri to shut down gracefully. Jibri exits once idle; a
recording that started meanwhile runs to its end first, and the agent forces nothing. The
marker makes the drain outlive a restart of the agent, of Jibri or of the controller: on start
with a marker, the agent keeps asking Jibri to shut down for as long as Jibri answers.

The instance is drained when Jibri, after accepting the shutdown, no longer listens (its
process exited) and the spool holds no recording waiting for upload.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.jibri import Outcome, Probe
from common.logs import event

log = logging.getLogger(__name__)

MARKER_NAME = "drain.json"


@dataclass(frozen=True)
class DrainRecord:
    """What the marker file holds (wall-clock seconds, for people reading it)."""

    requested_at: float
    shutdown_accepted_at: float | None = None


class DrainMarker:
    """The marker file: present while (and after) the instance drains."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DrainRecord | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            accepted = data.get("shutdownAcceptedAt")
            return DrainRecord(
                requested_at=float(data["requestedAt"]),
                shutdown_accepted_at=None if accepted is None else float(accepted),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            # The file exists, so a drain was asked for: keep draining, from the start.
            event(
                log,
                "drain marker unreadable",
                level=logging.WARNING,
                path=str(self.path),
                action="continue the drain",
            )
            return DrainRecord(requested_at=time.time())

    def save(self, record: DrainRecord) -> None:
        """Replace the marker atomically and durably (write, fsync, rename, fsync the dir)."""
        body = json.dumps(
            {"requestedAt": record.requested_at, "shutdownAcceptedAt": record.shutdown_accepted_at}
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class ShutdownClient(Protocol):
    async def graceful_shutdown(self) -> bool: ...


class Drainer:
    """Drives one instance's drain; `step` is called on every new look at Jibri."""

    def __init__(
        self,
        marker: DrainMarker,
        jibri: ShutdownClient,
        *,
        resend_interval: float,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._marker = marker
        self._jibri = jibri
        self._resend_interval = resend_interval
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._record = marker.load()
        self._accepted_at: float | None = None
        """Monotonic time of the latest accepted shutdown in this process."""
        self._gone_since_accept = False
        if self._record is not None:
            event(log, "drain resumed", path=str(marker.path), reason="drain marker found")

    @property
    def active(self) -> bool:
        return self._record is not None

    @property
    def shutdown_accepted(self) -> bool:
        return self._record is not None and self._record.shutdown_accepted_at is not None

    def request(self) -> bool:
        """Start draining (the marker is on disk when this returns); False if already draining."""
        if self._record is not None:
            return False
        record = DrainRecord(requested_at=self._wall_clock())
        self._marker.save(record)
        self._record = record
        event(
            log,
            "drain requested",
            reason="the controller answered drain: true",
            action="ask Jibri to shut down once idle",
        )
        return True

    async def step(self, probe: Probe | None) -> bool:
        """Ask Jibri to shut down if it may not know yet; return whether it newly accepted."""
        if self._record is None:
            return False
        if probe is not None and probe.outcome is Outcome.UNREACHABLE:
            if self._accepted_at is not None and probe.started_at > self._accepted_at:
                self._gone_since_accept = True
            return False
        due = (
            self._accepted_at is None
            or self._gone_since_accept
            or self._monotonic() - self._accepted_at >= self._resend_interval
        )
        if not due or not await self._jibri.graceful_shutdown():
            return False
        newly = self._accepted_at is None or self._gone_since_accept
        self._accepted_at = self._monotonic()
        self._gone_since_accept = False
        if self._record.shutdown_accepted_at is None:
            self._record = DrainRecord(self._record.requested_at, self._wall_clock())
            self._marker.save(self._record)
        if newly:
            event(log, "graceful shutdown accepted", detail="Jibri exits once idle")
        return newly

    def drained(self, probe: Probe | None, pending_uploads: int) -> bool:
        """Jibri exited after accepting the shutdown, and no recording waits for upload."""
        if self._record is None or self._record.shutdown_accepted_at is None:
            return False
        if probe is None or probe.outcome is not Outcome.UNREACHABLE or pending_uploads > 0:
            return False
        # Accepted by an earlier agent process: any refusal seen now comes after it.
        return self._accepted_at is None or probe.started_at > self._accepted_at

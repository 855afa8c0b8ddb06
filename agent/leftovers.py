"""Recordings left in Jibri's recordings directory: counted as pending, adopted into the spool.

Jibri hands each finished recording to `agent finalize` but only logs the script's exit
status. When the hand-off fails (spool on another filesystem, permissions, a full disk), the
recording stays in `<recordings-dir>/<session>/`, outside the spool. The agent counts every
such directory as pending, so the instance is never reported drained while one is there, and
adopts it into the spool once it is provably finished:

- Jibri records one session at a time, into a directory it creates when the recording starts.
  A directory listed *before* a health poll that answers IDLE or EXPIRED, or finds Jibri's
  process gone, is not being written: had its recording still run, Jibri would have answered
  BUSY. Only a poll made for the purpose counts; a webhook push may have left Jibri before
  the listing, and a recording may have started since.
- And nothing in it changed for `quiet_for`: an ffmpeg orphaned by a killed Jibri would
  still be writing.

Adoption is finalize's own hand-off (one atomic rename) when the spool shares the filesystem;
otherwise a copy into the spool's staging area, fsynced, renamed into incoming/ (the commit
point), and only then the original is removed. A crash between the last two steps leaves the
original and its complete copy: the next pass sees the copy's marker and removes the original.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from agent.finalize import FinalizeError, hand_off, write_marker
from agent.jibri import Outcome, Probe
from agent.metrics import AgentMetrics
from agent.spool import MARKER_NAME, EntryInfo, Spool, entry_name, fsync_dir, read_info
from common.logs import Transitions, event
from common.wire import BusyStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """A session directory in Jibri's recordings directory that holds something."""

    path: Path
    last_change: float
    """Newest mtime (Unix seconds) of the directory and everything in it."""


def not_recording(probe: Probe | None) -> bool:
    """Whether this look at Jibri proves it records nothing: idle, expired, or gone."""
    if probe is None:
        return False
    if probe.outcome is Outcome.UNREACHABLE:
        return True
    idle = (BusyStatus.IDLE, BusyStatus.EXPIRED)
    return probe.outcome is Outcome.OK and probe.status.busyStatus in idle


def _holds_files(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return any(entry.name != MARKER_NAME for entry in entries)


def session_dirs(root: Path, skip: Collection[Path] = ()) -> list[Path]:
    """The non-empty session directories under `root` (none if it does not exist).

    Empty ones hold nothing to lose and are left alone (Jibri may have just created one).
    `skip` holds the agent's own directories (the spool…), in case one was put in `root`.
    """
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    own = [Path(os.path.abspath(p)) for p in skip]
    return [
        p
        for p in entries
        if p.is_dir()
        and not p.is_symlink()
        and not any(p.absolute() == o or p.absolute() in o.parents for o in own)
        and _holds_files(p)
    ]


def _last_change(directory: Path) -> float:
    newest = directory.stat().st_mtime
    for parent, _, names in os.walk(directory):
        newest = max(newest, os.stat(parent).st_mtime)
        for name in names:
            newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def scan(root: Path, skip: Collection[Path] = ()) -> list[Leftover]:
    return [Leftover(p, _last_change(p)) for p in session_dirs(root, skip)]


def pending_leftovers(count: int, probe: Probe | None) -> int:
    """How many of `count` session directories wait for the spool.

    Unless Jibri is known not to record, one of them may be the recording under way.
    """
    return count if not_recording(probe) else max(count - 1, 0)


def choose(listing: Sequence[Leftover], probe: Probe, now: float, quiet_for: float) -> list[Path]:
    """The leftovers to adopt, given a poll of Jibri that started after `listing` was taken."""
    if not not_recording(probe):
        return []
    return [item.path for item in listing if now - item.last_change >= quiet_for]


def _fsync_tree(root: Path) -> None:
    for parent, _, names in os.walk(root):
        for name in names:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(parent))


def _copy_in(source: Path, spool: Spool, now: datetime) -> Path:
    """Copy `source` into the spool across filesystems, then remove it. Raises OSError."""
    session = source.name
    staging = spool.adopting / entry_name(session, now)
    shutil.rmtree(staging, ignore_errors=True)
    spool.adopting.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging, symlinks=True)
    write_marker(staging, EntryInfo(session=session, enqueued_at=now, source=str(source)))
    _fsync_tree(staging)
    target = spool.incoming / staging.name
    os.rename(staging, target)
    fsync_dir(spool.incoming)
    fsync_dir(spool.adopting)
    shutil.rmtree(source)
    fsync_dir(source.parent)
    return target


def adopt(source: Path, spool: Spool, now: datetime) -> tuple[Path, str] | None:
    """Move a finished recording into the spool; return its entry and how ("rename", "copy",
    "already-copied"), or None if it is gone (a late finalize took it). Raises FinalizeError
    or OSError, and then `source` is still in place."""
    if not os.path.lexists(source):
        return None
    spool.ensure()
    existing = spool.find_session(source.name)
    if existing is not None:
        if read_info(existing).source != str(source):
            raise FinalizeError(f"session {source.name} is already spooled at {existing}")
        # A copy that completed before a crash kept the original from being removed.
        shutil.rmtree(source)
        return existing, "already-copied"
    if source.stat().st_dev == spool.incoming.stat().st_dev:
        return hand_off(source, spool, now=now), "rename"
    return _copy_in(source, spool, now), "copy"


class HealthProbe(Protocol):
    async def probe(self) -> Probe: ...


class Adopter:
    """Finds finished recordings left in Jibri's recordings directory and adopts them."""

    def __init__(
        self,
        recordings: Path,
        spool: Spool,
        jibri: HealthProbe,
        metrics: AgentMetrics,
        *,
        quiet_for: float,
        interval: float,
        skip: Collection[Path] = (),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._recordings = recordings
        self.skip = (spool.root, *skip)
        """The agent's own directories, never taken for recordings."""
        self._spool = spool
        self._jibri = jibri
        self._metrics = metrics
        self._quiet_for = quiet_for
        self._interval = interval
        self._wall_clock = wall_clock
        self._failures: dict[Path, Transitions] = {}

    async def run(self) -> None:
        # Partial copies of an earlier process: their originals are still in place.
        await asyncio.to_thread(shutil.rmtree, self._spool.adopting, True)
        if not self._recordings.is_dir():
            event(
                log,
                "recordings directory missing",
                level=logging.WARNING,
                path=str(self._recordings),
                reason="no recording Jibri leaves there can be seen until it exists; "
                "--recordings-dir must be Jibri's recording.recordings-directory",
            )
        while True:
            await self.step()
            await asyncio.sleep(self._interval)

    async def step(self) -> int:
        """One pass: list, poll Jibri, adopt what is proven finished; return how many."""
        try:
            listing = await asyncio.to_thread(scan, self._recordings, self.skip)
        except OSError:
            return 0  # the pending count logs it, and counts it as pending
        self._forget_gone(i.path for i in listing)
        quiet = [i for i in listing if self._wall_clock() - i.last_change >= self._quiet_for]
        if not quiet:
            return 0
        probe = await self._jibri.probe()
        adopted = 0
        for path in choose(quiet, probe, self._wall_clock(), self._quiet_for):
            adopted += await self._adopt(path)
        return adopted

    async def _adopt(self, path: Path) -> int:
        failures = self._failures.setdefault(
            path, Transitions(log, "recording adoption", path=str(path), session=path.name)
        )
        try:
            done = await asyncio.to_thread(
                adopt, path, self._spool, datetime.fromtimestamp(self._wall_clock(), UTC)
            )
        except FinalizeError as exc:
            failures.failed("refused", str(exc), level=logging.ERROR)
            return 0
        except OSError as exc:
            kind = errno.errorcode.get(exc.errno or 0, "os-error").lower()
            failures.failed(kind, f"{exc}; the recording stays pending", level=logging.ERROR)
            return 0
        self._failures.pop(path, None)
        if done is None:
            return 0
        entry, method = done
        self._metrics.recordings_adopted.labels(method).inc()
        event(
            log,
            "recording adopted",
            level=logging.WARNING,
            session=path.name,
            path=str(path),
            entry=str(entry),
            method=method,
            reason="left in Jibri's recordings directory: its finalize did not hand it over",
        )
        return 1

    def _forget_gone(self, present: Iterable[Path]) -> None:
        keep = set(present)
        for path in [p for p in self._failures if p not in keep]:
            del self._failures[path]

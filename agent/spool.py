"""The agent's durable spool of finished recordings awaiting upload.

Layout under the spool root (all on one filesystem, so every hand-off is an atomic rename):

    incoming/<stamp>_<session>/   handed over by `agent finalize`; waiting or uploading
    failed/<stamp>_<session>/     hit a permanent upload error; kept for an operator, never deleted
    done/<stamp>_<session>/       every object verified in S3; being deleted

`<stamp>` is the enqueue time in UTC (`20250131T235959123456Z`), so names sort oldest first.
Inside each entry, besides Jibri's files, the agent keeps its own dot-files (never uploaded):
the entry marker written by finalize, the upload state and, in failed/, the failure reason.
An operator may also `mv` any recording directory into incoming/ by hand: an entry without
a marker takes its directory name as the session and its mtime as the enqueue time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

MARKER_NAME: Final = ".jibri-agent-entry.json"
STATE_NAME: Final = ".jibri-agent-upload.json"
FAILURE_NAME: Final = ".jibri-agent-failure.json"
RESERVED_NAMES: Final = frozenset({MARKER_NAME, STATE_NAME, FAILURE_NAME})

LOCK_NAME: Final = ".uploader.lock"
_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
_NAME_RE: Final = re.compile(r"(?P<stamp>\d{8}T\d{12}Z)_(?P<session>.+)", re.DOTALL)


@dataclass(frozen=True)
class EntryInfo:
    """What finalize recorded about a recording when it entered the spool."""

    session: str
    enqueued_at: datetime
    source: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "session": self.session,
                "enqueuedAt": self.enqueued_at.astimezone(UTC).isoformat(),
                "source": self.source,
            }
        )


def entry_name(session: str, enqueued_at: datetime) -> str:
    return f"{enqueued_at.astimezone(UTC).strftime(_STAMP_FORMAT)}_{session}"


def parse_entry_name(name: str) -> tuple[datetime, str] | None:
    """(enqueue time, session) from an entry name, or None for a name finalize did not make."""
    match = _NAME_RE.fullmatch(name)
    if match is None:
        return None
    try:
        stamp = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return stamp, match["session"]


def read_info(entry: Path) -> EntryInfo:
    """The entry's marker; falls back to its name, then its mtime, for hand-moved directories."""
    try:
        raw = json.loads((entry / MARKER_NAME).read_text(encoding="utf-8"))
        return EntryInfo(
            session=str(raw["session"]),
            enqueued_at=datetime.fromisoformat(raw["enqueuedAt"]).astimezone(UTC),
            source=raw.get("source"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    parsed = parse_entry_name(entry.name)
    if parsed is not None:
        return EntryInfo(session=parsed[1], enqueued_at=parsed[0])
    return EntryInfo(
        session=entry.name,
        enqueued_at=datetime.fromtimestamp(entry.stat().st_mtime, UTC),
    )


def fsync_dir(directory: Path) -> None:
    """Make the latest renames and creations in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class SpoolBusy(Exception):
    """Another process (the agent, or a manual uploader) is uploading from this spool."""


class UploadLock:
    """The exclusive right to upload from a spool; released on close or process death."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"another uploader holds {path}") from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> UploadLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.failed = root / "failed"
        self.done = root / "done"
        self.adopting = root / "adopting"
        """Staging for recordings copied in from another filesystem; never counted."""

    def ensure(self) -> None:
        for directory in (self.incoming, self.failed, self.done):
            directory.mkdir(parents=True, exist_ok=True)

    def lock_uploads(self) -> UploadLock:
        """Take the exclusive right to upload, or raise SpoolBusy: two uploaders on one spool
        would upload the same recording twice and delete it under each other."""
        self.ensure()
        return UploadLock(self.root / LOCK_NAME)

    @staticmethod
    def _entries(directory: Path) -> list[Path]:
        try:
            return sorted(p for p in directory.iterdir() if p.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def pending(self) -> list[Path]:
        """Recordings still to upload, oldest name first."""
        return self._entries(self.incoming)

    def failed_entries(self) -> list[Path]:
        """Recordings that hit a permanent upload error, oldest name first."""
        return self._entries(self.failed)

    def pending_count(self) -> int:
        """Recordings on this instance that are not safely in S3: to upload, or failed.

        Failed recordings count too: while any is here the instance must stay protected,
        since terminating it would delete the only copy.
        """
        return len(self.pending()) + len(self.failed_entries())

    def oldest_enqueued_at(self) -> datetime | None:
        """Enqueue time of the oldest recording still to upload, or None when there is none."""
        oldest: datetime | None = None
        for entry in self.pending():
            try:
                at = read_info(entry).enqueued_at
            except OSError:
                continue
            if oldest is None or at < oldest:
                oldest = at
        return oldest

    def find_session(self, session: str) -> Path | None:
        """The spool entry (waiting, failed or being deleted) that holds `session`, if any."""
        for directory in (self.incoming, self.failed, self.done):
            for entry in self._entries(directory):
                parsed = parse_entry_name(entry.name)
                if (parsed[1] if parsed else entry.name) == session:
                    return entry
        return None

    def move_to_failed(self, entry: Path, reason: str, *, now: datetime) -> Path:
        """Atomically move `entry` to failed/, with the reason written inside it first."""
        failure = {"reason": reason, "failedAt": now.astimezone(UTC).isoformat()}
        # A full disk must not keep the recording out of failed/; the log has the reason too.
        with contextlib.suppress(OSError):
            write_durably(entry / FAILURE_NAME, json.dumps(failure).encode())
        target = self.failed / entry.name
        os.rename(entry, target)
        fsync_dir(self.failed)
        fsync_dir(entry.parent)
        return target

    def requeue_failed(self) -> list[Path]:
        """Move every failed recording back to incoming/ for another upload attempt."""
        moved = []
        for entry in self.failed_entries():
            (entry / FAILURE_NAME).unlink(missing_ok=True)
            target = self.incoming / entry.name
            os.rename(entry, target)
            moved.append(target)
        if moved:
            fsync_dir(self.incoming)
            fsync_dir(self.failed)
        return moved

    def remove_uploaded(self, entry: Path) -> None:
        """Delete a fully uploaded entry: one atomic rename out of incoming/, then the files.

        A crash mid-delete leaves a partial entry only in done/, which `purge_done` finishes,
        never a half-deleted recording in incoming/ that would be uploaded again truncated.
        """
        target = self.done / entry.name
        os.rename(entry, target)
        fsync_dir(self.done)
        fsync_dir(entry.parent)
        shutil.rmtree(target)

    def purge_done(self) -> None:
        for entry in self._entries(self.done):
            shutil.rmtree(entry, ignore_errors=True)

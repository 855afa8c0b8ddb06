"""Upload progress of one spool entry, persisted inside it so that a restart resumes.

The state file is rewritten atomically (temporary file, fsync, rename) after every step
that S3 acknowledged: the multipart upload's creation, each part, each verified object.
A lost or unreadable state file costs at most a re-upload, never a recording.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from agent.spool import STATE_NAME, write_durably
from agent.upload.checksums import ChecksumAlgorithm, ChecksumType

log = logging.getLogger(__name__)


class PartRecord(BaseModel):
    etag: str
    checksum: str
    size: int


class FileRecord(BaseModel):
    """One local file and the object it becomes."""

    key: str
    size: int
    mtime_ns: int
    algorithm: ChecksumAlgorithm | None = None
    """Algorithm of `checksum` and the parts' checksums (None in state from before it was kept)."""
    checksum_type: ChecksumType = ChecksumType.COMPOSITE
    """Of the multipart object."""
    checksum: str | None = None
    """Whole-object checksum of a single PutObject, known before the PUT is sent."""
    part_size: int | None = None
    upload_id: str | None = None
    parts: dict[int, PartRecord] = Field(default_factory=dict)
    attempted: bool = False
    """An upload was started, so the object may already be in S3."""
    verified: bool = False
    mismatches: int = 0

    def matches(self, key: str, size: int, mtime_ns: int) -> bool:
        return (self.key, self.size, self.mtime_ns) == (key, size, mtime_ns)

    def restart(self) -> None:
        """Forget the upload so far; the next attempt starts from nothing."""
        self.algorithm = None
        self.checksum = None
        self.part_size = None
        self.upload_id = None
        self.parts = {}


class UploadState(BaseModel):
    version: Literal[1] = 1
    files: dict[str, FileRecord] = Field(default_factory=dict)


class StateStore:
    """The state of one entry, saved durably; safe to save from concurrent part uploads."""

    def __init__(self, entry: Path) -> None:
        self.path = entry / STATE_NAME
        self.state = self._load()
        self._lock = asyncio.Lock()

    def _load(self) -> UploadState:
        try:
            return UploadState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return UploadState()
        except (OSError, ValidationError) as error:
            log.warning("ignoring unreadable upload state %s: %s", self.path, error)
            return UploadState()

    async def save(self) -> None:
        async with self._lock:
            data = self.state.model_dump_json().encode()
            await asyncio.to_thread(write_durably, self.path, data)

    def known_upload_ids(self) -> set[str]:
        return {f.upload_id for f in self.state.files.values() if f.upload_id}

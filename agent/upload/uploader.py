"""Uploads every spooled recording to S3, verifies it, and only then deletes it.

Recordings go oldest first, one at a time, each file to the key the template gives it,
Jibri's metadata.json last (so a consumer that sees it knows the media are complete).
A transient S3 error is retried forever with backoff; a permanent one moves the recording
to failed/, where it is kept and still counted as pending, so the instance stays protected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from agent.spool import RESERVED_NAMES, Spool, SpoolBusy, UploadLock, read_info
from agent.upload.config import UploadConfig
from agent.upload.keys import object_metadata
from agent.upload.metrics import UploadMetrics
from agent.upload.object_upload import ObjectUploader, PermanentUploadError, stat_record
from agent.upload.s3client import S3, MultipartUploadRef, NoSuchUploadError
from agent.upload.state import StateStore
from common.logs import Transitions

log = logging.getLogger(__name__)

METADATA_FILE: Final = "metadata.json"
_AGENT_FILE_PREFIX: Final = ".jibri-agent-"


def recording_files(entry: Path) -> list[str]:
    """Relative paths of the files to upload: all but the agent's own, metadata.json last."""
    found: list[str] = []
    for directory, subdirs, names in os.walk(entry):
        subdirs.sort()
        for name in names:
            path = Path(directory, name)
            if name in RESERVED_NAMES or name.startswith(_AGENT_FILE_PREFIX):
                continue
            if path.is_symlink() or not path.is_file():
                log.warning("not uploading %s: not a regular file", path)
                continue
            found.append(path.relative_to(entry).as_posix())
    return sorted(found, key=lambda rel: (rel == METADATA_FILE, rel))


def read_meeting_url(entry: Path) -> str | None:
    """The `meeting_url` of Jibri's metadata.json, if the recording has a readable one."""
    path = entry / METADATA_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("meeting_url")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as error:
        log.warning("cannot read the meeting URL from %s: %s", path, error)
        return None
    return value if isinstance(value, str) and value else None


class Uploader:
    def __init__(
        self,
        *,
        spool: Spool,
        s3: S3,
        config: UploadConfig,
        metrics: UploadMetrics,
        instance_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._spool = spool
        self._s3 = s3
        self._config = config
        self._metrics = metrics
        self._keys = config.keys(instance_id)
        self._clock = clock
        self._sleep = sleep
        self._objects = ObjectUploader(s3=s3, config=config, metrics=metrics, sleep=sleep)
        self._spool_trouble = Transitions(log, f"spool {spool.root}")

    async def run(self) -> None:
        """Upload whatever the spool holds, forever (once no other uploader holds it)."""
        with await self._exclusive():
            await self._run_locked()

    async def _exclusive(self) -> UploadLock:
        waiting = Transitions(log, f"uploads from {self._spool.root}")
        while True:
            try:
                lock = self._spool.lock_uploads()
            except SpoolBusy as error:
                waiting.failed("busy", f"{error}; waiting for it to finish")
                await self._sleep(self._config.poll_interval)
                continue
            waiting.ok("the other uploader is gone; uploading")
            return lock

    async def _run_locked(self) -> None:
        self._spool.purge_done()
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            if self._keys.owned_prefix() is not None and loop.time() >= next_sweep:
                await self.sweep_orphans()
                next_sweep = loop.time() + self._config.sweep_interval
            try:
                uploaded = await self.run_once()
            except OSError as error:
                self._spool_trouble.failed("unreadable", f"cannot read ({error}); retrying")
                uploaded = 0
            else:
                self._spool_trouble.ok()
            if not uploaded:
                await self._sleep(self._config.poll_interval)

    async def run_once(self) -> int:
        """Try every recording now in the spool, oldest first; return how many were uploaded."""
        uploaded = 0
        for entry in self._spool.pending():
            uploaded += await self.upload_entry(entry)
        return uploaded

    async def upload_entry(self, entry: Path) -> bool:
        """Upload one spooled recording; True when it is in S3 and deleted locally."""
        try:
            info = read_info(entry)
            files = recording_files(entry)
        except OSError as error:
            self._fail(entry, f"cannot read the recording: {error}")
            return False
        store = StateStore(entry)
        metadata = object_metadata(info.session, read_meeting_url(entry))
        total = 0
        started = asyncio.get_running_loop().time()
        try:
            for rel in files:
                key = self._keys.render(
                    session=info.session, file=rel, enqueued_at=info.enqueued_at
                )
                total += await self._upload_file(entry / rel, rel, key, metadata, store)
            await self._abort_strays(store)
        except PermanentUploadError as error:
            self._fail(entry, str(error))
            return False
        try:
            self._spool.remove_uploaded(entry)
        except OSError as error:
            log.error("recording %s is in S3 but cannot be deleted: %s", info.session, error)
            return False
        self._metrics.uploads.labels("success").inc()
        took = asyncio.get_running_loop().time() - started
        log.info(
            "uploaded recording %s to s3://%s: %d objects, %d bytes in %.2f s (%.1f MiB/s)",
            info.session,
            self._config.bucket,
            len(files),
            total,
            took,
            total / 2**20 / max(took, 1e-6),
        )
        return True

    async def _upload_file(
        self, path: Path, rel: str, key: str, metadata: Mapping[str, str], store: StateStore
    ) -> int:
        previous = store.state.files.get(rel)
        try:
            record, changed = stat_record(path, key, previous)
        except OSError as error:
            raise PermanentUploadError(f"cannot read {path}: {error}") from error
        if changed and previous is not None:
            log.warning("%s changed since its upload started; uploading it again", path)
            self._metrics.restarts.labels("changed").inc()
            if previous.upload_id:
                await self._abort(MultipartUploadRef(previous.key, previous.upload_id))
        store.state.files[rel] = record
        await self._objects.upload(path, record, metadata, store)
        return record.size

    async def _abort(self, upload: MultipartUploadRef) -> None:
        """Abort a multipart upload we no longer use (retrying transient errors)."""
        try:
            await self._objects.call(
                "AbortMultipartUpload",
                upload.key,
                lambda: self._s3.abort_multipart_upload(key=upload.key, upload_id=upload.upload_id),
            )
        except NoSuchUploadError:
            return
        except PermanentUploadError as error:
            log.warning("could not abort multipart upload %s: %s", upload.upload_id, error)
            return
        self._metrics.orphans_aborted.inc()
        log.info("aborted orphaned multipart upload %s of %s", upload.upload_id, upload.key)

    async def _abort_strays(self, store: StateStore) -> None:
        """Abort every other multipart upload of this recording's keys (e.g. from a crash
        between CreateMultipartUpload and saving its id). Keys hold the session, so they are
        ours alone even in a bucket that many instances share."""
        for record in store.state.files.values():
            for upload in await self._uploads_under(record.key):
                if upload.key == record.key and upload.upload_id != record.upload_id:
                    await self._abort(upload)

    async def _uploads_under(self, prefix: str) -> list[MultipartUploadRef]:
        return await self._objects.call(
            "ListMultipartUploads", prefix, lambda: self._s3.list_multipart_uploads(prefix=prefix)
        )

    async def sweep_orphans(self) -> int:
        """Abort multipart uploads under this instance's own key prefix that no entry knows."""
        prefix = self._keys.owned_prefix()
        if prefix is None:
            return 0
        known: set[str] = set()
        for entry in (*self._spool.pending(), *self._spool.failed_entries()):
            known |= StateStore(entry).known_upload_ids()
        try:
            found = await self._uploads_under(prefix)
        except PermanentUploadError as error:
            log.error("cannot sweep orphaned multipart uploads: %s", error)
            return 0
        orphans = [u for u in found if u.upload_id not in known]
        for upload in orphans:
            await self._abort(upload)
        return len(orphans)

    def _fail(self, entry: Path, reason: str) -> None:
        try:
            target = self._spool.move_to_failed(entry, reason, now=self._clock())
        except OSError as error:
            log.error(
                "recording %s failed (%s) and cannot move to failed/: %s", entry, reason, error
            )
            target = entry
        self._metrics.uploads.labels("failed").inc()
        log.error(
            "upload of recording %s failed permanently: %s; kept at %s for an operator",
            entry.name,
            reason,
            target,
        )

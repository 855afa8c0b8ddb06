"""One local file → one verified S3 object, resumable across restarts.

Files up to the part size go in a single PutObject; larger ones in a multipart upload
with parts sent concurrently. Every body carries its checksum, computed in a worker thread
as the part is read (CRC32C and SHA-256 release the GIL), and the object is read back with
HeadObject (size and checksum) before it counts as uploaded. Progress is saved
after every acknowledged step, so a killed agent resumes the same multipart upload
(checked against ListParts) or, when S3 no longer has it, starts the file over.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from agent.upload.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    checksum,
    object_checksum,
    same_checksum,
)
from agent.upload.config import UploadConfig
from agent.upload.keys import content_type
from agent.upload.metrics import UploadMetrics
from agent.upload.s3client import (
    S3,
    CompletedPart,
    NoSuchUploadError,
    PermanentS3Error,
    TransientS3Error,
)
from agent.upload.state import FileRecord, PartRecord, StateStore
from common.logs import Transitions

log = logging.getLogger(__name__)
T = TypeVar("T")


class PermanentUploadError(Exception):
    """The recording cannot be uploaded without an operator; it goes to failed/."""


def read_part(
    path: Path, offset: int, length: int, algorithm: ChecksumAlgorithm
) -> tuple[io.BytesIO, str]:
    """`length` bytes of `path` from `offset`, read straight into a buffer that the HTTP client
    can send without copying, and their checksum."""
    body = io.BytesIO()
    if length:
        body.seek(length - 1)
        body.write(b"\0")
    with open(path, "rb") as f, body.getbuffer() as view:
        f.seek(offset)
        if f.readinto(view) != length:
            raise OSError(f"{path} is shorter than when it was spooled")
        digest = checksum(algorithm, view)
    return body, digest


def _etag(value: str) -> str:
    return value.strip('"')


class ObjectUploader:
    def __init__(
        self,
        *,
        s3: S3,
        config: UploadConfig,
        metrics: UploadMetrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._s3 = s3
        self._config = config
        self._metrics = metrics
        self._sleep = sleep
        self._algorithm = config.checksum_algorithm
        self._trouble = Transitions(log, f"S3 bucket {config.bucket}")
        self._warned_no_checksum = False

    async def call(self, operation: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One S3 call, retried with backoff for as long as its errors are transient."""

        def before_sleep(state: RetryCallState) -> None:
            self._metrics.retries.labels(operation).inc()
            error = state.outcome.exception() if state.outcome else None
            kind = error.code if isinstance(error, TransientS3Error) else "error"
            self._trouble.failed(kind, f"{error}; retrying with backoff")

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientS3Error),
            wait=wait_exponential_jitter(
                multiplier=self._config.retry_initial, max=self._config.retry_max
            ),
            stop=stop_never,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await fn()
        except PermanentS3Error as error:
            raise PermanentUploadError(f"s3://{self._config.bucket}/{key}: {error}") from error
        self._trouble.ok("S3 answers again")
        return result

    async def upload(
        self,
        path: Path,
        record: FileRecord,
        metadata: Mapping[str, str],
        store: StateStore,
    ) -> None:
        """Upload `path` as `record.key` until HeadObject confirms it; then mark it verified."""
        while not record.verified:
            if record.attempted and await self._already_there(record):
                break
            try:
                if record.size > self._config.part_size:
                    await self._multipart(path, record, metadata, store)
                else:
                    await self._single(path, record, metadata, store)
            except NoSuchUploadError:
                if await self._already_there(record):
                    break
                log.warning("multipart upload of %s vanished; starting the file over", record.key)
                self._metrics.restarts.labels("vanished").inc()
                record.restart()
                await store.save()
                continue
            if await self._already_there(record):
                break
            record.mismatches += 1
            self._metrics.restarts.labels("mismatch").inc()
            if record.mismatches >= self._config.max_mismatches:
                raise PermanentUploadError(
                    f"s3://{self._config.bucket}/{record.key} does not match {path} "
                    f"after {record.mismatches} uploads"
                )
            log.warning("object %s does not match %s; uploading it again", record.key, path)
            record.restart()
            await store.save()
        record.verified = True
        record.upload_id = None
        await store.save()
        self._metrics.objects.inc()

    def _expected_checksum(self, record: FileRecord) -> str | None:
        if record.algorithm is not self._algorithm:
            return None  # S3 answers with this algorithm's checksum only
        if record.part_size is None:
            return record.checksum
        count = -(-record.size // record.part_size)
        if sorted(record.parts) != list(range(1, count + 1)):
            return None
        return object_checksum(
            record.algorithm,
            record.checksum_type,
            [(record.parts[n].checksum, record.parts[n].size) for n in range(1, count + 1)],
        )

    async def _already_there(self, record: FileRecord) -> bool:
        """Whether S3 holds exactly this file under its key (size and checksum)."""
        expected = self._expected_checksum(record)
        if expected is None:
            return False
        head = await self.call(
            "HeadObject", record.key, lambda: self._s3.head_object(key=record.key)
        )
        if head is None or head.size != record.size:
            return False
        if head.checksum is None:
            if not self._warned_no_checksum:
                self._warned_no_checksum = True
                log.warning("S3 returns no %s checksum; verifying sizes only", self._algorithm)
            return True
        return same_checksum(expected, head.checksum)

    async def _read(self, path: Path, offset: int, length: int) -> tuple[io.BytesIO, str]:
        try:
            return await asyncio.to_thread(read_part, path, offset, length, self._algorithm)
        except OSError as error:
            raise PermanentUploadError(f"cannot read {path}: {error}") from error

    async def _single(
        self, path: Path, record: FileRecord, metadata: Mapping[str, str], store: StateStore
    ) -> None:
        data, digest = await self._read(path, 0, record.size)
        record.restart()
        record.algorithm = self._algorithm
        record.checksum = digest
        record.attempted = True
        await store.save()
        await self.call(
            "PutObject",
            record.key,
            lambda: self._s3.put_object(
                key=record.key,
                body=data,
                checksum=digest,
                content_type=content_type(path.name),
                metadata=metadata,
            ),
        )
        self._metrics.bytes.inc(record.size)

    async def _multipart(
        self, path: Path, record: FileRecord, metadata: Mapping[str, str], store: StateStore
    ) -> None:
        if record.upload_id is not None and (
            record.algorithm is not self._algorithm
            or record.checksum_type is not self._config.checksum_type
        ):
            # Begun under other checksum settings, whose parts cannot complete with ours:
            # start over (the old upload is aborted as a stray once the recording is in S3).
            log.info("checksum settings of %s changed; starting the file over", record.key)
            record.upload_id = None
        elif record.upload_id is not None:
            await self._reconcile_parts(record)
        if record.upload_id is None:
            record.restart()
            record.algorithm = self._algorithm
            record.checksum_type = self._config.checksum_type
            record.part_size = self._config.part_size_for(record.size)
            record.upload_id = await self.call(
                "CreateMultipartUpload",
                record.key,
                lambda: self._s3.create_multipart_upload(
                    key=record.key,
                    content_type=content_type(path.name),
                    metadata=metadata,
                    checksum_type=record.checksum_type,
                ),
            )
            record.attempted = True
            await store.save()
        upload_id, part_size = record.upload_id, record.part_size
        assert part_size is not None
        count = -(-record.size // part_size)
        missing = [n for n in range(1, count + 1) if n not in record.parts]
        slots = asyncio.Semaphore(self._config.concurrency)

        async def send(number: int) -> None:
            async with slots:
                offset = (number - 1) * part_size
                length = min(part_size, record.size - offset)
                data, digest = await self._read(path, offset, length)
                etag = await self.call(
                    "UploadPart",
                    record.key,
                    lambda: self._s3.upload_part(
                        key=record.key,
                        upload_id=upload_id,
                        number=number,
                        body=data,
                        checksum=digest,
                    ),
                )
                record.parts[number] = PartRecord(etag=etag, checksum=digest, size=length)
                self._metrics.bytes.inc(length)
            await store.save()

        try:
            async with asyncio.TaskGroup() as group:
                for number in missing:
                    group.create_task(send(number), name=f"upload-part-{number}")
        except* (NoSuchUploadError, PermanentUploadError) as failures:
            raise failures.exceptions[0] from None
        parts = [
            CompletedPart(n, record.parts[n].etag, record.parts[n].checksum)
            for n in range(1, count + 1)
        ]
        full = record.checksum_type is ChecksumType.FULL_OBJECT
        whole = self._expected_checksum(record) if full else None
        await self.call(
            "CompleteMultipartUpload",
            record.key,
            lambda: self._s3.complete_multipart_upload(
                key=record.key, upload_id=upload_id, parts=parts, checksum=whole
            ),
        )

    async def _reconcile_parts(self, record: FileRecord) -> None:
        """Keep only the saved parts that S3 still holds as they were sent; forget a gone upload."""
        upload_id = record.upload_id
        assert upload_id is not None
        try:
            listed = await self.call(
                "ListParts",
                record.key,
                lambda: self._s3.list_parts(key=record.key, upload_id=upload_id),
            )
        except NoSuchUploadError:
            log.info("multipart upload of %s is gone; starting the file over", record.key)
            self._metrics.restarts.labels("vanished").inc()
            record.upload_id = None
            return
        held = {p.number: p for p in listed}
        for number, part in list(record.parts.items()):
            seen = held.get(number)
            if (
                seen is None
                or _etag(seen.etag) != _etag(part.etag)
                or seen.size != part.size
                or (seen.checksum is not None and seen.checksum != part.checksum)
            ):
                del record.parts[number]
        log.info(
            "resuming multipart upload of %s: %d parts already in S3", record.key, len(record.parts)
        )


def stat_record(path: Path, key: str, previous: FileRecord | None) -> tuple[FileRecord, bool]:
    """The record for `path` now; True when a previous one was dropped because the file changed."""
    st = os.stat(path)
    if previous is not None and previous.matches(key, st.st_size, st.st_mtime_ns):
        return previous, False
    fresh = FileRecord(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return fresh, previous is not None

"""An in-memory S3 behind agent.upload.s3client.S3, for unit tests of the uploader.

It checks what real S3 checks (body checksums, part ETags on completion, the whole-object
checksum a FULL_OBJECT upload completes with) and can be told to fail a given operation a
number of times with a given error. Unit tests use it for what the emulator cannot do:
fail a chosen call a chosen number of times, and count calls.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.upload.checksums import ChecksumAlgorithm, ChecksumType, checksum, composite
from agent.upload.s3client import (
    CompletedPart,
    ListedPart,
    MultipartUploadRef,
    NoSuchUploadError,
    ObjectHead,
    PermanentS3Error,
    S3Error,
    TransientS3Error,
)


@dataclass
class StoredObject:
    body: bytes
    checksum: str
    content_type: str
    metadata: dict[str, str]


@dataclass
class Upload:
    key: str
    content_type: str
    metadata: dict[str, str]
    checksum_type: ChecksumType
    parts: dict[int, tuple[bytes, str, str]] = field(default_factory=dict)


_checksum = checksum  # the methods' `checksum` arguments shadow it


def transient(operation: str) -> S3Error:
    return TransientS3Error(operation, "SlowDown", "please reduce your request rate")


def denied(operation: str) -> S3Error:
    return PermanentS3Error(operation, "AccessDenied", "Access Denied")


class FakeS3:
    def __init__(self, algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C) -> None:
        self.algorithm = algorithm
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, Upload] = {}
        self.calls: list[str] = []
        self.failures: dict[str, list[Callable[[str], S3Error]]] = defaultdict(list)
        self.on_head: Callable[[str], None] = lambda key: None
        self._ids = (f"upload-{n}" for n in itertools.count(1))

    def fail(self, operation: str, times: int, error: Callable[[str], S3Error] = transient) -> None:
        self.failures[operation].extend([error] * times)

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if self.failures[operation]:
            raise self.failures[operation].pop(0)(operation)

    def _check_body(self, operation: str, body: bytes, claimed: str) -> None:
        if _checksum(self.algorithm, body) != claimed:
            raise TransientS3Error(operation, "BadDigest", "checksum mismatch")

    async def put_object(
        self,
        *,
        key: str,
        body: io.BytesIO,
        checksum: str,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> None:
        self._enter("PutObject")
        data = body.getvalue()
        self._check_body("PutObject", data, checksum)
        self.objects[key] = StoredObject(data, checksum, content_type, dict(metadata))

    async def create_multipart_upload(
        self,
        *,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        checksum_type: ChecksumType = ChecksumType.COMPOSITE,
    ) -> str:
        self._enter("CreateMultipartUpload")
        checksum_type.check(self.algorithm)
        upload_id = next(self._ids)
        self.uploads[upload_id] = Upload(key, content_type, dict(metadata), checksum_type)
        return upload_id

    def _upload(self, operation: str, key: str, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise NoSuchUploadError(
                operation, "NoSuchUpload", "The specified upload does not exist"
            )
        return upload

    async def upload_part(
        self, *, key: str, upload_id: str, number: int, body: io.BytesIO, checksum: str
    ) -> str:
        self._enter("UploadPart")
        upload = self._upload("UploadPart", key, upload_id)
        data = body.getvalue()
        self._check_body("UploadPart", data, checksum)
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        upload.parts[number] = (data, etag, checksum)
        return etag

    async def list_parts(self, *, key: str, upload_id: str) -> list[ListedPart]:
        self._enter("ListParts")
        upload = self._upload("ListParts", key, upload_id)
        return [
            ListedPart(n, etag, len(body), ck)
            for n, (body, etag, ck) in sorted(upload.parts.items())
        ]

    async def complete_multipart_upload(
        self, *, key: str, upload_id: str, parts: Sequence[CompletedPart], checksum: str | None
    ) -> None:
        self._enter("CompleteMultipartUpload")
        upload = self._upload("CompleteMultipartUpload", key, upload_id)
        for part in parts:
            held = upload.parts.get(part.number)
            if held is None or held[1] != part.etag or held[2] != part.checksum:
                raise PermanentS3Error("CompleteMultipartUpload", "InvalidPart", str(part.number))
        body = b"".join(upload.parts[p.number][0] for p in parts)
        if upload.checksum_type is ChecksumType.FULL_OBJECT:
            whole = _checksum(self.algorithm, body)
            if checksum is not None and checksum != whole:
                raise PermanentS3Error("CompleteMultipartUpload", "BadDigest", "checksum mismatch")
        else:
            if checksum is not None:
                raise PermanentS3Error("CompleteMultipartUpload", "InvalidRequest", "COMPOSITE")
            whole = composite(self.algorithm, [upload.parts[p.number][2] for p in parts])
        self.objects[key] = StoredObject(body, whole, upload.content_type, upload.metadata)
        del self.uploads[upload_id]

    async def abort_multipart_upload(self, *, key: str, upload_id: str) -> None:
        self._enter("AbortMultipartUpload")
        self._upload("AbortMultipartUpload", key, upload_id)
        del self.uploads[upload_id]

    async def list_multipart_uploads(self, *, prefix: str) -> list[MultipartUploadRef]:
        self._enter("ListMultipartUploads")
        return [
            MultipartUploadRef(u.key, upload_id)
            for upload_id, u in self.uploads.items()
            if u.key.startswith(prefix)
        ]

    async def head_object(self, *, key: str) -> ObjectHead | None:
        self._enter("HeadObject")
        self.on_head(key)
        stored = self.objects.get(key)
        if stored is None:
            return None
        return ObjectHead(len(stored.body), stored.checksum, stored.metadata)

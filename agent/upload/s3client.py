"""The few S3 calls the uploader makes, behind a narrow Protocol, and their aiobotocore adapter.

Errors reach the uploader in three kinds (see `classify`):

    S3Error
    ├── TransientS3Error     retry with backoff, forever (network, 5xx, throttling, timeouts)
    ├── PermanentS3Error     no retry can help (AccessDenied, NoSuchBucket, bad credentials…)
    └── NoSuchUploadError    the multipart upload is gone (completed, aborted or expired)
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from agent.upload.checksums import ChecksumAlgorithm, ChecksumType

if TYPE_CHECKING:  # the stubs cost 0.2 s to import; the hook and the uploader start often
    from types_aiobotocore_s3 import S3Client


class S3Error(Exception):
    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code


class TransientS3Error(S3Error):
    pass


class PermanentS3Error(S3Error):
    pass


class NoSuchUploadError(S3Error):
    pass


@dataclass(frozen=True)
class ObjectHead:
    size: int
    checksum: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedPart:
    number: int
    etag: str
    size: int
    checksum: str | None = None


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str
    checksum: str


@dataclass(frozen=True)
class MultipartUploadRef:
    key: str
    upload_id: str


class S3(Protocol):
    """One bucket, one checksum algorithm; every method raises only S3Error kinds.

    Bodies are BytesIO buffers that own their bytes: the HTTP client sends them in slices
    without a copy (bytes would be copied whole on the event loop), from the start on each
    call, so a retry sends the same body again.
    """

    async def put_object(
        self,
        *,
        key: str,
        body: io.BytesIO,
        checksum: str,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> None: ...

    async def create_multipart_upload(
        self,
        *,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        checksum_type: ChecksumType,
    ) -> str: ...

    async def upload_part(
        self, *, key: str, upload_id: str, number: int, body: io.BytesIO, checksum: str
    ) -> str: ...

    async def list_parts(self, *, key: str, upload_id: str) -> list[ListedPart]: ...

    async def complete_multipart_upload(
        self, *, key: str, upload_id: str, parts: Sequence[CompletedPart], checksum: str | None
    ) -> None:
        """`checksum`: the whole object's, which S3 checks (FULL_OBJECT uploads only)."""
        ...

    async def abort_multipart_upload(self, *, key: str, upload_id: str) -> None: ...

    async def list_multipart_uploads(self, *, prefix: str) -> list[MultipartUploadRef]: ...

    async def head_object(self, *, key: str) -> ObjectHead | None: ...


PERMANENT_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidBucketState",
        "InvalidObjectState",
        "InvalidStorageClass",
        "KMS.DisabledException",
        "KMS.NotFoundException",
        "MethodNotAllowed",
        "NoSuchBucket",
        "NotSignedUp",
        "SignatureDoesNotMatch",
        "UnauthorizedAccess",
    }
)
TRANSIENT_CODES: Final = frozenset(
    {
        "BadDigest",
        "ExpiredToken",
        "InternalError",
        "OperationAborted",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TokenRefreshRequired",
        "XAmzContentSHA256Mismatch",
    }
)


def classify(operation: str, error: Exception) -> S3Error:
    """Sort a botocore error into the uploader's three kinds.

    An error code we do not know is permanent when the status is a 4xx: the recording then
    waits in failed/ for an operator instead of hammering S3 forever. Anything without an
    HTTP answer (refused, reset, timed out, no credentials yet) is transient.
    """
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code") or "Unknown")
        message = str(info.get("Message") or "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchUpload":
            return NoSuchUploadError(operation, code, message)
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientS3Error(operation, code, message or f"HTTP {status}")
        if code in PERMANENT_CODES or 400 <= status < 500:
            return PermanentS3Error(operation, code, message or f"HTTP {status}")
        return TransientS3Error(operation, code, message or f"HTTP {status}")
    if isinstance(error, NoCredentialsError):
        return TransientS3Error(operation, "NoCredentials", str(error))
    return TransientS3Error(operation, type(error).__name__, str(error))


_CALL_ERRORS: Final = (BotoCoreError, ClientError, aiohttp.ClientError, OSError, TimeoutError)


class AioS3:
    """`S3` on an aiobotocore client; retries are the uploader's (tenacity), not botocore's."""

    def __init__(self, client: S3Client, bucket: str, algorithm: ChecksumAlgorithm) -> None:
        self._client = client
        self._bucket = bucket
        self._algorithm = algorithm

    def _checksum_args(self, checksum: str) -> dict[str, Any]:
        return {"ChecksumAlgorithm": self._algorithm.value, self._algorithm.field: checksum}

    async def put_object(
        self,
        *,
        key: str,
        body: io.BytesIO,
        checksum: str,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> None:
        body.seek(0)
        try:
            await self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=dict(metadata),
                **self._checksum_args(checksum),
            )
        except _CALL_ERRORS as error:
            raise classify("PutObject", error) from error

    async def create_multipart_upload(
        self,
        *,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        checksum_type: ChecksumType,
    ) -> str:
        try:
            answer = await self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                ContentType=content_type,
                Metadata=dict(metadata),
                ChecksumAlgorithm=self._algorithm.value,
                ChecksumType=checksum_type.value,
            )
        except _CALL_ERRORS as error:
            raise classify("CreateMultipartUpload", error) from error
        return answer["UploadId"]

    async def upload_part(
        self, *, key: str, upload_id: str, number: int, body: io.BytesIO, checksum: str
    ) -> str:
        body.seek(0)
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                **self._checksum_args(checksum),
            )
        except _CALL_ERRORS as error:
            raise classify("UploadPart", error) from error
        return answer["ETag"]

    async def list_parts(self, *, key: str, upload_id: str) -> list[ListedPart]:
        parts: list[ListedPart] = []
        marker = 0
        try:
            while True:
                answer = await self._client.list_parts(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
                for part in answer.get("Parts", []):
                    raw: Mapping[str, Any] = part
                    parts.append(
                        ListedPart(
                            number=part["PartNumber"],
                            etag=part["ETag"],
                            size=part["Size"],
                            checksum=raw.get(self._algorithm.field),
                        )
                    )
                if not answer.get("IsTruncated"):
                    return parts
                marker = int(answer["NextPartNumberMarker"])
        except _CALL_ERRORS as error:
            raise classify("ListParts", error) from error

    async def complete_multipart_upload(
        self, *, key: str, upload_id: str, parts: Sequence[CompletedPart], checksum: str | None
    ) -> None:
        listed: list[Any] = [
            {"PartNumber": p.number, "ETag": p.etag, self._algorithm.field: p.checksum}
            for p in parts
        ]
        whole: dict[str, Any] = {}
        if checksum is not None:
            whole = {
                "ChecksumType": ChecksumType.FULL_OBJECT.value,
                self._algorithm.field: checksum,
            }
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
                **whole,
            )
        except _CALL_ERRORS as error:
            raise classify("CompleteMultipartUpload", error) from error

    async def abort_multipart_upload(self, *, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )
        except _CALL_ERRORS as error:
            raise classify("AbortMultipartUpload", error) from error

    async def list_multipart_uploads(self, *, prefix: str) -> list[MultipartUploadRef]:
        uploads: list[MultipartUploadRef] = []
        key_marker = upload_id_marker = ""
        try:
            while True:
                answer = await self._client.list_multipart_uploads(
                    Bucket=self._bucket,
                    Prefix=prefix,
                    KeyMarker=key_marker,
                    UploadIdMarker=upload_id_marker,
                )
                uploads.extend(
                    MultipartUploadRef(u["Key"], u["UploadId"]) for u in answer.get("Uploads", [])
                )
                if not answer.get("IsTruncated"):
                    return uploads
                key_marker = answer.get("NextKeyMarker", "")
                upload_id_marker = answer.get("NextUploadIdMarker", "")
        except _CALL_ERRORS as error:
            raise classify("ListMultipartUploads", error) from error

    async def head_object(self, *, key: str) -> ObjectHead | None:
        try:
            answer = await self._client.head_object(
                Bucket=self._bucket, Key=key, ChecksumMode="ENABLED"
            )
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return None
            raise classify("HeadObject", error) from error
        except _CALL_ERRORS as error:
            raise classify("HeadObject", error) from error
        raw: Mapping[str, Any] = answer
        return ObjectHead(
            size=answer["ContentLength"],
            checksum=raw.get(self._algorithm.field),
            metadata=answer.get("Metadata", {}),
        )


def client_config(concurrency: int) -> AioConfig:
    # Every body carries its own signed x-amz-checksum-* header, which S3 checks, so the SigV4
    # payload hash would be a second SHA256 of every byte, computed on the event loop.
    return AioConfig(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max(10, concurrency + 2),
        s3={"payload_signing_enabled": False},
    )


@asynccontextmanager
async def open_s3(
    bucket: str,
    algorithm: ChecksumAlgorithm,
    *,
    concurrency: int = 4,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[AioS3]:
    """An `S3` for `bucket` on the standard credential chain (and AWS_ENDPOINT_URL)."""
    session = get_session()
    async with session.create_client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=client_config(concurrency)
    ) as client:
        yield AioS3(client, bucket, algorithm)

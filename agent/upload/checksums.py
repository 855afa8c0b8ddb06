"""S3 additional checksums, computed locally exactly as S3 computes them.

A single PutObject carries the checksum of the whole body. A multipart upload carries one
checksum per part, and S3 gives the object a COMPOSITE checksum: the checksum of the
concatenated binary part checksums, shown as `<base64>-<part count>` (some servers, such
as the local emulator, leave off the suffix).
"""

from __future__ import annotations

import base64
import hashlib
from enum import StrEnum
from typing import Protocol

import crc32c


class ChecksumAlgorithm(StrEnum):
    SHA256 = "SHA256"
    CRC32C = "CRC32C"

    @property
    def field(self) -> str:
        """The botocore parameter and response field, e.g. ChecksumSHA256."""
        return f"Checksum{self.value}"


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _new(algorithm: ChecksumAlgorithm) -> _Hash:
    if algorithm is ChecksumAlgorithm.SHA256:
        return hashlib.sha256()
    return crc32c.CRC32CHash()


def raw_digest(algorithm: ChecksumAlgorithm, data: bytes) -> bytes:
    h = _new(algorithm)
    h.update(data)
    return h.digest()


def checksum(algorithm: ChecksumAlgorithm, data: bytes) -> str:
    """The base64 checksum S3 expects for `data` (a whole object or one part)."""
    return base64.b64encode(raw_digest(algorithm, data)).decode()


def composite(algorithm: ChecksumAlgorithm, part_checksums: list[str]) -> str:
    """The COMPOSITE object checksum of a multipart upload, from its parts' checksums in order."""
    h = _new(algorithm)
    for part in part_checksums:
        h.update(base64.b64decode(part))
    return f"{base64.b64encode(h.digest()).decode()}-{len(part_checksums)}"


def same_checksum(expected: str, reported: str) -> bool:
    """Whether the server's checksum matches; a missing `-<parts>` suffix is accepted."""
    value, _, parts = expected.partition("-")
    got_value, _, got_parts = reported.partition("-")
    return value == got_value and (not got_parts or got_parts == parts)

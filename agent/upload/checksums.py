"""S3 additional checksums, computed locally exactly as S3 computes them.

A single PutObject carries the checksum of the whole body. A multipart upload carries one
checksum per part, and S3 gives the object one of two types of checksum, chosen when the
upload is created:

- COMPOSITE: the checksum of the concatenated binary part checksums, shown as
  `<base64>-<part count>` (the local emulator leaves off the suffix).
- FULL_OBJECT (CRC algorithms only): the CRC32C of the whole body, as if it had been sent in
  one piece, whatever the parts. The uploader derives it from the parts' CRCs and lengths
  (`crc32c_combine`), so no byte is read twice, and S3 checks it when the upload completes.

CRC32C is the default: the `crc32c` package computes it with the CPU's SSE4.2 instruction
(about 10 GB/s on one core, against 1.7 GB/s for SHA-256 with SHA extensions) and releases
the GIL while it does.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import crc32c


class ChecksumAlgorithm(StrEnum):
    CRC32C = "CRC32C"
    SHA256 = "SHA256"

    @property
    def field(self) -> str:
        """The botocore parameter and response field, e.g. ChecksumCRC32C."""
        return f"Checksum{self.value}"


class ChecksumType(StrEnum):
    COMPOSITE = "COMPOSITE"
    FULL_OBJECT = "FULL_OBJECT"

    def check(self, algorithm: ChecksumAlgorithm) -> None:
        if self is ChecksumType.FULL_OBJECT and algorithm is not ChecksumAlgorithm.CRC32C:
            raise ValueError(f"S3 gives {algorithm} checksums only as COMPOSITE, not {self}")


def raw_digest(algorithm: ChecksumAlgorithm, data: bytes | memoryview) -> bytes:
    if algorithm is ChecksumAlgorithm.SHA256:
        return hashlib.sha256(data).digest()
    return crc32c.crc32c(data).to_bytes(4, "big")


def checksum(algorithm: ChecksumAlgorithm, data: bytes | memoryview) -> str:
    """The base64 checksum S3 expects for `data` (a whole object or one part)."""
    return base64.b64encode(raw_digest(algorithm, data)).decode()


def composite(algorithm: ChecksumAlgorithm, part_checksums: list[str]) -> str:
    """The COMPOSITE object checksum of a multipart upload, from its parts' checksums in order."""
    joined = b"".join(base64.b64decode(part) for part in part_checksums)
    return f"{checksum(algorithm, joined)}-{len(part_checksums)}"


def object_checksum(
    algorithm: ChecksumAlgorithm, kind: ChecksumType, parts: Sequence[tuple[str, int]]
) -> str:
    """The checksum S3 gives a multipart object, from its parts' (checksum, length) in order."""
    kind.check(algorithm)
    if kind is ChecksumType.COMPOSITE:
        return composite(algorithm, [ck for ck, _ in parts])
    whole = 0
    for part, length in parts:
        whole = crc32c_combine(whole, int.from_bytes(base64.b64decode(part), "big"), length)
    return base64.b64encode(whole.to_bytes(4, "big")).decode()


def same_checksum(expected: str, reported: str) -> bool:
    """Whether the server's checksum matches; a missing `-<parts>` suffix is accepted."""
    value, _, parts = expected.partition("-")
    got_value, _, got_parts = reported.partition("-")
    return value == got_value and (not got_parts or got_parts == parts)


# CRC32C of a concatenation from the CRCs of its pieces, as zlib's crc32_combine does it: the
# CRC of A+B is CRC(A) multiplied by x^(8·len(B)) modulo the polynomial, XOR CRC(B). Products
# are over GF(2) in the CRC's bit-reflected form; powers come from a table of x^(2^k).

_POLY: Final = 0x82F63B78
"""The Castagnoli polynomial, bit-reflected."""
_ONE: Final = 1 << 31
"""x^0 in reflected form."""


def _multiply(a: int, b: int) -> int:
    """a·b modulo the polynomial."""
    product = 0
    mask = _ONE
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers_of_two() -> tuple[int, ...]:
    powers = [1 << 30]  # x^1
    for _ in range(63):
        powers.append(_multiply(powers[-1], powers[-1]))
    return tuple(powers)


_X_2K: Final = _powers_of_two()
"""x^(2^k) modulo the polynomial, for k < 64 (lengths up to 2^60 bytes)."""


def crc32c_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC32C of A+B, given CRC32C(A), CRC32C(B) and the length of B in bytes."""
    shift = _ONE
    bits, k = length_b, 3  # 8 bits a byte: x^(length·2^3)
    while bits:
        if bits & 1:
            shift = _multiply(_X_2K[k], shift)
        bits >>= 1
        k += 1
    return _multiply(shift, crc_a) ^ crc_b

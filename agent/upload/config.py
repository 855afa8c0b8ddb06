"""Settings of the uploader, validated when built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from agent.upload.checksums import ChecksumAlgorithm, ChecksumType
from agent.upload.keys import DEFAULT_KEY_TEMPLATE, KeyTemplate

MiB: Final = 1024 * 1024
MIN_PART_SIZE: Final = 5 * MiB
MAX_PART_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000
DEFAULT_PART_SIZE: Final = 8 * MiB
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_CHECKSUM: Final = ChecksumAlgorithm.CRC32C
DEFAULT_CHECKSUM_TYPE: Final = ChecksumType.COMPOSITE
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_SIZE_RE: Final = re.compile(r"^(\d+)\s*(|k|ki|kib|m|mi|mib|g|gi|gib)$", re.IGNORECASE)


@dataclass(frozen=True)
class UploadConfig:
    bucket: str
    """Destination bucket; the daemon runs no uploader without one."""
    prefix: str = "recordings"
    """Value of {prefix} in the key template."""
    key_template: str = DEFAULT_KEY_TEMPLATE
    """Key of each object: {prefix} {instance} {yyyy} {mm} {dd} {hh} {session} {file}."""
    part_size: int = DEFAULT_PART_SIZE
    """Multipart part size; files up to this size go in one PutObject."""
    concurrency: int = DEFAULT_CONCURRENCY
    """Parts of one file uploaded at once."""
    checksum_algorithm: ChecksumAlgorithm = DEFAULT_CHECKSUM
    """S3 additional checksum carried by every part and object, and verified after upload."""
    checksum_type: ChecksumType = DEFAULT_CHECKSUM_TYPE
    """Of multipart objects: COMPOSITE, or FULL_OBJECT (the CRC of the whole body; CRC32C only)."""
    poll_interval: float = 2.0
    """Seconds between looks at an empty spool."""
    retry_initial: float = 0.5
    """First backoff after a transient S3 error, in seconds; doubles up to retry_max."""
    retry_max: float = 30.0
    sweep_interval: float = 3600.0
    """Seconds between sweeps for orphaned multipart uploads under an instance-owned prefix."""
    max_mismatches: int = 3
    """Uploads of one file whose object fails verification before the recording is failed."""

    def __post_init__(self) -> None:
        bucket_name(self.bucket)
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part size {self.part_size} must be between 5 MiB ({MIN_PART_SIZE}) "
                f"and 5 GiB ({MAX_PART_SIZE}) bytes"
            )
        self.checksum_type.check(self.checksum_algorithm)
        if not 1 <= self.concurrency <= 64:
            raise ValueError(f"upload concurrency {self.concurrency} must be between 1 and 64")
        for name in ("poll_interval", "retry_initial", "retry_max", "sweep_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_mismatches < 1:
            raise ValueError("max_mismatches must be at least 1")
        KeyTemplate(self.key_template, self.prefix, instance="i-validation")

    def keys(self, instance: str | None) -> KeyTemplate:
        return KeyTemplate(self.key_template, self.prefix, instance)

    def part_size_for(self, size: int) -> int:
        """The configured part size, raised (in whole MiB) where a file would need > 10000 parts."""
        needed = -(-size // MAX_PARTS)
        return max(self.part_size, -(-needed // MiB) * MiB)


# Parsers of single settings, each raising ValueError with the reason.


def bucket_name(value: str) -> str:
    if not _BUCKET_RE.match(value):
        raise ValueError(f"{value!r} is not a valid S3 bucket name")
    return value


def parse_size(text: str) -> int:
    """Bytes from `16777216`, `16MiB`, `16M` (binary units)."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 16MiB")
    unit = match[2].lower()[:1]
    return int(match[1]) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def part_size(value: str) -> int:
    size = parse_size(value)
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise ValueError(f"{value!r} must be between 5MiB and 5GiB")
    return size


def concurrency(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(f"{value!r} is not a whole number from 1 to 64")
    return int(value)


def key_template(value: str) -> str:
    KeyTemplate(value, "prefix", instance="i-validation")
    return value

"""The agent's durable spool of finished recordings awaiting upload.

Layout under the spool root (all on one filesystem, so hand-offs are atomic renames):

    incoming/<name>/   recordings handed over by `agent finalize`, waiting or uploading
    failed/<name>/     recordings that hit a permanent upload error; never deleted
"""

from __future__ import annotations

from pathlib import Path


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.failed = root / "failed"

    def ensure(self) -> None:
        for directory in (self.incoming, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    def pending(self) -> list[Path]:
        """Recordings still to upload, oldest name first."""
        if not self.incoming.is_dir():
            return []
        return sorted(p for p in self.incoming.iterdir() if p.is_dir())

    def pending_count(self) -> int:
        return len(self.pending())

"""The uploader's Prometheus metrics (prefix `jibri_agent_`), every label set initialised."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.spool import Spool

OUTCOMES = ("success", "failed")
OPERATIONS = (
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "ListParts",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListMultipartUploads",
    "HeadObject",
)
RESTART_REASONS = ("mismatch", "vanished", "changed")


class UploadMetrics:
    def __init__(
        self, registry: CollectorRegistry, spool: Spool, clock: Callable[[], datetime]
    ) -> None:
        r = registry
        self.uploads = Counter(
            "jibri_agent_uploads",
            "Recordings leaving the spool, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.uploads.labels(outcome)
        self.objects = Counter(
            "jibri_agent_upload_objects", "Objects uploaded and verified in S3", registry=r
        )
        self.bytes = Counter(
            "jibri_agent_upload_bytes", "Bytes S3 acknowledged (parts and objects)", registry=r
        )
        self.retries = Counter(
            "jibri_agent_upload_retries",
            "S3 calls retried after a transient error, by operation",
            ["operation"],
            registry=r,
        )
        for operation in OPERATIONS:
            self.retries.labels(operation)
        self.restarts = Counter(
            "jibri_agent_upload_restarts",
            "Objects uploaded again from the start, by reason",
            ["reason"],
            registry=r,
        )
        for reason in RESTART_REASONS:
            self.restarts.labels(reason)
        self.orphans_aborted = Counter(
            "jibri_agent_upload_orphans_aborted",
            "Orphaned multipart uploads aborted",
            registry=r,
        )
        Gauge(
            "jibri_agent_spool_recordings", "Recordings waiting in the spool to upload", registry=r
        ).set_function(lambda: len(spool.pending()))
        Gauge(
            "jibri_agent_spool_failed_recordings",
            "Recordings kept in failed/ after a permanent upload error",
            registry=r,
        ).set_function(lambda: len(spool.failed_entries()))

        def oldest_age() -> float:
            oldest = spool.oldest_enqueued_at()
            return 0.0 if oldest is None else max(0.0, (clock() - oldest).total_seconds())

        Gauge(
            "jibri_agent_spool_oldest_age_seconds",
            "Age of the oldest recording waiting to upload (0 when none)",
            registry=r,
        ).set_function(oldest_age)

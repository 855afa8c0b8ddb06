"""`python -m agent.upload.main`: the uploader on its own, without the rest of the agent.

For operators (drain a spool by hand with `--once`, e.g. after fixing a bucket policy and
`--requeue-failed`) and for tests that kill and restart the uploader as a real process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.finalize import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV
from agent.spool import Spool, SpoolBusy
from agent.upload.checksums import ChecksumAlgorithm, ChecksumType
from agent.upload.config import (
    DEFAULT_CHECKSUM,
    DEFAULT_CHECKSUM_TYPE,
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    UploadConfig,
    concurrency,
    part_size,
)
from agent.upload.keys import DEFAULT_KEY_TEMPLATE, KeyTemplateError
from agent.upload.metrics import UploadMetrics
from agent.upload.s3client import open_s3
from agent.upload.uploader import Uploader
from common import logs

log = logging.getLogger("agent.upload")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent.upload.main", description=__doc__)
    p.add_argument("--spool-dir", type=Path, default=None)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="recordings")
    p.add_argument("--key-template", default=DEFAULT_KEY_TEMPLATE)
    p.add_argument("--part-size", type=part_size, default=DEFAULT_PART_SIZE)
    p.add_argument("--concurrency", type=concurrency, default=DEFAULT_CONCURRENCY)
    p.add_argument(
        "--checksum-algorithm",
        type=ChecksumAlgorithm,
        choices=list(ChecksumAlgorithm),
        default=DEFAULT_CHECKSUM,
    )
    p.add_argument(
        "--checksum-type",
        type=ChecksumType,
        choices=list(ChecksumType),
        default=DEFAULT_CHECKSUM_TYPE,
        help="of multipart objects; FULL_OBJECT needs CRC32C",
    )
    p.add_argument("--instance-id", default=None)
    p.add_argument("--region", default=None)
    p.add_argument("--once", action="store_true", help="upload what is spooled now, then exit")
    p.add_argument(
        "--requeue-failed", action="store_true", help="move failed/ back to incoming/ first"
    )
    p.add_argument("--log-level", default="info")
    return p


async def _serve(args: argparse.Namespace, config: UploadConfig, spool: Spool) -> int:
    metrics = UploadMetrics(CollectorRegistry(), spool, lambda: datetime.now(UTC))
    async with open_s3(
        config.bucket, config.checksum_algorithm, concurrency=config.concurrency, region=args.region
    ) as s3:
        # Modules and the S3 client's service model live as long as the process. Frozen out of
        # the collector, they are not rescanned by every full collection nor at exit: about
        # 0.15 s of CPU and 0.3 s of exit for a 256 MiB upload with --once.
        gc.freeze()
        uploader = Uploader(
            spool=spool, s3=s3, config=config, metrics=metrics, instance_id=args.instance_id
        )
        if args.once:
            try:
                lock = spool.lock_uploads()
            except SpoolBusy:
                log.error("another uploader (the agent?) is uploading from %s", spool.root)
                return 0 if args.requeue_failed else 1
            with lock:
                spool.purge_done()
                await uploader.sweep_orphans()
                await uploader.run_once()
            return 0 if not spool.pending() and not spool.failed_entries() else 1
        task = asyncio.create_task(uploader.run(), name="uploader")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("uploader stopped")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    root = args.spool_dir or Path(os.environ.get(SPOOL_DIR_ENV) or DEFAULT_SPOOL_DIR)
    try:
        config = UploadConfig(
            bucket=args.bucket,
            prefix=args.prefix,
            key_template=args.key_template,
            part_size=args.part_size,
            concurrency=args.concurrency,
            checksum_algorithm=args.checksum_algorithm,
            checksum_type=args.checksum_type,
        )
        config.keys(args.instance_id)
    except (ValueError, KeyTemplateError) as error:
        print(f"agent upload: error: {error}", file=sys.stderr)
        return 2
    spool = Spool(root)
    if args.requeue_failed:
        for entry in spool.requeue_failed():
            log.info("requeued %s", entry)
    return asyncio.run(_serve(args, config, spool))


if __name__ == "__main__":
    sys.exit(main())

"""Structured logging: one JSON object per line on stderr.

Call sites pass their fields through `event(...)`; the formatter merges them into the line, so
a log query can filter on `pool`, `action` or `reason` as easily as a metric can.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

_FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every log record of the process, as JSON lines, to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log would add a line per agent report (every few seconds per VM).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for noisy in ("botocore", "aiobotocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def event(
    logger: logging.Logger,
    name: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool = False,
    **fields: Any,
) -> None:
    """Log `name` with structured `fields` (merged into the JSON line)."""
    logger.log(level, name, extra={_FIELDS: fields}, exc_info=exc_info)

"""Structured logging for both daemons: one event per line, JSON by default, text on request.

Call sites pass their fields through `event(...)`; the formatter merges them into the line, so
a log query can filter on `pool`, `instance`, `action` or `reason` in the controller's lines
and the agent's alike. `--log-format text` renders the same event and fields for a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Literal

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
_FIELDS = "fields"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _FIELDS, None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """`{"ts", "time", "level", "logger", "event", **fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`LEVEL logger: event key=value …` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        if pairs:
            text = f"{text} {pairs}"
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def configure(
    level: int | str = logging.INFO, fmt: LogFormat = "json", stream: IO[str] | None = None
) -> None:
    """Send every log record of the process to `stream` (stderr by default) in `fmt`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root.setLevel(numeric)
    # aiohttp's access log would add a line per agent report (every few seconds per VM).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for noisy in ("botocore", "aiobotocore"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def event(
    logger: logging.Logger,
    name: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool = False,
    **fields: Any,
) -> None:
    """Log `name` with structured `fields` (merged into the line)."""
    logger.log(level, name, extra={_FIELDS: fields}, exc_info=exc_info)


class Transitions:
    """Logs a failing operation once per change of failure kind, and once on recovery."""

    def __init__(self, logger: logging.Logger, what: str, **fields: Any) -> None:
        self._logger = logger
        self._what = what
        self._fields = fields
        """Added to both events (e.g. `url=…`), so `what` stays a constant event name."""
        self._failing: str | None = None

    @property
    def failing(self) -> str | None:
        """The current failure kind, or None while the operation succeeds."""
        return self._failing

    def failed(self, kind: str, message: str, *, level: int = logging.WARNING) -> None:
        if kind != self._failing:
            self._failing = kind
            event(
                self._logger,
                f"{self._what} failing",
                level=level,
                kind=kind,
                error=message,
                **self._fields,
            )

    def ok(self, message: str | None = None) -> None:
        if self._failing is not None:
            self._failing = None
            detail = message or "recovered"
            event(self._logger, f"{self._what} recovered", detail=detail, **self._fields)

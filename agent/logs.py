"""Logging for the agent: plain lines for journald by default, JSON lines on request.

`Transitions` keeps repeated failures quiet: a poll or report that fails every few seconds
logs one line when the failure starts or changes kind, and one when it clears.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

from controller.logs import JsonFormatter

LogFormat = Literal["text", "json"]


def configure(level: str = "info", fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Send every record of the process to `stream` (stderr by default) in `fmt`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)


class Transitions:
    """Logs a failing operation once per change of failure kind, and once on recovery."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._failing: str | None = None

    @property
    def failing(self) -> str | None:
        """The current failure kind, or None while the operation succeeds."""
        return self._failing

    def failed(self, kind: str, message: str, *, level: int = logging.WARNING) -> None:
        if kind != self._failing:
            self._failing = kind
            self._logger.log(level, "%s: %s", self._what, message)

    def ok(self, message: str | None = None) -> None:
        if self._failing is not None:
            self._failing = None
            self._logger.info("%s: %s", self._what, message or "recovered")

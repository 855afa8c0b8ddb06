"""Hot reload of the desired-state file.

The file is polled about once a second and compared by content hash, which works the same
for in-place edits, editors' atomic renames and ConfigMap symlink swaps, and needs no
platform file-watching API. A valid change is applied without a restart; an invalid one
leaves the last good state in force, says why, and is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from common.logs import event
from controller.prometheus import Metrics
from controller.spec import ConfigError, ConfigProblem, DesiredState, parse_desired_state

log = logging.getLogger("controller.reload")


def _read(path: Path) -> tuple[str, str]:
    """The file's text and its hash; ConfigError if it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = ConfigProblem(None, "", f"cannot read: {exc.strerror or exc}")
        raise ConfigError(str(path), [problem]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem(None, "", f"not UTF-8: {exc}")]) from exc
    return text, hashlib.sha256(data).hexdigest()


def load(path: Path) -> tuple[DesiredState, str]:
    """Read and validate the file at start; return the state and the hash of what was read."""
    text, digest = _read(path)
    return parse_desired_state(text, str(path)), digest


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        *,
        loaded: str,
        apply: Callable[[DesiredState], Awaitable[None]],
        metrics: Metrics,
        interval: float = 1.0,
    ) -> None:
        """`loaded` is the hash of the content already in force (from `load`)."""
        self.path = path
        self._apply = apply
        self._metrics = metrics
        self._interval = interval
        self._seen = loaded

    async def check(self) -> bool:
        """Apply the file if it changed and is valid; return whether a new state took effect."""
        try:
            text, digest = _read(self.path)
        except ConfigError as exc:
            # Remember the failure like a content hash, so it is reported once, not every poll.
            if (failure := f"unreadable: {exc}") != self._seen:
                self._seen = failure
                self._invalid(exc)
            return False
        if digest == self._seen:
            return False
        self._seen = digest
        try:
            state = parse_desired_state(text, str(self.path))
        except ConfigError as exc:
            self._invalid(exc)
            return False
        await self._apply(state)
        self._metrics.config_reloads_total.labels("success").inc()
        event(log, "config reloaded", path=str(self.path), pools=[p.name for p in state.pools])
        return True

    def _invalid(self, exc: ConfigError) -> None:
        self._metrics.config_reloads_total.labels("invalid").inc()
        event(
            log,
            "config invalid; keeping the last good state",
            level=logging.ERROR,
            path=str(self.path),
            problems=[p.render(exc.source) for p in exc.problems],
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Hot reload must outlive one bad apply; the pools keep their current state.
                event(
                    log,
                    "config reload failed",
                    level=logging.ERROR,
                    path=str(self.path),
                    error=repr(exc),
                    exc_info=exc,
                )

"""Child processes of the sandbox (the controller, one agent per instance), never left behind.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the sandbox, which
then stops the children in order. Stopping signals the child's whole process group: SIGTERM,
then SIGKILL after a grace period, and always waits for it. On Linux each child also asks the
kernel to send it SIGTERM should the sandbox die without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    # Resolved before any fork: the child only makes one plain C call.
    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_death_signal


_SET_DEATH_SIGNAL = _death_signal_setter()


class Child:
    """A running child process, its log file, and how to stop it."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, log_path: Path, log_file: IO[bytes]
    ) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self._log_file = log_file
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    async def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds; wait for it."""
        if self.process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=grace)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", self.name, grace)
                self._signal_group(signal.SIGKILL)
                await self.process.wait()
        # Anything the child left in its group goes too.
        self._signal_group(signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, timeout=2.0)
        self._log_file.close()
        return self.process.returncode if self.process.returncode is not None else -1

    def kill_now(self) -> None:
        """Last resort for an exit path that cannot await: SIGKILL the group at once."""
        if self.process.returncode is None:
            self._signal_group(signal.SIGKILL)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for an error message."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def _copy_lines(
    stream: asyncio.StreamReader, sink: IO[bytes], on_line: Callable[[bytes], None]
) -> None:
    while line := await stream.readline():
        sink.write(line)
        sink.flush()
        try:
            on_line(line)
        except Exception:
            log.exception("handling a line of child output failed")


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    on_stderr_line: Callable[[bytes], None] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start `argv` in its own session; its output goes to `log_path`.

    With `on_stderr_line`, stderr is also handed over line by line (and still logged).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")  # a local file, opened at once; Child.stop closes it
    kwargs: dict[str, Any] = {}
    if _SET_DEATH_SIGNAL is not None:
        kwargs["preexec_fn"] = _SET_DEATH_SIGNAL
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.PIPE if on_stderr_line else log_file,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            **kwargs,
        )
    except BaseException:
        log_file.close()
        raise
    child = Child(name, process, log_path, log_file)
    if on_stderr_line is not None:
        assert process.stderr is not None
        child._reader = asyncio.create_task(
            _copy_lines(process.stderr, log_file, on_stderr_line), name=f"stderr:{name}"
        )
    return child

"""The real controller as a child process: started, watched through its log lines and /status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from common.wire import TOKEN_ENV
from sandbox.ledger import ActionEvent
from sandbox.procs import Child, spawn

log = logging.getLogger(__name__)


def parse_action(line: bytes, at: Callable[[float], float]) -> ActionEvent | None:
    """The action a controller log line reports as done, if it is one.

    `at` turns the line's wall-clock timestamp into seconds since the run began.
    """
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") != "action":
        return None
    if record.get("outcome") != "done":
        return None
    ids = record.get("instance_ids") or []
    detail = ""
    if "capacity" in record:
        detail = f"{record.get('previous')} → {record['capacity']}"
    elif "min" in record:
        detail = f"min {record['min']} max {record.get('max')}"
    return ActionEvent(
        at=at(float(record.get("ts", 0.0))),
        pool=str(record.get("pool", "")),
        action=str(record.get("action", "?")),
        reason=str(record.get("reason", "?")),
        instance_ids=tuple(str(i) for i in ids),
        detail=detail,
    )


def listening_address(line: bytes) -> str | None:
    """The first address of the controller's "listening" event, if this line is that event."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") != "listening":
        return None
    addresses = record.get("addresses") or []
    return str(addresses[0]) if addresses else None


def problem_of(line: bytes) -> str | None:
    """An error the controller logged, in one line, if this is one."""
    try:
        record = json.loads(line)
    except ValueError:
        text = line.decode(errors="replace").strip()
        return f"controller: {text}" if text.startswith("Traceback") else None
    if not isinstance(record, dict) or record.get("level") not in ("error", "critical"):
        return None
    detail = record.get("error") or record.get("task") or ""
    return f"controller: {record.get('event', '?')}" + (f" ({detail})" if detail else "")


class ControlPlane:
    def __init__(
        self,
        *,
        config: Path,
        token: str,
        env: Mapping[str, str],
        log_path: Path,
        on_action: Callable[[ActionEvent], None],
        on_problem: Callable[[str], None],
        at: Callable[[float], float],
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config = config
        self._extra_args = tuple(extra_args)
        self.url = ""
        """Known once the controller has logged where it listens (it binds port 0)."""
        self.listening = asyncio.Event()
        self.token = token
        self._env = {**env, TOKEN_ENV: self.token}
        self._log_path = log_path
        self._on_action = on_action
        self._on_problem = on_problem
        self._at = at
        self.child: Child | None = None
        self.status: dict[str, Any] | None = None
        self.status_error: str | None = "waiting for the controller to answer"

    def _line(self, line: bytes) -> None:
        if not self.listening.is_set() and (address := listening_address(line)) is not None:
            self.url = f"http://{address}"
            self.listening.set()
        elif (action := parse_action(line, self._at)) is not None:
            self._on_action(action)
        elif (problem := problem_of(line)) is not None:
            self._on_problem(problem)

    async def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "controller",
            "run",
            "--config",
            str(self.config),
            "--listen",
            "127.0.0.1:0",
            *self._extra_args,
        ]
        self.child = await spawn(
            "controller", argv, env=self._env, log_path=self._log_path, on_stderr_line=self._line
        )

    @property
    def exited(self) -> int | None:
        return None if self.child is None else self.child.returncode

    async def wait_exit(self) -> int:
        """Return once the controller process has exited, with its exit code."""
        assert self.child is not None
        return await self.child.process.wait()

    async def wait_listening(self, within: float) -> None:
        """Wait until the controller has said where it listens; RuntimeError if it exits or is
        late."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.listening.is_set():
            if self.exited is not None:
                raise RuntimeError(self._died())
            if loop.time() >= deadline:
                raise RuntimeError(f"the controller did not listen within {within:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listening.wait(), 0.25)

    async def wait_ready(self, session: aiohttp.ClientSession, within: float) -> None:
        """Wait until /status answers; raise RuntimeError if the controller exits or is late."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if self.exited is not None:
                raise RuntimeError(self._died())
            if await self.poll(session):
                return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"the controller did not answer within {within:.0f} s\n{self._tail()}")

    def _tail(self) -> str:
        return self.child.tail() if self.child is not None else ""

    def _died(self) -> str:
        return f"the controller exited with code {self.exited}; its last lines:\n{self._tail()}"

    async def poll(self, session: aiohttp.ClientSession) -> bool:
        """Refresh `status` from /status; True when it answered."""
        try:
            async with session.get(f"{self.url}/status") as response:
                if response.status != 200:
                    self.status_error = f"/status answered HTTP {response.status}"
                    return False
                document = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.status_error = f"/status not answering ({type(exc).__name__})"
            return False
        if isinstance(document, dict):
            self.status, self.status_error = document, None
            return True
        self.status_error = "/status answered something other than a JSON object"
        return False

    async def stop(self) -> int | None:
        if self.child is None:
            return None
        return await self.child.stop(grace=10.0)

    def kill_now(self) -> None:
        if self.child is not None:
            self.child.kill_now()

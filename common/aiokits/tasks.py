"""Named, guarded background tasks: each is meant to run until it is told to stop.

A task that fails or returns on its own is logged ("has failed", "finished unexpectedly") with
its name, so a daemon is never left half-alive without a line saying which part stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from common.logs import event

log = logging.getLogger("common.tasks")


def guarded_task(
    coro: Coroutine[Any, Any, None], *, name: str, may_end: Callable[[], bool]
) -> asyncio.Task[None]:
    """Start a named task meant to run until cancelled, and log if it stops on its own."""

    def _done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            event(log, "task has failed", level=logging.ERROR, task=name, error=repr(exc))
            log.error("task %s traceback", name, exc_info=exc)
        elif not may_end():
            event(log, "task finished unexpectedly", level=logging.ERROR, task=name)

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_done)
    return task


@dataclass(frozen=True)
class NamedTask:
    """A coroutine function to run as a task called `name`."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]


async def run_until_stopped(tasks: Sequence[NamedTask], stop: asyncio.Event) -> bool:
    """Run `tasks` until `stop` is set (True) or one of them ends (False); cancel the rest."""
    running = {asyncio.create_task(t.run(), name=t.name): t.name for t in tasks}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait({stopper, *running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopper, *running):
            task.cancel()
        for task in (stopper, *running):
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    if task not in done:
                        log.exception("task %s failed while stopping", task.get_name())
    ended = [task for task in done if task is not stopper]
    for task in ended:
        name = task.get_name()
        if task.cancelled():
            event(log, "task was cancelled unexpectedly", level=logging.ERROR, task=name)
        elif (error := task.exception()) is not None:
            event(log, "task has failed", level=logging.ERROR, task=name, error=repr(error))
            log.error("task %s traceback", name, exc_info=error)
        else:
            event(log, "task finished unexpectedly", level=logging.ERROR, task=name)
    return not ended


class PacedWorker:
    """A named background task that runs `round` each time it is woken, at most once per
    `min_interval` seconds of `clock`; wakes while a round runs fold into one more round.

    `wake` starts the task if it is not running (a worker that died, logged by its guard, is
    replaced on the next wake) unless `may_end` says the owner is closing; `stop` cancels it,
    abandoning a round under way."""

    def __init__(
        self,
        name: str,
        round: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float],
        min_interval: float,
        may_end: Callable[[], bool],
    ) -> None:
        self.name = name
        self.task: asyncio.Task[None] | None = None
        self._round = round
        self._clock = clock
        self._min_interval = min_interval
        self._may_end = may_end
        self._woken = asyncio.Event()

    def wake(self) -> None:
        if (self.task is None or self.task.done()) and not self._may_end():
            self.task = guarded_task(self._work(), name=self.name, may_end=self._may_end)
        self._woken.set()

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _work(self) -> None:
        while True:
            await self._woken.wait()
            self._woken.clear()
            started = self._clock()
            await self._round()
            await asyncio.sleep(max(0.0, started + self._min_interval - self._clock()))

"""Named, guarded background tasks: each is meant to run until the agent stops.

A task that fails or returns stops the agent (with a log line saying which and why) rather
than leaving it half-alive; the service manager restarts it, and the drain marker and the
spool carry everything that matters across the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedTask:
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
        if task.cancelled():
            log.error("task %s was cancelled unexpectedly; stopping the agent", task.get_name())
        elif (error := task.exception()) is not None:
            log.error("task %s has failed; stopping the agent", task.get_name(), exc_info=error)
        else:
            log.error("task %s has finished unexpectedly; stopping the agent", task.get_name())
    return not ended

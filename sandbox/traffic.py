"""Plays the demand against the fleet, as jicofo would: each request takes an idle Jibri or is
missed ("all Jibris busy"), and each recording stops after its duration, which runs Jibri's
finalize and hands the recording to the agent's spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable

from sandbox.demand import Recording
from sandbox.fleet import Node, SimulatedVMs, pick, session_sequence
from sandbox.ledger import Ledger

log = logging.getLogger(__name__)


class Traffic:
    def __init__(
        self,
        *,
        fleet: SimulatedVMs,
        ledger: Ledger,
        rng: random.Random,
        elapsed: Callable[[], float],
        on_problem: Callable[[str], None],
    ) -> None:
        self._fleet = fleet
        self._ledger = ledger
        self._rng = rng
        self._elapsed = elapsed
        self._on_problem = on_problem
        self._next_session = session_sequence()
        self._recordings: dict[str, asyncio.Task[None]] = {}
        self._ending = asyncio.Event()

    async def play(self, demand: Iterable[Recording], until: float | None) -> None:
        """Request each recording at its start time; stop at `until` (seconds into the run)."""
        for recording in demand:
            if until is not None and recording.start >= until:
                return
            delay = recording.start - self._elapsed()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.request(recording.duration)

    async def request(self, duration: float) -> None:
        self._ledger.request()
        for node in pick(self._fleet.available(), self._rng):
            session = self._next_session()
            if await self._fleet.start_recording(node, session):
                self._ledger.start(session, node.instance_id, self._elapsed())
                self._recordings[session] = asyncio.create_task(
                    self._run(node, session, duration), name=f"recording:{session}"
                )
                return
        self._ledger.miss()
        log.info("recording missed: no idle Jibri")

    async def _run(self, node: Node, session: str, duration: float) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ending.wait(), timeout=duration)
            finalized = await self._fleet.stop_recording(node, session)
            if finalized is False:
                self._on_problem(f"finalize of {session} on {node.instance_id} failed")
                self._ledger.finalize_failures.append(session)
            self._ledger.end(session, self._elapsed(), finalized=bool(finalized))
        except Exception as exc:
            log.exception("recording %s on %s failed", session, node.instance_id)
            self._on_problem(f"recording {session} on {node.instance_id} failed: {exc!r}")
        finally:
            self._recordings.pop(session, None)

    async def end_all(self, grace: float) -> None:
        """End every recording now (the meetings are over) and wait for their finalize."""
        self._ending.set()
        running = list(self._recordings.values())
        if running:
            await asyncio.wait(running, timeout=grace)

    async def cancel(self) -> None:
        for task in list(self._recordings.values()):
            task.cancel()
        for task in list(self._recordings.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

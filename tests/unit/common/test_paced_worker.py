"""`PacedWorker`, the per-pool background worker of the controller's extra loop steps."""

from __future__ import annotations

import asyncio

from common.aiokits.tasks import PacedWorker


class Rounds:
    """Rounds that each wait for `release` before finishing, counted as they start."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        self.entered.set()
        await self.release.wait()


async def test_wakes_during_a_round_fold_into_one_more() -> None:
    """Three wakes while a round runs give exactly one more round, not three."""
    rounds = Rounds()
    worker = PacedWorker("w", rounds, clock=lambda: 0.0, min_interval=0.0, may_end=lambda: False)
    worker.wake()
    await asyncio.wait_for(rounds.entered.wait(), 5)
    rounds.entered.clear()
    for _ in range(3):
        worker.wake()
    rounds.release.set()
    await asyncio.wait_for(rounds.entered.wait(), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert rounds.started == 2
    await worker.stop()
    assert worker.task is not None and worker.task.done()


async def test_a_closing_owner_starts_no_task() -> None:
    """Once `may_end` says the owner is closing, a wake starts nothing."""
    rounds = Rounds()
    worker = PacedWorker("w", rounds, clock=lambda: 0.0, min_interval=0.0, may_end=lambda: True)
    worker.wake()
    assert worker.task is None
    await worker.stop()

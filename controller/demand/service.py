"""One pool's demand at run time: its readiness (history, recorder, boot times), the tasks that
keep the history in CloudWatch and read jicofo, and the metrics they export.

The loop calls `before_plan` (the readiness target goes into the observation) and
`after_plan` (the plan's instance states become demand and boot times). The CloudWatch sync
and the jicofo scraper run as guarded tasks of their own (`history:<pool>`,
`jicofo:<pool>`), so neither an outage nor a slow jicofo ever delays a pass: a pass reads
only the history in memory. A reload that changes a task's section restarts that task; the
history itself lives as long as the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

import aiohttp

from common.aiokits.clock import Clock
from common.aiokits.tasks import guarded_task
from common.logs import event
from controller.demand.history_sync import HistoryApi, HistorySync, HistoryTarget, run_history_sync
from controller.demand.jicofo import JicofoScrape, JicofoScraper, run_jicofo
from controller.model import Observed, Plan
from controller.prometheus import Metrics
from controller.readiness.tracker import PoolReadiness
from controller.spec import Jicofo, PoolSpec

log = logging.getLogger("controller.demand")

HistoryApis = Callable[[str | None], Awaitable[HistoryApi | None]]
"""The CloudWatch API of a region for the demand history, or None where there is none."""

HOUR: Final = 60
DAY: Final = 1440
"""Minutes of the spans /status gives the miss rate over."""


@dataclass(frozen=True)
class DemandSources:
    """Where demand history is kept: `history_apis` (None: in memory only) and whether to
    publish to it (not in dry-run: a dry-run controller beside a live one would double the
    counts)."""

    history_apis: HistoryApis | None = None
    publish: bool = True


def history_from(apis: Callable[[str | None], Awaitable[tuple[object, object]]]) -> HistoryApis:
    """The history APIs out of the CloudWatch step's (`controller.cloudwatch.step.Apis`): its
    CloudWatch API, where that one reads metrics back."""

    async def history_api(region: str | None) -> HistoryApi | None:
        api, _ = await apis(region)
        return api if isinstance(api, HistoryApi) else None

    return history_api


@dataclass(frozen=True)
class MissRate:
    """Requests over a span of minutes: recordings started and requests that found none."""

    started: float
    missed: float

    @property
    def rate(self) -> float | None:
        asked = self.started + self.missed
        return None if asked == 0 else self.missed / asked


class PoolDemand:
    """See the module docstring. Lives on the event loop, like the history it keeps."""

    def __init__(
        self,
        name: str,
        *,
        sources: DemandSources,
        metrics: Metrics,
        clock: Clock,
        wall_clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.readiness = PoolReadiness()
        self.sync: HistorySync | None = None
        self.jicofo_errors: Mapping[str, str] = {}
        self.jicofo_available: float | None = None
        self._sources = sources
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sections: dict[str, object] = {}
        self._cancelled: list[asyncio.Task[None]] = []
        self._dropped = 0
        self._closing = False

    # --- tasks ---------------------------------------------------------------------------

    def update(self, spec: PoolSpec) -> None:
        """Start, restart or stop the history and jicofo tasks to match `spec`."""
        if self._closing:
            return
        wanted: dict[str, object] = {}
        if spec.demand.history and self._sources.history_apis is not None:
            wanted["history"] = (
                spec.region,
                spec.cloudWatch.namespace,
                spec.autoScalingGroupName,
                spec.readiness.lookbackWeeks,
            )
        if spec.demand.jicofo is not None:
            wanted["jicofo"] = spec.demand.jicofo
        for key in list(self._tasks):
            if self._sections.get(key) != wanted.get(key):
                task = self._tasks.pop(key)
                task.cancel()
                self._cancelled.append(task)
                self._sections.pop(key, None)
        for key, section in wanted.items():
            if key in self._tasks:
                continue
            self._sections[key] = section
            work = self._history(spec) if key == "history" else self._jicofo(spec.demand.jicofo)
            self._tasks[key] = guarded_task(
                work, name=f"{key}:{self.name}", may_end=lambda: self._closing
            )

    async def close(self) -> None:
        """Cancel the tasks and wait for them to end."""
        self._closing = True
        tasks = [*self._tasks.values(), *self._cancelled]
        self._tasks.clear()
        self._cancelled.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _history(self, spec: PoolSpec) -> None:
        assert self._sources.history_apis is not None
        api = await self._sources.history_apis(spec.region)
        if api is None:
            event(log, "demand history kept in memory only", pool=self.name, reason="no-api")
            await asyncio.Event().wait()  # nothing to sync; ends when cancelled
            return
        self.sync = HistorySync(
            api,
            self.readiness.history,
            HistoryTarget(spec.cloudWatch.namespace, spec.autoScalingGroupName),
            pool=self.name,
            started_at=self._wall_clock(),
        )
        await run_history_sync(
            self.sync,
            self._clock,
            self._wall_clock,
            days=7 * spec.readiness.lookbackWeeks + 1,
            publish=self._sources.publish,
        )

    async def _jicofo(self, source: Jicofo | None) -> None:
        assert source is not None
        async with aiohttp.ClientSession() as session:
            await run_jicofo(
                JicofoScraper(session, source),
                self._clock,
                self._wall_clock,
                self._on_scrape,
                pool=self.name,
            )

    def _on_scrape(self, wall_time: float, scrape: JicofoScrape) -> None:
        self.readiness.recorder.missed(wall_time, scrape.missed)
        if scrape.missed > 0:
            self._metrics.recordings_missed_total.labels(self.name).inc(scrape.missed)
        self.jicofo_errors = scrape.errors
        self.jicofo_available = scrape.available

    # --- each pass -----------------------------------------------------------------------

    def before_plan(self, spec: PoolSpec, observed: Observed) -> Observed:
        """The observation with the readiness target in force (unchanged without a wall
        clock: the planner then keeps targetFree, as before)."""
        self.update(spec)
        target = self.readiness.target(spec, observed.wall_time)
        return observed if target is None else replace(observed, readiness=target)

    def after_plan(self, spec: PoolSpec, observed: Observed, plan: Plan, now: float) -> None:
        """Record the plan's instance states as demand and boot times; export the figures."""
        m, name = self._metrics, self.name
        started = self.readiness.record(observed, plan.instances, now)
        if started:
            m.recordings_started_total.labels(name).inc(started)
        m.pool_boot_horizon_seconds.labels(name).set(self.readiness.horizon(spec))
        m.demand_history_seconds.labels(name).set(60.0 * len(self.readiness.history))
        if self.sync is not None and self.sync.dropped > self._dropped:
            m.demand_history_dropped_total.labels(name).inc(self.sync.dropped - self._dropped)
            self._dropped = self.sync.dropped
        target = observed.readiness
        if target is None:
            return
        scheduled = target.schedule_rule is not None or target.override is not None
        parts = {
            "floor": target.floor,
            "schedule": target.floor if scheduled else 0,
            "forecast": target.forecast,
            "reactive": target.reactive,
            "later": target.later,
            "total": target.total,
        }
        for part, value in parts.items():
            m.pool_target_part.labels(name, part).set(value)

    def misses(self, wall_time: float, minutes: int) -> MissRate:
        """Recordings started and requests missed over the last `minutes` (this one included)."""
        history, last = self.readiness.history, int(wall_time // 60)
        started = missed = 0.0
        for minute in range(last - minutes + 1, last + 1):
            counts = history.counts(minute)
            if counts is not None:
                started += counts.started
                missed += counts.missed
        return MissRate(started, missed)

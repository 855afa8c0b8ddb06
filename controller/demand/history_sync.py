"""CloudWatch as the truth of a pool's demand history: each completed minute is published as
RecordingsStarted, RecordingsMissed and RecordingsEnded (1-minute resolution, the pool's
namespace, dimension AutoScalingGroupName), and read back with GetMetricData when the
controller starts, so a restart or a replacement controller forgets nothing.

CloudWatch keeps 1-minute data 15 days and 5-minute data 63 days: older minutes are read at
5-minute resolution and spread evenly over their five minutes. BusyInstances, which the
CloudWatch step already publishes each pass, is read back too (Maximum per minute).

Nothing here blocks scaling: the sync runs as its own guarded task, the forecast reads the
in-memory history whatever state CloudWatch is in, and minutes that failed to publish are
retried on the next minute (kept up to a day).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from common.aiokits.clock import Clock
from common.logs import event
from controller.cloudwatch.datapoints import MAX_DATA_PER_REQUEST, Datum
from controller.demand.history import DemandHistory
from controller.spec import cloudwatch as cw_names

log = logging.getLogger(__name__)

FINE_DAYS: Final = 15
"""CloudWatch keeps 1-minute data this long."""
COARSE: Final = 5
"""Minutes per value beyond FINE_DAYS."""
BACKLOG_MINUTES: Final = 24 * 60
"""Unpublished minutes kept through a CloudWatch outage; older ones are dropped (counted)."""
RETRY_BACKFILL: Final = 300.0


@runtime_checkable
class HistoryApi(Protocol):
    """The two CloudWatch calls the history needs (`controller.cloudwatch.api.AioCloudWatch`);
    runtime-checkable, so a CloudWatch API without GetMetricData (an in-process stand-in)
    leaves the history in memory rather than failing."""

    async def put_metric_data(self, namespace: str, data: Sequence[Datum]) -> None: ...

    async def get_metric_data(
        self, queries: Sequence[Mapping[str, Any]], start: float, end: float
    ) -> Mapping[str, Sequence[tuple[float, float]]]: ...


@dataclass(frozen=True)
class HistoryTarget:
    """Where one pool's history lives in CloudWatch."""

    namespace: str
    group: str

    @property
    def dimensions(self) -> tuple[tuple[str, str], ...]:
        return ((cw_names.DIMENSION, self.group),)


def _query(qid: str, target: HistoryTarget, metric: str, stat: str, period: int) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": target.namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": n, "Value": v} for n, v in target.dimensions],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _per_minute(points: Sequence[tuple[float, float]], minutes: int) -> dict[int, float]:
    """Values per epoch minute; a value over `minutes` minutes is spread evenly across them."""
    spread: dict[int, float] = {}
    for stamp, value in points:
        first = int(stamp // 60)
        for minute in range(first, first + minutes):
            spread[minute] = spread.get(minute, 0.0) + value / minutes
    return spread


class HistorySync:
    """Publishes and reads back one pool's demand history."""

    def __init__(
        self,
        api: HistoryApi,
        history: DemandHistory,
        target: HistoryTarget,
        *,
        pool: str,
        started_at: float,
    ) -> None:
        self._api = api
        self.history = history
        self.target = target
        self.pool = pool
        self.published_through = int(started_at // 60) - 1
        """The last minute published: minutes before this controller started are CloudWatch's
        already (or were never watched)."""
        self.backfilled = False
        self.dropped = 0
        """Minutes given up on after a CloudWatch outage longer than BACKLOG_MINUTES."""

    async def backfill(self, now: float, days: float) -> int:
        """Read the last `days` of history into memory; returns the minutes newly covered."""
        end_minute = int(now // 60)
        fine_start = max(end_minute - int(days * 1440), end_minute - FINE_DAYS * 1440 + 1)
        new = await self._read(fine_start, end_minute, 1)
        coarse_start = end_minute - int(days * 1440)
        if coarse_start < fine_start:
            # Align to CloudWatch's 5-minute buckets.
            first = coarse_start - coarse_start % COARSE
            last = fine_start - fine_start % COARSE
            if last > first:
                new += await self._read(first, last, COARSE)
        self.backfilled = True
        return new

    async def _read(self, first: int, last: int, minutes: int) -> int:
        period = 60 * minutes
        queries = [
            _query("started", self.target, cw_names.RECORDINGS_STARTED, "Sum", period),
            _query("missed", self.target, cw_names.RECORDINGS_MISSED, "Sum", period),
            _query("ended", self.target, cw_names.RECORDINGS_ENDED, "Sum", period),
            _query("busy", self.target, cw_names.BUSY, "Maximum", period),
        ]
        points = await self._api.get_metric_data(queries, first * 60.0, last * 60.0)
        busy = {m: v * minutes for m, v in _per_minute(points.get("busy", ()), minutes).items()}
        return self.history.merge(
            _per_minute(points.get("started", ()), minutes),
            _per_minute(points.get("missed", ()), minutes),
            busy,
            _per_minute(points.get("ended", ()), minutes),
        )

    async def publish(self, now: float) -> int:
        """Publish every covered minute completed since the last publication; returns how many.
        On failure nothing advances, and the next call sends them again."""
        done = int(now // 60) - 1
        first = max(self.published_through + 1, done - BACKLOG_MINUTES + 1)
        self.dropped += first - self.published_through - 1
        data: list[Datum] = []
        for minute, counts in self.history.minutes(first, done):
            stamp = minute * 60.0
            data.append(self._datum(cw_names.RECORDINGS_STARTED, counts.started, stamp))
            data.append(self._datum(cw_names.RECORDINGS_MISSED, counts.missed, stamp))
            data.append(self._datum(cw_names.RECORDINGS_ENDED, counts.ended, stamp))
        for start in range(0, len(data), MAX_DATA_PER_REQUEST):
            batch = data[start : start + MAX_DATA_PER_REQUEST]
            await self._api.put_metric_data(self.target.namespace, batch)
        self.published_through = done
        return len(data) // len(cw_names.HISTORY_METRICS)

    def _datum(self, metric: str, value: float, stamp: float) -> Datum:
        return Datum(
            metric_name=metric, value=value, dimensions=self.target.dimensions, timestamp=stamp
        )


async def run_history_sync(
    sync: HistorySync,
    clock: Clock,
    wall_clock: Callable[[], float],
    *,
    days: float,
    publish: bool = True,
) -> None:
    """The pool's history task: backfill (retried every 5 minutes until it succeeds), then
    publish each completed minute. Every failure is logged and retried; none escapes, so the
    task never stops scaling nor itself. `wall_clock` returns epoch seconds."""
    next_backfill = clock.now()
    while True:
        now = wall_clock()
        if not sync.backfilled and clock.now() >= next_backfill:
            try:
                new = await sync.backfill(now, days)
                event(log, "demand history read", pool=sync.pool, minutes=new)
            except Exception as exc:  # any failure: CloudWatch is retried, scaling goes on
                next_backfill = clock.now() + RETRY_BACKFILL
                event(
                    log,
                    "demand history read failed",
                    level=logging.WARNING,
                    pool=sync.pool,
                    error=repr(exc),
                )
        if publish:
            try:
                await sync.publish(now)
            except Exception as exc:  # kept, and sent again next minute
                event(
                    log,
                    "demand history publish failed",
                    level=logging.WARNING,
                    pool=sync.pool,
                    error=repr(exc),
                )
        sync.history.prune(int(now // 60))
        # Wake just after the next minute ends, so each minute goes out once complete.
        await clock.sleep(60.0 - now % 60.0 + 1.0)

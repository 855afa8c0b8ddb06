"""Reading the group's scaling activities each pass (docs/fleet-operations.md): the cursor,
the paging, the `ScalingActivities` Protocol and its aiobotocore mixin.

What a failed launch means for the planner (`LaunchHealth`, the causes, the hold) is pure and
lives in controller/fleet/launches.py.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from common.logs import event
from controller.errors import AwsError
from controller.fleet.launches import (
    FAILED,
    FINAL,
    LOOKBACK,
    MAX_PAGES,
    SEEN_KEEP,
    ActivityPage,
    LaunchHealth,
    ScalingActivity,
)
from controller.model import Observed

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient

    from controller.prometheus import Metrics

T = TypeVar("T")
log = logging.getLogger("controller.fleet.launches")


@runtime_checkable
class ScalingActivities(Protocol):
    """DescribeScalingActivities for one group, one page at a time, newest first."""

    async def scaling_activities(self, name: str, token: str | None) -> ActivityPage: ...


class AioScalingActivities:
    """`ScalingActivities` over the aiobotocore client of `controller.aws.AioAutoScaling`."""

    _client: AutoScalingClient

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        raise NotImplementedError

    async def scaling_activities(self, name: str, token: str | None) -> ActivityPage:
        request = (
            self._client.describe_scaling_activities(
                AutoScalingGroupName=name, MaxRecords=100, NextToken=token
            )
            if token
            else self._client.describe_scaling_activities(AutoScalingGroupName=name, MaxRecords=100)
        )
        page = await self._call("DescribeScalingActivities", request)
        return ActivityPage(
            tuple(
                ScalingActivity(
                    activity_id=a["ActivityId"],
                    status=a["StatusCode"],
                    message=a.get("StatusMessage") or a.get("Description", ""),
                    description=a.get("Description", ""),
                    started=a["StartTime"].timestamp(),
                )
                for a in page.get("Activities", [])
            ),
            page.get("NextToken"),
        )


class LaunchTracker:
    """One pool's cursor over its scaling activities and its launch streak."""

    def __init__(self, pool: str, metrics: Metrics | None = None) -> None:
        self.pool = pool
        self.health = LaunchHealth()
        self._metrics = metrics
        self._cursor: float | None = None
        """Start time (wall) before which every activity has been settled."""
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    async def read(
        self, api: ScalingActivities, group: str, now: float, wall: float
    ) -> LaunchHealth:
        """Read the activities newer than the cursor and fold the settled launches in."""
        fresh: list[ScalingActivity] = []
        floor = self._cursor if self._cursor is not None else wall - LOOKBACK
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = await api.scaling_activities(group, token)
            older = [a for a in page.activities if a.started < floor]
            fresh += [a for a in page.activities if a.started >= floor]
            token = page.next_token
            if older or not token:
                break
        self.fold(fresh, now)
        return self.health

    async def observe(
        self, api: object, group: str, observed: Observed, now: float, wall: float
    ) -> Observed:
        """`observed` with the launch streak after this pass's read. A client without
        scaling activities leaves it as it is; a failed read keeps the last streak (logged):
        scaling must not wait on it."""
        if not isinstance(api, ScalingActivities):
            return observed
        try:
            health = await self.read(api, group, now, wall)
        except AwsError as exc:
            event(
                log,
                "scaling activities unread",
                level=logging.WARNING,
                pool=self.pool,
                kind=exc.kind,
                error=str(exc),
            )
            health = self.health.settle(now)
        return replace(observed, launches=health)

    def fold(self, activities: list[ScalingActivity], now: float) -> None:
        """Settle the final launch activities not yet seen, oldest first, and move the cursor
        to the oldest one still in progress (or the newest seen)."""
        pending = [a.started for a in activities if a.status not in FINAL]
        newest = max((a.started for a in activities), default=self._cursor)
        cursor = min(pending) if pending else newest
        if cursor is not None:
            self._cursor = cursor
        for activity in sorted(activities, key=lambda a: (a.started, a.activity_id)):
            if activity.status not in FINAL or activity.activity_id in self._seen:
                continue
            self._remember(activity.activity_id)
            if not activity.is_launch:
                continue
            if activity.status in FAILED:
                self._failed(activity, now)
            else:
                self.health = LaunchHealth()
        self.health = self.health.settle(now)

    def _failed(self, activity: ScalingActivity, now: float) -> None:
        was = self.health.failing
        self.health = self.health.failed(activity, now)
        cause = self.health.cause or "other"
        if self._metrics is not None:
            self._metrics.launch_failures_total.labels(self.pool, cause).inc()
        event(
            log,
            "launch failed" if was else "launches failing",
            level=logging.WARNING,
            pool=self.pool,
            reason=cause,
            status=activity.status,
            error=activity.message,
        )

    def _remember(self, activity_id: str) -> None:
        self._seen.add(activity_id)
        self._order.append(activity_id)
        while len(self._order) > SEEN_KEEP:
            self._seen.discard(self._order.popleft())

"""Launch failures: what the group's scaling activities say of its launches, folded into a
`LaunchHealth` the planner reads (docs/fleet-operations.md).

When the group cannot launch (no capacity in the zone, a vCPU quota, a broken launch template,
a subnet out of addresses) desired capacity rises and nothing arrives. Each pass reads
DescribeScalingActivities, newest first, paged, and only as far back as the last activity
already settled; a Failed or Cancelled launch turns `LaunchFailing` on, with AWS's own
StatusMessage, and is counted in jibri_autoscaler_launch_failures_total{pool,cause}. While
launches fail the planner raises desired capacity no further than the instances the group has
(`LaunchHealth.holding`), except for one step after 1, 2, 4, then every 8 minutes; a
successful launch, or a quiet quarter of an hour, clears it.

The cursor and the streak live in the pool's `LaunchTracker` and are lost on restart: a fresh
controller looks back `LOOKBACK` seconds. moto returns no scaling activities, so the reading
is tested against tests/support/fake_autoscaling.py (paging included).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, runtime_checkable

from common.logs import event
from controller.errors import AwsError
from controller.model import Condition, Observed

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient

    from controller.prometheus import Metrics

T = TypeVar("T")
log = logging.getLogger("controller.launches")

CAUSES: Final = (
    "insufficient-capacity",
    "quota",
    "launch-template",
    "subnet-addresses",
    "other",
)
_CAUSE_WORDS: Final = (
    (
        "insufficient-capacity",
        (
            "insufficientinstancecapacity",
            "sufficient capacity",
            "not have sufficient",
            "insufficient capacity",
        ),
    ),
    ("subnet-addresses", ("free addresses", "insufficientfreeaddresses", "free ip")),
    ("quota", ("limit exceeded", "limitexceeded", "current vcpu limit", "quota", "requested more")),
    (
        "launch-template",
        (
            "launch template",
            "launchtemplate",
            "image id",
            "ami",
            "instance profile",
            "invalidparameter",
            "not supported",
            "security group",
            "key pair",
        ),
    ),
)
FINAL: Final = frozenset({"Successful", "Failed", "Cancelled"})
FAILED: Final = frozenset({"Failed", "Cancelled"})
BACKOFF_BASE: Final = 60.0
BACKOFF_CAP: Final = 480.0
QUIET: Final = 900.0
"""With no failed launch for this long, launches are taken to work again."""
LOOKBACK: Final = 900.0
"""How far back (wall seconds) a fresh controller reads activities."""
MAX_PAGES: Final = 20
SEEN_KEEP: Final = 2_000


def classify(message: str) -> str:
    """The cause of a failed launch, from AWS's StatusMessage."""
    lower = message.lower()
    for cause, words in _CAUSE_WORDS:
        if any(word in lower for word in words):
            return cause
    return "other"


@dataclass(frozen=True)
class ScalingActivity:
    activity_id: str
    status: str
    """StatusCode: Successful, Failed, Cancelled, InProgress, ..."""
    message: str
    """StatusMessage (AWS gives one for failures), else the Description."""
    description: str
    started: float
    """StartTime, epoch seconds."""

    @property
    def is_launch(self) -> bool:
        return self.description.startswith("Launching")


@dataclass(frozen=True)
class ActivityPage:
    activities: tuple[ScalingActivity, ...]
    next_token: str | None


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


@dataclass(frozen=True)
class LaunchHealth:
    """The launch streak the planner reads: failing or not, and when it may try again."""

    failing: bool = False
    cause: str | None = None
    message: str = ""
    failures: int = 0
    """Failed or Cancelled launches since launches last worked."""
    since: float | None = None
    last_failure_at: float = -math.inf
    level: int = 0
    retry_at: float = -math.inf
    """Controller clock: before it, the planner raises desired capacity no further."""

    def holding(self, now: float) -> bool:
        return self.failing and now < self.retry_at

    def failed(self, activity: ScalingActivity, now: float) -> LaunchHealth:
        """The streak after one more failed launch seen at `now`."""
        cause, message = classify(activity.message), activity.message
        if not self.failing:
            return LaunchHealth(
                True, cause, message, 1, now, now, level=0, retry_at=now + BACKOFF_BASE
            )
        level, retry_at = self.level, self.retry_at
        if now >= retry_at:
            # The step allowed after the hold failed too: hold longer (failures AWS's own
            # retries report while held do not lengthen it).
            level += 1
            retry_at = now + min(BACKOFF_CAP, BACKOFF_BASE * 2.0**level)
        return replace(
            self,
            cause=cause,
            message=message,
            failures=self.failures + 1,
            last_failure_at=now,
            level=level,
            retry_at=retry_at,
        )

    def settle(self, now: float) -> LaunchHealth:
        """Clear a streak that has been quiet for QUIET seconds."""
        if self.failing and now - self.last_failure_at >= QUIET:
            return LaunchHealth()
        return self

    def condition(self, now: float, desired: int) -> Condition:
        """`LaunchFailing` for /status, with AWS's own words."""
        if not self.failing:
            return Condition("LaunchFailing", False, "LaunchesSucceeding", "no failed launch")
        if self.holding(now):
            plan = (
                f"holding desired capacity at {desired}, next step in {self.retry_at - now:.0f} s"
            )
        else:
            plan = "one step of scale-out allowed"
        return Condition(
            "LaunchFailing",
            True,
            _camel(self.cause or "other"),
            f"{self.failures} failed launches; {plan}; last: {self.message}",
        )


def _camel(cause: str) -> str:
    return "".join(part.capitalize() for part in cause.split("-"))


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


def allowed_step(health: LaunchHealth | None, now: float, step: int) -> int:
    """The scale-out step the planner may take: none while launches fail and the hold lasts,
    so desired capacity stays at the instances the group has and those it still owes."""
    return 0 if health is not None and health.holding(now) else step

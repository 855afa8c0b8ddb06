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

The cursor and the streak live in the pool's `LaunchTracker` (controller/fleet/launches_step.py,
which reads the activities) and are lost on restart: a fresh controller looks back `LOOKBACK`
seconds. moto returns no scaling activities, so the reading is tested against
tests/support/fake_autoscaling.py (paging included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from controller.model import Condition

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


def allowed_step(health: LaunchHealth | None, now: float, step: int) -> int:
    """The scale-out step the planner may take: none while launches fail and the hold lasts,
    so desired capacity stays at the instances the group has and those it still owes."""
    return 0 if health is not None and health.holding(now) else step


def step_allowed_at(health: LaunchHealth | None, now: float) -> float | None:
    """When the hold ends and `allowed_step` lets a step through again (None without a hold):
    a deadline for the plan's requeue, so the step comes on time rather than at resync."""
    return health.retry_at if health is not None and health.holding(now) else None

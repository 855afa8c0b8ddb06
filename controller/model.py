"""Plain data that flows through a reconcile pass: what was observed, and what to do about it.

`plan(desired, observed, now)` (controller.planner) turns an `Observed` into a `Plan`. Both are
frozen, so the planner stays pure and a pass can be replayed from its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple

from common.wire import BusyStatus, HealthStatus

if TYPE_CHECKING:
    from controller.fleet.launches import LaunchHealth
    from controller.fleet.rollout import RolloutStatus
    from controller.readiness.forecast import ReadinessTarget
    from controller.warm_pool.rules import WarmCapacity

PROTECTION_BATCH: Final = 50
"""AWS accepts at most 50 instance ids per SetInstanceProtection call; the planner batches
protection changes by it and `controller.aws` holds every call to it."""


class InstanceState(StrEnum):
    """Derived afresh on every pass (docs/design.md §4); never stored."""

    UNKNOWN = "unknown"
    STARTING = "starting"
    IDLE = "idle"
    RETIRING = "retiring"
    """Idle, and due to be recycled or rolled out (controller.fleet.recycle): not free."""
    BUSY = "busy"
    DRAINING = "draining"
    DRAINED = "drained"
    UNHEALTHY = "unhealthy"
    EXPIRED = "expired"
    STALE = "stale"
    FAILED_BOOT = "failed-boot"
    TERMINATING = "terminating"
    STANDBY = "standby"
    WARMED = "warmed"
    """In the group's warm pool (Warmed:*): not in service, drawn on first by a scale-out."""
    CONFLICTED = "conflicted"
    """Two boots report for it (controller.boots): counted busy, protected, never terminated."""


PROTECTED_STATES = frozenset(
    {InstanceState.BUSY, InstanceState.DRAINING, InstanceState.STALE, InstanceState.CONFLICTED}
)
NEVER_TERMINATED = PROTECTED_STATES | {InstanceState.UNKNOWN}


class Reason(StrEnum):
    """Why an action was taken; the same word appears in logs, metric labels and /status."""

    BOUNDS_DRIFT = "bounds-drift"
    BELOW_MIN = "below-min"
    ABOVE_MAX = "above-max"
    BELOW_TARGET_FREE = "below-target-free"
    IDLE_EXCESS = "idle-excess"
    DRAINED = "drained"
    UNHEALTHY = "unhealthy"
    EXPIRED = "expired"
    FAILED_BOOT = "failed-boot"
    BUSY = "busy"
    DRAINING = "draining"
    STALE = "stale"
    NOT_BUSY = "not-busy"
    UPLOADS_PENDING = "uploads-pending"
    TERMINATION_REQUESTED = "termination-requested"
    LIFECYCLE_DRAINED = "lifecycle-drained"
    LIFECYCLE_TIMEOUT = "lifecycle-timeout"
    LIFECYCLE_NO_AGENT = "lifecycle-no-agent"
    RECYCLE_RECORDINGS = "recycle-recordings"
    RECYCLE_UPTIME = "recycle-uptime"
    ROLLOUT = "rollout"
    CONFLICTED = "conflicted"
    CONFIRM_DRAIN = "confirm-drain"
    """Ask again a boot that drained without being asked (a restart, or a controller restart)."""


@dataclass(frozen=True)
class AsgInstance:
    instance_id: str
    lifecycle_state: str
    health_status: str = "Healthy"
    protected: bool = False
    template_version: str | None = None
    """The launch template version it was launched from, if from a launch template."""


@dataclass(frozen=True)
class AsgView:
    name: str
    min_size: int
    max_size: int
    desired: int
    instances: tuple[AsgInstance, ...]
    template_id: str | None = None
    template_version: str | None = None
    """The group's launch template and version (None: a launch configuration or a mixed
    instances policy, which spec.rollout does not drive)."""


class ReportView(NamedTuple):
    """The freshest report held for one instance, with the history the planner needs. The
    store builds one per agent report (thousands a second in a big fleet), and a NamedTuple
    is immutable like a frozen dataclass at a fraction of the cost to build."""

    received_at: float
    busy: BusyStatus
    health: HealthStatus
    draining: bool = False
    drained: bool = False
    pending_uploads: int = 0
    idle_since: float | None = None
    """Receive time of the first report of the current IDLE/HEALTHY/no-uploads streak."""
    unhealthy_since: float | None = None
    """Receive time of the first report of the current not-HEALTHY streak."""
    jibri_seen: bool = True
    """Whether any report from this instance has shown Jibri answering (busyStatus known).
    An agent that starts before its Jibri reports UNKNOWN: that instance is still booting."""
    recordings_finished: int = 0
    booted_at: float | None = None
    """When the instance booted, on the controller's clock (receive time less its uptime)."""
    ami_id: str | None = None
    agent_version: str | None = None
    boot_id: str = ""
    boot_since: float = -math.inf
    """When the held boot's first report arrived since it became the held one (its takeover);
    the defaults describe one boot held since long ago (controller.boots)."""
    rival_boot: str | None = None
    """The boot the held one took over from, if any."""
    rival_since: float | None = None
    """When that boot had itself taken over from another: two takeovers within staleAfter
    are two live boots, a conflict."""
    rival_busy_at: float | None = None
    """The last report of any earlier boot that said busy or uploading."""
    busy_at: float | None = None
    """The held boot's last report before this one that said busy or uploading."""


@dataclass(frozen=True)
class LifecycleWait:
    """An instance held in Terminating:Wait by a termination lifecycle hook."""

    instance_id: str
    hook_name: str
    token: str | None
    started_at: float
    last_heartbeat_at: float
    heartbeat_timeout: float


@dataclass(frozen=True)
class Observed:
    """Everything one pass knows about a pool, read afresh (level-triggered)."""

    asg: AsgView
    reports: Mapping[str, ReportView]
    first_seen: Mapping[str, float]
    """When the controller first saw each instance in the ASG (never before its own start)."""
    drain_requested: Mapping[str, float]
    """Instances the controller asked to drain, with when it last asked."""
    controller_started_at: float
    last_scale_out_at: float | None = None
    lifecycle_waits: Mapping[str, LifecycleWait] = field(default_factory=dict)
    wall_time: float | None = None
    """Epoch seconds at observation, for time-of-day targets; `now` stays monotonic."""
    readiness: ReadinessTarget | None = None
    """The free recorders to hold now, learned from demand (docs/readiness.md), computed by
    the loop before the plan; None keeps targetFree or the schedule's, as without history."""
    launches: LaunchHealth | None = None
    """What the group's scaling activities say of its launches (controller.fleet.launches)."""
    rollout: RolloutStatus | None = None
    """Where spec.rollout stands (controller.fleet.rollout)."""
    warm: WarmCapacity | None = None
    """The warmed instances the group can draw on and their start time (docs/warm-pools.md),
    from the warm-pool step; None without spec.warmPool."""


class InstanceView(NamedTuple):
    """One instance as a plan sees it. Every pass builds one per instance (10,000 at a time
    in a big pool), and a NamedTuple is immutable like a frozen dataclass at a third of the
    cost to build."""

    instance_id: str
    state: InstanceState
    protected: bool
    """Whether the plan wants it protected from scale-in."""
    report_age: float | None
    detail: str = ""
    next_change_at: float = math.inf
    """When time alone next changes this instance's state or what the rules may do with it
    (stale, boot timed out, idle long enough to drain, unhealthy long enough to replace);
    infinity when only a new report or an AWS change can."""


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetBounds:
    """Make the ASG's own MinSize/MaxSize match the spec, so AWS enforces the same bounds."""

    min_size: int
    max_size: int
    reason: Reason
    name: str = "set-bounds"


@dataclass(frozen=True)
class SetDesiredCapacity:
    capacity: int
    previous: int
    reason: Reason

    @property
    def name(self) -> str:
        return "scale-out" if self.capacity > self.previous else "scale-in"


@dataclass(frozen=True)
class SetProtection:
    instance_ids: tuple[str, ...]
    protected: bool
    reason: Reason

    @property
    def name(self) -> str:
        return "protect" if self.protected else "unprotect"


@dataclass(frozen=True)
class DrainInstance:
    instance_id: str
    reason: Reason
    name: str = "drain"


@dataclass(frozen=True)
class Terminate:
    instance_id: str
    decrement: bool
    reason: Reason

    @property
    def name(self) -> str:
        return "terminate" if self.decrement else "replace"


@dataclass(frozen=True)
class LifecycleHeartbeat:
    instance_id: str
    hook_name: str
    token: str | None
    reason: Reason
    name: str = "lifecycle-heartbeat"


@dataclass(frozen=True)
class CompleteLifecycle:
    instance_id: str
    hook_name: str
    token: str | None
    reason: Reason
    result: str = "CONTINUE"
    name: str = "lifecycle-continue"


Action = (
    SetBounds
    | SetDesiredCapacity
    | SetProtection
    | DrainInstance
    | Terminate
    | LifecycleHeartbeat
    | CompleteLifecycle
)
ACTION_NAMES = (
    "set-bounds",
    "scale-out",
    "scale-in",
    "protect",
    "unprotect",
    "drain",
    "terminate",
    "replace",
    "lifecycle-heartbeat",
    "lifecycle-continue",
)


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition for /status."""

    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    requeue_after: float
    instances: tuple[InstanceView, ...]
    desired_capacity: int
    """The capacity the pool will have once the plan's actions are done."""
    conditions: tuple[Condition, ...] = ()
    target_free: int | None = None
    """targetFree in force for this plan (a schedule rule may set it)."""

    def counts(self) -> dict[InstanceState, int]:
        counts = dict.fromkeys(InstanceState, 0)
        for view in self.instances:
            counts[view.state] += 1
        return counts

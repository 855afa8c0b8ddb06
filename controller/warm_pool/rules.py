"""The warm pool's pure decisions (docs/warm-pools.md): what to write to the group's warm pool,
how many warmed instances the planner may count on, and how long they take to start.

The step that reads and writes the group is controller/warm_pool/step.py; the calls it makes are
in controller/warm_pool/api.py (these dataclasses are what they take and give back).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from controller.spec import WarmPool

if TYPE_CHECKING:
    from controller.readiness.forecast import ReadinessTarget

OWNER_TAG: Final = "jibri-autoscaler:warm-pool"
"""Tag the controller puts on a group whose warm pool it created (value: the pool's name). With
the spec's warmPool gone, only a warm pool so tagged is deleted."""
DEFAULT_WARM_START: Final = 30.0
"""Seconds from leaving the warm pool to the first idle report, until enough are measured: a
stopped instance's start and Jibri's (no OS or package install)."""
MIN_SAMPLES: Final = 3
PERCENTILE: Final = 0.9
KEEP: Final = 20
READY_STATES: Final = frozenset(
    {
        "Warmed:Pending",
        "Warmed:Pending:Wait",
        "Warmed:Pending:Proceed",
        "Warmed:Stopped",
        "Warmed:Running",
        "Warmed:Hibernated",
    }
)
"""Warm-pool states of an instance the group can still draw on (not one being terminated)."""
TERMINATING_WAIT: Final = "Warmed:Terminating:Wait"
"""A warmed instance held by a termination hook. Its agent never let Jibri take a recording
(agent/warm_gate.py), so there is nothing to drain: the step lets it go at once."""


@dataclass(frozen=True)
class WarmPoolConfig:
    """A warm pool's configuration as PutWarmPool takes it and DescribeWarmPool gives it back."""

    min_size: int = 0
    max_prepared_capacity: int | None = None
    """None: AWS's default (the group's MaxSize), which DescribeWarmPool may show as -1."""
    state: str = "Stopped"
    reuse_on_scale_in: bool = False


@dataclass(frozen=True)
class WarmInstance:
    instance_id: str
    lifecycle_state: str
    """Warmed:Pending, Warmed:Pending:Wait, Warmed:Stopped, Warmed:Running, ..."""


@dataclass(frozen=True)
class WarmPoolView:
    """What DescribeWarmPool says of a group: no config when the group has no warm pool."""

    config: WarmPoolConfig | None
    instances: tuple[WarmInstance, ...] = ()
    pending_delete: bool = False
    """A deleted warm pool whose instances are still being terminated (Status PendingDelete)."""


def desired_config(spec: WarmPool) -> WarmPoolConfig:
    return WarmPoolConfig(
        min_size=spec.minSize,
        max_prepared_capacity=spec.maxPreparedCapacity,
        state=spec.state,
        reuse_on_scale_in=spec.reuseOnScaleIn,
    )


def config_drift(desired: WarmPoolConfig, current: WarmPoolConfig) -> tuple[str, ...]:
    """The spec's names of the fields that differ."""
    pairs = (
        ("minSize", desired.min_size, current.min_size),
        ("maxPreparedCapacity", desired.max_prepared_capacity, current.max_prepared_capacity),
        ("state", desired.state, current.state),
        ("reuseOnScaleIn", desired.reuse_on_scale_in, current.reuse_on_scale_in),
    )
    return tuple(name for name, want, have in pairs if want != have)


class Change(StrEnum):
    NONE = "none"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    WAIT = "wait"
    """A deleted warm pool is still terminating its instances: PutWarmPool would fail."""
    LEAVE = "leave"
    """Not in the spec and not created by this controller: left alone."""


@dataclass(frozen=True)
class Decision:
    change: Change
    drift: tuple[str, ...] = ()


def decide(spec: WarmPool | None, current: WarmPoolView, owned: bool) -> Decision:
    """What to do with the group's warm pool. `owned`: the group carries OWNER_TAG (read only
    when it matters: no warmPool in the spec, and one on the group)."""
    if current.pending_delete:
        return Decision(Change.WAIT if spec is not None else Change.NONE)
    if spec is None:
        if current.config is None:
            return Decision(Change.NONE)
        return Decision(Change.DELETE if owned else Change.LEAVE)
    desired = desired_config(spec)
    if current.config is None:
        return Decision(Change.CREATE, config_drift(desired, WarmPoolConfig()))
    drift = config_drift(desired, current.config)
    return Decision(Change.UPDATE if drift else Change.NONE, drift)


@dataclass(frozen=True)
class WarmCapacity:
    """The warmed instances the planner may count on (Observed.warm)."""

    count: int
    start_seconds: float
    """Leaving the warm pool → first idle report: measured (a high percentile), or the default."""
    measured: int = 0


def warm_count(instances: Sequence[WarmInstance], in_group: frozenset[str]) -> int:
    """Warmed instances the group can draw on; one already back in the group is not counted."""
    return sum(
        1 for i in instances if i.lifecycle_state in READY_STATES and i.instance_id not in in_group
    )


def warm_credit(readiness: ReadinessTarget | None, warm: WarmCapacity | None) -> int:
    """Free recorders of the readiness target that warmed instances stand in for.

    Spares must cover the requests expected before a launch made now is ready (the boot
    horizon). A warmed instance is ready after its warm start, so of the forecast's spares only
    the share expected after that warm start may wait in the warm pool; the floor (targetFree,
    a schedule rule or override) and the reactive part stay running. Without a forecast, or
    when warm starts take as long as the horizon, nothing changes."""
    if readiness is None or warm is None or warm.count <= 0:
        return 0
    horizon = readiness.horizon
    if not horizon > warm.start_seconds:
        return 0
    learned = max(0, readiness.total - readiness.floor)
    later = math.floor(readiness.forecast * (1.0 - warm.start_seconds / horizon))
    return max(0, min(warm.count, learned, later))


class WarmStarts:
    """Leaving the warm pool → first idle report, for the pool's recent warm starts.

    An instance counts once it was seen warmed, then seen in the group, then seen idle; the
    start is when observe first saw it in the group."""

    def __init__(self, keep: int = KEEP) -> None:
        self._durations: deque[float] = deque(maxlen=keep)
        self._warmed: set[str] = set()

    def warmed(self, instance_ids: Sequence[str]) -> None:
        self._warmed.update(instance_ids)

    def pending(self) -> frozenset[str]:
        return frozenset(self._warmed)

    def ready(self, instance_id: str, duration: float) -> None:
        if instance_id in self._warmed:
            self._warmed.discard(instance_id)
            self._durations.append(max(0.0, duration))

    def forget(self, known: set[str]) -> None:
        self._warmed &= known

    @property
    def durations(self) -> tuple[float, ...]:
        return tuple(self._durations)

    def start_seconds(self) -> float:
        """The PERCENTILE of the measured warm starts (nearest rank), or the default."""
        valid = sorted(self._durations)
        if len(valid) < MIN_SAMPLES:
            return DEFAULT_WARM_START
        return valid[max(1, math.ceil(PERCENTILE * len(valid))) - 1]

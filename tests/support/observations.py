"""Builders for planner inputs: a pool spec and an observation, with readable defaults."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.wire import BusyStatus, HealthStatus
from controller.model import AsgInstance, AsgView, LifecycleWait, Observed, ReportView
from controller.spec import PoolSpec

STARTED = 1_000.0
"""The controller's start time in every built observation."""
NOW = STARTED + 3_600.0
"""A moment well past the startup window."""


def spec(**overrides: Any) -> PoolSpec:
    document: dict[str, Any] = {
        "autoScalingGroupName": "jibri",
        "capacity": {"min": 1, "max": 10},
        "targetFree": 2,
        "scaleOut": {"maxStep": 5},
        "scaleIn": {"idleFor": "5m", "maxStep": 1, "delayAfterScaleOut": "2m"},
        "instances": {"bootTimeout": "10m", "staleAfter": "30s", "unhealthyFor": "5m"},
        "drain": {"timeout": "6h"},
        "resync": "15s",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return PoolSpec.model_validate(document)


def iid(n: int) -> str:
    return f"i-{n:017x}"


def report(
    busy: str = "IDLE",
    health: str = "HEALTHY",
    *,
    age: float = 1.0,
    now: float = NOW,
    idle_for: float | None = None,
    unhealthy_for: float | None = None,
    draining: bool = False,
    drained: bool = False,
    pending_uploads: int = 0,
    jibri_seen: bool = True,
) -> ReportView:
    received = now - age
    busy_status, health_status = BusyStatus(busy), HealthStatus(health)
    idle = (
        busy_status is BusyStatus.IDLE
        and health_status is HealthStatus.HEALTHY
        and not draining
        and not drained
        and pending_uploads == 0
    )
    unhealthy = health_status is not HealthStatus.HEALTHY or busy_status is BusyStatus.UNKNOWN
    return ReportView(
        received_at=received,
        busy=busy_status,
        health=health_status,
        draining=draining,
        drained=drained,
        pending_uploads=pending_uploads,
        idle_since=(now - (idle_for if idle_for is not None else age)) if idle else None,
        unhealthy_since=(now - (unhealthy_for if unhealthy_for is not None else age))
        if unhealthy
        else None,
        jibri_seen=jibri_seen,
    )


@dataclass
class ObservationBuilder:
    """A mutable description of one pool that builds a frozen Observed."""

    desired: int | None = None
    min_size: int = 1
    max_size: int = 10
    instances: list[AsgInstance] = field(default_factory=list)
    reports: dict[str, ReportView] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    drain_requested: dict[str, float] = field(default_factory=dict)
    lifecycle_waits: dict[str, LifecycleWait] = field(default_factory=dict)
    last_scale_out_at: float | None = None
    started_at: float = STARTED
    wall_time: float | None = None

    def add(
        self,
        n: int,
        rep: ReportView | None = None,
        *,
        lifecycle: str = "InService",
        protected: bool = False,
        seen: float = STARTED,
    ) -> str:
        instance_id = iid(n)
        self.instances.append(AsgInstance(instance_id, lifecycle, "Healthy", protected))
        self.first_seen[instance_id] = seen
        if rep is not None:
            self.reports[instance_id] = rep
        return instance_id

    def add_many(self, ns: Iterable[int], rep: ReportView | None = None, **kw: Any) -> list[str]:
        return [self.add(n, rep, **kw) for n in ns]

    def observed(self) -> Observed:
        desired = len(self.instances) if self.desired is None else self.desired
        return Observed(
            asg=AsgView("jibri", self.min_size, self.max_size, desired, tuple(self.instances)),
            reports=dict(self.reports),
            first_seen=dict(self.first_seen),
            drain_requested=dict(self.drain_requested),
            controller_started_at=self.started_at,
            last_scale_out_at=self.last_scale_out_at,
            lifecycle_waits=dict(self.lifecycle_waits),
            wall_time=self.wall_time,
        )

"""A pool's desired state: the JibriPool document and the parts of its spec the core planner
reads (capacity, scaling steps, instance timings, drain), with the CloudWatch and schedule
parts from their own modules (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from common.durations import Duration, PositiveDuration
from controller.spec import cloudwatch as cw_names
from controller.spec.base import FieldProblem, Name, SpecModel, field_errors
from controller.spec.cloudwatch import CloudWatch
from controller.spec.fleet_ops import Recycle, Rollout
from controller.spec.readiness import Demand, Readiness
from controller.spec.schedule import Schedule, TargetInForce
from controller.spec.warm_pool import WarmPool


class Capacity(SpecModel):
    min: Annotated[int, Field(ge=0)]
    max: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ScaleOut(SpecModel):
    maxStep: Annotated[int, Field(ge=1)] = 5


class ScaleIn(SpecModel):
    idleFor: Duration = 300.0
    maxStep: Annotated[int, Field(ge=0)] = 1
    delayAfterScaleOut: Duration = 120.0


class Instances(SpecModel):
    bootTimeout: PositiveDuration = 600.0
    staleAfter: PositiveDuration = 30.0
    unhealthyFor: Duration = 300.0


class DrainSettings(SpecModel):
    timeout: PositiveDuration = 6 * 3600.0


class PoolSpec(SpecModel):
    autoScalingGroupName: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    region: str | None = None
    capacity: Capacity
    targetFree: Annotated[int, Field(ge=0)]
    scaleOut: ScaleOut = ScaleOut()
    scaleIn: ScaleIn = ScaleIn()
    instances: Instances = Instances()
    drain: DrainSettings = DrainSettings()
    resync: PositiveDuration = 15.0
    cloudWatch: CloudWatch = CloudWatch()
    schedule: Schedule = Schedule()
    readiness: Readiness = Readiness()
    demand: Demand = Demand()
    warmPool: WarmPool | None = None
    recycle: Recycle = Recycle()
    rollout: Rollout | None = None

    @model_validator(mode="after")
    def _target_fits(self) -> Self:
        if self.targetFree > self.capacity.max:
            raise ValueError(
                f"targetFree ({self.targetFree}) must not exceed capacity.max ({self.capacity.max})"
            )
        limit = self.capacity.max
        asks: list[tuple[tuple[str | int, ...], int, str]] = [
            (("schedule", "rules", i, "targetFree"), rule.targetFree, "targetFree")
            for i, rule in enumerate(self.schedule.rules)
        ]
        asks += [
            (("schedule", "overrides", i, "targetFree"), override.targetFree, "targetFree")
            for i, override in enumerate(self.schedule.overrides)
        ]
        if self.readiness.maxSpares is not None:
            asks.append((("readiness", "maxSpares"), self.readiness.maxSpares, "maxSpares"))
        too_high: list[FieldProblem] = [
            (at, value, f"{field} ({value}) must not exceed capacity.max ({limit})")
            for at, value, field in asks
            if value > limit
        ]
        if too_high:
            raise field_errors(*too_high)
        return self

    @model_validator(mode="after")
    def _history_alarms(self) -> Self:
        """Alarms on the demand history metrics that could never work as written."""
        cloud = self.cloudWatch
        problems: list[FieldProblem] = []
        for index, alarm in enumerate(cloud.alarms):
            ours = (
                alarm.metricName in cw_names.HISTORY_METRICS
                and (alarm.namespace or cloud.namespace) == cloud.namespace
                and (alarm.dimensions is None or set(alarm.dimensions) == {cw_names.DIMENSION})
            )
            at: tuple[str | int, ...] = ("cloudWatch", "alarms", index)
            if ours and not self.demand.history:
                problems.append(
                    (
                        (*at, "metricName"),
                        alarm.metricName,
                        "demand history is off (spec.demand.history: false)",
                    )
                )
            elif ours and alarm.period < 60:
                problems.append(
                    (
                        (*at, "period"),
                        alarm.period,
                        f"{alarm.metricName} is published once a minute: use a period of "
                        "at least 60 s",
                    )
                )
        if problems:
            raise field_errors(*problems)
        return self

    def target_free_at(self, wall_time: float | None) -> tuple[int, int | None]:
        """targetFree in force at `wall_time` (epoch seconds), and the schedule rule behind it
        (None for the spec's own, or for a dated override: see `target_in_force`)."""
        target = self.schedule.target_at(self.targetFree, wall_time)
        return target.value, target.rule

    @property
    def max_spares(self) -> int:
        """The most free recorders the forecast may ask for."""
        spares = self.readiness.maxSpares
        return self.capacity.max if spares is None else spares

    def target_in_force(self, wall_time: float | None) -> TargetInForce:
        """targetFree in force at `wall_time`, with the rule or override that set it."""
        return self.schedule.target_at(self.targetFree, wall_time)


class Metadata(SpecModel):
    name: Name


class JibriPool(SpecModel):
    apiVersion: Literal["jibri-autoscaler/v1"]
    kind: Literal["JibriPool"]
    metadata: Metadata
    spec: PoolSpec

    @property
    def name(self) -> str:
        return self.metadata.name


@dataclass(frozen=True)
class DesiredState:
    """All pools of one desired-state file, in file order."""

    pools: tuple[JibriPool, ...]
    source: str

    def pool(self, name: str) -> JibriPool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

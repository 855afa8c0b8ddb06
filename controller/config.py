"""Desired state: the JibriPool documents of config/desired-state.yaml (DESIGN §3).

Every model forbids unknown keys, so a typo fails validation instead of passing silently.
Errors name the file, the document, the field path and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Turn `30s`, `5m`, `1h`, `1.5h`, `250ms` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 30s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: use seconds or a string such as 30s, 5m, 1h")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Capacity(_Spec):
    min: Annotated[int, Field(ge=0)]
    max: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ScaleOut(_Spec):
    maxStep: Annotated[int, Field(ge=1)] = 5


class ScaleIn(_Spec):
    idleFor: Duration = 300.0
    maxStep: Annotated[int, Field(ge=0)] = 1
    delayAfterScaleOut: Duration = 120.0


class Instances(_Spec):
    bootTimeout: PositiveDuration = 600.0
    staleAfter: PositiveDuration = 30.0
    unhealthyFor: Duration = 300.0


class Drain(_Spec):
    timeout: PositiveDuration = 6 * 3600.0


ComparisonOperator = Literal[
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
]
Statistic = Literal["SampleCount", "Average", "Sum", "Minimum", "Maximum"]


class AlarmSpec(_Spec):
    """One CloudWatch alarm the controller keeps in place (created, drift-corrected, deleted)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str = ""
    metricName: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    namespace: str | None = None
    statistic: Statistic = "Sum"
    period: Annotated[int, Field(gt=0)] = 60
    evaluationPeriods: Annotated[int, Field(ge=1)] = 1
    datapointsToAlarm: Annotated[int, Field(ge=1)] | None = None
    threshold: float
    comparisonOperator: ComparisonOperator
    treatMissingData: Literal["breaching", "notBreaching", "ignore", "missing"] = "missing"
    alarmActions: tuple[str, ...] = ()
    okActions: tuple[str, ...] = ()
    insufficientDataActions: tuple[str, ...] = ()


class CloudWatch(_Spec):
    namespace: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "Jibri"
    publishMetrics: bool = True
    alarms: tuple[AlarmSpec, ...] = ()


class PoolSpec(_Spec):
    autoScalingGroupName: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    region: str | None = None
    capacity: Capacity
    targetFree: Annotated[int, Field(ge=0)]
    scaleOut: ScaleOut = ScaleOut()
    scaleIn: ScaleIn = ScaleIn()
    instances: Instances = Instances()
    drain: Drain = Drain()
    resync: PositiveDuration = 15.0
    cloudWatch: CloudWatch = CloudWatch()

    @model_validator(mode="after")
    def _target_fits(self) -> Self:
        if self.targetFree > self.capacity.max:
            raise ValueError(
                f"targetFree ({self.targetFree}) must not exceed capacity.max ({self.capacity.max})"
            )
        return self


class Metadata(_Spec):
    name: Name


class JibriPool(_Spec):
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


@dataclass(frozen=True)
class ConfigProblem:
    document: int | None
    path: str
    reason: str

    def render(self, source: str) -> str:
        where = source if self.document is None else f"{source}: document {self.document}"
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class ConfigError(Exception):
    """The desired state could not be loaded; `problems` says where and why."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(p.render(source) for p in self.problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problems_of(error: ValidationError, document: int) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown field (check the spelling)"
        elif item["type"] == "literal_error":
            reason = f"{reason} (got {item['input']!r})"
        problems.append(ConfigProblem(document, _field_path(tuple(item["loc"])), reason))
    return problems


def parse_desired_state(text: str, source: str = "<string>") -> DesiredState:
    """Parse and validate every document of a desired-state file, or raise ConfigError."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigProblem(None, "", f"not valid YAML: {exc}")]) from exc
    if not documents:
        raise ConfigError(source, [ConfigProblem(None, "", "no JibriPool document found")])
    pools: list[JibriPool] = []
    problems: list[ConfigProblem] = []
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            problems.append(ConfigProblem(index, "", "a document must be a mapping"))
            continue
        try:
            pools.append(JibriPool.model_validate(document))
        except ValidationError as exc:
            problems.extend(_problems_of(exc, index))
    names: dict[str, int] = {}
    groups: dict[str, int] = {}
    for index, pool in enumerate(pools, start=1):
        if (first := names.setdefault(pool.name, index)) != index:
            problems.append(
                ConfigProblem(
                    index,
                    "metadata.name",
                    f"duplicate pool name {pool.name!r} (also document {first})",
                )
            )
        asg = pool.spec.autoScalingGroupName
        if (first := groups.setdefault(asg, index)) != index:
            problems.append(
                ConfigProblem(
                    index,
                    "spec.autoScalingGroupName",
                    f"ASG {asg!r} is already managed by document {first}",
                )
            )
    if problems:
        raise ConfigError(source, problems)
    return DesiredState(pools=tuple(pools), source=source)


def load_desired_state(path: Path) -> DesiredState:
    """Read and validate a desired-state file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), [ConfigProblem(None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_desired_state(text, str(path))

"""Desired state: the JibriPool documents of config/desired-state.yaml (DESIGN §3).

Every model forbids unknown keys, so a typo fails validation instead of passing silently.
Errors name the file, the document, the field path and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from common.durations import Duration, PositiveDuration, parse_duration
from controller.spec.cw_names import DIMENSION, FALLBACK_ALARM, MAX_SHORT_ALARM_NAME, POOL_METRICS
from controller.spec.schedule import DAY_NAMES, Window, effective_target, parse_field

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
TreatMissingData = Literal["breaching", "notBreaching", "ignore", "missing"]
_Printable = StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=255), _Printable]
MetricNamespace = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=255, pattern=r"^[^:\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ),
]
Arn = Annotated[str, StringConstraints(pattern=r"^arn:[^\s]+$", max_length=1024)]
Actions = Annotated[tuple[Arn, ...], Field(max_length=5)]

_DAY: Final = 86_400
_WEEK: Final = 7 * _DAY


def _whole_seconds(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"must be a whole number of seconds (got {seconds:g} s)")
    return int(seconds)


WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds)]


def _field_errors(*problems: tuple[tuple[str | int, ...], Any, str]) -> ValidationError:
    """A ValidationError whose errors sit at the given field paths, so a cross-field check
    still reports e.g. `alarms[1].period` rather than the enclosing model."""
    return ValidationError.from_exception_data(
        "CloudWatch",
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{reason}", {"reason": reason}),
                loc=loc,
                input=value,
            )
            for loc, value, reason in problems
        ],
    )


def period_problem(period: int) -> str | None:
    """Why AWS would refuse `period` for an alarm, or None."""
    if period in (10, 20, 30) or (period > 0 and period % 60 == 0):
        return None
    return f"must be 10, 20 or 30 seconds or a multiple of 60 seconds (got {period} s)"


def evaluation_range_problem(period: int, evaluation_periods: int) -> str | None:
    """Why AWS would refuse this evaluation range (period * evaluationPeriods), or None."""
    span = period * evaluation_periods
    if period < 3600 and span > _DAY:
        return (
            f"period * evaluationPeriods is {span} s; AWS allows at most {_DAY} s (one day) "
            "when the period is under an hour"
        )
    if span > _WEEK:
        return f"period * evaluationPeriods is {span} s; AWS allows at most {_WEEK} s (seven days)"
    return None


class AlarmSpec(_Spec):
    """One CloudWatch metric alarm the controller keeps in place: created, drift-corrected and,
    once removed from the spec, deleted. Named `jibri-autoscaler/<pool>/<name>` in AWS."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_SHORT_ALARM_NAME), _Printable
    ]
    description: Annotated[str, StringConstraints(max_length=1024)] = ""
    metricName: MetricName
    namespace: MetricNamespace | None = None
    """Defaults to spec.cloudWatch.namespace."""
    dimensions: (
        Annotated[
            dict[MetricName, Annotated[str, StringConstraints(min_length=1, max_length=1024)]],
            Field(max_length=30),
        ]
        | None
    ) = None
    """Defaults to {AutoScalingGroupName: <the pool's ASG>}."""
    statistic: Statistic
    period: WholeSeconds = 60
    evaluationPeriods: Annotated[int, Field(ge=1)] = 1
    datapointsToAlarm: Annotated[int, Field(ge=1)] | None = None
    """Defaults to evaluationPeriods (every period of the range must breach)."""
    threshold: Annotated[float, Field(allow_inf_nan=False)]
    comparisonOperator: ComparisonOperator
    treatMissingData: TreatMissingData = "missing"
    actionsEnabled: bool = True
    alarmActions: Actions = ()
    okActions: Actions = ()
    insufficientDataActions: Actions = ()

    @model_validator(mode="after")
    def _as_aws_checks(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if reason := period_problem(self.period):
            problems.append((("period",), self.period, reason))
        elif reason := evaluation_range_problem(self.period, self.evaluationPeriods):
            problems.append((("evaluationPeriods",), self.evaluationPeriods, reason))
        if self.datapointsToAlarm is not None and self.datapointsToAlarm > self.evaluationPeriods:
            problems.append(
                (
                    ("datapointsToAlarm",),
                    self.datapointsToAlarm,
                    f"must not exceed evaluationPeriods ({self.evaluationPeriods})",
                )
            )
        if problems:
            raise _field_errors(*problems)
        return self


class FallbackScaling(_Spec):
    """AWS's own scale-out, kept as a safety net for when the controller is down: a step scaling
    policy on the ASG and an alarm on the agents' Sum(JibriFree) that triggers it. Scale-in is
    never delegated. Every unset field is derived from the pool's spec (docs/cloudwatch.md)."""

    namespace: MetricNamespace = "Jibri"
    """Where the agents publish JibriFree (the agent's setting, not spec.cloudWatch.namespace)."""
    metricName: MetricName = "JibriFree"
    threshold: Annotated[int, Field(ge=1)] | None = None
    """Fire while Sum(JibriFree) < threshold; defaults to targetFree (at least 1)."""
    after: WholeSeconds | None = None
    """How long free must stay below the threshold; defaults to bootTimeout + 3 minutes."""
    maxStep: Annotated[int, Field(ge=1)] | None = None
    """Most instances one trigger adds; defaults to scaleOut.maxStep."""
    warmup: WholeSeconds | None = None
    """The policy's EstimatedInstanceWarmup; defaults to bootTimeout."""
    treatMissingData: TreatMissingData = "notBreaching"
    agentPeriod: WholeSeconds = 60
    """How often each agent publishes JibriFree (the agent's fallback period)."""

    @property
    def alarmPeriod(self) -> int:
        """The alarm's period: a minute, or the agents' period if that is longer."""
        return max(60, self.agentPeriod)

    @model_validator(mode="after")
    def _whole_periods(self) -> Self:
        period, agent = self.alarmPeriod, self.agentPeriod
        if not 0 < agent <= 3600 or (60 % agent and agent % 60):
            raise _field_errors(
                (
                    ("agentPeriod",),
                    agent,
                    f"must divide 60 s or be a multiple of 60 s up to 1h (got {agent} s), so "
                    "that every alarm period holds the same number of samples per agent",
                )
            )
        if self.after is not None and (
            self.after < 2 * period or self.after % period or self.after > _DAY
        ):
            raise _field_errors(
                (
                    ("after",),
                    self.after,
                    f"must be a whole number of {period} s alarm periods, from {2 * period} s "
                    f"to {_DAY} s (got {self.after} s)",
                )
            )
        return self


class CloudWatch(_Spec):
    namespace: MetricNamespace = "Jibri"
    """Namespace of the pool metrics, and the default of each alarm's."""
    publishMetrics: bool = True
    """Publish FreeInstances, BusyInstances, StartingInstances, DrainingInstances each pass."""
    storageResolution: Literal[1, 60] = 60
    """1 stores the pool metrics per second (high-resolution; needed by 10-30 s alarms)."""
    alarms: tuple[AlarmSpec, ...] = ()
    fallbackScaling: FallbackScaling | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.namespace.startswith("AWS/"):
            problems.append(
                (("namespace",), self.namespace, "namespaces starting with AWS/ are reserved")
            )
        seen: dict[str, int] = {}
        for index, alarm in enumerate(self.alarms):
            at: tuple[str | int, ...] = ("alarms", index)
            if alarm.name == FALLBACK_ALARM:
                problems.append(
                    ((*at, "name"), alarm.name, "is reserved for the fallbackScaling alarm")
                )
            elif (first := seen.setdefault(alarm.name, index)) != index:
                problems.append(
                    ((*at, "name"), alarm.name, f"duplicate alarm name (also alarms[{first}])")
                )
            problems.extend(
                (
                    ((*at, *loc), value, reason)
                    for loc, value, reason in self._pool_metric_problems(alarm)
                )
            )
        if problems:
            raise _field_errors(*problems)
        return self

    def _pool_metric_problems(
        self, alarm: AlarmSpec
    ) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """Alarms on our own pool metrics that could never work as written."""
        ours = (
            alarm.metricName in POOL_METRICS
            and (alarm.namespace or self.namespace) == self.namespace
            and (alarm.dimensions is None or set(alarm.dimensions) == {DIMENSION})
        )
        if not ours:
            return []
        if not self.publishMetrics:
            return [
                (("metricName",), alarm.metricName, "pool metrics are off (publishMetrics: false)")
            ]
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if alarm.statistic in ("Sum", "SampleCount"):
            problems.append(
                (
                    ("statistic",),
                    alarm.statistic,
                    f"{alarm.metricName} is a gauge published on every pass, so its "
                    f"{alarm.statistic} follows the pass rate: use Minimum, Maximum or Average",
                )
            )
        if alarm.period < 60 and self.storageResolution != 1:
            problems.append(
                (
                    ("period",),
                    alarm.period,
                    f"a {alarm.period} s period needs storageResolution: 1 "
                    "(pool metrics are otherwise stored per minute)",
                )
            )
        return problems


def _cron_text(value: Any) -> Any:
    """YAML reads `hours: 8` as a number; a cron-like field takes it as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CronField = Annotated[str, BeforeValidator(_cron_text)]


class ScheduleRule(_Spec):
    """While the local time matches days, hours and minutes, keep `targetFree` free instead."""

    days: CronField = "*"
    """Weekdays: `*`, `Mon-Fri`, `Sat,Sun`, …"""
    hours: CronField = "*"
    """Hours 0-23: `*`, `8-17`, `7,12`, …"""
    minutes: CronField = "*"
    """Minutes 0-59: `*`, `50-59`, `55-59,0-10`, …"""
    targetFree: Annotated[int, Field(ge=0)]

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_field(value, 0, 6, DAY_NAMES)
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_field(value, 0, 23)
        return value

    @field_validator("minutes")
    @classmethod
    def _minutes(cls, value: str) -> str:
        parse_field(value, 0, 59)
        return value

    def window(self) -> Window:
        return Window(
            days=parse_field(self.days, 0, 6, DAY_NAMES),
            hours=parse_field(self.hours, 0, 23),
            minutes=parse_field(self.minutes, 0, 59),
            target_free=self.targetFree,
        )


class Schedule(_Spec):
    """Time-of-day targets (docs/planner.md): the largest targetFree of the matching rules wins;
    with none matching, spec.targetFree."""

    timezone: str = "UTC"
    rules: tuple[ScheduleRule, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def windows(self) -> tuple[Window, ...]:
        return tuple(rule.window() for rule in self.rules)


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
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _target_fits(self) -> Self:
        if self.targetFree > self.capacity.max:
            raise ValueError(
                f"targetFree ({self.targetFree}) must not exceed capacity.max ({self.capacity.max})"
            )
        limit = self.capacity.max
        too_high = [
            (
                ("schedule", "rules", i, "targetFree"),
                rule.targetFree,
                f"targetFree ({rule.targetFree}) must not exceed capacity.max ({limit})",
            )
            for i, rule in enumerate(self.schedule.rules)
            if rule.targetFree > limit
        ]
        if too_high:
            raise _field_errors(*too_high)
        return self

    def target_free_at(self, wall_time: float | None) -> tuple[int, int | None]:
        """targetFree in force at `wall_time` (epoch seconds), and the schedule rule behind it."""
        return effective_target(
            self.targetFree, self.schedule.windows, self.schedule.zone, wall_time
        )


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

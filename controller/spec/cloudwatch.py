"""spec.cloudWatch, and the names the controller gives to what it owns in CloudWatch and Auto
Scaling.

The names sit here, beside the models that validate against them, because the config
validation, the pure CloudWatch planners and the AWS shell all need them, and because the docs
promise exactly these names to operators.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from controller.spec.base import DAY, WEEK, FieldProblem, SpecModel, WholeSeconds, field_errors

DIMENSION: Final = "AutoScalingGroupName"
"""The dimension of every pool metric and, by default, of every declared alarm."""

FREE: Final = "FreeInstances"
BUSY: Final = "BusyInstances"
STARTING: Final = "StartingInstances"
DRAINING: Final = "DrainingInstances"
POOL_METRICS: Final = (FREE, BUSY, STARTING, DRAINING)
"""Gauges the controller publishes for each pool (docs/cloudwatch.md)."""

RECORDINGS_STARTED: Final = "RecordingsStarted"
"""Per minute: recorders that went from idle to busy (published with zeros, so a minute with
no value is a minute the controller did not watch)."""
RECORDINGS_MISSED: Final = "RecordingsMissed"
"""Per minute: requests jicofo found no recorder for (spec.demand.jicofo)."""
RECORDINGS_ENDED: Final = "RecordingsEnded"
"""Per minute: recorders that went from busy back to free."""
HISTORY_METRICS: Final = (RECORDINGS_STARTED, RECORDINGS_MISSED, RECORDINGS_ENDED)
"""Counts the controller publishes once a minute as the pool's demand history; their Sum over
a period is the count in it."""

ALARM_PREFIX: Final = "jibri-autoscaler/"
"""Every managed alarm is named `jibri-autoscaler/<pool>/<name>`."""
TAG_POOL: Final = "jibri-autoscaler:pool"
"""Tag on every managed alarm, naming its pool: only alarms that carry it are ever deleted."""
TAG_ASG: Final = "jibri-autoscaler:asg"

FALLBACK_ALARM: Final = "fallback-scale-out"
"""Short name of the fallback alarm; reserved, so a declared alarm cannot take it."""
FALLBACK_POLICY: Final = "jibri-autoscaler-fallback-scale-out"
"""Name of the step scaling policy on the pool's ASG (unique per group, so no pool part)."""

MAX_ALARM_NAME: Final = 255
MAX_POOL_NAME: Final = 63


def alarm_prefix(pool: str) -> str:
    """The name prefix of the alarms a pool manages (the trailing slash keeps `a` from `ab`)."""
    return f"{ALARM_PREFIX}{pool}/"


def alarm_name(pool: str, name: str) -> str:
    return f"{alarm_prefix(pool)}{name}"


MAX_SHORT_ALARM_NAME: Final = MAX_ALARM_NAME - len(alarm_prefix("x" * MAX_POOL_NAME))
"""Longest declared alarm name that still fits AWS's 255 characters with any pool's prefix."""


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


def period_problem(period: int) -> str | None:
    """Why AWS would refuse `period` for an alarm, or None."""
    if period in (10, 20, 30) or (period > 0 and period % 60 == 0):
        return None
    return f"must be 10, 20 or 30 seconds or a multiple of 60 seconds (got {period} s)"


def evaluation_range_problem(period: int, evaluation_periods: int) -> str | None:
    """Why AWS would refuse this evaluation range (period * evaluationPeriods), or None."""
    span = period * evaluation_periods
    if period < 3600 and span > DAY:
        return (
            f"period * evaluationPeriods is {span} s; AWS allows at most {DAY} s (one day) "
            "when the period is under an hour"
        )
    if span > WEEK:
        return f"period * evaluationPeriods is {span} s; AWS allows at most {WEEK} s (seven days)"
    return None


class AlarmSpec(SpecModel):
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
        problems: list[FieldProblem] = []
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
            raise field_errors(*problems)
        return self


class FallbackScaling(SpecModel):
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
            raise field_errors(
                (
                    ("agentPeriod",),
                    agent,
                    f"must divide 60 s or be a multiple of 60 s up to 1h (got {agent} s), so "
                    "that every alarm period holds the same number of samples per agent",
                )
            )
        if self.after is not None and (
            self.after < 2 * period or self.after % period or self.after > DAY
        ):
            raise field_errors(
                (
                    ("after",),
                    self.after,
                    f"must be a whole number of {period} s alarm periods, from {2 * period} s "
                    f"to {DAY} s (got {self.after} s)",
                )
            )
        return self


class CloudWatch(SpecModel):
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
        problems: list[FieldProblem] = []
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
            raise field_errors(*problems)
        return self

    def _pool_metric_problems(self, alarm: AlarmSpec) -> list[FieldProblem]:
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
        problems: list[FieldProblem] = []
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

"""Time-of-day targets: `spec.schedule` raises (or lowers) targetFree by day, hour and minute.

Meetings start on the hour, in office hours, on weekdays; a recorder takes a minute or more to
boot, so a purely reactive pool is always late for the burst. A schedule keeps the spares
ready before it arrives. Fields are cron-like: `*`, a value, a range `a-b`, or a comma list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from controller.spec.base import SpecModel

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _value(text: str, low: int, high: int, names: tuple[str, ...] | None) -> int:
    token = text.strip().lower()
    if names is not None and token in names:
        return names.index(token)
    if not token.isdigit():
        expected = "a day name such as Mon" if names else "a number"
        raise ValueError(f"{text.strip()!r} is not {expected}")
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def parse_field(
    text: str, low: int, high: int, names: tuple[str, ...] | None = None
) -> frozenset[int]:
    """Parse `*`, `5`, `8-17`, `Mon-Fri` or a comma list of those into the values it covers."""
    if text.strip() == "*":
        return frozenset(range(low, high + 1))
    values: set[int] = set()
    for item in text.split(","):
        if not item.strip():
            raise ValueError(f"empty item in {text!r}")
        first, sep, last = item.partition("-")
        start = _value(first, low, high, names)
        end = _value(last, low, high, names) if sep else start
        if end < start:
            raise ValueError(f"range {item.strip()!r} runs backwards; split it, e.g. 55-59,0-5")
        values.update(range(start, end + 1))
    return frozenset(values)


@dataclass(frozen=True)
class Window:
    """The compiled form of one schedule rule."""

    days: frozenset[int]
    hours: frozenset[int]
    minutes: frozenset[int]
    target_free: int

    def matches(self, moment: datetime) -> bool:
        return (
            moment.weekday() in self.days
            and moment.hour in self.hours
            and moment.minute in self.minutes
        )


def effective_target(
    base: int, windows: tuple[Window, ...], zone: ZoneInfo, wall_time: float | None
) -> tuple[int, int | None]:
    """The targetFree in force at `wall_time`, and the index of the rule that set it.

    The largest target of the matching rules wins; with none matching (or no wall time), the
    spec's own targetFree."""
    if wall_time is None or not windows:
        return base, None
    moment = datetime.fromtimestamp(wall_time, zone)
    best: tuple[int, int | None] = (base, None)
    found = False
    for index, window in enumerate(windows):
        if window.matches(moment) and (not found or window.target_free > best[0]):
            best, found = (window.target_free, index), True
    return best


def _cron_text(value: Any) -> Any:
    """YAML reads `hours: 8` as a number; a cron-like field takes it as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CronField = Annotated[str, BeforeValidator(_cron_text)]


class ScheduleRule(SpecModel):
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


def _local_time(value: Any) -> Any:
    """`2026-12-10T14:00` (YAML leaves it text), `2026-12-10 14:00:00` (YAML makes it a
    datetime) or a date (midnight): a wall-clock time in the schedule's time zone."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date and time such as 2026-12-10T14:00") from None
    else:
        raise ValueError(f"{value!r} is not a date and time such as 2026-12-10T14:00")
    if moment.tzinfo is not None:
        raise ValueError(
            f"{value!s} carries a UTC offset; give the local time in the schedule's "
            "time zone (spec.schedule.timezone)"
        )
    return moment


LocalTime = Annotated[datetime, BeforeValidator(_local_time)]


class Override(SpecModel):
    """From `from` until `to` (local times in the schedule's zone), keep `targetFree` free:
    an event announced ahead, or a holiday. It replaces the rules and spec.targetFree while in
    force; before and after, it changes nothing, so an expired entry is harmless."""

    start: LocalTime = Field(alias="from")
    end: LocalTime = Field(alias="to")
    targetFree: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(
                f"to ({self.end.isoformat(timespec='minutes')}) must be after "
                f"from ({self.start.isoformat(timespec='minutes')})"
            )
        return self


@dataclass(frozen=True)
class Period:
    """The compiled form of one override: epoch seconds, start included, end excluded."""

    start: float
    end: float
    target_free: int


@dataclass(frozen=True)
class TargetInForce:
    """targetFree in force at one moment, and what set it: an override, a rule, or neither
    (the spec's own)."""

    value: int
    rule: int | None = None
    override: int | None = None


class Schedule(SpecModel):
    """Time-of-day targets (docs/planner.md): the largest targetFree of the matching rules wins;
    with none matching, spec.targetFree. A dated override in force replaces both (the
    largest of those in force, if several overlap)."""

    timezone: str = "UTC"
    rules: tuple[ScheduleRule, ...] = ()
    overrides: tuple[Override, ...] = ()

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

    @cached_property
    def periods(self) -> tuple[Period, ...]:
        # fold=0: a local time that a DST change repeats is taken at its first occurrence.
        return tuple(
            Period(
                start=o.start.replace(tzinfo=self.zone).timestamp(),
                end=o.end.replace(tzinfo=self.zone).timestamp(),
                target_free=o.targetFree,
            )
            for o in self.overrides
        )

    def target_at(self, base: int, wall_time: float | None) -> TargetInForce:
        """targetFree in force at `wall_time` (epoch seconds) for a spec whose own is `base`."""
        if wall_time is not None:
            best: TargetInForce | None = None
            for index, period in enumerate(self.periods):
                if period.start <= wall_time < period.end and (
                    best is None or period.target_free > best.value
                ):
                    best = TargetInForce(period.target_free, override=index)
            if best is not None:
                return best
        value, rule = effective_target(base, self.windows, self.zone, wall_time)
        return TargetInForce(value, rule=rule)

    def next_change(self, wall_time: float) -> float | None:
        """The next override boundary after `wall_time`, so a pass can be due exactly then."""
        edges = [t for p in self.periods for t in (p.start, p.end) if t > wall_time]
        return min(edges, default=None)

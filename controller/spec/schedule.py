"""Time-of-day targets: `spec.schedule` raises (or lowers) targetFree by day, hour and minute.

Meetings start on the hour, in office hours, on weekdays; a recorder takes a minute or more to
boot, so a purely reactive pool is always late for the burst. A schedule keeps the spares
ready before it arrives. Fields are cron-like: `*`, a value, a range `a-b`, or a comma list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator

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


class Schedule(SpecModel):
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

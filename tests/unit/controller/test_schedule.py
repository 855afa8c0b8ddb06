"""Time-of-day targets: cron-like fields, the target in force, and the planner following it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from controller.model import DrainInstance, SetDesiredCapacity
from controller.planner import plan
from controller.spec import ConfigError, parse_desired_state
from controller.spec.schedule import DAY_NAMES, parse_field
from tests.support.observations import NOW, ObservationBuilder, report, spec

# Tuesday 2026-11-24 08:55 UTC is 09:55 in Berlin.
TUESDAY_0855_UTC = datetime(2026, 11, 24, 8, 55, tzinfo=UTC).timestamp()
OFFICE = {
    "timezone": "Europe/Berlin",
    "rules": [
        {"days": "Mon-Fri", "hours": "8-17", "targetFree": 5},
        {"days": "Mon-Fri", "hours": "7-17", "minutes": "50-59", "targetFree": 8},
    ],
}


@pytest.mark.parametrize(
    ("text", "low", "high", "names", "expected"),
    [
        pytest.param("*", 0, 6, DAY_NAMES, set(range(7)), id="star"),
        pytest.param("Mon-Fri", 0, 6, DAY_NAMES, {0, 1, 2, 3, 4}, id="day-range"),
        pytest.param("sat,Sun", 0, 6, DAY_NAMES, {5, 6}, id="day-list"),
        pytest.param("8-10,12", 0, 23, None, {8, 9, 10, 12}, id="hours"),
        pytest.param("55-59,0-1", 0, 59, None, {55, 56, 57, 58, 59, 0, 1}, id="wrap-split"),
    ],
)
def test_parse_field(text: str, low: int, high: int, names, expected: set[int]) -> None:  # type: ignore[no-untyped-def]
    """Cron-like fields cover exactly the values they name."""
    assert parse_field(text, low, high, names) == expected


@pytest.mark.parametrize(
    ("rules", "path", "reason"),
    [
        pytest.param(
            [{"days": "Mon-Fro", "targetFree": 1}],
            "spec.schedule.rules[0].days",
            "'Fro' is not a day name",
            id="bad-day",
        ),
        pytest.param(
            [{"hours": "17-8", "targetFree": 1}],
            "spec.schedule.rules[0].hours",
            "runs backwards",
            id="backwards",
        ),
        pytest.param(
            [{"minutes": 61, "targetFree": 1}],
            "spec.schedule.rules[0].minutes",
            "61 is outside 0-59",
            id="minute-range",
        ),
        pytest.param(
            [{"hours": "8-", "targetFree": 1}],
            "spec.schedule.rules[0].hours",
            "is not a number",
            id="half-range",
        ),
        pytest.param(
            [{"targetFree": 11}],
            "spec.schedule.rules[0].targetFree",
            "must not exceed capacity.max (10)",
            id="above-max",
        ),
        pytest.param(
            [{"dayz": "*", "targetFree": 1}],
            "spec.schedule.rules[0].dayz",
            "unknown field",
            id="typo",
        ),
    ],
)
def test_bad_schedules_name_the_field(
    rules: list[dict[str, object]], path: str, reason: str
) -> None:
    """Every bad schedule fails validation with the field path and the reason."""
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": "a"},
        "spec": {
            "autoScalingGroupName": "g",
            "capacity": {"min": 0, "max": 10},
            "targetFree": 1,
            "schedule": {"rules": rules},
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(yaml.safe_dump(document), "pools.yaml")
    message = str(caught.value)
    assert f"pools.yaml: document 1: {path}: " in message
    assert reason in message


def test_unknown_time_zone_is_refused() -> None:
    """A time zone that is not an IANA name is a clear validation error."""
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        spec(schedule={"timezone": "Mars/Olympus", "rules": []})


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(TUESDAY_0855_UTC, (8, 1), id="pre-warm-before-the-hour"),
        pytest.param(TUESDAY_0855_UTC + 10 * 60, (5, 0), id="office-hours"),
        pytest.param(TUESDAY_0855_UTC + 12 * 3600, (2, None), id="night-falls-back"),
        pytest.param(TUESDAY_0855_UTC + 4 * 86400, (2, None), id="saturday"),
        pytest.param(None, (2, None), id="no-wall-clock"),
    ],
)
def test_target_in_force(moment: float | None, expected: tuple[int, int | None]) -> None:
    """The largest matching rule wins, in the schedule's time zone; otherwise targetFree."""
    assert spec(schedule=OFFICE).target_free_at(moment) == expected


def test_rules_follow_daylight_saving_time() -> None:
    """A rule at 09:00 Berlin matches 08:00 UTC in winter and 07:00 UTC in summer."""
    pool = spec(schedule={"timezone": "Europe/Berlin", "rules": [{"hours": 9, "targetFree": 7}]})
    for month, utc_hour in ((1, 8), (7, 7)):
        moment = datetime(2026, month, 14, utc_hour, 30, tzinfo=UTC)
        assert moment.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
        assert pool.target_free_at(moment.timestamp())[0] == 7


def test_scheduled_target_scales_out_ahead_of_the_hour() -> None:
    """Before the hour, the pre-warm rule's target drives scale-out beyond the spec's."""
    fleet = ObservationBuilder(wall_time=TUESDAY_0855_UTC)
    fleet.add_many(range(2), report("IDLE"))
    result = plan(spec(schedule=OFFICE, scaleOut={"maxStep": 10}), fleet.observed(), NOW)
    assert of_capacity(result) == [8]
    assert result.target_free == 8
    assert "schedule rule 1" in next(
        c.message for c in result.conditions if c.type == "TargetFreeMet"
    )


def test_scheduled_target_holds_spares_from_scale_in() -> None:
    """Spares the schedule asks for are not drained, however long they have idled."""
    fleet = ObservationBuilder(wall_time=TUESDAY_0855_UTC + 10 * 60)
    fleet.add_many(range(5), report("IDLE", idle_for=3600))
    assert [
        a
        for a in plan(spec(schedule=OFFICE), fleet.observed(), NOW).actions
        if isinstance(a, DrainInstance)
    ] == []
    fleet.wall_time = TUESDAY_0855_UTC + 12 * 3600
    assert (
        len(
            [
                a
                for a in plan(spec(schedule=OFFICE), fleet.observed(), NOW).actions
                if isinstance(a, DrainInstance)
            ]
        )
        == 1
    )


def of_capacity(result) -> list[int]:  # type: ignore[no-untyped-def]
    return [a.capacity for a in result.actions if isinstance(a, SetDesiredCapacity)]


def pool_document(schedule: Mapping[str, object], high: int = 50) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "jibri-autoscaler/v1",
            "kind": "JibriPool",
            "metadata": {"name": "a"},
            "spec": {
                "autoScalingGroupName": "g",
                "capacity": {"min": 0, "max": high},
                "targetFree": 2,
                "schedule": schedule,
            },
        }
    )


EVENT = {"from": "2026-11-24T14:00", "to": "2026-11-24T17:00", "targetFree": 40}


@pytest.mark.parametrize(
    ("override", "path", "reason"),
    [
        pytest.param(
            {**EVENT, "to": "2026-11-24T13:00"},
            "spec.schedule.overrides[0]",
            "to (2026-11-24T13:00) must be after from (2026-11-24T14:00)",
            id="backwards",
        ),
        pytest.param(
            {**EVENT, "to": EVENT["from"]},
            "spec.schedule.overrides[0]",
            "must be after",
            id="empty",
        ),
        pytest.param(
            {**EVENT, "from": "next tuesday"},
            "spec.schedule.overrides[0].from",
            "'next tuesday' is not a date and time such as 2026-12-10T14:00",
            id="unparseable",
        ),
        pytest.param(
            {**EVENT, "from": "2026-11-24T14:00+01:00"},
            "spec.schedule.overrides[0].from",
            "carries a UTC offset",
            id="offset",
        ),
        pytest.param(
            {**EVENT, "targetFree": 51},
            "spec.schedule.overrides[0].targetFree",
            "targetFree (51) must not exceed capacity.max (50)",
            id="above-max",
        ),
        pytest.param(
            {"from": EVENT["from"], "targetFree": 4},
            "spec.schedule.overrides[0].to",
            "Field required",
            id="missing-to",
        ),
    ],
)
def test_bad_overrides_name_the_field(override: dict[str, object], path: str, reason: str) -> None:
    """Every bad dated override fails validation with the field path and the reason."""
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(pool_document({"overrides": [override]}), "pools.yaml")
    message = str(caught.value)
    assert f"pools.yaml: document 1: {path}: " in message
    assert reason in message


def test_override_times_in_every_yaml_spelling() -> None:
    """Minutes-only text, a YAML timestamp and a bare date all read as local wall times."""
    text = pool_document({"timezone": "Europe/Berlin"}).replace(
        "timezone: Europe/Berlin",
        "timezone: Europe/Berlin\n    overrides:\n"
        "    - {from: 2026-12-10T14:00, to: 2026-12-10 17:00:00, targetFree: 40}\n"
        "    - {from: 2026-12-24, to: 2026-12-27, targetFree: 0}",
    )
    schedule = parse_desired_state(text).pools[0].spec.schedule
    assert [(o.start, o.end) for o in schedule.overrides] == [
        (datetime(2026, 12, 10, 14), datetime(2026, 12, 10, 17)),
        (datetime(2026, 12, 24), datetime(2026, 12, 27)),
    ]


BERLIN_EVENT = {
    "timezone": "Europe/Berlin",
    "rules": OFFICE["rules"],
    "overrides": [
        EVENT,
        {"from": "2026-11-24T16:00", "to": "2026-11-24T18:00", "targetFree": 45},
        {"from": "2025-01-01T00:00", "to": "2025-01-02T00:00", "targetFree": 30},
    ],
}
BERLIN_1400 = datetime(2026, 11, 24, 13, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("moment", "value", "rule", "override"),
    [
        pytest.param(BERLIN_1400 - 1800, 5, 0, None, id="office-rule-before"),
        pytest.param(BERLIN_1400, 40, None, 0, id="from-is-included"),
        pytest.param(BERLIN_1400 + 2.5 * 3600, 45, None, 1, id="overlap-largest-wins"),
        pytest.param(BERLIN_1400 + 4 * 3600, 2, None, None, id="to-is-excluded"),
        pytest.param(None, 2, None, None, id="no-wall-clock"),
    ],
)
def test_override_in_force(
    moment: float | None, value: int, rule: int | None, override: int | None
) -> None:
    """An override in force replaces rules and targetFree, in the schedule's zone; an expired
    one changes nothing."""
    target = parse_desired_state(pool_document(BERLIN_EVENT)).pools[0].spec.target_in_force(moment)
    assert (target.value, target.rule, target.override) == (value, rule, override)


def test_override_may_lower_the_target_for_a_holiday() -> None:
    """A holiday override below the office rule is honoured: it is the more specific word."""
    holiday = {**OFFICE, "overrides": [{"from": "2026-11-24", "to": "2026-11-25", "targetFree": 0}]}
    pool = parse_desired_state(pool_document(holiday)).pools[0].spec
    assert pool.target_free_at(TUESDAY_0855_UTC + 10 * 60) == (0, None)
    assert pool.target_free_at(TUESDAY_0855_UTC + 10 * 60 + 86400)[0] == 5


def test_next_change_is_the_next_override_edge() -> None:
    """The schedule names the next override boundary, so a pass can be due exactly then."""
    schedule = parse_desired_state(pool_document(BERLIN_EVENT)).pools[0].spec.schedule
    assert schedule.next_change(BERLIN_1400 - 1) == BERLIN_1400
    assert schedule.next_change(BERLIN_1400) == BERLIN_1400 + 2 * 3600
    assert schedule.next_change(BERLIN_1400 + 4 * 3600) is None

"""The wire contract both daemons import: strict types, and nesting bounded before parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from common.wire import MAX_NESTING, BusyStatus, JibriStatus, Report, ReportAnswer, nesting_exceeds

GOOD: dict[str, Any] = {
    "instanceId": "i-0123456789abcdef0",
    "bootId": "boot",
    "seq": 5,
    "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
    "draining": True,
}


def test_a_well_typed_report_parses() -> None:
    """A report with exact JSON types parses, enums by their values."""
    report = Report.model_validate_json(json.dumps(GOOD))
    assert report.seq == 5 and report.draining is True
    assert report.jibri.busyStatus is BusyStatus.IDLE


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"seq": "5"}, "seq", id="number-as-string"),
        pytest.param({"seq": 5.0}, "seq", id="number-as-float"),
        pytest.param({"seq": True}, "seq", id="number-as-boolean"),
        pytest.param({"draining": "yes"}, "draining", id="boolean-as-string"),
        pytest.param({"draining": 1}, "draining", id="boolean-as-number"),
        pytest.param({"bootId": 7}, "bootId", id="string-as-number"),
        pytest.param(
            {"jibri": {"busyStatus": "idle", "healthStatus": "HEALTHY"}},
            "jibri.busyStatus",
            id="enum-wrong-case",
        ),
        pytest.param(
            {"jibri": {"busyStatus": 0, "healthStatus": "HEALTHY"}},
            "jibri.busyStatus",
            id="enum-as-number",
        ),
    ],
)
def test_coercible_values_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    """Strict mode: a value of the wrong JSON type is refused, not coerced."""
    with pytest.raises(ValidationError) as caught:
        Report.model_validate_json(json.dumps({**GOOD, **change}))
    assert ".".join(str(p) for p in caught.value.errors()[0]["loc"]) == field


def test_answer_is_strict_too() -> None:
    """The controller's answer is held to the same rule: drain is a JSON boolean."""
    assert ReportAnswer.model_validate_json('{"drain": true}').drain is True
    with pytest.raises(ValidationError):
        ReportAnswer.model_validate_json('{"drain": "true"}')


def test_python_callers_may_still_name_enums_by_value() -> None:
    """In Python, the enum fields take their plain string values (JSON is what is strict)."""
    status = JibriStatus.model_validate({"busyStatus": "BUSY", "healthStatus": "HEALTHY"})
    assert status.busyStatus is BusyStatus.BUSY


@pytest.mark.parametrize(
    ("document", "too_deep"),
    [
        pytest.param(json.dumps(GOOD).encode(), False, id="a-report"),
        pytest.param(b"[" * MAX_NESTING + b"]" * MAX_NESTING, False, id="at-the-limit"),
        pytest.param(b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), True, id="one-over"),
        pytest.param(b"[]" * 5000, False, id="wide-not-deep"),
        pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, True, id="objects"),
        pytest.param(b"[" * 9000, True, id="unclosed"),
        pytest.param(b'["' + b"[" * 100 + b'"]', False, id="brackets-in-a-string"),
        pytest.param(b'["\\"' + b"{" * 100 + b'"]', False, id="after-an-escaped-quote"),
    ],
)
def test_nesting_is_measured_outside_strings(document: bytes, too_deep: bool) -> None:
    """Depth counts arrays and objects inside one another; brackets in strings are data."""
    assert nesting_exceeds(document) is too_deep

"""What every part of the desired state shares: the strict frozen model base, names, whole
seconds, and cross-field errors that still point at the field at fault."""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from common.durations import parse_duration

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]

DAY: Final = 86_400
WEEK: Final = 7 * DAY

FieldProblem = tuple[tuple[str | int, ...], Any, str]
"""(field path, offending value, reason)."""


class SpecModel(BaseModel):
    """Every model forbids unknown keys, so a typo fails validation instead of passing
    silently; and is frozen, so a loaded spec is a value."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _whole_seconds(value: Any) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"must be a whole number of seconds (got {seconds:g} s)")
    return int(seconds)


WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds)]


def field_errors(*problems: FieldProblem) -> ValidationError:
    """A ValidationError whose errors sit at the given field paths, so a cross-field check
    still reports e.g. `alarms[1].period` rather than the enclosing model."""
    return ValidationError.from_exception_data(
        "Spec",
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{reason}", {"reason": reason}),
                loc=loc,
                input=value,
            )
            for loc, value, reason in problems
        ],
    )

"""Reading a desired-state file: every document parsed and validated, every problem named by
file, document, field path and reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from controller.spec.pool import DesiredState, JibriPool


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
    numbered: list[tuple[int, JibriPool]] = []
    problems: list[ConfigProblem] = []
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            problems.append(ConfigProblem(index, "", "a document must be a mapping"))
            continue
        try:
            numbered.append((index, JibriPool.model_validate(document)))
        except ValidationError as exc:
            problems.extend(_problems_of(exc, index))
    names: dict[str, int] = {}
    groups: dict[str, int] = {}
    # Numbered as in the file: a document that failed validation still takes its number.
    for index, pool in numbered:
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
    return DesiredState(pools=tuple(pool for _, pool in numbered), source=source)


def load_desired_state(path: Path) -> DesiredState:
    """Read and validate a desired-state file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), [ConfigProblem(None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_desired_state(text, str(path))

"""Desired-state parsing and validation (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from controller.spec import (
    ConfigError,
    DesiredState,
    load_desired_state,
    parse_desired_state,
    parse_duration,
)

BASE = """\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata:
  name: {name}
spec:
  autoScalingGroupName: {asg}
  capacity: {{min: {low}, max: {high}}}
  targetFree: {target}
{extra}"""


def pool(
    name: str = "recorders",
    asg: str = "jibri-recorders",
    low: int = 1,
    high: int = 10,
    target: int = 2,
    extra: str = "",
) -> str:
    return BASE.format(name=name, asg=asg, low=low, high=high, target=target, extra=extra)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param(45, 45.0, id="bare-int"),
        pytest.param(2.5, 2.5, id="bare-float"),
        pytest.param(" 10 s ", 10.0, id="spaces"),
    ],
)
def test_durations_parse(value: object, seconds: float) -> None:
    """Durations accept seconds or a number with a ms/s/m/h/d unit."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("5 minutes", id="word-unit"),
        pytest.param("-3s", id="negative"),
        pytest.param(True, id="boolean"),
        pytest.param("", id="empty"),
        pytest.param([1], id="list"),
    ],
)
def test_bad_durations_are_rejected(value: object) -> None:
    """A duration that is not seconds or number+unit is an error, never a silent zero."""
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        pytest.param(pool(), lambda s: s.pools[0].spec.targetFree == 2, id="minimal"),
        pytest.param(
            pool(extra="  scaleIn: {idleFor: 2s, maxStep: 3}\n  resync: 1s\n"),
            lambda s: s.pools[0].spec.scaleIn.idleFor == 2.0 and s.pools[0].spec.resync == 1.0,
            id="durations",
        ),
        pytest.param(
            pool() + "---\n" + pool(name="b", asg="jibri-b"),
            lambda s: [p.name for p in s.pools] == ["recorders", "b"],
            id="two-pools-in-file-order",
        ),
        pytest.param(
            pool(low=0, high=0, target=0), lambda s: s.pools[0].spec.capacity.max == 0, id="zero"
        ),
        pytest.param(
            "# comment only\n---\n" + pool(),
            lambda s: len(s.pools) == 1,
            id="empty-document-skipped",
        ),
        pytest.param(
            pool(),
            lambda s: (
                s.pools[0].spec.instances.staleAfter == 30.0
                and s.pools[0].spec.scaleOut.maxStep == 5
            ),
            id="defaults",
        ),
    ],
)
def test_valid_documents(text: str, check: Callable[[DesiredState], bool]) -> None:
    """Valid desired-state files load, with defaults filled in."""
    assert check(parse_desired_state(text, "pools.yaml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            pool(extra="  tagretFree: 3\n"),
            "pools.yaml: document 1: spec.tagretFree: unknown field",
            id="unknown-key",
        ),
        pytest.param(
            pool(low=5, high=2),
            "pools.yaml: document 1: spec.capacity: min (5) must not exceed max (2)",
            id="min-above-max",
        ),
        pytest.param(
            pool(high=3, target=4),
            "pools.yaml: document 1: spec: targetFree (4) must not exceed capacity.max (3)",
            id="target-above-max",
        ),
        pytest.param(
            pool(extra="  resync: soon\n"),
            "pools.yaml: document 1: spec.resync: invalid duration 'soon'",
            id="bad-duration",
        ),
        pytest.param(
            pool(extra="  instances: {staleAfter: 0s}\n"),
            "pools.yaml: document 1: spec.instances.staleAfter:",
            id="zero-stale-after",
        ),
        pytest.param(
            pool() + "---\n" + pool(asg="other"),
            "pools.yaml: document 2: metadata.name: duplicate pool name 'recorders' "
            "(also document 1)",
            id="duplicate-name",
        ),
        pytest.param(
            pool() + "---\n" + pool(name="b"),
            "pools.yaml: document 2: spec.autoScalingGroupName: ASG 'jibri-recorders' is already "
            "managed by document 1",
            id="duplicate-asg",
        ),
        pytest.param(
            pool(name="a", low=5, high=2) + "---\n" + pool(name="b") + "---\n" + pool(name="c"),
            "pools.yaml: document 3: spec.autoScalingGroupName: ASG 'jibri-recorders' is already "
            "managed by document 2",
            id="duplicate-asg-after-an-invalid-document",
        ),
        pytest.param(
            pool(low=5, high=2) + "---\n" + pool(asg="b") + "---\n" + pool(asg="c"),
            "pools.yaml: document 3: metadata.name: duplicate pool name 'recorders' "
            "(also document 2)",
            id="duplicate-name-after-an-invalid-document",
        ),
        pytest.param(
            pool().replace("kind: JibriPool", "kind: Pool"),
            "pools.yaml: document 1: kind:",
            id="wrong-kind",
        ),
        pytest.param(
            pool(name="Bad_Name"), "pools.yaml: document 1: metadata.name:", id="bad-name"
        ),
        pytest.param(
            pool().replace("  targetFree: 2\n", ""),
            "pools.yaml: document 1: spec.targetFree: Field required",
            id="missing-field",
        ),
        pytest.param("", "pools.yaml: no JibriPool document found", id="empty-file"),
        pytest.param("a: [1, 2\n", "pools.yaml: not valid YAML", id="broken-yaml"),
        pytest.param(
            "- 1\n- 2\n", "pools.yaml: document 1: a document must be a mapping", id="list"
        ),
    ],
)
def test_invalid_documents_name_file_document_and_field(text: str, expected: str) -> None:
    """Every invalid file fails with the file, the document, the field path and the reason."""
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(text, "pools.yaml")
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    """A file with several mistakes lists them all, so one edit can fix them."""
    text = pool(extra="  typo: 1\n") + "---\n" + pool(name="b", asg="b", low=3, high=1)
    with pytest.raises(ConfigError) as caught:
        parse_desired_state(text, "pools.yaml")
    assert [(p.document, p.path) for p in caught.value.problems] == [
        (1, "spec.typo"),
        (2, "spec.capacity"),
    ]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is reported as a ConfigError naming the path, not an OSError."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_desired_state(missing)


def test_repository_desired_state_is_valid() -> None:
    """The shipped config/desired-state.yaml passes validation."""
    repo = Path(__file__).resolve().parents[3]
    state = load_desired_state(repo / "config" / "desired-state.yaml")
    assert state.pools

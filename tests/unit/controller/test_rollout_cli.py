"""`python -m controller rollout`: it writes spec.rollout into the desired-state file only
when the whole result validates (docs/fleet-operations.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.spec import load_desired_state

POOLS = """\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {name: recorders}
spec:
  autoScalingGroupName: jibri
  capacity: {min: 0, max: 10}
  targetFree: 2
---
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {name: other}
spec:
  autoScalingGroupName: other
  capacity: {min: 0, max: 4}
  targetFree: 1
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    return path


def test_rollout_writes_the_pools_spec(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The named pool gets spec.rollout with the given settings; the other is untouched."""
    args = ["rollout", "recorders", "--config", str(config), "--launch-template-version", "7"]
    args += ["--image-id", "ami-0123456789abcdef0", "--canaries", "2", "--healthy-for", "2m"]
    assert main(args) == 0
    state = load_desired_state(config)
    rollout = state.pool("recorders").spec.rollout
    assert rollout is not None
    assert (rollout.launchTemplateVersion, rollout.imageId, rollout.canaries) == (
        "7",
        "ami-0123456789abcdef0",
        2,
    )
    assert rollout.healthyFor == 120.0
    assert state.pool("other").spec.rollout is None
    assert "rollout to version 7" in capsys.readouterr().out


def test_cancel_removes_it(config: Path) -> None:
    """--cancel takes spec.rollout out again."""
    base = ["rollout", "recorders", "--config", str(config)]
    assert main([*base, "--launch-template-version", "7"]) == 0
    assert main([*base, "--cancel"]) == 0
    assert load_desired_state(config).pool("recorders").spec.rollout is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            ["--launch-template-version", "$Latest"], "launchTemplateVersion", id="latest"
        ),
        pytest.param(["--launch-template-version", "3", "--canaries", "0"], "canaries", id="zero"),
        pytest.param(
            ["--launch-template-version", "3", "--image-id", "ubuntu"], "imageId", id="bad-ami"
        ),
        pytest.param(
            ["--launch-template-version", "3", "--healthy-for", "1h"], "healthyFor", id="too-long"
        ),
    ],
)
def test_invalid_rollout_leaves_the_file_alone(
    config: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """A rollout the spec refuses exits 1 naming the field, and the file stays as it was."""
    assert main(["rollout", "recorders", "--config", str(config), *extra]) == 1
    assert message in capsys.readouterr().err
    assert config.read_text() == POOLS


def test_unknown_pool_is_a_clear_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming a pool the file does not have exits 1 with one error line."""
    args = ["rollout", "nope", "--config", str(config), "--launch-template-version", "3"]
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == "error: no pool named 'nope'"
    assert config.read_text() == POOLS

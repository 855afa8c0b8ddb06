from __future__ import annotations

from pathlib import Path

import pytest

from controller.spec import ConfigError, load_desired_state
from sandbox.timings import Timings, scaled_desired_state

REPO = Path(__file__).resolve().parents[3]


def test_scaled_state_replaces_only_the_timings() -> None:
    """The shipped config keeps its capacity and target; its timings become the sandbox's."""
    source = REPO / "config" / "desired-state.yaml"
    original = load_desired_state(source).pools[0].spec
    text, state = scaled_desired_state(source, Timings(idle_for=12, resync=1.5))
    spec = state.pools[0].spec
    assert (spec.scaleIn.idleFor, spec.resync) == (12.0, 1.5)
    assert spec.scaleIn.delayAfterScaleOut == Timings().delay_after_scale_out
    assert spec.instances.staleAfter == Timings().stale_after
    assert spec.instances.bootTimeout == Timings().boot_timeout
    assert (spec.capacity, spec.targetFree, spec.scaleOut) == (
        original.capacity,
        original.targetFree,
        original.scaleOut,
    )
    assert text.startswith("# Derived by the sandbox")


def test_scaled_state_keeps_every_pool(tmp_path: Path) -> None:
    """A file with two pools gives two scaled pools, in file order."""
    pool = (
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {{name: {name}}}\n"
        "spec: {{autoScalingGroupName: {name}-asg, capacity: {{min: 0, max: 3}}, targetFree: 1}}\n"
    )
    source = tmp_path / "pools.yaml"
    source.write_text(pool.format(name="a") + "---\n" + pool.format(name="b"))
    _, state = scaled_desired_state(source, Timings(resync=3))
    assert [p.name for p in state.pools] == ["a", "b"]
    assert all(p.spec.resync == 3.0 for p in state.pools)


def test_scaled_state_reports_an_invalid_source_by_its_own_name(tmp_path: Path) -> None:
    """An invalid desired-state file fails with the controller's error, naming the file."""
    source = tmp_path / "bad.yaml"
    source.write_text(
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {name: x}\n"
        "spec: {autoScalingGroupName: g, capacity: {min: 3, max: 1}, targetFree: 1}\n"
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml: document 1: spec\.capacity"):
        scaled_desired_state(source, Timings())

"""The simulated warm pool: what it costs, and what a scale-out draws on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.sim.__main__ import main
from bench.sim.clock import Simulation
from bench.sim.fleet import DAY, SimulatedWorld, WorldSettings
from bench.sim.report import cost_hours

CONFIG = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"
HOUR = 3600.0


def _world(**overrides: object) -> tuple[Simulation, SimulatedWorld]:
    settings: dict[str, object] = {
        "boot_mean": 90.0,
        "boot_spread": 0.0,
        "warm_pool": True,
        "warm_start_mean": 30.0,
        "warm_start_spread": 0.0,
        "warm_max_prepared": 4,
    }
    sim = Simulation()
    world = SimulatedWorld(
        sim,
        WorldSettings(**{**settings, **overrides}),  # type: ignore[arg-type]
        name="jibri",
        min_size=0,
        max_size=10,
        rng=random.Random(1),
    )
    return sim, world


def test_stopped_warmed_instances_are_billed_apart_from_running_ones() -> None:
    """An hour with one running instance and a warm pool of three stopped ones bills one
    running hour and three stopped hours; a scale-out draws a stopped one, ready after its
    warm start, and the warm pool keeps maxPreparedCapacity - desired."""
    sim, world = _world()
    world.start(1)
    assert len(world.warm) == 3
    sim.run(HOUR)
    world.set_desired(2)
    assert len(world.warm) == 2, "one drawn; 4 - 2 wanted, so no new launch"
    assert world.tally.warm_starts == 1 and world.tally.launches == 4
    drawn = next(i for i in world.live() if not i.prebooted)
    assert drawn.ready_at == HOUR + 30.0
    sim.run(2 * HOUR)
    assert drawn.jibri_up
    world.finish()
    assert world.tally.instance_seconds == pytest.approx(HOUR + HOUR + HOUR)
    assert world.tally.warm_seconds == pytest.approx(3 * HOUR + 2 * HOUR)
    assert cost_hours(3.0, 5.0, 0.02) == pytest.approx(3.1)


def test_warm_pool_launch_is_billed_in_full_until_it_stops() -> None:
    """An instance launched into the warm pool runs its cold boot at full price, then waits
    stopped; with the warm pool dry a scale-out launches cold."""
    sim, world = _world(warm_max_prepared=1)
    world.start(0)
    assert len(world.warm) == 1
    world.set_desired(1)
    assert world.tally.warm_starts == 1
    world.set_desired(2)
    assert world.tally.warm_starts == 1, "the second comes cold"
    sim.run(HOUR)
    world.finish()
    # Two running for an hour; nothing was left in the warm pool to bill (1 - 2 < 0).
    assert world.tally.instance_seconds == pytest.approx(2 * HOUR)
    assert world.tally.warm_seconds == 0.0


def test_instance_seconds_split_at_midnight() -> None:
    """A recorder running across midnight bills each day its share."""
    sim, world = _world(warm_pool=False)
    world.start(1)
    sim.run(DAY + 600.0)
    world.finish()
    assert world.tally.days[0].instance_seconds == pytest.approx(DAY)
    assert world.tally.days[1].instance_seconds == pytest.approx(600.0)


def test_warm_pool_run_reports_its_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--warm-pool puts the warm pool's stopped hours in the JSON, priced at --warm-cost into
    costHours, which the ratio to the oracle is taken on."""
    args = ["--config", str(CONFIG), "--recordings", "80", "--hours", "2", "--warm-pool"]
    args += ["--warm-cost", "0.05", "--policies", "planner,oracle", "--json", "--jobs", "1"]
    assert main([*args, "--out", str(tmp_path), "--no-plot"]) == 0
    document = json.loads(capsys.readouterr().out)
    planner, oracle = document["results"]
    assert document["scenario"]["world"]["warm_pool"] is True
    assert planner["warmPoolHours"] > 0
    expected = planner["instanceHours"] + 0.05 * planner["warmPoolHours"]
    assert planner["costHours"] == pytest.approx(expected, abs=0.01)
    assert planner["ratioToOracle"] == pytest.approx(
        planner["costHours"] / oracle["instanceHours"], abs=0.002
    )

"""`python -m bench.sim`: outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.sim.__main__ import main
from controller.spec import load_desired_state

CONFIG = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"


def test_json_output_scores_every_policy_against_the_oracle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one result per policy with its ratio to the oracle, and writes the files."""
    size = ["--recordings", "120", "--hours", "3", "--jobs", "1"]
    code = main(["--config", str(CONFIG), *size, "--out", str(tmp_path), "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    results = {r["policy"]: r for r in document["results"]}
    assert list(results) == [
        "classic",
        "jitsi-autoscaler",
        "target-tracking",
        "planner",
        "planner-schedule",
        "oracle",
    ]
    assert results["oracle"]["ratioToOracle"] == 1.0
    assert results["planner"]["busyTerminations"] == 0
    assert document["scenario"]["pool"]["targetFree"] == 2
    assert json.loads((tmp_path / "sim.json").read_text()) == document
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")
    (pool,) = load_desired_state(tmp_path / "schedule.yaml").pools
    assert pool.spec.schedule.rules, "planner-schedule's pool, as written for users"


def test_table_output_reads_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV trace replaces the synthetic day; the table lists the chosen policies."""
    trace = tmp_path / "trace.csv"
    trace.write_text("start_seconds,duration_seconds\n0,600\n30,600\n60,600\n4000,60\n")
    options = ["--policies", "planner,oracle", "--no-plot", "--jobs", "1"]
    code = main(["--config", str(CONFIG), "--trace", str(trace), "--out", str(tmp_path), *options])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 recordings" in out
    lines = out.splitlines()
    assert any(line.startswith("planner ") for line in lines)
    assert any(line.startswith("oracle ") for line in lines)
    assert not (tmp_path / "sim.png").exists()


def test_a_trace_without_a_previous_day_skips_the_learned_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default a trace with no --reference runs every policy but planner-schedule, and
    says why."""
    trace = tmp_path / "trace.csv"
    trace.write_text("0,600\n30,600\n")
    code = main(["--config", str(CONFIG), "--trace", str(trace), "--out", str(tmp_path), "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert "planner-schedule" not in {r["policy"] for r in document["results"]}
    assert "planner-schedule skipped" in document["scenario"]["note"]
    assert not (tmp_path / "schedule.yaml").exists()


def test_write_schedule_puts_the_learned_pool_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--write-schedule PATH writes planner-schedule's JibriPool, with 10-minute windows when
    --schedule-window 10, and the controller's validation accepts it."""
    target = tmp_path / "learned" / "pool.yaml"
    options = ["--recordings", "200", "--hours", "2", "--no-plot", "--jobs", "1"]
    options += ["--policies", "planner-schedule", "--schedule-window", "10"]
    code = main(
        ["--config", str(CONFIG), *options, "--out", str(tmp_path), "--write-schedule", str(target)]
    )
    assert code == 0
    assert "planner-schedule " in capsys.readouterr().out
    assert not (tmp_path / "schedule.yaml").exists()
    assert target.read_text().startswith("# planner-schedule's pool, written by")
    (pool,) = load_desired_state(target).pools
    minutes = {rule.minutes for rule in pool.spec.schedule.rules}
    assert all(int(m.split("-")[0]) % 10 == 0 for m in minutes if m != "*")
    assert pool.spec.scaleOut.maxStep >= max(r.targetFree for r in pool.spec.schedule.rules)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--trace", "/nonexistent.csv"], "cannot read", id="trace"),
        pytest.param(["--policies", "magic"], "unknown policy", id="policy"),
        pytest.param(["--pool", "nope"], "no pool named 'nope'", id="pool"),
        pytest.param(["--max", "0"], "capacity: min (1) must not exceed max (0)", id="max"),
        pytest.param(["--recordings", "0"], "must be positive", id="size"),
        pytest.param(["--schedule-window", "7"], "dividing 60", id="window"),
        pytest.param(["--schedule-rules", "10"], "at least 24", id="rules"),
        pytest.param(["--idle-for", "soon"], "scaleIn.idleFor: invalid duration", id="idle-for"),
    ],
)
def test_bad_input_is_a_one_line_error(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """User errors exit 2 with a message on stderr, not a traceback."""
    code = main(["--config", str(CONFIG), "--out", str(tmp_path), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "policy",
    [pytest.param(p, id=p) for p in ("planner-forecast", "planner-schedule")],
)
def test_learning_on_a_trace_needs_a_reference_day(
    policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy that learns never learns from the day it is scored on: asked for by name with
    a trace, it needs --reference."""
    trace = tmp_path / "trace.csv"
    trace.write_text("0,600\n")
    options = ["--trace", str(trace), "--policies", policy, "--out", str(tmp_path)]
    assert main(["--config", str(CONFIG), *options]) == 2
    assert "needs --reference" in capsys.readouterr().err


def test_idle_for_overrides_the_pools_scale_in_delay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--idle-for takes a config duration and replaces scaleIn.idleFor in the simulated pool."""
    options = ["--recordings", "50", "--hours", "1", "--policies", "planner", "--no-plot"]
    code = main(["--config", str(CONFIG), *options, "--idle-for", "1m", "--out", str(tmp_path)])
    assert code == 0
    capsys.readouterr()
    document = json.loads((tmp_path / "sim.json").read_text())
    assert document["scenario"]["pool"]["scaleInIdleFor"] == 60.0

"""`python -m bench.sim`: outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.sim.__main__ import main

CONFIG = Path(__file__).resolve().parents[1] / "config" / "desired-state.yaml"


def test_json_output_scores_every_policy_against_the_oracle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one result per policy with its ratio to the oracle, and writes the files."""
    size = ["--recordings", "120", "--hours", "3", "--jobs", "1"]
    code = main(["--config", str(CONFIG), *size, "--out", str(tmp_path), "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    results = {r["policy"]: r for r in document["results"]}
    assert set(results) == {"classic", "jitsi-autoscaler", "target-tracking", "planner", "oracle"}
    assert results["oracle"]["ratioToOracle"] == 1.0
    assert results["planner"]["busyTerminations"] == 0
    assert document["scenario"]["pool"]["targetFree"] == 2
    assert json.loads((tmp_path / "sim.json").read_text()) == document
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--trace", "/nonexistent.csv"], "cannot read", id="trace"),
        pytest.param(["--policies", "magic"], "unknown policy", id="policy"),
        pytest.param(["--pool", "nope"], "no pool named 'nope'", id="pool"),
        pytest.param(["--max", "0"], "capacity: min (1) must not exceed max (0)", id="max"),
        pytest.param(["--recordings", "0"], "must be positive", id="size"),
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


def test_forecast_on_a_trace_needs_a_reference_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """planner-forecast never learns from the day it is scored on: a trace needs --reference."""
    trace = tmp_path / "trace.csv"
    trace.write_text("0,600\n")
    options = ["--trace", str(trace), "--policies", "planner-forecast", "--out", str(tmp_path)]
    assert main(["--config", str(CONFIG), *options]) == 2
    assert "needs --reference" in capsys.readouterr().err

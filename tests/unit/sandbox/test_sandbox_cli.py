from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.cli import EXIT_USAGE, WORK_MARKER, build_options, build_parser, main, prepare_work_dir

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "config" / "desired-state.yaml")


def test_bad_trace_rows_are_reported_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad CSV row exits 2 with its line number, without a traceback or a work dir."""
    trace = tmp_path / "t.csv"
    trace.write_text("start_seconds,duration_seconds\n1,5\n2,-3\n")
    work = tmp_path / "work"
    code = main(["--config", CONFIG, "--trace", str(trace), "--work-dir", str(work)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"{trace}:3: duration_seconds must be greater than 0" in err
    assert "Traceback" not in err
    assert not work.exists()


def test_invalid_config_is_reported_with_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid desired-state file exits 2 naming the file and the field."""
    config = tmp_path / "pools.yaml"
    config.write_text(
        "apiVersion: jibri-autoscaler/v1\nkind: JibriPool\nmetadata: {name: p}\n"
        "spec: {autoScalingGroupName: g, capacity: {min: 1, max: 2}, targetFree: 1, typo: 1}\n"
    )
    code = main(["--config", str(config), "--work-dir", str(tmp_path / "work")])
    assert code == EXIT_USAGE
    assert "pools.yaml: document 1: spec.typo: unknown field" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["--duration", "soon"], "invalid duration", id="duration-word"),
        pytest.param(["--duration", "0"], "must be longer than zero", id="duration-zero"),
        pytest.param(["--peak", "-2"], "must be a positive number", id="negative-peak"),
        pytest.param(["--start-hour", "25"], "must be from 0 to 23.99", id="hour"),
        pytest.param(["--idle-for", "0s"], "must be longer than zero", id="idle-for"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each malformed flag is refused by the parser with a one-line reason."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_a_foreign_work_dir_is_never_emptied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-empty directory the sandbox did not make is refused and left as it was."""
    work = tmp_path / "mine"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    code = main(["--config", CONFIG, "--work-dir", str(work)])
    assert code == EXIT_USAGE
    assert "was not made by the sandbox" in capsys.readouterr().err
    assert (work / "precious.txt").read_text() == "keep me"


def test_a_previous_sandbox_work_dir_is_emptied(tmp_path: Path) -> None:
    """The sandbox's own work dir from an earlier run is cleared for the new one."""
    work = tmp_path / "work"
    prepare_work_dir(work)
    (work / "controller.log").write_text("old run")
    prepare_work_dir(work)
    assert sorted(p.name for p in work.iterdir()) == [WORK_MARKER]


def test_options_scale_timings_and_default_the_day_to_the_duration(tmp_path: Path) -> None:
    """A fixed-length run plays one whole day over its duration, with the scaled timings."""
    args = build_parser().parse_args(
        [
            "--config",
            CONFIG,
            "--duration",
            "2m",
            "--idle-for",
            "15s",
            "--work-dir",
            str(tmp_path / "w"),
        ]
    )
    options = build_options(args, headless=True)
    assert options.demand.pattern is not None
    assert options.demand.pattern.day_length == 120.0
    assert options.demand.pattern.offset == pytest.approx(120.0 * 5 / 24)
    assert options.state.pools[0].spec.scaleIn.idleFor == 15.0
    assert "idleFor: 15.0" in options.scaled_config.read_text()

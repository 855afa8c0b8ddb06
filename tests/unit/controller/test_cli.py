"""The command line: argument parsing, the token, `validate`, and the status table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controller.cli import UsageError, build_parser, main, parse_listen, read_token
from controller.http.status import render, table


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0.0.0.0:8080", ("0.0.0.0", 8080), id="all-interfaces"),
        pytest.param("127.0.0.1:0", ("127.0.0.1", 0), id="any-port"),
        pytest.param(":9000", ("0.0.0.0", 9000), id="port-only"),
        pytest.param("[::1]:8080", ("::1", 8080), id="ipv6"),
    ],
)
def test_listen_address_parses(value: str, expected: tuple[str, int]) -> None:
    """--listen takes HOST:PORT (IPv6 in brackets)."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("8080", id="no-colon"),
        pytest.param("host:http", id="named-port"),
        pytest.param("host:70000", id="port-too-big"),
    ],
)
def test_bad_listen_address_is_a_usage_error(value: str) -> None:
    """A malformed --listen is rejected with a message showing the expected form."""
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        parse_listen(value)


def test_token_from_file_wins_and_is_stripped(tmp_path: Path) -> None:
    """--token-file is read and stripped; it takes precedence over the environment."""
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n")
    assert read_token(token_file, {"JIBRI_AUTOSCALER_TOKEN": "from-env"}) == "from-file"
    assert read_token(None, {"JIBRI_AUTOSCALER_TOKEN": "from-env"}) == "from-env"


@pytest.mark.parametrize(
    ("file_text", "environ", "message"),
    [
        pytest.param(None, {}, "no agent token", id="none"),
        pytest.param(None, {"JIBRI_AUTOSCALER_TOKEN": "  "}, "no agent token", id="blank-env"),
        pytest.param("\n", {}, "is empty", id="empty-file"),
    ],
)
def test_missing_token_refuses_to_start(
    tmp_path: Path, file_text: str | None, environ: dict[str, str], message: str
) -> None:
    """Without a usable token the controller does not start, and says why."""
    token_file = None
    if file_text is not None:
        token_file = tmp_path / "token"
        token_file.write_text(file_text)
    with pytest.raises(UsageError, match=message):
        read_token(token_file, environ)


def test_unreadable_token_file_is_named(tmp_path: Path) -> None:
    """A token file that cannot be read is reported with its path."""
    with pytest.raises(UsageError, match=r"cannot read token file .*missing"):
        read_token(tmp_path / "missing", {})


def test_validate_reports_ok_or_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate` prints "PATH: N pools OK" and exits 0, or each problem and exits 1."""
    good = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"
    assert main(["validate", str(good)], {}) == 0
    assert capsys.readouterr().out.strip() == f"{good}: 1 pool OK"
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("targetFree: 2", "targetFree: 20"))
    assert main(["validate", str(bad)], {}) == 1
    assert "document 1: spec: targetFree (20) must not exceed capacity.max (10)" in (
        capsys.readouterr().err
    )


def test_run_without_token_exits_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    """`run` without a token exits 1 with a clear message and no traceback."""
    good = Path(__file__).resolve().parents[3] / "config" / "desired-state.yaml"
    assert main(["run", "--config", str(good)], {}) == 1
    assert "JIBRI_AUTOSCALER_TOKEN" in capsys.readouterr().err


def test_bad_arguments_exit_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown commands or options are refused by argparse with a usage message."""
    with pytest.raises(SystemExit) as caught:
        main(["run", "--config", "x.yaml", "--listen", "nope"], {})
    assert caught.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_run_flags_default_to_json_logs_and_bounded_http() -> None:
    """`run` logs JSON and bounds HTTP connections unless told otherwise."""
    args = build_parser().parse_args(["run", "--config", "x.yaml"])
    assert args.log_format == "json"
    assert (args.max_connections, args.idle_timeout, args.body_timeout, args.shutdown_grace) == (
        1024,
        30.0,
        10.0,
        3.0,
    )
    args = build_parser().parse_args(
        ["run", "--config", "x.yaml", "--log-format", "text", "--shutdown-grace", "0.5"]
    )
    assert args.log_format == "text" and args.shutdown_grace == 0.5


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        pytest.param("--idle-timeout", "0", id="zero-seconds"),
        pytest.param("--body-timeout", "-1", id="negative-seconds"),
        pytest.param("--shutdown-grace", "soon", id="not-a-number"),
        pytest.param("--shutdown-grace", "inf", id="infinite"),
        pytest.param("--max-connections", "0", id="no-connections"),
        pytest.param("--log-format", "xml", id="unknown-log-format"),
    ],
)
def test_bad_run_flag_exits_2_naming_it(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value for a connection or log flag is refused with a usage message naming it."""
    with pytest.raises(SystemExit) as caught:
        main(["run", "--config", "x.yaml", flag, value], {})
    assert caught.value.code == 2
    assert flag in capsys.readouterr().err


def test_table_aligns_columns() -> None:
    """Columns are padded to their widest cell; missing values show as '-'."""
    assert table(["A", "LONGER"], [["xyz", None], ["1", 2]]).splitlines() == [
        "A    LONGER",
        "xyz  -",
        "1    2",
    ]


def test_status_renders_pools_conditions_and_instances() -> None:
    """The status document renders as a pool table, then conditions and instances per pool."""
    document = {
        "dryRun": True,
        "pools": [
            {
                "name": "recorders",
                "spec": {"targetFree": 2},
                "autoScalingGroup": {"name": "jibri", "desired": 3, "min": 1, "max": 10},
                "counts": {"idle": 1, "busy": 2, "failed-boot": 1},
                "conditions": [
                    {"type": "Reconciled", "status": "True", "reason": "Ok", "message": "fine"}
                ],
                "instances": [
                    {
                        "instanceId": "i-0000000a",
                        "state": "busy",
                        "protected": True,
                        "lastReportAgeSeconds": 1.25,
                        "drainRequested": False,
                        "detail": "recording",
                    }
                ],
            }
        ],
    }
    lines = render(document).splitlines()
    assert lines[0].split() == [
        "POOL", "GROUP", "DESIRED", "MIN", "MAX", "TARGET-FREE",
        "IDLE", "STARTING", "BUSY", "DRAINING", "STALE", "UNKNOWN", "OTHER",
    ]  # fmt: skip
    assert lines[1].split() == ["recorders", "jibri", "3", "1", "10", "2",
                                "1", "0", "2", "0", "0", "0", "1"]  # fmt: skip
    assert "i-0000000a  busy   yes        1.2s        no     recording" in lines
    assert lines[-1].startswith("dry-run")

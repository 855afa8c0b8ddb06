from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import EXIT_USAGE, main
from agent.settings import OPTIONS, Listen, SettingsError, load_settings

BASE = {"JIBRI_AUTOSCALER_TOKEN": "s3cret", "JIBRI_AGENT_CONTROLLER_URL": "http://ctl:8080"}


def test_defaults_fill_everything_but_the_controller() -> None:
    """With only the controller URL and token, every other setting has its documented default."""
    settings = load_settings({}, BASE)
    assert settings.controller_url == "http://ctl:8080"
    assert settings.token == "s3cret"
    assert settings.report_interval == 5.0 and settings.poll_interval == 2.0
    assert settings.webhook_listen == Listen("127.0.0.1", 2223)
    assert settings.jibri_health_url == "http://127.0.0.1:2222/jibri/api/v1.0/health"
    assert settings.state_dir == Path("/var/lib/jibri-agent")
    assert settings.spool_dir == Path("/var/spool/jibri-agent")
    assert (settings.fallback, settings.fallback_namespace) == (False, "Jibri")
    assert (settings.fallback_period, settings.fallback_after) == (60.0, 60.0)
    assert settings.instance_id is None and settings.region is None
    assert settings.recordings_dir == Path("/var/lib/jibri/recordings")
    assert (settings.log_format, settings.ready_file) == ("json", None)
    assert "s3cret" not in repr(settings)


def test_log_format_text_comes_from_the_flag_or_its_variable() -> None:
    """JSON events by default; `--log-format text` or JIBRI_AGENT_LOG_FORMAT=text for people."""
    assert load_settings({"log_format": "text"}, BASE).log_format == "text"
    assert load_settings({}, {**BASE, "JIBRI_AGENT_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(SettingsError, match="JIBRI_AGENT_LOG_FORMAT"):
        load_settings({}, {**BASE, "JIBRI_AGENT_LOG_FORMAT": "xml"})


def test_flags_win_over_the_environment() -> None:
    """A flag given on the command line overrides its environment variable."""
    env = {**BASE, "JIBRI_AGENT_REPORT_INTERVAL": "10s", "JIBRI_AGENT_FALLBACK": "yes"}
    settings = load_settings({"report_interval": "1m", "fallback": False}, env)
    assert settings.report_interval == 60.0
    assert settings.fallback is True
    assert load_settings({"fallback": True}, BASE).fallback is True


def test_token_file_is_read_and_trimmed(tmp_path: Path) -> None:
    """--token-file wins over the environment token, trimmed of its newline."""
    token = tmp_path / "token"
    token.write_text("from-file\n")
    assert load_settings({"token_file": str(token)}, BASE).token == "from-file"


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        pytest.param({}, {"JIBRI_AUTOSCALER_TOKEN": "t"}, "--controller", id="no-controller"),
        pytest.param({"controller_url": "ctl:8080"}, BASE, "not an http(s) URL", id="bad-url"),
        pytest.param({}, {**BASE, "JIBRI_AUTOSCALER_TOKEN": " "}, "no token", id="no-token"),
        pytest.param({"token_file": "/nonexistent/t"}, BASE, "cannot read", id="no-token-file"),
        pytest.param({"report_interval": "soon"}, BASE, "invalid duration", id="bad-duration"),
        pytest.param({"poll_interval": "0s"}, BASE, "longer than zero", id="zero-duration"),
        pytest.param({"webhook_listen": "2223"}, BASE, "HOST:PORT", id="listen-no-host"),
        pytest.param({"metrics_listen": "lo:99999"}, BASE, "HOST:PORT", id="listen-bad-port"),
        pytest.param({"instance_id": "web-1"}, BASE, "EC2 instance id", id="bad-instance-id"),
        pytest.param({"log_level": "loud"}, BASE, "not one of", id="bad-log-level"),
        pytest.param({}, {**BASE, "JIBRI_AGENT_FALLBACK": "maybe"}, "boolean", id="bad-bool"),
    ],
)
def test_bad_settings_name_the_flag_and_reason(
    given: dict[str, str], env: dict[str, str], message: str
) -> None:
    """Each bad setting gives a problem line naming the flag (or variable) and the reason."""
    with pytest.raises(SettingsError) as caught:
        load_settings(given, env)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_at_once() -> None:
    """Several bad settings give several lines, not just the first."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"report_interval": "x", "poll_interval": "y"}, BASE)
    assert len(caught.value.problems) == 2


def test_cli_prints_problems_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """`run` with a bad flag exits 2 with one clear line per problem."""
    code = main(["run", "--controller", "nope", "--report-interval", "0"], environ={})
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "Traceback" not in err
    assert err.count("jibri-agent run: error:") == 3


def test_cli_finalize_dispatches_to_the_finalize_command(tmp_path: Path) -> None:
    """`finalize DIR` runs the recordings hand-off with the remaining arguments."""
    process = subprocess.run(
        [sys.executable, "-m", "agent", "finalize", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "Traceback" not in process.stderr and "missing" in process.stderr


def test_run_help_lists_flags_with_their_variables() -> None:
    """`run --help` shows each flag's environment variable and default for deployers."""
    process = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 0
    for text in ("--controller", "JIBRI_AGENT_CONTROLLER_URL", "--fallback", "default 60s"):
        assert text in process.stdout


def test_every_flag_is_documented() -> None:
    """docs/agent.md (or recordings.md for uploads) names every flag and its variable."""
    docs = Path(__file__).resolve().parents[3] / "docs"
    text = (docs / "agent.md").read_text() + (docs / "recordings.md").read_text()
    missing = [o.flag for o in OPTIONS if o.flag not in text or o.env not in text]
    assert not missing

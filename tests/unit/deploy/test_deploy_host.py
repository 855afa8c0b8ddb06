"""deploy/systemd and deploy/jibri: the units, the env file, the finalize wrapper and the Jibri
snippet agree with each other and with the agent's and controller's real command lines."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import _parser as agent_parser
from agent.settings import OPTIONS, TOKEN_FILE_ENV, load_settings
from common.wire import TOKEN_ENV
from controller.cli import build_parser as controller_parser

REPO = Path(__file__).resolve().parents[3]
SYSTEMD = REPO / "deploy" / "systemd"
JIBRI = REPO / "deploy" / "jibri"
AGENT_UNIT = SYSTEMD / "jibri-agent.service"
CONTROLLER_UNIT = SYSTEMD / "jibri-autoscaler.service"
UNITS = [AGENT_UNIT, CONTROLLER_UNIT]
DEFAULTS = {option.env: option.default for option in OPTIONS}


def unit(path: Path) -> dict[str, list[str]]:
    """`Section.Key` → every value given, in order (continuation lines joined)."""
    values: dict[str, list[str]] = {}
    section = ""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def env_file(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (make test installs it)")
    return path


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_units_pass_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts each unit (its interpreter pointed at one that exists)."""
    analyze = tool("systemd-analyze", "systemd")
    text = path.read_text(encoding="utf-8")
    interpreter = re.search(r"ExecStart=(\S+)", text)
    assert interpreter
    copy = tmp_path / path.name
    copy.write_text(text.replace(interpreter.group(1), sys.executable), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_units_are_hardened(path: Path, tmp_path: Path) -> None:
    """systemd rates each unit's exposure as OK (2.0 or less on its 0-10 scale)."""
    analyze = tool("systemd-analyze", "systemd")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_agent_unit_runs_the_agent_after_jibri_and_survives_its_stop() -> None:
    """Restart=on-failure, ordered after jibri.service, and not bound to it (a drain stops Jibri
    on purpose); ExecStart is `python -m agent run` with settings from the env file."""
    values = unit(AGENT_UNIT)
    assert values["Service.Restart"] == ["on-failure"]
    assert "jibri.service" in values["Unit.After"][0].split()
    assert "Unit.Requires" not in values and "Unit.BindsTo" not in values
    command = shlex.split(values["Service.ExecStart"][0])
    assert command[:4] == ["/opt/jibri-agent/bin/python", "-m", "agent", "run"]
    agent_parser().parse_args(command[3:])
    assert values["Service.EnvironmentFile"] == ["/etc/jibri-agent/agent.env"]
    assert values["Service.User"] == ["jibri"], "finalize runs as jibri, so the agent must too"


def test_agent_gets_its_token_as_a_credential() -> None:
    """The token file is handed over by LoadCredential and named by JIBRI_AGENT_TOKEN_FILE."""
    values = unit(AGENT_UNIT)
    (credential,) = values["Service.LoadCredential"]
    name, source = credential.split(":", 1)
    assert source == "/etc/jibri-agent/token"
    environment = dict(e.split("=", 1) for e in values["Service.Environment"])
    assert environment[TOKEN_FILE_ENV] == f"/run/credentials/{AGENT_UNIT.name}/{name}"


def test_agent_unit_may_write_where_the_agent_writes() -> None:
    """The state directory, the spool and Jibri's recordings directory (leftovers are adopted
    from it) the agent defaults to are writable under ProtectSystem."""
    values = unit(AGENT_UNIT)
    assert values["Service.ProtectSystem"] == ["strict"]
    assert DEFAULTS["JIBRI_AGENT_STATE_DIR"] == "/var/lib/" + values["Service.StateDirectory"][0]
    assert DEFAULTS["JIBRI_AGENT_SPOOL_DIR"] in values["Service.ReadWritePaths"][0].split()
    assert DEFAULTS["JIBRI_AGENT_RECORDINGS_DIR"] in values["Service.ReadWritePaths"][0].split()


def test_controller_unit_runs_the_real_cli() -> None:
    """The controller unit's ExecStart parses with the controller's CLI and reads the token
    from its credential."""
    values = unit(CONTROLLER_UNIT)
    command = shlex.split(values["Service.ExecStart"][0])
    assert command[:4] == ["/opt/jibri-autoscaler/bin/python", "-m", "controller", "run"]
    args = controller_parser().parse_args(command[3:])
    (credential,) = values["Service.LoadCredential"]
    name, _ = credential.split(":", 1)
    assert str(args.token_file) == f"/run/credentials/{CONTROLLER_UNIT.name}/{name}"
    assert values["Service.Restart"] == ["on-failure"]


def test_env_file_sets_only_real_settings() -> None:
    """Every variable in deploy/jibri/agent.env is one the agent reads, and it loads cleanly."""
    env = env_file(JIBRI / "agent.env")
    assert set(env) <= set(DEFAULTS)
    settings = load_settings({}, {**env, TOKEN_ENV: "t0ken"})
    assert settings.upload_bucket and settings.fallback
    assert str(settings.spool_dir) == DEFAULTS["JIBRI_AGENT_SPOOL_DIR"]


def test_finalize_wrapper_hands_a_recording_to_the_spool(tmp_path: Path) -> None:
    """The wrapper Jibri calls moves the recording directory into the agent's spool."""
    wrapper = (JIBRI / "jibri-agent-finalize").read_text(encoding="utf-8")
    spool_dir = DEFAULTS["JIBRI_AGENT_SPOOL_DIR"]
    assert spool_dir and f"JIBRI_AGENT_SPOOL_DIR={spool_dir}\n" in wrapper
    assert 'exec /opt/jibri-agent/bin/python -m agent finalize "$1"\n' in wrapper
    spool = tmp_path / "spool"
    local = wrapper.replace("/opt/jibri-agent/bin/python", sys.executable).replace(
        spool_dir, str(spool)
    )
    script = tmp_path / "jibri-agent-finalize"
    script.write_text(local, encoding="utf-8")
    script.chmod(0o755)
    recording = tmp_path / "recordings" / "session-one"
    recording.mkdir(parents=True)
    (recording / "meeting.mp4").write_bytes(b"\0" * 1024)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(script), str(recording)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not recording.exists()
    (entry,) = (spool / "incoming").iterdir()
    assert (entry / "meeting.mp4").stat().st_size == 1024
    usage = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_jibri_snippet_points_at_the_wrapper_and_the_webhook() -> None:
    """jibri.conf's finalize-script is where install-agent.sh puts the wrapper, the webhook
    subscriber is the agent's listen address, and recordings share the spool's filesystem."""
    snippet = (JIBRI / "jibri-agent.conf").read_text(encoding="utf-8")
    code = re.sub(r"(?m)^\s*//.*$", "", snippet)
    assert code.count("{") == code.count("}")
    installer = (JIBRI / "install-agent.sh").read_text(encoding="utf-8")
    finalize = re.search(r'finalize-script = "([^"]+)"', code)
    assert finalize and f'"$HERE/jibri-agent-finalize" {finalize.group(1)}' in installer
    recordings = re.search(r'recordings-directory = "([^"]+)"', code)
    assert recordings and f"RECORDINGS={recordings.group(1)}\n" in installer
    assert recordings.group(1) == DEFAULTS["JIBRI_AGENT_RECORDINGS_DIR"]
    subscriber = re.search(r'subscribers \+= "http://([^"]+)"', code)
    assert subscriber, "the subscriber is appended, keeping any the site already has"
    listen = env_file(JIBRI / "agent.env").get("JIBRI_AGENT_WEBHOOK_LISTEN")
    assert subscriber.group(1) == listen == DEFAULTS["JIBRI_AGENT_WEBHOOK_LISTEN"]
    assert f"SPOOL={DEFAULTS['JIBRI_AGENT_SPOOL_DIR']}\n" in installer
    assert 'include file("/etc/jitsi/jibri/jibri-agent.conf")' in installer


def test_installer_installs_the_unit_the_user_data_enables() -> None:
    """install-agent.sh installs the unit, env file and venv at the paths the unit and the
    launch template's user data use."""
    installer = (JIBRI / "install-agent.sh").read_text(encoding="utf-8")
    assert 'deploy/systemd/jibri-agent.service" /etc/systemd/system/jibri-agent.service' in (
        installer
    )
    assert "VENV=/opt/jibri-agent\n" in installer
    assert "/etc/jibri-agent/agent.env" in installer


@pytest.mark.parametrize(
    "script",
    [JIBRI / "install-agent.sh", JIBRI / "jibri-agent-finalize", REPO / ".ci" / "run"],
    ids=["install-agent", "finalize", "ci"],
)
def test_scripts_pass_shellcheck(script: Path) -> None:
    """The shell scripts are clean under shellcheck and executable."""
    shellcheck = tool("shellcheck", "shellcheck")
    result = subprocess.run(
        [shellcheck, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
    assert script.stat().st_mode & 0o111

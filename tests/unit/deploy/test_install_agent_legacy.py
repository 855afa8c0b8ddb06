"""install-agent.sh stops before changing anything when Jibri's legacy config.json sets the
finalize script or the recordings directory (Jibri reads it before jibri.conf), naming the keys.

The script runs for real against a temporary Jibri config directory (JIBRI_CONF_DIR) that has
no jibri.conf, so a run that passes the check stops at a later pre-flight check and installs
nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
INSTALLER = REPO / "deploy" / "jibri" / "install-agent.sh"
LEGACY_KEYS = ("finalize_recording_script_path", "recording_directory")


def run_installer(conf_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "JIBRI_CONF_DIR": str(conf_dir)}
    return subprocess.run(
        ["bash", str(INSTALLER), "/nonexistent/requirement"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "legacy",
    [
        pytest.param({"finalize_recording_script_path": "/opt/finalize.sh"}, id="finalize-script"),
        pytest.param({"recording_directory": "/tmp/recordings"}, id="recordings-directory"),
        pytest.param(
            {"recording_directory": "/r", "finalize_recording_script_path": "/f"}, id="both"
        ),
    ],
)
def test_a_legacy_override_stops_the_install_naming_the_keys(
    tmp_path: Path, legacy: dict[str, str]
) -> None:
    """A config.json that sets either key stops the installer with exit 1 and a message
    naming exactly the keys it sets and the file."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"single_use_mode": False, **legacy}, indent=2))
    result = run_installer(tmp_path)
    assert result.returncode == 1
    message = result.stderr
    assert str(config) in message and "Remove these keys" in message
    for key in LEGACY_KEYS:
        assert (key in message) == (key in legacy), message


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(None, id="no-config-json"),
        pytest.param({"single_use_mode": True, "xmpp_environments": []}, id="other-keys-only"),
    ],
)
def test_without_legacy_overrides_the_check_passes(
    tmp_path: Path, config: dict[str, object] | None
) -> None:
    """Without those keys the installer goes on to its next pre-flight check (and, with no
    jibri.conf here, stops there without installing anything)."""
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_installer(tmp_path)
    assert result.returncode == 1
    assert "config.json" not in result.stderr and "install-agent:" in result.stderr

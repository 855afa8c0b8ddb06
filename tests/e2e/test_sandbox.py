from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

# Two long recordings take both idle Jibris of the initial fleet (targetFree 2), so the
# controller scales out; a short one lands on a new instance if it has booted. Once all
# have ended the fleet holds more idle Jibris than targetFree and scales back in.
TRACE = """\
start_seconds,duration_seconds
2,18
4,18
9,8
"""

SCALED = [
    "--boot-delay", "3s",
    "--boot-jitter", "1s",
    "--idle-for", "8s",
    "--delay-after-scale-out", "5s",
]  # fmt: skip


def _leftovers(work_dir: Path) -> list[str]:
    """Processes still running with the run's work dir on their command line."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(work_dir) in cmdline:
            found.append(f"{process.info['pid']}: {cmdline}")
    return found


def test_headless_run_scales_out_and_in_without_losing_a_recording(tmp_path: Path) -> None:
    """A 60 s headless run serves recordings, scales out and in, terminates no busy
    instance, gets every finished recording into the bucket, and leaves no process behind."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    summary_path = tmp_path / "summary.json"
    work_dir = tmp_path / "work"
    command = [
        sys.executable, "-m", "sandbox",
        "--duration", "60",
        "--headless",
        "--trace", str(trace),
        "--summary-json", str(summary_path),
        "--work-dir", str(work_dir),
        *SCALED,
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stderr, output
    summary = json.loads(summary_path.read_text())

    assert summary["ok"] is True, output
    assert summary["recordings_served"] >= 2, output
    assert summary["busy_instances_terminated"] == 0, output
    assert summary["recordings_lost"] == 0, output
    assert summary["recordings_finished"] == summary["recordings_served"], output
    assert summary["recordings_uploaded"] == summary["recordings_finished"], output
    assert summary["actions_by_reason"].get("scale-out/below-target-free", 0) >= 1, output
    assert summary["actions_by_reason"].get("drain/idle-excess", 0) >= 1, output
    assert summary["actions_by_reason"].get("terminate/drained", 0) >= 1, output
    assert summary["scale_ins"] >= 1, output
    assert "result: OK" in result.stdout, output
    assert _leftovers(work_dir) == []

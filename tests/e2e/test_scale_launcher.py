"""The scale benchmark's launcher runs the controller's real `serve` with the AWS fake injected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale.__main__ import CONFIG
from bench.scale.fake_aws import instance_id
from common.wire import TOKEN_ENV
from tests.support.controller import REPO, TOKEN, Agent, RunningController, wait_for

pytestmark = pytest.mark.e2e

FLEET = 20


def start(config: Path) -> RunningController:
    log_path = config.with_suffix(".log")
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "bench.scale.launcher", "--config", str(config)]
    command += ["--listen", "127.0.0.1:0", "--log-level", "INFO"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
        )
    running = RunningController(process, "", log_path)

    def listening() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"launcher exited early:\n{log_path.read_text()}")
        lines = [line for line in running.logs() if line.get("event") == "listening"]
        return str(lines[0]["addresses"][0]) if lines else None

    running.url = f"http://{wait_for(listening, what='the launcher to listen')}"
    return running


def test_launcher_serves_reports_stats_and_reloads_then_stops_cleanly(tmp_path: Path) -> None:
    """Through the launcher, busy reports get their instances protected in the fake, passes
    show in /bench/stats, a config edit is reloaded, and SIGTERM ends it with exit code 0."""
    config = tmp_path / "desired-state.yaml"
    config.write_text(CONFIG.format(n=FLEET))
    controller = start(config)
    try:
        agents = [
            Agent(controller, instance_id(k), busy="BUSY" if k % 2 else "IDLE")
            for k in range(1, FLEET + 1)
        ]
        wait_for(
            lambda: all(agent.report()[0] == 200 for agent in agents),
            what="every instance to be adopted by the pool",
        )
        protect = {"pool": "bench", "action": "protect", "reason": "busy"}
        wait_for(
            lambda: controller.metric("jibri_autoscaler_actions_total", **protect),
            what="the busy instances to be protected",
        )
        _, stats = controller.get_json("/bench/stats")
        assert stats["passes"] >= 1 and stats["awsCallsByOperation"]["SetInstanceProtection"] >= 1
        assert len(stats["handlerSeconds"]) >= FLEET and stats["loopLagSeconds"]

        config.write_text(CONFIG.format(n=FLEET).replace("targetFree: 2", "targetFree: 3"))
        reloads = {"outcome": "success"}
        wait_for(
            lambda: controller.metric("jibri_autoscaler_config_reloads_total", **reloads) == 1,
            what="the edited config to be reloaded",
        )
    finally:
        code = controller.stop()
    log = controller.log_path.read_text()
    assert code == 0, log
    assert [line["event"] for line in controller.logs()][-1] == "stopped", log

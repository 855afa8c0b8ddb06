"""The real controller process's HTTP side under hostile clients and signals: a client that
stalls mid-body at SIGTERM, an idle-connection flood under a low file-descriptor limit, and
the text log format."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    REPO,
    Agent,
    RunningController,
    controller_env,
    http,
    pool_yaml,
    running_controller,
    wait_for,
)
from tests.support.identity import controller_identity_args

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
FD_LIMIT = 256


def _registered(controller: RunningController, instance_id: str) -> Agent:
    """An agent that has registered (once the controller has read its group) and reported."""
    agent = Agent(controller, instance_id)
    wait_for(lambda: agent.report()[0] == 200, what=f"{instance_id} to register")
    return agent


def _report(instance_id: str, boot_id: str) -> bytes:
    return json.dumps(
        {
            "instanceId": instance_id,
            "bootId": boot_id,
            "seq": 100,
            "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
        }
    ).encode()


def _head(length: int, credential: str) -> bytes:
    return (
        b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + credential.encode()
        + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def _config(emulator: Emulator, tmp_path: Path) -> tuple[Path, list[str]]:
    ids = create_asg(emulator, GROUP, min_size=0, max_size=3, desired=1)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(target_free=1))
    return config, ids


def test_sigterm_with_a_client_stalled_mid_body_exits_within_10s(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A client sent its headers and part of the body, then stalls: on SIGTERM the controller
    stops accepting, gives the request its grace, and exits 0 well within 10 s."""
    config, ids = _config(emulator, tmp_path)
    with running_controller(emulator, config) as controller:
        agent = _registered(controller, ids[0])
        report = _report(ids[0], agent.boot_id)
        with socket.create_connection(_address(controller.url)) as stalled:
            stalled.sendall(_head(len(report), agent.credential or "") + report[:20])
            # Answered after the stalled request's headers arrived, so that request is under way.
            assert controller.get_json("/healthz")[0] == 200
            started = time.monotonic()
            controller.process.send_signal(signal.SIGTERM)
            code = controller.process.wait(timeout=30)
            seconds = time.monotonic() - started
    assert code == 0
    assert seconds < 10, f"exit took {seconds:.1f} s"
    assert [line["event"] for line in controller.logs()][-1] == "stopped"
    print(f"\nexit after SIGTERM with a stalled client: {seconds:.2f} s")


# Lowers the soft file-descriptor limit, then runs `python -m controller` with the arguments.
LOW_FD_CONTROLLER = (
    sys.executable,
    "-c",
    "import resource, runpy; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, "
    "resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "runpy.run_module('controller', run_name='__main__')",
)


def test_idle_flood_under_a_low_fd_limit_leaves_agents_and_healthz_served(
    emulator: Emulator, tmp_path: Path
) -> None:
    """With 256 file descriptors, 400 idle connections that never send a byte: /healthz
    answers, a report gets through, the cap is logged once, and nothing is logged as an error
    (no accept failures, no config trouble)."""
    config, ids = _config(emulator, tmp_path)
    with running_controller(
        emulator, config, program=LOW_FD_CONTROLLER, extra_args=("--idle-timeout", "60")
    ) as controller:
        address = _address(controller.url)
        agent = _registered(controller, ids[0])
        idle = [socket.create_connection(address) for _ in range(400)]
        try:
            wait_for(
                lambda: any(
                    line["event"] == "connection limit reached" for line in controller.logs()
                ),
                what="the connection limit",
            )
            status, health = controller.get_json("/healthz")
            assert status == 200 and health["ok"] is True, controller.log_path.read_text()
            report = json.loads(_report(ids[0], agent.boot_id))
            assert controller.post(report, token=agent.credential)[0] == 200
            # A config reload still reads its file (it failed for want of descriptors).
            config.write_text(pool_yaml(target_free=1, idle_for="3s"))
            wait_for(
                lambda: controller.metric(
                    "jibri_autoscaler_config_reloads_total", outcome="success"
                ),
                what="the config reload",
            )
        finally:
            for connection in idle:
                connection.close()
    lines = controller.logs()
    (listening,) = [line for line in lines if line["event"] == "listening"]
    assert listening["max_connections"] == FD_LIMIT - 64 - 16
    assert len([line for line in lines if line["event"] == "connection limit reached"]) == 1
    assert [line for line in lines if line["level"] == "error"] == []


CONTROLLER = (sys.executable, "-m", "controller")
TEXT_LOGS_ON_PORT_0 = ("--listen", "127.0.0.1:0", "--log-format", "text")


def test_text_log_format_for_terminals(emulator: Emulator, tmp_path: Path) -> None:
    """--log-format text writes `LEVEL logger: event key=value` lines, the listening address
    among them, and the controller serves from it."""
    config, _ = _config(emulator, tmp_path)
    log_path = tmp_path / "controller.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *CONTROLLER,
                "run",
                "--config",
                str(config),
                *TEXT_LOGS_ON_PORT_0,
                *controller_identity_args(tmp_path),
            ],
            env=controller_env(emulator),
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening() -> str | None:
            assert process.poll() is None, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if line.startswith("INFO controller.http.server: listening addresses=['"):
                    return line.split("'")[1]
            return None

        address = wait_for(listening, what="the listening line")
        assert http("GET", f"http://{address}/healthz")[0] in (200, 503)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    text = log_path.read_text()
    assert code == 0, text
    assert "INFO controller: stopped" in text
    assert not any(line.startswith("{") for line in text.splitlines())

"""The real controller process (`python -m controller run`) on loopback, and agents that report
to it over HTTP, for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.wire import RegisterAnswer
from tests.support.aws import Emulator
from tests.support.identity import controller_identity_args, register

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token-0123456789"


def pool_yaml(
    *,
    name: str = "recorders",
    group: str = "jibri-recorders",
    low: int = 0,
    high: int = 10,
    target_free: int = 2,
    idle_for: str = "2s",
    stale_after: str = "3s",
    boot_timeout: str = "60s",
    delay_after_scale_out: str = "0s",
    resync: str = "1s",
    scale_in_step: int = 1,
) -> str:
    """One JibriPool document with the short durations end-to-end tests need."""
    return f"""\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata:
  name: {name}
spec:
  autoScalingGroupName: {group}
  region: us-east-1
  capacity: {{min: {low}, max: {high}}}
  targetFree: {target_free}
  scaleOut: {{maxStep: 5}}
  scaleIn:
    idleFor: {idle_for}
    maxStep: {scale_in_step}
    delayAfterScaleOut: {delay_after_scale_out}
  instances: {{bootTimeout: {boot_timeout}, staleAfter: {stale_after}, unhealthyFor: 30s}}
  resync: {resync}
  cloudWatch: {{publishMetrics: false}}
"""


def wait_for(check: Callable[[], Any], *, within: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; return it, or fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what or check}")
        time.sleep(0.05)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class RunningController:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    token: str = TOKEN

    def post(self, document: object, *, token: str | None = None) -> tuple[int, Any]:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        status, answer = http(
            "POST",
            f"{self.url}/v1/reports",
            body,
            {
                "Authorization": f"Bearer {self.token if token is None else token}",
                "Content-Type": "application/json",
            },
        )
        return status, json.loads(answer) if answer else None

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = http("GET", f"{self.url}{path}")
        return status, json.loads(body)

    def metrics(self) -> str:
        return http("GET", f"{self.url}/metrics")[1].decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics, by full name and exact labels."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
        for line in self.metrics().splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return None

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def actions(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.logs()
            if line.get("event") == "action" and (name is None or line.get("action") == name)
        ]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


# `python -m controller` from the checkout; an installed program runs from elsewhere (see below).
FROM_CHECKOUT = (sys.executable, "-m", "controller")


def controller_env(
    emulator: Emulator, token: str | None = TOKEN, *, checkout: bool = True
) -> dict[str, str]:
    """The controller's environment: the emulator's, the token, and the checkout on the import
    path unless an installed controller must be the one that runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emulator.env())
    env.pop("PYTHONPATH", None)
    if checkout:
        env["PYTHONPATH"] = str(REPO)
    env.pop("JIBRI_AUTOSCALER_TOKEN", None)
    if token is not None:
        env["JIBRI_AUTOSCALER_TOKEN"] = token
    return env


def run_command(
    args: list[str], env: dict[str, str], *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived `python -m controller ...` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def running_controller(
    emulator: Emulator,
    config: Path,
    *,
    extra_args: tuple[str, ...] = (),
    program: tuple[str, ...] = FROM_CHECKOUT,
    cwd: Path = REPO,
) -> Iterator[RunningController]:
    """Start the controller on loopback port 0 and read the address it bound from its
    "listening" event; stop it with SIGTERM on exit, and check that it exits cleanly.

    `program` and `cwd` run an installed controller instead of the checkout's: then the
    checkout is kept off its import path."""
    log_path = config.with_suffix(".log")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *program,
                "run",
                "--config",
                str(config),
                "--listen",
                "127.0.0.1:0",
                "--aws-max-attempts",
                "2",
                *controller_identity_args(config.parent / "identity"),
                *extra_args,
            ],
            env=controller_env(emulator, checkout=program == FROM_CHECKOUT),
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    running = RunningController(process, "", log_path)
    try:

        def listening() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"controller exited early:\n{log_path.read_text()}")
            for line in running.logs():
                if line.get("event") == "listening":
                    return str(line["addresses"][0])
            return None

        running.url = f"http://{wait_for(listening, what='the controller to listen')}"
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"controller exited with {code}:\n{log_path.read_text()}"


@dataclass
class Agent:
    """Reports for one instance the way the agent does: a bootId, a rising seq, and the
    drain handshake (drain:true → draining → drained)."""

    controller: RunningController
    instance_id: str
    busy: str = "IDLE"
    health: str = "HEALTHY"
    follow_drain: bool = True
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seq: int = 0
    draining: bool = False
    drained: bool = False
    drain_answers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """Further report fields (recordingsFinished, amiId, ...)."""
    credential: str | None = None
    """Issued at the first report (registration with a signed document), renewed on 401/403."""

    def register(self) -> tuple[int, Any]:
        # running_controller always starts the controller with TOKEN (controller_env).
        status, answer = register(self.controller.url, self.instance_id, self.boot_id, token=TOKEN)
        if isinstance(answer, RegisterAnswer):
            self.credential = answer.credential
        return status, answer

    def report(self) -> tuple[int, Any]:
        if self.credential is None:
            status, refusal = self.register()
            if self.credential is None:
                return status, refusal
        self.seq += 1
        status, answer = self.controller.post(
            {
                "instanceId": self.instance_id,
                "bootId": self.boot_id,
                "seq": self.seq,
                "jibri": {"busyStatus": self.busy, "healthStatus": self.health},
                "draining": self.draining,
                "drained": self.drained,
                "pendingUploads": 0,
                **self.extra,
            },
            token=self.credential,
        )
        if status in (401, 403):
            self.credential = None
        if isinstance(answer, dict) and answer.get("drain"):
            self.drain_answers += 1
            if self.follow_drain and self.busy == "IDLE":
                # Jibri shuts down at once when idle: draining now, drained at the next report.
                self.drained = self.draining
                self.draining = True
        return status, answer


class ReportingAgents:
    """Agents reporting in a background thread every `interval` seconds, like real agents."""

    def __init__(self, agents: list[Agent], interval: float = 0.5) -> None:
        self.agents = {a.instance_id: a for a in agents}
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> ReportingAgents:
        self.report_all()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report_all(self) -> None:
        with self._lock:
            for agent in list(self.agents.values()):
                status, answer = agent.report()
                # Until the controller has read the instance's group it refuses to register
                # it (403 not-managed); a real agent retries, as this one does next round.
                waiting = isinstance(answer, dict) and answer.get("error") == "not-managed"
                if status not in (200, 202) and not waiting:
                    self.errors.append(f"{agent.instance_id}: HTTP {status}")

    def add(self, agent: Agent) -> None:
        """Start reporting for one more instance, with a first report at once."""
        with self._lock:
            self.agents[agent.instance_id] = agent
            agent.report()

    def set(self, instance_id: str, **changes: Any) -> None:
        """Change an agent's state and report it at once (agents report on every change)."""
        with self._lock:
            agent = self.agents[instance_id]
            for key, value in changes.items():
                setattr(agent, key, value)
            agent.report()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report_all()

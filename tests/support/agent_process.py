"""Real agent processes (`python -m agent run`) on loopback, each with an in-process fake Jibri,
for end-to-end tests and benchmarks run from an asyncio event loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sandbox.fake_jibri import FakeJibri
from tests.support.aws import Emulator
from tests.support.loopback import free_port

REPO = Path(__file__).resolve().parents[2]

FAST = (
    "--report-interval",
    "1s",
    "--poll-interval",
    "0.5s",
    "--request-timeout",
    "2s",
)


@dataclass
class AgentProcess:
    process: asyncio.subprocess.Process
    log_path: Path
    metrics_url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, containing: str) -> list[str]:
        return [line for line in self.log().splitlines() if containing in line]

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def health(self) -> dict[str, Any] | None:
        """The agent's /healthz, or None while it does not answer."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(self.metrics_url + "/healthz") as response,
            ):
                document: dict[str, Any] = await response.json()
                return document
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return None

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the agent's /metrics, by full name and exact labels."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(self.metrics_url + "/metrics") as response,
            ):
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return None

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit code (without blocking the event loop)."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def kill(self) -> None:
        self.process.kill()
        await asyncio.wait_for(self.process.wait(), 30)


@dataclass
class Recorder:
    """One simulated Jibri VM: its instance id, its fake Jibri, and its agent process."""

    instance_id: str
    jibri: FakeJibri
    home: Path
    webhook_port: int
    agent: AgentProcess | None = None
    starts: int = 0
    extra_args: tuple[str, ...] = field(default=())

    async def start_agent(
        self, controller_url: str, env: dict[str, str], args: Sequence[str] = ()
    ) -> AgentProcess:
        """Start (or restart, keeping the state dir and spool) this recorder's agent."""
        self.starts += 1
        log_path = self.home / f"agent-{self.starts}.log"
        metrics_port = free_port()
        command = [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--controller",
            controller_url,
            "--instance-id",
            self.instance_id,
            "--region",
            "us-east-1",
            "--jibri-health-url",
            self.jibri.health_url,
            "--jibri-shutdown-url",
            self.jibri.shutdown_url,
            "--webhook-listen",
            f"127.0.0.1:{self.webhook_port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            "--state-dir",
            str(self.home / "state"),
            "--spool-dir",
            str(self.home / "spool"),
            *FAST,
            *args,
        ]
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
            )
        agent = AgentProcess(process, log_path, f"http://127.0.0.1:{metrics_port}")
        self.agent = agent
        deadline = time.monotonic() + 60
        while await agent.health() is None:
            if not agent.alive:
                raise AssertionError(f"agent exited early:\n{agent.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not start:\n{agent.log()}")
            await asyncio.sleep(0.1)
        return agent


async def make_recorder(instance_id: str, root: Path) -> Recorder:
    """A fake Jibri on loopback that pushes to the (future) agent's webhook port."""
    home = root / instance_id
    home.mkdir(parents=True)
    webhook_port = free_port()
    jibri = FakeJibri(jibri_id=instance_id, subscribers=[f"http://127.0.0.1:{webhook_port}"])
    await jibri.start()
    return Recorder(instance_id, jibri, home, webhook_port)


def agent_env(emulator: Emulator | None, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JIBRI_"))}
    if emulator is not None:
        env.update(emulator.env())
    env["PYTHONPATH"] = str(REPO)
    env["JIBRI_AUTOSCALER_TOKEN"] = token
    return env


async def shutdown(recorders: Sequence[Recorder]) -> None:
    """Stop every agent (checking each exits cleanly on SIGTERM) and every fake Jibri."""
    codes = {}
    for recorder in recorders:
        if recorder.agent is not None and recorder.agent.alive:
            codes[recorder.instance_id] = await recorder.agent.stop()
        await recorder.jibri.close()
    bad = {k: v for k, v in codes.items() if v != 0}
    assert not bad, f"agents exited uncleanly: {bad}"

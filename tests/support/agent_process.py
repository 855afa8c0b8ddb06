"""Real agent processes (`python -m agent run`) on loopback, each with an in-process fake Jibri,
for end-to-end tests and benchmarks run from an asyncio event loop.

The agent binds port 0 for both its servers and writes where it listens to a ready file; the
harness reads it, then points the fake Jibri's webhook there. No port is ever chosen here for
the child to bind later, so no other process can take it in between.
"""

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
from tests.support.fake_imds import FakeImds

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

    def events(self, name: str | None = None, **fields: object) -> list[dict[str, Any]]:
        """The agent's JSON log events, those called `name` with these field values."""
        found = []
        for line in self.log().splitlines():
            try:
                document = json.loads(line)
            except ValueError:
                continue  # e.g. a traceback the interpreter printed
            if not isinstance(document, dict):
                continue
            if name is not None and document.get("event") != name:
                continue
            if all(document.get(key) == value for key, value in fields.items()):
                found.append(document)
        return found

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
    push: bool = True
    """Point the fake Jibri's webhook at the agent (as deploy/jibri/jibri-agent.conf does)."""
    agent: AgentProcess | None = None
    webhook_url: str | None = None
    starts: int = 0
    extra_args: tuple[str, ...] = field(default=())
    imds: FakeImds | None = None
    """This VM's metadata service: the agent registers with the document it signs."""

    async def start_agent(
        self, controller_url: str, env: dict[str, str], args: Sequence[str] = ()
    ) -> AgentProcess:
        """Start (or restart, keeping the state dir and spool) this recorder's agent."""
        self.starts += 1
        log_path = self.home / f"agent-{self.starts}.log"
        ready_path = self.home / f"agent-{self.starts}.ready.json"
        command = [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--controller",
            controller_url,
            "--instance-id",
            self.instance_id,
            *(("--imds-url", self.imds.url) if self.imds is not None else ()),
            "--region",
            "us-east-1",
            "--jibri-health-url",
            self.jibri.health_url,
            "--jibri-shutdown-url",
            self.jibri.shutdown_url,
            "--webhook-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready_path),
            "--state-dir",
            str(self.home / "state"),
            "--spool-dir",
            str(self.home / "spool"),
            "--recordings-dir",
            str(self.home / "recordings"),
            *FAST,
            *args,
        ]
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
            )
        ready = await _wait_ready(process, ready_path, log_path)
        agent = AgentProcess(process, log_path, "http://" + ready["metrics"][0])
        self.agent = agent
        if self.push:
            if self.webhook_url is not None:
                self.jibri.unsubscribe(self.webhook_url)
            self.webhook_url = "http://" + ready["webhook"][0]
            self.jibri.subscribe(self.webhook_url)
        return agent


def _read_ready(path: Path) -> dict[str, Any] | None:
    try:
        ready: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return ready


async def _wait_ready(
    process: asyncio.subprocess.Process, ready_path: Path, log_path: Path
) -> dict[str, Any]:
    """The agent's ready file (written once both servers listen), or fail with its log."""
    deadline = time.monotonic() + 60
    while (ready := _read_ready(ready_path)) is None:
        if process.returncode is not None or time.monotonic() > deadline:
            what = "exited early" if process.returncode is not None else "did not start"
            raise AssertionError(f"agent {what}:\n{_log_text(log_path)}")
        await asyncio.sleep(0.05)
    return ready


def _log_text(path: Path) -> str:
    return path.read_text(errors="replace")


async def make_recorder(instance_id: str, root: Path) -> Recorder:
    """A fake Jibri on loopback; it pushes to the agent's webhook once the agent listens."""
    home = root / instance_id
    (home / "recordings").mkdir(parents=True)
    jibri = FakeJibri(jibri_id=instance_id)
    await jibri.start()
    imds = FakeImds(instance_id)
    await imds.start()
    return Recorder(instance_id, jibri, home, imds=imds)


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
        if recorder.imds is not None:
            await recorder.imds.close()
    bad = {k: v for k, v in codes.items() if v != 0}
    assert not bad, f"agents exited uncleanly: {bad}"

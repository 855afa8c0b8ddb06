"""The whole agent in-process, against a fake Jibri and a stand-in controller on loopback.

The agent's servers bind port 0; its ready file says where, and the fake Jibri's webhook is
pointed there once the agent listens (no port is chosen in advance)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.daemon import run_agent
from agent.servers import StartupError
from agent.settings import Settings, load_settings
from common.wire import BusyStatus
from sandbox.fake_jibri import FakeJibri
from tests.support.fake_controller import FakeController
from tests.support.fake_imds import FakeImds
from tests.support.loopback import eventually, serving

INSTANCE = "i-0123456789abcdef0"


@dataclass
class Rig:
    jibri: FakeJibri
    controller: FakeController
    controller_url: str
    tmp_path: Path
    imds_url: str
    metrics_url: str = ""
    """Where the running agent serves /metrics and /healthz (from its ready file)."""

    @property
    def ready_file(self) -> Path:
        return self.tmp_path / "ready.json"

    def settings(self, **overrides: str) -> Settings:
        given = {
            "controller_url": self.controller_url,
            "instance_id": INSTANCE,
            "imds_url": self.imds_url,
            "jibri_health_url": self.jibri.health_url,
            "jibri_shutdown_url": self.jibri.shutdown_url,
            "webhook_listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "ready_file": str(self.ready_file),
            "state_dir": str(self.tmp_path / "state"),
            "spool_dir": str(self.tmp_path / "spool"),
            "recordings_dir": str(self.tmp_path / "recordings"),
            "report_interval": "1s",
            "poll_interval": "0.2s",
            "request_timeout": "2s",
            **overrides,
        }
        return load_settings(given, {"JIBRI_AUTOSCALER_TOKEN": "s3cret"})

    @property
    def last(self) -> Any:
        return self.controller.reports[-1] if self.controller.reports else None


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    jibri = FakeJibri()
    await jibri.start()
    controller = FakeController()
    try:
        async with serving(controller.app()) as url, serving(FakeImds(INSTANCE).app()) as imds:
            yield Rig(jibri, controller, url, tmp_path, imds)
    finally:
        await jibri.close()


def read_ready(path: Path) -> dict[str, Any] | None:
    try:
        ready: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return ready


@contextlib.asynccontextmanager
async def agent(rig: Rig, settings: Settings) -> AsyncIterator[asyncio.Task[bool]]:
    """Run the agent until the block ends; Jibri pushes to it once it listens."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(settings, stop))
    try:
        await eventually(lambda: read_ready(rig.ready_file) is not None or task.done())
        ready = read_ready(rig.ready_file)
        assert ready is not None, task.result()
        webhook = "http://" + ready["webhook"][0]
        rig.metrics_url = "http://" + ready["metrics"][0]
        rig.jibri.subscribe(webhook)
        try:
            yield task
        finally:
            rig.jibri.unsubscribe(webhook)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) is True
        assert not rig.ready_file.exists(), "the ready file outlived the agent"


async def test_a_pushed_change_is_reported_without_polling(rig: Rig) -> None:
    """With polls and periodic reports hours apart, a recording start still reaches the
    controller: the webhook push triggers the report."""
    async with agent(rig, rig.settings(report_interval="1h", poll_interval="1h")):
        await eventually(lambda: rig.last is not None, what="the first report")
        await eventually(lambda: rig.jibri.pushing, what="the fake's pusher")
        await rig.jibri.start_recording("s1")
        await eventually(lambda: rig.last.jibri.busyStatus is BusyStatus.BUSY, what="BUSY report")


async def test_drain_runs_to_drained(rig: Rig) -> None:
    """drain:true → marker, graceful shutdown, Jibri exits → draining, then drained."""
    async with agent(rig, rig.settings()):
        await eventually(lambda: rig.last is not None, what="the first report")
        assert not rig.last.draining
        rig.controller.drain = True
        await eventually(lambda: rig.last.draining, what="draining")
        assert (rig.tmp_path / "state" / "drain.json").exists()
        await eventually(rig.jibri.exited.is_set, what="Jibri's exit")
        await eventually(lambda: rig.last.drained, what="drained")
        assert rig.last.jibri.busyStatus is BusyStatus.UNKNOWN


async def test_pending_upload_holds_drained_back(rig: Rig) -> None:
    """A recording waiting in the spool keeps the instance from reporting drained."""
    entry = rig.tmp_path / "spool" / "incoming" / "20250101T000000000000Z_s1"
    entry.mkdir(parents=True)
    async with agent(rig, rig.settings()):
        rig.controller.drain = True
        await eventually(rig.jibri.exited.is_set, what="Jibri's exit")
        await eventually(lambda: rig.last.pendingUploads == 1 and rig.last.draining)
        assert not rig.last.drained
        entry.rmdir()
        await eventually(lambda: rig.last.drained, what="drained once the spool is empty")


async def test_drain_waits_for_the_recording_and_survives_a_restart(rig: Rig) -> None:
    """A recording under way delays the exit; an agent restarted meanwhile resumes the
    drain from its marker, re-sends the shutdown, and reports drained only after the end."""
    await rig.jibri.start_recording("s1")
    async with agent(rig, rig.settings()):
        rig.controller.drain = True
        await eventually(lambda: rig.jibri.shutdown_requested, what="the shutdown request")
    rig.controller.drain = False
    rig.jibri.shutdown_requested = False
    async with agent(rig, rig.settings()):
        await eventually(lambda: rig.jibri.shutdown_requested, what="the re-sent shutdown")
        await eventually(lambda: rig.last.draining, what="draining after the restart")
        assert rig.last.jibri.busyStatus is BusyStatus.BUSY and not rig.last.drained
        await rig.jibri.stop_recording()
        await eventually(lambda: rig.last.drained, what="drained after the recording")


async def test_metrics_and_healthz_are_served(rig: Rig) -> None:
    """/metrics has the jibri_agent_ families; /healthz shows the instance's state."""
    async with agent(rig, rig.settings()):
        await eventually(lambda: rig.last is not None, what="the first report")
        base = rig.metrics_url
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/metrics") as response:
                text = await response.text()
            async with session.get(base + "/healthz") as response:
                health = await response.json()
    assert 'jibri_agent_reports_total{outcome="ok"}' in text
    assert "jibri_agent_controller_reachable 1.0" in text
    assert health["instanceId"] == INSTANCE and health["jibri"]["busyStatus"] == "IDLE"


async def test_a_taken_port_is_a_startup_error(rig: Rig) -> None:
    """A listen address in use fails the start with a message naming the flag and address."""
    async with serving(FakeController().app()) as taken:
        address = taken.removeprefix("http://")
        with pytest.raises(StartupError, match=f"--metrics-listen {address}: cannot listen"):
            await run_agent(rig.settings(metrics_listen=address), asyncio.Event())


async def test_the_ready_file_and_the_log_name_the_bound_addresses(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """With port 0, the ready file and a "listening" event per server give the ports
    actually taken, and the metrics address answers."""
    caplog.set_level(logging.INFO, logger="agent.servers")
    async with agent(rig, rig.settings()):
        ready = read_ready(rig.ready_file)
        assert ready is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(rig.metrics_url + "/healthz") as response,
        ):
            assert response.status == 200
    listening = {
        r.fields["server"]: r.fields["addresses"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "listening"
    }
    assert listening == {"metrics": ready["metrics"], "webhook": ready["webhook"]}
    assert all(not a.endswith(":0") for a in ready["metrics"] + ready["webhook"])


async def test_an_unwritable_state_dir_is_a_startup_error(rig: Rig) -> None:
    """A state dir that cannot be written fails the start, naming the flag."""
    blocker = rig.tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError, match="--state-dir"):
        await run_agent(rig.settings(state_dir=str(blocker / "sub")), asyncio.Event())

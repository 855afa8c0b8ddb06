"""Warm pools on a recorder, as real processes on loopback against a fake IMDSv2: `jibri-agent
wait-in-service` (jibri.service's ExecStartPre) exits only once the target lifecycle state is
InService, and `jibri-agent run --warm-gate` reports nothing and shuts up a Jibri that
answers while the instance is bound for the warm pool, then starts as usual."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.agent_process import REPO, agent_env, make_recorder, shutdown
from tests.support.fake_controller import FakeController
from tests.support.fake_imds import TARGET_STATE_PATH, FakeImds
from tests.support.loopback import serving

INSTANCE = "i-0a1b2c3d4e5f60718"


async def eventually(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def polls(imds: FakeImds) -> int:
    return imds.calls.count(TARGET_STATE_PATH)


async def test_wait_in_service_exits_once_in_service(tmp_path: Path) -> None:
    """The ExecStartPre command keeps polling through Warmed:Stopped and exits 0 on InService."""
    imds = FakeImds(INSTANCE)
    imds.target_lifecycle_state = "Warmed:Stopped"
    async with serving(imds.app()) as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "wait-in-service",
            "--imds-url",
            url,
            "--interval",
            "0.05",
            cwd=REPO,
            env=agent_env(None, "unused"),
        )
        try:
            await eventually(lambda: polls(imds) >= 3)
            assert process.returncode is None
            imds.target_lifecycle_state = "InService"
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_agent_stays_out_of_service_while_warming(tmp_path: Path) -> None:
    """While Warmed:Running the agent sends no report and asks the answering Jibri to shut
    down; on InService it starts and reports."""
    imds, controller = FakeImds(INSTANCE), FakeController()
    imds.target_lifecycle_state = "Warmed:Running"
    recorder = await make_recorder(INSTANCE, tmp_path)
    async with serving(imds.app()) as imds_url, serving(controller.app()) as controller_url:
        starting = asyncio.create_task(
            recorder.start_agent(
                controller_url,
                agent_env(None, controller.token),
                ["--warm-gate", "--imds-url", imds_url],
            )
        )
        try:
            await eventually(lambda: polls(imds) >= 3 and recorder.jibri.shutdown_calls >= 1)
            assert (controller.attempts, starting.done()) == (0, False)
            imds.target_lifecycle_state = "InService"
            await asyncio.wait_for(starting, 60)
            await eventually(lambda: len(controller.reports) >= 1)
        finally:
            if not starting.done():
                starting.cancel()
            await shutdown([recorder])

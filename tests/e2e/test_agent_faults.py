"""A real agent process through Jibri's and the controller's faults: it keeps running,
reports UNKNOWN while Jibri cannot be read, and logs one event per failure, not one per try."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.wire import BusyStatus, Report
from tests.support.agent_process import AgentProcess, agent_env, make_recorder, shutdown
from tests.support.fake_controller import FakeController
from tests.support.loopback import eventually, serving

pytestmark = pytest.mark.e2e

INSTANCE = "i-0fa17fa17fa17fa17"


def reports_since(controller: FakeController, count: int) -> list[Report]:
    return controller.reports[count:]


async def settle(controller: FakeController, agent: AgentProcess, reports: int = 3) -> None:
    """Let a few more reports (and so polls) go by."""
    seen = len(controller.reports)
    await eventually(lambda: len(controller.reports) >= seen + reports, what="more reports")
    assert agent.alive


async def test_jibri_and_controller_faults_are_survived(tmp_path: Path) -> None:
    """Malformed health, Jibri down, controller 500s and 401s: UNKNOWN is reported when Jibri
    cannot be read, each failure logs once, and SIGTERM still stops the agent cleanly."""
    controller = FakeController(token="e2e-faults")
    recorder = await make_recorder(INSTANCE, tmp_path)
    try:
        async with serving(controller.app()) as url:
            # A long request timeout: a slow answer on a loaded machine is not the fault here.
            agent = await recorder.start_agent(
                url, agent_env(None, "e2e-faults"), ("--request-timeout", "15s")
            )
            await eventually(lambda: len(controller.reports) > 0, what="the first report")
            assert controller.reports[-1].jibri.busyStatus is BusyStatus.IDLE

            recorder.jibri.set_malformed(True)
            await eventually(
                lambda: controller.reports[-1].jibri.busyStatus is BusyStatus.UNKNOWN,
                what="UNKNOWN for a malformed answer",
            )
            await settle(controller, agent)
            assert len(agent.events("jibri health failing", kind="malformed")) == 1, agent.log()
            recorder.jibri.set_malformed(False)
            await eventually(
                lambda: controller.reports[-1].jibri.busyStatus is BusyStatus.IDLE,
                what="IDLE again",
            )

            await recorder.jibri.crash()
            await eventually(
                lambda: controller.reports[-1].jibri.healthStatus.value == "UNKNOWN",
                what="UNKNOWN while Jibri is down",
            )
            await settle(controller, agent)
            assert len(agent.events("jibri health failing", kind="unreachable")) == 1, agent.log()
            await recorder.jibri.restart()
            await eventually(
                lambda: controller.reports[-1].jibri.busyStatus is BusyStatus.IDLE,
                what="IDLE after Jibri's restart",
            )

            for status, kind in ((500, "server-error"), (401, "unauthorized")):
                controller.failing_with = status
                attempts = controller.attempts
                await eventually(
                    lambda n=attempts: controller.attempts >= n + 5,  # type: ignore[misc]
                    what=f"reports failing {status}",
                )
                assert agent.alive
                assert len(agent.events("reports failing", kind=kind)) == 1, agent.log()
                controller.failing_with = None
                count = len(controller.reports)
                await eventually(
                    lambda n=count: len(controller.reports) > n,  # type: ignore[misc]
                    what="recovery",
                )
            changes = agent.events("reports failing") + agent.events("reports recovered")
            assert len(changes) == 4, agent.log()

            assert agent.alive
            assert await agent.stop() == 0
            assert "Traceback" not in agent.log()
    finally:
        await shutdown([recorder])

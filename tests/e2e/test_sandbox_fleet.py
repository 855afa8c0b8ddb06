from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from controller.spec import DesiredState, parse_desired_state
from sandbox import emulator as sandbox_aws
from sandbox.fake_jibri import FakeJibri
from sandbox.fleet import AgentCommand, BootDelay, Node, SimulatedVMs
from sandbox.ledger import ActionEvent, Ledger, summarize
from sandbox.traffic import Traffic
from tests.support.aws import Emulator
from tests.support.loopback import eventually, serving

pytestmark = pytest.mark.e2e

POOL = """\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {name: recorders}
spec: {autoScalingGroupName: fleet-test, capacity: {min: 0, max: 3}, targetFree: 2}
"""


class SleepingAgent:
    """Stands in for the agent: these tests are about the simulation around it."""

    def argv(self, node: Node, jibri: FakeJibri, ready_file: Path) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(120)"]


class ReadyAgent:
    """Says its webhook listens at `webhook` (the agent's ready file), then sleeps."""

    def __init__(self, webhook: str) -> None:
        self.webhook = webhook

    def argv(self, node: Node, jibri: FakeJibri, ready_file: Path) -> list[str]:
        ready = json.dumps({"webhook": [self.webhook], "metrics": []})
        script = "import sys, time; open(sys.argv[1], 'w').write(sys.argv[2]); time.sleep(120)"
        return [sys.executable, "-c", script, str(ready_file), ready]


@asynccontextmanager
async def running_fleet(
    emulator: Emulator, tmp_path: Path, agents: AgentCommand
) -> AsyncIterator[tuple[SimulatedVMs, Ledger]]:
    aws = sandbox_aws.Emulator(emulator.endpoint)
    state: DesiredState = parse_desired_state(POOL)
    await asyncio.to_thread(sandbox_aws.bootstrap, aws, state, "fleet-test-bucket")
    ledger = Ledger()
    problems: list[str] = []
    fleet = SimulatedVMs(
        emulator=aws,
        state=state,
        work_dir=tmp_path,
        agents=agents,
        env={},
        boot_delay=BootDelay(0.0, 0.0),
        rng=random.Random(3),
        ledger=ledger,
        clock=lambda: asyncio.get_running_loop().time(),
        on_problem=problems.append,
    )
    try:
        await fleet.sync()
        await fleet.sync()
        await fleet.wait_booted(30.0)
        yield fleet, ledger
    finally:
        await fleet.close()
    assert problems == []


@pytest.fixture
async def fleet(emulator: Emulator, tmp_path: Path) -> AsyncIterator[tuple[SimulatedVMs, Ledger]]:
    async with running_fleet(emulator, tmp_path, SleepingAgent()) as running:
        yield running


async def test_jibri_pushes_to_the_webhook_the_agent_names(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Each Jibri pushes its status to the webhook address its agent wrote to its ready file
    (the agent binds port 0; nothing picks a port for it)."""
    pushes: list[dict[str, Any]] = []

    async def status(request: web.Request) -> web.Response:
        pushes.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/status", status)
    async with serving(app) as url:
        agents = ReadyAgent(url.removeprefix("http://"))
        async with running_fleet(emulator, tmp_path, agents) as (fleet, _):
            node = fleet.live()[0]
            # Jibri pushes changes only: subscribed first, then the recording starts.
            assert node.subscribing is not None
            await asyncio.wait_for(node.subscribing, 30)
            assert await fleet.start_recording(node, "s1")
            await eventually(
                lambda: any(
                    p.get("jibriId") == node.instance_id
                    and p.get("status", {}).get("busyStatus") == "BUSY"
                    for p in pushes
                ),
                what="a BUSY push from the node's Jibri",
            )


def _terminate(emulator: Emulator, instance_id: str) -> None:
    emulator.boto3_client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )


async def test_fleet_boots_an_instance_for_each_asg_instance(
    fleet: tuple[SimulatedVMs, Ledger],
) -> None:
    """Each instance of the group gets a running fake Jibri and an agent process."""
    nodes = fleet[0].live()
    assert len(nodes) == 2
    assert all(n.available() and n.agent is not None and n.agent.returncode is None for n in nodes)


async def test_idle_instance_leaving_the_group_stops_quietly(
    emulator: Emulator, fleet: tuple[SimulatedVMs, Ledger]
) -> None:
    """An idle instance that leaves the group stops its Jibri and agent; nothing unsafe."""
    sim, ledger = fleet
    node = sim.live()[0]
    agent = node.agent
    assert agent is not None
    await asyncio.to_thread(_terminate, emulator, node.instance_id)
    await sim.sync()
    assert node.stopped and agent.returncode is not None
    assert ledger.busy_terminations == []


async def test_busy_instance_leaving_the_group_is_reported(
    emulator: Emulator, fleet: tuple[SimulatedVMs, Ledger]
) -> None:
    """An instance terminated while its Jibri records is a busy termination: the run fails."""
    sim, ledger = fleet
    node = sim.live()[0]
    assert await sim.start_recording(node, "rec-busy")
    ledger.start("rec-busy", node.instance_id, 0.0)
    await asyncio.to_thread(_terminate, emulator, node.instance_id)
    await sim.sync()
    assert [t.sessions for t in ledger.busy_terminations] == [("rec-busy",)]
    summary = summarize(ledger, 10.0, [])
    assert summary.busy_instances_terminated == 1 and summary.recordings_interrupted == 1
    assert not summary.ok


async def test_controller_termination_of_a_busy_instance_is_caught_at_once(
    fleet: tuple[SimulatedVMs, Ledger],
) -> None:
    """A terminate action on a recording instance counts at once, and only once."""
    sim, ledger = fleet
    node = sim.live()[0]
    assert await sim.start_recording(node, "rec-1")
    event = ActionEvent(1.0, "recorders", "terminate", "drained", (node.instance_id,))
    sim.on_action(event)
    sim.on_action(event)
    assert len(ledger.busy_terminations) == 1
    idle = sim.live()[1]
    sim.on_action(ActionEvent(1.0, "recorders", "terminate", "drained", (idle.instance_id,)))
    assert len(ledger.busy_terminations) == 1


async def test_traffic_serves_on_idle_jibris_and_misses_when_none_is_idle(
    fleet: tuple[SimulatedVMs, Ledger],
) -> None:
    """Requests take idle Jibris, one more is missed, and ended recordings reach the spools."""
    sim, ledger = fleet
    problems: list[str] = []
    traffic = Traffic(
        fleet=sim,
        ledger=ledger,
        rng=random.Random(1),
        elapsed=lambda: 0.0,
        on_problem=problems.append,
    )
    for _ in range(3):
        await traffic.request(duration=60.0)
    assert (ledger.requested, ledger.served, ledger.missed) == (3, 2, 1)
    assert sim.available() == []
    await traffic.end_all(grace=30.0)
    assert problems == []
    assert len(ledger.finished) == 2
    spooled = sorted(
        entry.name.rsplit("_", 1)[1]
        for node in sim.live()
        for entry in (node.spool_dir / "incoming").iterdir()
    )
    assert spooled == ["rec-0001", "rec-0002"]
    assert all(not any(node.recordings_dir.iterdir()) for node in sim.live())

"""Real agent processes, one per instance, each with a fake Jibri, reporting to the real
controller process, against the AWS emulator over HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.fake_jibri import FakeJibri
from tests.support.agent_process import Recorder, agent_env, make_recorder, shutdown
from tests.support.aws import Emulator, create_asg
from tests.support.controller import TOKEN, RunningController, pool_yaml, running_controller
from tests.support.loopback import eventually, eventually_async

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"


class Watch:
    """Samples the ASG in a thread (boto3 blocks) every few hundred ms, keeping a timeline."""

    def __init__(self, emulator: Emulator) -> None:
        self._autoscaling = emulator.boto3_client("autoscaling")
        self.samples: list[tuple[float, int, dict[str, bool]]] = []
        self._task: asyncio.Task[None] | None = None

    def read(self) -> tuple[int, dict[str, bool]]:
        answer = self._autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
        group: dict[str, Any] = answer["AutoScalingGroups"][0]
        instances = {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in group["Instances"]}
        return group["DesiredCapacity"], instances

    async def _run(self) -> None:
        while True:
            desired, instances = await asyncio.to_thread(self.read)
            self.samples.append((time.time(), desired, instances))
            await asyncio.sleep(0.2)

    def __enter__(self) -> Watch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def latest(self) -> tuple[int, dict[str, bool]]:
        return (self.samples[-1][1], self.samples[-1][2]) if self.samples else (-1, {})

    def gone_at(self, instance_id: str) -> float | None:
        """When the instance was first seen missing from the ASG."""
        for at, _, instances in self.samples:
            if instance_id not in instances:
                return at
        return None


async def start_fleet(
    emulator: Emulator, controller: RunningController, ids: list[str], root: Path, *args: str
) -> list[Recorder]:
    recorders = [await make_recorder(i, root) for i in ids]
    env = agent_env(emulator, TOKEN)
    for recorder in recorders:
        await recorder.start_agent(controller.url, env, args)
    return recorders


async def states(controller: RunningController, ids: list[str], wanted: str) -> bool:
    """Whether the controller's /status shows every one of `ids` in state `wanted`."""
    _, document = await asyncio.to_thread(controller.get_json, "/status")
    seen = {i["instanceId"]: i["state"] for p in document["pools"] for i in p["instances"]}
    return all(seen.get(i) == wanted for i in ids)


def one_shot_race(jibri: FakeJibri, session_id: str, duration: float | None) -> None:
    """The drain race: a recording starts just before the graceful shutdown lands."""

    async def start_recording() -> None:
        jibri.before_shutdown.clear()
        await jibri.start_recording(session_id, duration)

    jibri.before_shutdown.append(start_recording)


async def test_recording_protects_and_scales_out(emulator: Emulator, tmp_path: Path) -> None:
    """A recording that starts makes its instance protected and the controller scale out to
    keep targetFree; the change travels by Jibri's webhook (polls are 30 s apart)."""
    ids = await asyncio.to_thread(create_asg, emulator, GROUP, min_size=1, max_size=4, desired=2)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=4, target_free=2, stale_after="5s", idle_for="1h"))
    with running_controller(emulator, config) as controller, Watch(emulator) as watch:
        recorders = await start_fleet(emulator, controller, ids, tmp_path, "--poll-interval", "30s")
        try:
            await eventually(
                lambda: all(r.jibri.pushing for r in recorders), what="webhook pushers"
            )
            await eventually_async(
                lambda: states(controller, ids, "idle"), within=60, what="both seen idle"
            )
            assert watch.latest[0] == 2 and not controller.actions("scale-out")
            started = time.time()
            await recorders[0].jibri.start_recording("e2e-1")
            await eventually(lambda: watch.latest[0] == 3, within=30, what="scale-out to 3")
            await eventually(lambda: watch.latest[1].get(ids[0]) is True, what="protection")
            scale_out = controller.actions("scale-out")[0]
            since_report = scale_out.get("since_report_seconds")
            print(
                f"\nJibri change → SetDesiredCapacity done: {scale_out['ts'] - started:.3f} s "
                f"(of which report received → done: {since_report} s)"
            )
            assert (scale_out["previous"], scale_out["capacity"]) == (2, 3)
            assert scale_out["reason"] == "below-target-free"
        finally:
            await shutdown(recorders)


async def test_drain_race_waits_for_the_recording(emulator: Emulator, tmp_path: Path) -> None:
    """An idle instance asked to drain starts a recording just before its graceful shutdown
    lands: the recording runs to its end, and only then is the instance terminated."""
    ids = await asyncio.to_thread(create_asg, emulator, GROUP, min_size=1, max_size=3, desired=2)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=3, target_free=1, idle_for="2s", stale_after="5s"))
    with running_controller(emulator, config) as controller, Watch(emulator) as watch:
        recorders = await start_fleet(emulator, controller, ids, tmp_path)
        try:
            for recorder in recorders:
                one_shot_race(recorder.jibri, f"race-{recorder.instance_id}", 4.0)
            await eventually(
                lambda: any(r.jibri.shutdown_requested for r in recorders),
                within=60,
                what="a drain",
            )
            drained = next(r for r in recorders if r.jibri.shutdown_requested)
            kept = next(r for r in recorders if r is not drained)
            assert drained.jibri.busy_status == "BUSY"
            await eventually(
                lambda: watch.gone_at(drained.instance_id) is not None,
                within=60,
                what="the drained instance's termination",
            )
            (_, _, ended) = drained.jibri.history[0]
            gone = watch.gone_at(drained.instance_id)
            assert gone is not None and gone > ended, "terminated before the recording ended"
            for at, _, instances in watch.samples:
                if at < ended:
                    assert drained.instance_id in instances
            assert watch.latest[0] == 1
            assert not kept.jibri.shutdown_requested and kept.instance_id in watch.latest[1]
            terminations = controller.actions("terminate")
            assert [a["instance_ids"] for a in terminations] == [[drained.instance_id]]
            assert terminations[0]["reason"] == "drained"
        finally:
            await shutdown(recorders)


async def test_killed_agent_resumes_the_drain(emulator: Emulator, tmp_path: Path) -> None:
    """An agent killed mid-drain and started again picks the drain up from its marker: it
    re-sends the graceful shutdown, and the instance goes only after the recording ends."""
    ids = await asyncio.to_thread(create_asg, emulator, GROUP, min_size=1, max_size=3, desired=2)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(low=1, high=3, target_free=1, idle_for="2s", stale_after="5s"))
    with running_controller(emulator, config) as controller, Watch(emulator) as watch:
        recorders = await start_fleet(emulator, controller, ids, tmp_path)
        try:
            for recorder in recorders:
                one_shot_race(recorder.jibri, f"long-{recorder.instance_id}", None)
            await eventually(
                lambda: any(r.jibri.shutdown_requested for r in recorders),
                within=60,
                what="a drain",
            )
            drained = next(r for r in recorders if r.jibri.shutdown_requested)
            assert drained.agent is not None
            await eventually(
                lambda: (drained.home / "state" / "drain.json").exists(), what="the marker"
            )
            await drained.agent.kill()
            calls = drained.jibri.shutdown_calls
            await drained.start_agent(controller.url, agent_env(emulator, TOKEN))
            await eventually(
                lambda: drained.jibri.shutdown_calls > calls, what="the re-sent shutdown"
            )
            health = await drained.agent.health()
            assert health is not None and health["draining"] and not health["drained"]
            await asyncio.sleep(2)
            assert drained.instance_id in watch.latest[1], "terminated while recording"
            await drained.jibri.stop_recording()
            ended = drained.jibri.history[0][2]
            await eventually(
                lambda: watch.gone_at(drained.instance_id) is not None,
                within=60,
                what="termination after the recording",
            )
            gone = watch.gone_at(drained.instance_id)
            assert gone is not None and gone > ended
        finally:
            await shutdown(recorders)

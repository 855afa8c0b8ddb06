"""The agent's warm-pool gate against a fake IMDSv2 over HTTP: it waits out Warmed targets,
asks a Jibri that answers meanwhile to shut down, fails closed when IMDS does not answer, and
clears only a drain marker from before a stay in the warm pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from agent.identity import ImdsClient
from agent.warm_gate import WARMED_MARKER, WarmGate
from tests.support.fake_imds import TARGET_STATE_PATH, FakeImds
from tests.support.loopback import free_port, serving


@dataclass
class FakeJibri:
    answers: bool = False
    shutdowns: int = 0

    async def is_up(self) -> bool:
        return self.answers

    async def graceful_shutdown(self) -> bool:
        self.shutdowns += 1
        return True


@dataclass
class Script:
    """Stands in for the gate's sleep: each wait moves IMDS to the next target state."""

    imds: FakeImds
    states: list[str | None]
    waits: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def sleep(self, seconds: float) -> None:
        self.waits += 1
        if self.states:
            self.imds.target_lifecycle_state = self.states.pop(0)
        else:
            self.stop.set()


@dataclass
class Rig:
    imds: FakeImds
    jibri: FakeJibri
    state_dir: Path
    gate: Callable[[Script], WarmGate]
    client: ImdsClient


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    imds, jibri = FakeImds("i-0123456789abcdef0"), FakeJibri()
    async with serving(imds.app()) as url, aiohttp.ClientSession() as session:
        client = ImdsClient(session, url, timeout=2.0)

        def gate(script: Script) -> WarmGate:
            return WarmGate(
                client,
                state_dir=tmp_path,
                drain_marker=tmp_path / "drain.json",
                interval=5.0,
                jibri_answers=jibri.is_up,
                jibri=jibri,
                sleep=script.sleep,
            )

        yield Rig(imds, jibri, tmp_path, gate, client)


async def test_an_instance_in_no_group_is_in_service_at_once(rig: Rig) -> None:
    """404 at target-lifecycle-state (no group, no warm pool): the gate opens without waiting."""
    script = Script(rig.imds, [])
    assert await rig.gate(script).wait_in_service(script.stop)
    assert script.waits == 0 and rig.imds.calls.count(TARGET_STATE_PATH) == 1


async def test_a_warming_instance_waits_until_in_service(rig: Rig) -> None:
    """Warmed:Pending, then Warmed:Stopped, keep the gate shut; InService opens it."""
    rig.imds.target_lifecycle_state = "Warmed:Pending"
    script = Script(rig.imds, ["Warmed:Stopped", "InService"])
    gate = rig.gate(script)
    assert await gate.wait_in_service(script.stop)
    assert (script.waits, gate.target) == (2, "InService")
    assert not (rig.state_dir / WARMED_MARKER).exists()


async def test_a_jibri_up_while_warming_is_asked_to_shut_down(rig: Rig) -> None:
    """A Jibri that answers while the target is Warmed:Running gets a graceful shutdown."""
    rig.imds.target_lifecycle_state = "Warmed:Running"
    rig.jibri.answers = True
    script = Script(rig.imds, ["Warmed:Running", "InService"])
    assert await rig.gate(script).wait_in_service(script.stop)
    assert rig.jibri.shutdowns == 2


async def test_a_silent_imds_keeps_the_gate_shut(rig: Rig) -> None:
    """IMDS answering 500 is no answer: the gate stays shut until the agent stops."""
    rig.imds.target_status = 500
    script = Script(rig.imds, [])
    assert not await rig.gate(script).wait_in_service(script.stop)
    assert rig.jibri.shutdowns == 0


@pytest.mark.parametrize(
    ("first", "kept"),
    [
        pytest.param("Warmed:Stopped", False, id="back-from-the-warm-pool"),
        pytest.param("InService", True, id="never-warmed"),
    ],
)
async def test_only_a_drain_from_before_the_warm_pool_is_cleared(
    rig: Rig, first: str, kept: bool
) -> None:
    """Back from the warm pool, the old drain marker goes; a drain under way is never undone."""
    (rig.state_dir / "drain.json").write_text('{"requestedAt": 1}', encoding="utf-8")
    rig.imds.target_lifecycle_state = first
    script = Script(rig.imds, ["InService"])
    assert await rig.gate(script).wait_in_service(script.stop)
    assert (rig.state_dir / "drain.json").exists() is kept


async def test_a_warmed_marker_outlives_a_stop(rig: Rig) -> None:
    """Stopped in the warm pool, the agent starts again InService and still clears the drain."""
    rig.imds.target_lifecycle_state = "Warmed:Stopped"
    script = Script(rig.imds, [])
    assert not await rig.gate(script).wait_in_service(script.stop)
    (rig.state_dir / "drain.json").write_text('{"requestedAt": 1}', encoding="utf-8")
    rig.imds.target_lifecycle_state = "InService"
    again = Script(rig.imds, [])
    assert await rig.gate(again).wait_in_service(again.stop)
    assert not (rig.state_dir / "drain.json").exists()


@pytest.mark.parametrize(
    ("refused", "opens"),
    [
        pytest.param(True, True, id="no-imds-at-all"),
        pytest.param(False, False, id="imds-answers-500"),
    ],
)
async def test_without_any_metadata_service_the_jibri_gate_opens(
    rig: Rig, refused: bool, opens: bool
) -> None:
    """Off EC2 (nothing listens) the ExecStartPre gate opens after its polls; an IMDS that
    answers with errors keeps it shut."""
    rig.imds.target_status = 500
    script = Script(rig.imds, ["Warmed:Stopped"] * 5)
    async with aiohttp.ClientSession() as session:
        nowhere = ImdsClient(session, f"http://127.0.0.1:{free_port()}", timeout=2.0)
        gate = WarmGate(
            nowhere if refused else rig.client,
            state_dir=None,
            drain_marker=None,
            interval=5.0,
            jibri_answers=None,
            jibri=None,
            sleep=script.sleep,
            open_without_imds_after=3,
        )
        assert await gate.wait_in_service(script.stop) is opens

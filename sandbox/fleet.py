"""The simulated VMs: for every instance the ASG launches, a fake Jibri and a real agent.

`SimulatedVMs.sync()` reads the ASGs and makes the simulation follow them. A new instance
"boots" for a drawn delay (moto puts instances InService at once; real ones take a minute or
more), then its Jibri starts in this process and its agent as a child process, pointed at each
other (the agent binds port 0 and writes where it listens to a ready file; the Jibri then pushes
there). When the instance leaves the group (gone, or Terminating*), both stop, as they would
with the VM; if its Jibri was still recording, that is a busy instance terminated, the one thing
that must never happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.spec import DesiredState
from sandbox.emulator import Emulator, GroupInstance, describe_group
from sandbox.fake_imds import FakeImds, SigningAuthority
from sandbox.fake_jibri import FakeJibri, NotIdle
from sandbox.ledger import ActionEvent, BusyTermination, Ledger
from sandbox.procs import Child, spawn
from sandbox.view import SimInstance

log = logging.getLogger(__name__)

TERMINATING_ACTIONS = frozenset({"terminate", "replace"})
_LEAVING = ("Terminating", "Terminated", "Detach", "Standby", "EnteredStandby")


@dataclass(frozen=True)
class BootDelay:
    """Seconds from launch until an instance's Jibri and agent start: mean ± jitter."""

    mean: float = 8.0
    jitter: float = 3.0

    def __post_init__(self) -> None:
        if self.mean < 0 or self.jitter < 0:
            raise ValueError("boot delay and its jitter must not be negative")

    def draw(self, rng: random.Random) -> float:
        return max(0.0, rng.uniform(self.mean - self.jitter, self.mean + self.jitter))


class AgentCommand(Protocol):
    def argv(self, node: Node, jibri: FakeJibri, ready_file: Path) -> list[str]:
        """The command line of `node`'s agent, which writes where it listens to `ready_file`."""
        ...


@dataclass(frozen=True)
class AgentSettings:
    """How every agent is started; the per-instance parts come from the node.

    `controller_url` is asked for at each start: the controller binds port 0, so its URL is
    known only once it listens."""

    controller_url: Callable[[], str]
    bucket: str
    region: str
    report_interval: float = 2.0
    poll_interval: float = 1.0
    extra_args: tuple[str, ...] = ()

    def argv(self, node: Node, jibri: FakeJibri, ready_file: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--controller",
            self.controller_url(),
            "--instance-id",
            node.instance_id,
            *(("--imds-url", node.imds.url) if node.imds is not None else ()),
            "--region",
            self.region,
            "--jibri-health-url",
            jibri.health_url,
            "--jibri-shutdown-url",
            jibri.shutdown_url,
            "--webhook-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready_file),
            "--report-interval",
            f"{self.report_interval}s",
            "--poll-interval",
            f"{self.poll_interval}s",
            "--state-dir",
            str(node.directory / "state"),
            "--spool-dir",
            str(node.spool_dir),
            "--upload-bucket",
            self.bucket,
            *self.extra_args,
        ]


# Jibri runs its finalize script with its own output; here that would be the live view's
# terminal, so the script's output goes to the instance's log instead.
_FINALIZE_SCRIPT = 'log=$1; export JIBRI_AGENT_SPOOL_DIR="$2"; shift 2; exec "$@" >>"$log" 2>&1'


def finalize_command(node: Node) -> list[str]:
    """Jibri's finalize script on `node`: the real `agent finalize`, into the node's spool."""
    return [
        "/bin/sh",
        "-c",
        _FINALIZE_SCRIPT,
        "finalize",
        str(node.directory / "finalize.log"),
        str(node.spool_dir),
        sys.executable,
        "-m",
        "agent",
        "finalize",
    ]


class Node:
    """One simulated VM."""

    def __init__(self, instance_id: str, pool: str, directory: Path, boot_at: float) -> None:
        self.instance_id = instance_id
        self.pool = pool
        self.directory = directory
        self.boot_at = boot_at
        self.jibri: FakeJibri | None = None
        self.imds: FakeImds | None = None
        """This VM's metadata service: the agent registers with the document it signs."""
        self.agent: Child | None = None
        self.subscribing: asyncio.Task[None] | None = None
        """Points the Jibri's webhook at the agent once the agent says where it listens."""
        self.stopped = False
        self.recordings = 0
        self.session: str | None = None
        self.busy_terminated = False

    @property
    def spool_dir(self) -> Path:
        return self.directory / "spool"

    @property
    def recordings_dir(self) -> Path:
        return self.directory / "recordings"

    @property
    def phase(self) -> str:
        if self.stopped:
            return "stopped"
        return "running" if self.jibri is not None else "booting"

    @property
    def jibri_state(self) -> str:
        jibri = self.jibri
        if jibri is None:
            return "-"
        if jibri.exited.is_set():
            return "shut down"
        if jibri.shutdown_requested:
            return f"{jibri.busy_status.lower()}, shutting down"
        return jibri.busy_status.lower() if jibri.healthy else "unhealthy"

    @property
    def recording(self) -> bool:
        """Jibri is busy with a recording, its finalize included."""
        return self.jibri is not None and self.jibri.busy_status == "BUSY"

    def available(self) -> bool:
        """Would take a recording now, as jicofo would see it."""
        jibri = self.jibri
        return (
            not self.stopped
            and jibri is not None
            and not jibri.exited.is_set()
            and not jibri.shutdown_requested
            and jibri.healthy
            and jibri.busy_status == "IDLE"
        )

    def view(self) -> SimInstance:
        return SimInstance(self.instance_id, self.phase, self.jibri_state, self.recordings)


class SimulatedVMs:
    def __init__(
        self,
        *,
        emulator: Emulator,
        state: DesiredState,
        work_dir: Path,
        agents: AgentCommand,
        env: Mapping[str, str],
        boot_delay: BootDelay,
        rng: random.Random,
        ledger: Ledger,
        clock: Callable[[], float],
        on_problem: Callable[[str], None],
        authority: SigningAuthority | None = None,
    ) -> None:
        self.authority = authority or SigningAuthority.generate()
        """Signs every VM's identity document; the controller is given its certificate."""
        self._emulator = emulator
        self._state = state
        self._work_dir = work_dir
        self._agents = agents
        self._env = dict(env)
        self._boot_delay = boot_delay
        self._rng = rng
        self._ledger = ledger
        self._clock = clock
        self._on_problem = on_problem
        self.nodes: dict[str, Node] = {}
        self._last_sync: float | None = None
        self._first: frozenset[str] | None = None
        """The instances of the first sync, which boot before the run starts."""
        self._stopping = False

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.stopped]

    def available(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.available()]

    def views(self) -> tuple[SimInstance, ...]:
        return tuple(n.view() for n in sorted(self.live(), key=lambda n: n.instance_id))

    async def _describe(self) -> dict[str, tuple[str, GroupInstance]]:
        seen: dict[str, tuple[str, GroupInstance]] = {}
        for pool in self._state.pools:
            _, instances = await asyncio.to_thread(describe_group, self._emulator, pool)
            seen.update((i.instance_id, (pool.name, i)) for i in instances)
        return seen

    async def sync(self) -> None:
        """Follow the ASGs once: boot new instances, start booted ones, stop departed ones."""
        seen = await self._describe()
        now = self._clock()
        in_group = {
            iid for iid, (_, i) in seen.items() if not i.lifecycle_state.startswith(_LEAVING)
        }
        if self._last_sync is not None:
            self._ledger.tick(len(in_group), now - self._last_sync)
        self._last_sync = now
        for iid in in_group - self.nodes.keys():
            pool, _ = seen[iid]
            boot_at = now + self._boot_delay.draw(self._rng)
            self.nodes[iid] = Node(iid, pool, self._work_dir / "instances" / iid, boot_at)
            log.info("instance %s launched in pool %s; boots in %.1f s", iid, pool, boot_at - now)
        if self._first is None:
            self._first = frozenset(in_group)
        for node in list(self.live()):
            if node.instance_id not in in_group:
                lifecycle = (
                    seen[node.instance_id][1].lifecycle_state
                    if node.instance_id in seen
                    else "gone"
                )
                await self._terminated(node, lifecycle, now)
            elif node.jibri is None and now >= node.boot_at and not self._stopping:
                await self._boot(node)
            elif node.agent is not None and node.agent.returncode is not None:
                self._on_problem(
                    f"agent of {node.instance_id} exited with code {node.agent.returncode} "
                    f"(see {node.agent.log_path})"
                )
                await node.agent.stop()
                node.agent = None

    async def wait_booted(self, within: float) -> None:
        """Wait until the instances of the first look at the groups run (or left them).

        Raises RuntimeError after `within` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._first is None or any(
            self.nodes[iid].jibri is None and not self.nodes[iid].stopped for iid in self._first
        ):
            if loop.time() >= deadline:
                raise RuntimeError(f"the first instances did not boot within {within:.0f} s")
            await asyncio.sleep(0.2)

    async def _boot(self, node: Node) -> None:
        node.spool_dir.mkdir(parents=True, exist_ok=True)
        node.recordings_dir.mkdir(parents=True, exist_ok=True)
        jibri = FakeJibri(
            jibri_id=node.instance_id,
            finalize_command=finalize_command(node),
            recordings_dir=node.recordings_dir,
        )
        await jibri.start()
        node.jibri = jibri
        node.imds = FakeImds(node.instance_id, authority=self.authority)
        await node.imds.start()
        ready_file = node.directory / "agent.ready.json"
        ready_file.unlink(missing_ok=True)
        node.agent = await spawn(
            f"agent {node.instance_id}",
            self._agents.argv(node, jibri, ready_file),
            env=self._env,
            log_path=node.directory / "agent.log",
        )
        node.subscribing = asyncio.create_task(
            _subscribe_when_ready(node.agent, jibri, ready_file),
            name=f"webhook {node.instance_id}",
        )
        log.info(
            "instance %s booted: jibri %s, agent pid %s",
            node.instance_id,
            jibri.base_url,
            node.agent.pid,
        )

    def on_action(self, event: ActionEvent) -> None:
        """Check a termination the moment the controller reports it: was that Jibri busy?

        The ASG is only looked at once a second; a recording could end within that second.
        """
        if event.action not in TERMINATING_ACTIONS:
            return
        for iid in event.instance_ids:
            node = self.nodes.get(iid)
            if node is not None and not node.stopped:
                self._check_busy(node, f"{event.action} ({event.reason})", self._clock())

    def _check_busy(self, node: Node, how: str, now: float) -> None:
        if node.busy_terminated or not node.recording or node.session is None:
            return
        node.busy_terminated = True
        self._ledger.interrupt(
            BusyTermination(
                at=now, instance_id=node.instance_id, sessions=(node.session,), lifecycle_state=how
            )
        )
        log.error(
            "instance %s terminated (%s) while recording %s", node.instance_id, how, node.session
        )

    async def _terminated(self, node: Node, lifecycle: str, now: float) -> None:
        self._check_busy(node, lifecycle, now)
        log.info("instance %s left the group (%s)", node.instance_id, lifecycle)
        await self._stop_node(node)

    async def _stop_node(self, node: Node) -> None:
        node.stopped = True
        if node.subscribing is not None:
            node.subscribing.cancel()
        if node.agent is not None:
            await node.agent.stop()
        if node.jibri is not None:
            await node.jibri.close()
        if node.imds is not None:
            await node.imds.close()

    async def start_recording(self, node: Node, session: str) -> bool:
        """Start `session` on `node`'s Jibri; False if it was no longer idle."""
        if node.jibri is None:
            return False
        try:
            await node.jibri.start_recording(session)
        except NotIdle:
            return False
        node.session = session
        node.recordings += 1
        return True

    async def stop_recording(self, node: Node, session: str) -> bool | None:
        """End `session`: Jibri finalizes (hands it to the spool) and goes idle.

        True when the recording left Jibri's directory for the spool, False when finalize
        failed and left it behind, None when the instance was gone before it ended.
        """
        jibri = node.jibri
        if node.stopped or jibri is None or node.session != session or jibri.recording is None:
            return None
        await jibri.stop_recording()
        node.session = None
        return not (node.recordings_dir / session).exists()

    async def close(self) -> None:
        """Stop every node: agents first (in parallel), then the Jibris."""
        self._stopping = True
        live = self.live()
        for node in live:
            node.stopped = True
            if node.subscribing is not None:
                node.subscribing.cancel()
        await asyncio.gather(
            *(n.agent.stop() for n in live if n.agent is not None), return_exceptions=True
        )
        for node in live:
            if node.jibri is not None:
                with contextlib.suppress(Exception):
                    await node.jibri.close()
            if node.imds is not None:
                with contextlib.suppress(Exception):
                    await node.imds.close()

    def kill_now(self) -> None:
        for node in self.nodes.values():
            if node.agent is not None:
                node.agent.kill_now()


async def _subscribe_when_ready(agent: Child, jibri: FakeJibri, ready_file: Path) -> None:
    """Once the agent has written where its webhook listens, have the Jibri push there.

    Until then (and if the agent exits first) the agent still sees Jibri through its polls."""
    while agent.returncode is None:
        try:
            ready = json.loads(await asyncio.to_thread(ready_file.read_text, encoding="utf-8"))
        except (OSError, ValueError):
            await asyncio.sleep(0.1)
            continue
        jibri.subscribe(f"http://{ready['webhook'][0]}")
        return


def session_sequence(prefix: str = "rec") -> Callable[[], str]:
    counter = 0

    def next_session() -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}-{counter:04d}"

    return next_session


def pick(nodes: Sequence[Node], rng: random.Random) -> list[Node]:
    """Idle Jibris in the order jicofo would try them (random, as its selection is)."""
    order = list(nodes)
    rng.shuffle(order)
    return order

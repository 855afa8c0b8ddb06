"""The agent daemon: wires Jibri, the reporter, the drain and the fallback together.

`Agent` holds the shared pieces; `agent_tasks` lists the background tasks, each a named
coroutine run under `common.aiokits.tasks.run_until_stopped`. To add a task, append it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from agent.about import AGENT_VERSION, image_id, uptime_seconds
from agent.drain import MARKER_NAME, Drainer, DrainMarker
from agent.fallback import Fallback
from agent.identity import Identity, IdentityError, resolve_identity
from agent.jibri import JibriClient, Probe
from agent.leftovers import Adopter, pending_leftovers, session_dirs
from agent.metrics import AgentMetrics, metrics_app
from agent.registration import Registration
from agent.reporter import Reporter
from agent.servers import StartupError, ready_file, serving
from agent.settings import Settings
from agent.spool import Spool
from agent.status import Board, LocalState
from agent.upload.metrics import UploadMetrics
from agent.upload.uploader import Uploader
from agent.webhook import webhook_app
from common.aiokits.tasks import NamedTask, run_until_stopped
from common.logs import Transitions, event

log = logging.getLogger(__name__)


@dataclass
class _CountedShutdown:
    jibri: JibriClient
    metrics: AgentMetrics

    async def graceful_shutdown(self) -> bool:
        accepted = await self.jibri.graceful_shutdown()
        self.metrics.graceful_shutdowns.labels("accepted" if accepted else "failed").inc()
        return accepted


class Agent:
    """The shared pieces of one agent process."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession,
        identity: Identity,
        metrics: AgentMetrics,
    ) -> None:
        self.settings = settings
        self.session = session
        self.identity = identity
        self.metrics = metrics
        self.board = Board()
        self.spool = Spool(settings.spool_dir)
        self.jibri = JibriClient(
            session,
            health_url=settings.jibri_health_url,
            shutdown_url=settings.jibri_shutdown_url,
            timeout=settings.request_timeout,
        )
        self.drainer = Drainer(
            DrainMarker(settings.state_dir / MARKER_NAME),
            _CountedShutdown(self.jibri, metrics),
            resend_interval=settings.drain_resend_interval,
        )
        boot_id = str(uuid.uuid4())
        self.registration = Registration(
            session,
            controller_url=settings.controller_url,
            imds_url=settings.imds_url,
            instance_id=identity.instance_id,
            boot_id=boot_id,
            timeout=settings.request_timeout,
            token=settings.token,
            on_registered=self.board.notify,
        )
        self.reporter = Reporter(
            session,
            controller_url=settings.controller_url,
            credentials=self.registration,
            boot_id=boot_id,
            instance_id=identity.instance_id,
            state=self.local_state,
            signal=self.board.subscribe(),
            on_drain=self.request_drain,
            metrics=metrics,
            interval=settings.report_interval,
            timeout=settings.request_timeout,
        )
        self.adopter = Adopter(
            settings.recordings_dir,
            self.spool,
            self.jibri,
            metrics,
            quiet_for=settings.recordings_quiet_for,
            interval=settings.poll_interval,
            skip=(settings.state_dir,),
        )
        self.fallback: Fallback | None = None
        self.uploader: Uploader | None = None
        self.ami_id: str | None = None
        self._spool_log = Transitions(log, "spool", path=str(settings.spool_dir))
        self._recordings_log = Transitions(
            log, "recordings directory", path=str(settings.recordings_dir)
        )

    def pending_uploads(self) -> int:
        """Recordings on this instance not yet verified in S3: the spool's and those left in
        Jibri's recordings directory. Unreadable is not empty: it counts as one pending."""
        # The recordings directory first: a hand-off under way is then counted twice at worst.
        try:
            found = session_dirs(self.settings.recordings_dir, self.adopter.skip)
            left = pending_leftovers(len(found), self.board.probe)
        except OSError as exc:
            self._recordings_log.failed("unreadable", f"cannot list ({exc}); counting 1 pending")
            left = 1
        else:
            self._recordings_log.ok("readable again")
        self.metrics.recordings_left.set(left)
        try:
            count = self.spool.pending_count()
        except OSError as exc:
            self._spool_log.failed("unreadable", f"cannot read ({exc}); counting 1 pending")
            return max(self.board.pending_uploads, 1 + left)
        self._spool_log.ok("readable again")
        return count + left

    def local_state(self) -> LocalState:
        pending = self.pending_uploads()
        return LocalState(
            jibri=self.board.jibri,
            draining=self.drainer.active,
            drained=self.drainer.drained(self.board.probe, pending),
            pending_uploads=pending,
            recordings_finished=self.board.recordings_finished,
            ami_id=self.ami_id,
            agent_version=AGENT_VERSION,
            uptime_seconds=uptime_seconds(),
        )

    def observe(self, probe: Probe, *, pushed: bool = False) -> None:
        self.board.observe(probe, pushed=pushed)

    def request_drain(self) -> None:
        if self.drainer.request():
            self.board.notify()

    def status(self) -> dict[str, object]:
        """What /healthz shows: this instance as the next report would describe it."""
        state = self.local_state()
        return {
            "instanceId": self.identity.instance_id,
            "bootId": self.reporter.boot_id,
            "jibri": state.jibri.model_dump(mode="json"),
            "draining": state.draining,
            "drained": state.drained,
            "pendingUploads": state.pending_uploads,
            "controllerSilentForSeconds": round(self.reporter.silent_for(), 3),
            "fallbackActive": self.fallback is not None and self.fallback.active,
        }

    async def poll_jibri(self) -> None:
        while True:
            probe = await self.jibri.probe()
            self.metrics.jibri_probes.labels(probe.outcome.value).inc()
            self.observe(probe)
            self.board.set_pending_uploads(self.pending_uploads())
            await asyncio.sleep(self.settings.poll_interval)

    async def drive_drain(self) -> None:
        signal = self.board.subscribe()
        while True:
            signal.clear()
            if self.drainer.active and await self.drainer.step(self.board.probe):
                self.board.notify()
            self.metrics.draining.set(int(self.drainer.active))
            await signal.wait(self.settings.poll_interval)


def agent_tasks(agent: Agent) -> list[NamedTask]:
    """The background tasks of one agent; each runs until the agent stops."""
    tasks = [
        NamedTask("jibri-poller", agent.poll_jibri),
        NamedTask("drain", agent.drive_drain),
        NamedTask("registration", agent.registration.run),
        NamedTask("reporter", agent.reporter.run),
        NamedTask("leftovers", agent.adopter.run),
    ]
    if agent.fallback is not None:
        tasks.append(NamedTask("fallback", agent.fallback.run))
    if agent.uploader is not None:
        tasks.append(NamedTask("uploader", agent.uploader.run))
    return tasks


def _prepare_dirs(settings: Settings) -> None:
    for what, directory in (
        ("--state-dir", settings.state_dir),
        ("--spool-dir", settings.spool_dir),
    ):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".agent-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"{what} {directory}: not writable ({exc.strerror})") from exc


async def run_agent(settings: Settings, stop: asyncio.Event) -> bool:
    """Run until `stop` is set (True) or a task fails (False). Raises StartupError."""
    _prepare_dirs(settings)
    metrics = AgentMetrics()
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        try:
            identity = await resolve_identity(
                session,
                instance_id=settings.instance_id,
                region=settings.region,
                imds_url=settings.imds_url,
                need_region=settings.fallback or settings.upload_bucket is not None,
            )
        except IdentityError as exc:
            raise StartupError(str(exc)) from exc
        event(
            log,
            "identity",
            instance=identity.instance_id,
            region=identity.region,
            source="settings" if settings.instance_id is not None else "imds",
        )
        if settings.warm_gate:
            # Warm pools (docs/warm-pools.md): nothing starts until the group means this
            # instance for service, and the drain marker is read only after the gate.
            from agent.warm_gate import hold_until_in_service

            if not await hold_until_in_service(settings, session, stop):
                return True
        agent = Agent(settings, session=session, identity=identity, metrics=metrics)
        if settings.instance_id is None:
            agent.ami_id = await image_id(session, settings.imds_url, 2.0)
        if settings.fallback:
            from agent.aws import open_aws

            aws = await stack.enter_async_context(open_aws(identity.region))
            agent.fallback = Fallback(
                aws,
                instance_id=identity.instance_id,
                namespace=settings.fallback_namespace,
                period=settings.fallback_period,
                after=settings.fallback_after,
                state=agent.local_state,
                controller_silent_for=agent.reporter.silent_for,
                signal=agent.board.subscribe(),
                metrics=metrics,
            )
        upload = settings.upload_config()
        if upload is None:
            event(
                log,
                "uploads off",
                level=logging.WARNING,
                reason="no --upload-bucket: recordings stay in the spool and count as pending",
            )
        else:
            from agent.upload.s3client import open_s3

            s3 = await stack.enter_async_context(
                open_s3(
                    upload.bucket,
                    upload.checksum_algorithm,
                    concurrency=upload.concurrency,
                    region=identity.region,
                )
            )
            agent.uploader = Uploader(
                spool=agent.spool,
                s3=s3,
                config=upload,
                metrics=UploadMetrics(metrics.registry, agent.spool, lambda: datetime.now(UTC)),
                instance_id=identity.instance_id,
            )
        listening = {
            "metrics": await stack.enter_async_context(
                serving(
                    metrics_app(metrics, agent.status),
                    settings.metrics_listen,
                    "metrics",
                    "--metrics-listen",
                )
            ),
            "webhook": await stack.enter_async_context(
                serving(
                    webhook_app(lambda probe: agent.observe(probe, pushed=True), metrics),
                    settings.webhook_listen,
                    "webhook",
                    "--webhook-listen",
                )
            ),
        }
        stack.enter_context(ready_file(settings.ready_file, listening))
        event(
            log,
            "agent started",
            instance=identity.instance_id,
            boot=agent.reporter.boot_id,
            controller=settings.controller_url,
            fallback=settings.fallback,
            bucket=settings.upload_bucket,
        )
        started = time.monotonic()
        ok = await run_until_stopped(agent_tasks(agent), stop)
        event(
            log,
            "agent stopping",
            instance=identity.instance_id,
            uptime_seconds=round(time.monotonic() - started),
        )
        return ok

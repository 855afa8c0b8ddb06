"""Keep an instance that is being prepared for, or waits in, the Auto Scaling warm pool out of
service (docs/warm-pools.md).

An instance launched into a warm pool runs its boot like any other, then is stopped (or
hibernated, or left running) until a scale-out takes it. A Jibri started meanwhile could take a
recording that the stop would kill. IMDSv2 says where the group means the instance to go:
`/latest/meta-data/autoscaling/target-lifecycle-state` is `Warmed:Stopped`, `Warmed:Running`,
`Warmed:Hibernated` or `InService` (404: the instance is in no group, so nothing holds it).

`WarmGate.wait_in_service` returns once the target is InService. Until then the agent neither
reports nor publishes JibriFree, Jibri is not started (jibri.service waits on `jibri-agent
wait-in-service`, deploy/jibri/jibri-warm-gate.conf), and a Jibri that answers anyway is asked
to shut down gracefully, which never stops a recording. A drain marker left from before the
instance went back to the warm pool (reuseOnScaleIn) belongs to its previous time in service:
once the gate has seen a Warmed target, the marker is removed when the instance returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol

import aiohttp

from agent.drain import MARKER_NAME
from agent.identity import IdentityError, ImdsClient, TransientImdsError
from agent.jibri import JibriClient, Outcome
from agent.settings import Settings
from common.logs import Transitions, event

log = logging.getLogger(__name__)

TARGET_STATE_PATH: Final = "/latest/meta-data/autoscaling/target-lifecycle-state"
IN_SERVICE: Final = "InService"
WARMED_MARKER: Final = "warmed"
"""In the state directory while the gate has seen a Warmed target and not yet InService."""
NO_IMDS_SECONDS: Final = 30.0
"""`wait-in-service` lets Jibri start when no metadata service answered for this long (the
agent installed on a host off EC2); an IMDS that answers with an error keeps it waiting."""


class Metadata(Protocol):
    async def get_optional(self, path: str) -> str | None: ...


class Shutdown(Protocol):
    async def graceful_shutdown(self) -> bool: ...


async def target_state(imds: Metadata) -> str:
    """Where the group means this instance to be; InService when IMDS has no such path."""
    state = await imds.get_optional(TARGET_STATE_PATH)
    return IN_SERVICE if state is None or not state else state


class WarmGate:
    """Waits until the group's target for this instance is InService (module docstring)."""

    def __init__(
        self,
        imds: Metadata,
        *,
        state_dir: Path | None,
        drain_marker: Path | None,
        interval: float,
        jibri_answers: Callable[[], Awaitable[bool]] | None,
        jibri: Shutdown | None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        open_without_imds_after: int | None = None,
    ) -> None:
        """Without a state directory, drain marker and Jibri (`jibri-agent wait-in-service`
        before Jibri starts) it only waits. `open_without_imds_after`: open after that many
        polls if no metadata service ever answered (a host off EC2 is in no warm pool)."""
        self._open_without_imds_after = open_without_imds_after
        self._unanswered = 0
        self._imds = imds
        self._marker = None if state_dir is None else state_dir / WARMED_MARKER
        self._drain_marker = drain_marker
        self._interval = interval
        self._jibri_answers = jibri_answers
        self._jibri = jibri
        self._sleep = sleep
        self._imds_log = Transitions(log, "instance metadata")
        self.target: str | None = None
        """The last target state read (None before the first answer), for /healthz."""

    async def wait_in_service(self, stop: asyncio.Event) -> bool:
        """Return True once the target is InService, False if `stop` is set first."""
        while not stop.is_set():
            try:
                state = await target_state(self._imds)
            except (TransientImdsError, IdentityError) as exc:
                # Fail closed: an instance that cannot tell stays out of service and says so.
                self._imds_log.failed("unanswered", f"target lifecycle state unknown ({exc})")
                # Only silence counts: an IMDS that answers at all is on EC2.
                silent = isinstance(exc.__cause__, aiohttp.ClientConnectionError | TimeoutError)
                if silent and self.target is None:
                    self._unanswered += 1
                limit = self._open_without_imds_after
                if limit is not None and self._unanswered >= limit:
                    event(log, "no instance metadata service: not on EC2, in no warm pool")
                    return True
            else:
                self._imds_log.ok("answering")
                if state != self.target:
                    event(log, "target lifecycle state", state=state)
                self.target = state
                if state == IN_SERVICE:
                    self._returned()
                    return True
                await self._hold(state)
            await _wait(stop, self._interval, self._sleep)
        return False

    async def _hold(self, state: str) -> None:
        if self._marker is not None and not self._marker.exists():
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.write_text(state + "\n", encoding="utf-8")
        if (
            self._jibri_answers is not None
            and self._jibri is not None
            and await self._jibri_answers()
        ):
            accepted = await self._jibri.graceful_shutdown()
            event(
                log,
                "jibri asked to shut down: the instance is bound for the warm pool",
                level=logging.WARNING,
                state=state,
                accepted=accepted,
            )

    def _returned(self) -> None:
        if self._marker is None or not self._marker.exists():
            return
        if self._drain_marker is not None and self._drain_marker.exists():
            self._drain_marker.unlink()
            event(log, "drain marker from before the warm pool removed", reason="warm-pool-reuse")
        self._marker.unlink()


async def _wait(
    stop: asyncio.Event, seconds: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    stopper = asyncio.ensure_future(stop.wait())
    sleeper = asyncio.ensure_future(sleep(seconds))
    try:
        await asyncio.wait({stopper, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopper, sleeper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def hold_until_in_service(
    settings: Settings, session: aiohttp.ClientSession, stop: asyncio.Event
) -> bool:
    """The agent's gate, run before anything else of the agent starts: True once InService,
    False if stopped first. The drain marker is read only after it (by the Drainer)."""
    jibri = JibriClient(
        session,
        health_url=settings.jibri_health_url,
        shutdown_url=settings.jibri_shutdown_url,
        timeout=settings.request_timeout,
    )

    async def answers() -> bool:
        return (await jibri.probe()).outcome is Outcome.OK

    gate = WarmGate(
        ImdsClient(session, settings.imds_url, settings.request_timeout),
        state_dir=settings.state_dir,
        drain_marker=settings.state_dir / MARKER_NAME,
        interval=settings.report_interval,
        jibri_answers=answers,
        jibri=jibri,
    )
    return await gate.wait_in_service(stop)


async def wait_in_service(imds_url: str, interval: float, stop: asyncio.Event) -> bool:
    """`jibri-agent wait-in-service`: jibri.service's ExecStartPre, so Jibri starts only once
    the instance is bound for service."""
    async with aiohttp.ClientSession() as session:
        gate = WarmGate(
            ImdsClient(session, imds_url, timeout=2.0),
            state_dir=None,
            drain_marker=None,
            interval=interval,
            jibri_answers=None,
            jibri=None,
            open_without_imds_after=max(1, math.ceil(NO_IMDS_SECONDS / interval)),
        )
        return await gate.wait_in_service(stop)

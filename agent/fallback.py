"""The classic recipe, kept as a fallback for when the controller is away.

Every period the agent publishes the per-instance CloudWatch metric `JibriFree` (1 free,
0 busy), so alarms on its sum can still scale the ASG out without the controller. And while
the controller has accepted no report for longer than `after`, the agent guards its own
instance: protected from scale-in while Jibri may be recording, unprotected when it is
provably idle, as the classic cron job did. When the controller is back it owns protection
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from agent.metrics import AgentMetrics
from agent.status import LocalState, Signal
from common.logs import Transitions, event
from common.wire import BusyStatus

log = logging.getLogger(__name__)

JIBRI_FREE: Final = "JibriFree"


class FallbackAwsError(Exception):
    """An AWS call of the fallback failed; the message names the operation."""


@dataclass(frozen=True)
class Membership:
    asg_name: str
    protected: bool


class FallbackAws(Protocol):
    async def membership(self, instance_id: str) -> Membership | None:
        """The ASG holding `instance_id` and its protection, or None if it is in none."""
        ...

    async def set_protection(self, asg_name: str, instance_id: str, protected: bool) -> None: ...

    async def put_jibri_free(self, namespace: str, asg_name: str, free: bool) -> None: ...


def wants_protection(state: LocalState) -> bool:
    """Protect unless Jibri is known not to record and nothing waits to be uploaded.

    UNKNOWN counts as busy: a Jibri that does not answer may still be recording.
    """
    if state.pending_uploads > 0 or (state.draining and not state.drained):
        return True
    return state.jibri.busyStatus not in (BusyStatus.IDLE, BusyStatus.EXPIRED)


class Fallback:
    """Runs the classic behaviour for one instance; AWS comes in through `FallbackAws`."""

    def __init__(
        self,
        aws: FallbackAws,
        *,
        instance_id: str,
        namespace: str,
        period: float,
        after: float,
        state: Callable[[], LocalState],
        controller_silent_for: Callable[[], float],
        signal: Signal,
        metrics: AgentMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws = aws
        self._instance_id = instance_id
        self._namespace = namespace
        self._period = period
        self._after = after
        self._state = state
        self._silent_for = controller_silent_for
        self._signal = signal
        self._metrics = metrics
        self._monotonic = monotonic
        self._membership: Membership | None = None
        self._active = False
        self._aws_log = Transitions(log, "fallback aws", instance=instance_id)

    @property
    def active(self) -> bool:
        return self._active

    async def run(self) -> None:
        next_publish = self._monotonic()
        while True:
            refresh = False
            if self._monotonic() >= next_publish:
                next_publish = self._monotonic() + self._period
                await self.publish()
                refresh = True
            await self.guard(refresh=refresh)
            wait = next_publish - self._monotonic()
            if not self._active:
                wait = min(wait, self._after - self._silent_for() + 0.05)
            await self._signal.wait(max(wait, 0.0))
            self._signal.clear()

    async def publish(self) -> None:
        """Put one JibriFree data point for this instance."""
        membership = await self._lookup(refresh=self._membership is None)
        if membership is None:
            return
        free = self._state().free
        try:
            await self._aws.put_jibri_free(self._namespace, membership.asg_name, free)
        except FallbackAwsError as exc:
            self._failed("publish-jibri-free", exc)
            return
        self._succeeded("publish-jibri-free")

    async def guard(self, *, refresh: bool) -> None:
        """While the controller is silent, set protection to what the instance needs."""
        silent = self._silent_for()
        active = silent > self._after
        if active != self._active:
            self._active = active
            self._metrics.fallback_active.set(int(active))
            if active:
                event(
                    log,
                    "fallback active",
                    level=logging.WARNING,
                    instance=self._instance_id,
                    silent_seconds=round(silent, 1),
                    reason="no report accepted by the controller: the agent guards its own "
                    "scale-in protection until it is back",
                )
            else:
                event(
                    log,
                    "fallback inactive",
                    instance=self._instance_id,
                    reason="the controller accepts reports again and owns protection",
                )
            refresh = True
        if not active:
            return
        membership = await self._lookup(refresh=refresh)
        if membership is None:
            return
        wanted = wants_protection(self._state())
        if wanted == membership.protected:
            return
        action = "protect" if wanted else "unprotect"
        try:
            await self._aws.set_protection(membership.asg_name, self._instance_id, wanted)
        except FallbackAwsError as exc:
            self._membership = None
            self._failed(action, exc)
            return
        self._succeeded(action)
        self._membership = Membership(membership.asg_name, wanted)
        event(
            log,
            "fallback action",
            action=action,
            instance=self._instance_id,
            group=membership.asg_name,
        )

    async def _lookup(self, *, refresh: bool) -> Membership | None:
        if self._membership is not None and not refresh:
            return self._membership
        try:
            membership = await self._aws.membership(self._instance_id)
        except FallbackAwsError as exc:
            self._failed("lookup", exc)
            return None
        self._metrics.fallback_actions.labels("lookup", "ok").inc()
        if membership is None:
            self._aws_log.failed(
                "not-in-asg", f"{self._instance_id} is in no Auto Scaling group; skipping"
            )
            return None
        self._membership = membership
        return membership

    def _failed(self, action: str, exc: FallbackAwsError) -> None:
        self._metrics.fallback_actions.labels(action, "error").inc()
        self._aws_log.failed(f"{action}-error", str(exc))

    def _succeeded(self, action: str) -> None:
        self._metrics.fallback_actions.labels(action, "ok").inc()
        self._aws_log.ok("AWS calls succeed again")

"""Reports to the controller (docs/design.md §7): every interval, and at once on a change.

Each attempt snapshots the instance afresh with a new `seq`, so a report that failed is never
re-sent stale: the retry *is* the next report. Transient failures back off with jitter, but a
change cuts the back-off short, and after one interval of retrying the periodic loop takes
over again. A 401 or 403 drops the credential, so the agent registers again
(agent/registration.py); another 4xx is not retried; each is logged once and the loop goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_delay,
    wait_exponential_jitter,
)

from agent.metrics import AgentMetrics
from agent.registration import CredentialSource
from agent.status import LocalState, Signal
from common.logs import Transitions, event
from common.wire import REPORTS_PATH, Report, ReportAnswer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    outcome: str
    """One of agent.metrics.REPORT_OUTCOMES."""
    transient: bool
    detail: str = ""
    answer: ReportAnswer | None = None


def _last_result(state: RetryCallState) -> Attempt:
    assert state.outcome is not None
    result: Attempt = state.outcome.result()
    return result


class Reporter:
    """Sends this instance's reports and hands a drain request to `on_drain`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        controller_url: str,
        credentials: CredentialSource,
        instance_id: str,
        state: Callable[[], LocalState],
        signal: Signal,
        on_drain: Callable[[], None],
        metrics: AgentMetrics,
        interval: float,
        timeout: float,
        backoff: float = 0.25,
        boot_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._url = controller_url.rstrip("/") + REPORTS_PATH
        self._credentials = credentials
        self._instance_id = instance_id
        self._state = state
        self._signal = signal
        self._on_drain = on_drain
        self._metrics = metrics
        self._interval = interval
        self._backoff_initial = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.boot_id = boot_id or str(uuid.uuid4())
        self._monotonic = monotonic
        self._seq = 0
        self.last_success_at = monotonic()
        """Monotonic time of the last accepted report (the start, before the first one)."""
        self._log = Transitions(log, "reports", url=self._url, instance=instance_id)
        self._ever_reachable = False

    def silent_for(self) -> float:
        """Seconds since the controller last accepted a report (or since the agent started)."""
        return self._monotonic() - self.last_success_at

    async def run(self) -> None:
        while True:
            await self.send()
            await self._signal.wait(self._interval)

    async def send(self) -> Attempt:
        """Report now, retrying transient failures for up to one interval."""
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda attempt: attempt.transient),
            stop=stop_after_delay(self._interval),
            wait=wait_exponential_jitter(
                multiplier=self._backoff_initial,
                max=self._interval / 2,
                jitter=self._backoff_initial,
            ),
            sleep=self._backoff,
            retry_error_callback=_last_result,
        )
        result: Attempt = await retrying(self._attempt)
        return result

    async def _backoff(self, seconds: float) -> None:
        # A change ends the back-off early: the next attempt carries it.
        await self._signal.wait(seconds)

    async def _attempt(self) -> Attempt:
        self._signal.clear()
        state = self._state()
        self._metrics.show(state)
        self._seq += 1
        report = Report(
            instanceId=self._instance_id,
            bootId=self.boot_id,
            seq=self._seq,
            jibri=state.jibri,
            draining=state.draining,
            drained=state.drained,
            pendingUploads=state.pending_uploads,
            recordingsFinished=state.recordings_finished,
            uptimeSeconds=state.uptime_seconds,
            amiId=state.ami_id,
            agentVersion=state.agent_version,
        )
        started = self._monotonic()
        credential = self._credentials.credential
        if credential is None:
            attempt = Attempt("unregistered", False, "no credential yet; registering")
        else:
            attempt = await self._post(report.model_dump_json().encode(), credential)
        self._metrics.report_duration.observe(self._monotonic() - started)
        self._metrics.reports.labels(attempt.outcome).inc()
        self._account(attempt)
        if attempt.answer is not None and attempt.answer.drain:
            self._drain()
        return attempt

    async def _post(self, body: bytes, credential: str) -> Attempt:
        headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            return Attempt("unreachable", True, f"cannot connect ({exc.os_error})")
        except TimeoutError:
            return Attempt("timeout", True, "no answer in time")
        except aiohttp.ClientError as exc:
            return Attempt("unreachable", True, f"request failed ({exc!r})")
        reason = text.strip()[:200]
        if status in (200, 202):
            try:
                answer = ReportAnswer.model_validate_json(text)
            except ValidationError:
                return Attempt("bad-answer", False, f"HTTP {status} with an unexpected body")
            return Attempt("ok" if status == 200 else "unmanaged", False, answer=answer)
        if status in (401, 403):
            # The credential is stale (new controller secret, expiry) or not ours: get another.
            self._credentials.invalidate(credential)
            return Attempt(
                "unauthorized", False, f"refused the credential (HTTP {status}): {reason}"
            )
        if status in (408, 429) or status >= 500:
            return Attempt("server-error", True, f"HTTP {status}: {reason}")
        return Attempt("rejected", False, f"rejected the report (HTTP {status}): {reason}")

    def _account(self, attempt: Attempt) -> None:
        reachable = attempt.answer is not None
        self._metrics.controller_reachable.set(int(reachable))
        if reachable:
            self.last_success_at = self._monotonic()
            self._metrics.last_report_success.set(time.time())
        if reachable and not self._ever_reachable:
            self._ever_reachable = True
            event(log, "first report accepted", url=self._url, instance=self._instance_id)
        if attempt.outcome == "ok":
            self._log.ok("accepted again")
        elif attempt.outcome == "unmanaged":
            self._log.failed(
                "unmanaged",
                f"the controller sees {self._instance_id} in no managed ASG yet (202)",
                level=logging.INFO,
            )
        elif attempt.outcome != "unregistered":
            # (Waiting for a credential is registration's to log, with its reason.)
            suffix = "; retrying" if attempt.transient else "; will keep reporting"
            self._log.failed(attempt.outcome, attempt.detail + suffix)

    def _drain(self) -> None:
        try:
            self._on_drain()
        except OSError as exc:
            # Without the marker on disk the drain would not survive a restart: do not start
            # it; the controller asks again with the next report.
            event(
                log,
                "drain not started",
                level=logging.ERROR,
                reason="writing the drain marker failed",
                error=str(exc),
            )

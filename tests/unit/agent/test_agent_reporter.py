from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from agent.jibri import UNKNOWN
from agent.metrics import AgentMetrics
from agent.registration import StaticCredential
from agent.reporter import Reporter
from agent.status import LocalState, Signal
from common.wire import BusyStatus, HealthStatus, JibriStatus
from tests.support.fake_controller import FakeController
from tests.support.loopback import eventually, free_port, serving

INSTANCE = "i-0123456789abcdef0"
IDLE = JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY)
BUSY = JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY)


@dataclass
class Rig:
    controller: FakeController
    url: str
    session: aiohttp.ClientSession
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    signal: Signal = field(default_factory=Signal)
    state: LocalState = field(
        default_factory=lambda: LocalState(IDLE, draining=False, drained=False, pending_uploads=0)
    )
    drains: int = 0

    def reporter(self, *, interval: float = 30.0, backoff: float = 0.01, url: str = "") -> Reporter:
        def on_drain() -> None:
            self.drains += 1

        return Reporter(
            self.session,
            controller_url=url or self.url,
            credentials=StaticCredential("s3cret"),
            instance_id=INSTANCE,
            state=lambda: self.state,
            signal=self.signal,
            on_drain=on_drain,
            metrics=self.metrics,
            interval=interval,
            timeout=1.0,
            backoff=backoff,
        )

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "jibri_agent_reports_total", {"outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    controller = FakeController()
    async with serving(controller.app()) as url, aiohttp.ClientSession() as session:
        yield Rig(controller, url, session)


@contextlib.asynccontextmanager
async def running(reporter: Reporter) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(reporter.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_periodic_reports_carry_boot_id_and_rising_seq(rig: Rig) -> None:
    """Reports keep coming every interval, from one bootId with a strictly rising seq."""
    async with running(rig.reporter(interval=0.05)):
        await eventually(lambda: len(rig.controller.reports) >= 4, what="four reports")
    reports = rig.controller.reports
    assert len({r.bootId for r in reports}) == 1
    assert [r.seq for r in reports] == sorted({r.seq for r in reports})
    assert reports[0].instanceId == INSTANCE
    assert reports[0].jibri == IDLE and reports[0].pendingUploads == 0
    assert rig.metrics.controller_reachable._value.get() == 1


async def test_a_change_is_reported_at_once(rig: Rig) -> None:
    """A signalled change is reported without waiting for the (long) interval."""
    async with running(rig.reporter(interval=3600)):
        await eventually(lambda: len(rig.controller.reports) == 1, what="the first report")
        rig.state = LocalState(BUSY, draining=False, drained=False, pending_uploads=1)
        rig.signal.set()
        await eventually(lambda: len(rig.controller.reports) == 2, what="the change")
    assert rig.controller.reports[1].jibri == BUSY
    assert rig.controller.reports[1].pendingUploads == 1


async def test_transient_failures_are_retried_with_fresh_reports(rig: Rig) -> None:
    """After 500s the retry succeeds, and it is a new report (new seq), not a stale copy."""
    rig.controller.replies.extend([(500, "oops"), (503, "")])
    result = await rig.reporter().send()
    assert result.outcome == "ok"
    assert [r.seq for r in rig.controller.reports] == [3]
    assert (rig.count("server-error"), rig.count("ok")) == (2, 1)


async def test_a_change_cuts_the_backoff_short(rig: Rig) -> None:
    """While backing off after a failure, a change sends the next attempt at once."""
    rig.controller.replies.extend([(503, "")])
    reporter = rig.reporter(interval=3600, backoff=600)
    send = asyncio.create_task(reporter.send())
    await eventually(lambda: rig.controller.attempts == 1, what="the failed attempt")
    rig.state = LocalState(BUSY, draining=False, drained=False, pending_uploads=0)
    rig.signal.set()
    result = await asyncio.wait_for(send, 60)
    assert result.outcome == "ok"
    assert rig.controller.reports[-1].jibri == BUSY


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        pytest.param((400, '{"error": "bad"}'), "rejected", id="bad-request"),
        pytest.param((413, ""), "rejected", id="too-large"),
        pytest.param((200, "<html>"), "bad-answer", id="garbage-answer"),
        pytest.param((200, '{"drain": "maybe"}'), "bad-answer", id="bad-drain-value"),
    ],
)
async def test_client_errors_are_not_retried(
    rig: Rig, reply: tuple[int, str], outcome: str
) -> None:
    """A 4xx or an unreadable answer is final for this report: one attempt, then wait."""
    rig.controller.replies.append(reply)
    result = await rig.reporter().send()
    assert (result.outcome, rig.controller.attempts) == (outcome, 1)
    assert rig.metrics.controller_reachable._value.get() == 0


async def test_unmanaged_answer_counts_as_reachable(rig: Rig) -> None:
    """A 202 (instance in no managed ASG yet) is an accepted report."""
    rig.controller.replies.append((202, '{"drain": false}'))
    reporter = rig.reporter()
    result = await reporter.send()
    assert result.outcome == "unmanaged"
    assert reporter.silent_for() < 5


async def test_wrong_token_logs_once_and_keeps_reporting(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """401s log one line, the loop keeps reporting, and the fix is logged once."""
    caplog.set_level(logging.INFO, logger="agent.reporter")
    rig.controller.token = "other"
    async with running(rig.reporter(interval=0.05)):
        await eventually(lambda: rig.count("unauthorized") >= 4, what="repeated 401s")
        rig.controller.token = "s3cret"
        await eventually(lambda: rig.count("ok") >= 2, what="accepted reports")
    lines = [
        " ".join([r.getMessage(), *map(str, getattr(r, "fields", {}).values())])
        for r in caplog.records
        if r.name == "agent.reporter"
    ]
    assert len(lines) == 3, lines
    assert "401" in lines[0] and "first report" in lines[1] and "accepted again" in lines[2]


async def test_unreachable_controller_gives_up_after_one_interval(rig: Rig) -> None:
    """With nothing listening, a send retries for one interval, then lets the loop go on."""
    reporter = rig.reporter(interval=0.5, url=f"http://127.0.0.1:{free_port()}")
    result = await asyncio.wait_for(reporter.send(), 30)
    assert result.outcome == "unreachable" and result.transient
    assert rig.count("unreachable") >= 2
    assert reporter.silent_for() >= 0.5


async def test_drain_answer_starts_the_drain(rig: Rig) -> None:
    """`{"drain": true}` calls on_drain; a failing on_drain (disk error) is logged, not raised."""
    rig.controller.drain = True
    await rig.reporter().send()
    assert rig.drains == 1

    def broken() -> None:
        raise OSError(28, "No space left on device")

    reporter = rig.reporter()
    reporter._on_drain = broken
    assert (await reporter.send()).outcome == "ok"


async def test_reports_show_the_state_in_metrics(rig: Rig) -> None:
    """The state gauges follow what the latest report said."""
    rig.state = LocalState(UNKNOWN, draining=True, drained=False, pending_uploads=2)
    await rig.reporter().send()
    sample: Callable[..., float | None] = rig.metrics.registry.get_sample_value
    assert sample("jibri_agent_jibri_busy", {"status": "UNKNOWN"}) == 1
    assert sample("jibri_agent_jibri_busy", {"status": "IDLE"}) == 0
    assert sample("jibri_agent_draining") == 1
    assert sample("jibri_agent_pending_uploads") == 2
    assert (sample("jibri_agent_last_report_success_timestamp_seconds") or 0) > 0

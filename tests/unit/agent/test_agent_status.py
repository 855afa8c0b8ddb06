from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent.jibri import UNKNOWN, Outcome, Probe
from agent.metrics import AgentMetrics
from agent.status import Board
from agent.webhook import webhook_app
from common import logs
from common.aiokits.tasks import NamedTask, run_until_stopped
from common.wire import BusyStatus, HealthStatus, JibriStatus
from tests.support.loopback import serving

IDLE = JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY)
BUSY = JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY)


def test_board_signals_only_changes() -> None:
    """Subscribers are woken by a new status, not by the same status again."""
    board = Board()
    signal = board.subscribe()
    assert board.observe(Probe(IDLE, Outcome.OK, 1.0)) and signal.is_set()
    signal.clear()
    assert not board.observe(Probe(IDLE, Outcome.OK, 2.0)) and not signal.is_set()
    assert board.observe(Probe(BUSY, Outcome.OK, 3.0)) and signal.is_set()


def test_jibri_exiting_is_a_change_even_if_status_stays_unknown() -> None:
    """A timeout turning into a refused connection is a change: it may mean drained."""
    board = Board()
    board.observe(Probe(UNKNOWN, Outcome.TIMEOUT, 1.0))
    assert board.observe(Probe(UNKNOWN, Outcome.UNREACHABLE, 2.0))


def test_a_poll_older_than_a_push_is_dropped() -> None:
    """A poll answered before a webhook push cannot undo the change the push announced."""
    board = Board()
    board.observe(Probe(IDLE, Outcome.OK, 1.0))
    board.observe(Probe(BUSY, Outcome.OK, 5.0), pushed=True)
    assert not board.observe(Probe(IDLE, Outcome.OK, 4.0))
    assert board.jibri == BUSY
    assert board.observe(Probe(IDLE, Outcome.OK, 6.0))


def test_pending_upload_changes_wake_subscribers() -> None:
    """A new count of pending uploads is a change."""
    board = Board()
    signal = board.subscribe()
    assert board.set_pending_uploads(1) and signal.is_set()
    signal.clear()
    assert not board.set_pending_uploads(1) and not signal.is_set()


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[Probe], AgentMetrics]]:
    received: list[Probe] = []
    metrics = AgentMetrics()
    async with serving(webhook_app(received.append, metrics)) as url:
        yield url + "/v1/status", received, metrics


async def test_webhook_turns_a_push_into_a_probe(
    webhook: tuple[str, list[Probe], AgentMetrics],
) -> None:
    """Jibri's push body {jibriId, status} becomes an OK probe with the pushed status."""
    url, received, _ = webhook
    body = {
        "jibriId": "jibri-1",
        "status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY", "details": {}}},
    }
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
    assert [(p.status, p.outcome) for p in received] == [(BUSY, Outcome.OK)]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(json.dumps({"jibriId": "x"}).encode(), id="no-status"),
        pytest.param(
            json.dumps({"status": {"busyStatus": "NAPPING", "health": {}}}).encode(),
            id="unknown-busy",
        ),
    ],
)
async def test_webhook_rejects_bad_pushes(
    webhook: tuple[str, list[Probe], AgentMetrics], body: bytes
) -> None:
    """A push that is not Jibri's status shape gets a 400 with a reason, and changes nothing."""
    url, received, metrics = webhook
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        assert response.status == 400
        assert "error" in await response.json()
    assert received == []
    assert (
        metrics.registry.get_sample_value(
            "jibri_agent_webhook_events_total", {"outcome": "rejected"}
        )
        == 1
    )


async def test_a_failing_task_stops_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """When one task fails, the run ends (False), the others are cancelled, and it is logged."""
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def broken() -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.ERROR, logger="common.tasks")
    ok = await run_until_stopped(
        [NamedTask("forever", forever), NamedTask("broken", broken)], asyncio.Event()
    )
    assert ok is False and cancelled.is_set()
    failed = [r for r in caplog.records if r.getMessage() == "task has failed"]
    assert [getattr(r, "fields", {}).get("task") for r in failed] == ["broken"]


async def test_stop_ends_the_run_cleanly() -> None:
    """Setting stop cancels every task and reports a clean stop (True)."""
    stop = asyncio.Event()

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def stopper() -> None:
        stop.set()
        await asyncio.sleep(3600)

    assert await run_until_stopped([NamedTask("a", forever), NamedTask("b", stopper)], stop)


async def test_a_task_that_returns_is_reported() -> None:
    """A task meant to run forever that returns stops the run as a failure."""

    async def quits() -> None:
        return None

    assert await run_until_stopped([NamedTask("quits", quits)], asyncio.Event()) is False


def test_json_log_lines_are_one_object_each() -> None:
    """--log-format json writes one JSON object per line, with level, logger and event."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("info", "json", stream)
        logging.getLogger("agent.test").warning("jibri health: %s", "unreachable")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    document = json.loads(line)
    assert (document["level"], document["logger"]) == ("warning", "agent.test")
    assert document["event"] == "jibri health: unreachable"

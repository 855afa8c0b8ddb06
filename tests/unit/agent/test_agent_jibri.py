from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from agent.jibri import UNKNOWN, JibriClient, MalformedStatus, Outcome, parse_health, parse_status
from common.wire import BusyStatus, HealthStatus, JibriStatus
from tests.support.loopback import free_port, serving


def _status(busy: object, health: object = "HEALTHY") -> dict[str, object]:
    return {"busyStatus": busy, "health": {"healthStatus": health, "details": {}}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(_status("IDLE"), (BusyStatus.IDLE, HealthStatus.HEALTHY), id="idle"),
        pytest.param(_status("BUSY"), (BusyStatus.BUSY, HealthStatus.HEALTHY), id="busy"),
        pytest.param(_status("EXPIRED"), (BusyStatus.EXPIRED, HealthStatus.HEALTHY), id="expired"),
        pytest.param(
            _status("IDLE", "UNHEALTHY"), (BusyStatus.IDLE, HealthStatus.UNHEALTHY), id="unhealthy"
        ),
    ],
)
def test_parse_status_maps_jibri_values(
    status: dict[str, object], expected: tuple[BusyStatus, HealthStatus]
) -> None:
    """Each of Jibri's busy and health values maps to the wire enum of the same name."""
    assert parse_status(status) == JibriStatus(busyStatus=expected[0], healthStatus=expected[1])


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(None, id="missing"),
        pytest.param("IDLE", id="not-an-object"),
        pytest.param(_status("UNKNOWN"), id="unknown-is-ours-not-jibris"),
        pytest.param(_status("SLEEPING"), id="unknown-busy"),
        pytest.param(_status(1), id="busy-not-a-string"),
        pytest.param({"busyStatus": "IDLE"}, id="no-health"),
        pytest.param({"busyStatus": "IDLE", "health": "HEALTHY"}, id="health-not-an-object"),
        pytest.param(_status("IDLE", "FINE"), id="unknown-health"),
    ],
)
def test_parse_status_rejects_other_shapes(status: object) -> None:
    """Anything but Jibri's documented status shape is malformed, never guessed at."""
    with pytest.raises(MalformedStatus):
        parse_status(status)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"<html>", id="html"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"status": {"busyStatus": ', id="truncated"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_parse_health_rejects_non_json(body: bytes) -> None:
    """A health body that is not a JSON object is malformed."""
    with pytest.raises(MalformedStatus):
        parse_health(body)


class _Jibri:
    """A scriptable health endpoint: answer with `reply` (status, body) or sleep `delay`."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes] = (200, json.dumps({"status": _status("IDLE")}).encode())
        self.delay = 0.0
        self.shutdowns = 0

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            await asyncio.sleep(self.delay)
            return web.Response(status=self.reply[0], body=self.reply[1])

        async def shutdown(request: web.Request) -> web.Response:
            self.shutdowns += 1
            return web.Response(status=200)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_post("/shutdown", shutdown)
        return app


@pytest.fixture
async def jibri() -> AsyncIterator[tuple[_Jibri, JibriClient]]:
    fake = _Jibri()
    async with serving(fake.app()) as url, aiohttp.ClientSession() as session:
        yield (
            fake,
            JibriClient(
                session, health_url=url + "/health", shutdown_url=url + "/shutdown", timeout=0.5
            ),
        )


async def test_probe_reads_a_busy_jibri(jibri: tuple[_Jibri, JibriClient]) -> None:
    """A BUSY answer with an environmentContext is read as BUSY/HEALTHY."""
    fake, client = jibri
    fake.reply = (200, json.dumps({"status": _status("BUSY"), "environmentContext": {}}).encode())
    probe = await client.probe()
    assert probe.outcome is Outcome.OK
    assert probe.status == JibriStatus(
        busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY
    )


@pytest.mark.parametrize(
    ("reply", "delay", "outcome"),
    [
        pytest.param((200, b"{oops"), 0.0, Outcome.MALFORMED, id="malformed"),
        pytest.param((500, b"boom"), 0.0, Outcome.HTTP_ERROR, id="http-500"),
        pytest.param((200, b"{}"), 2.0, Outcome.TIMEOUT, id="timeout"),
    ],
)
async def test_probe_failures_report_unknown(
    jibri: tuple[_Jibri, JibriClient], reply: tuple[int, bytes], delay: float, outcome: Outcome
) -> None:
    """A bad, failing or slow answer is UNKNOWN/UNKNOWN, with the outcome saying which."""
    fake, client = jibri
    fake.reply, fake.delay = reply, delay
    probe = await client.probe()
    assert (probe.status, probe.outcome) == (UNKNOWN, outcome)
    assert probe.answered is (outcome is not Outcome.TIMEOUT)


async def test_probe_of_a_stopped_jibri_is_unreachable() -> None:
    """Nothing listening is UNREACHABLE (the process exited), not an exception."""
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        client = JibriClient(session, health_url=url, shutdown_url=url, timeout=1)
        probe = await client.probe()
        accepted = await client.graceful_shutdown()
    assert (probe.status, probe.outcome, probe.answered) == (UNKNOWN, Outcome.UNREACHABLE, False)
    assert accepted is False


async def test_failures_log_one_line_per_transition(
    jibri: tuple[_Jibri, JibriClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated failures log once when they start, once when they change, once on recovery."""
    fake, client = jibri
    good = fake.reply
    caplog.set_level(logging.INFO, logger="agent.jibri")
    fake.reply = (200, b"{oops")
    for _ in range(3):
        await client.probe()
    fake.reply = (503, b"")
    for _ in range(3):
        await client.probe()
    fake.reply = good
    for _ in range(3):
        await client.probe()
    lines = [
        " ".join([r.getMessage(), *map(str, getattr(r, "fields", {}).values())])
        for r in caplog.records
        if r.name == "agent.jibri"
    ]
    assert len(lines) == 3, lines
    assert "malformed" in lines[0] and "HTTP 503" in lines[1] and "answering again" in lines[2]


async def test_graceful_shutdown_is_accepted(jibri: tuple[_Jibri, JibriClient]) -> None:
    """A 2xx answer to gracefulShutdown counts as accepted."""
    fake, client = jibri
    assert await client.graceful_shutdown() is True
    assert fake.shutdowns == 1

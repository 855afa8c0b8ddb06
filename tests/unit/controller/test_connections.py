"""The HTTP side's connection bounds, on the real app and server on a loopback port: the cap
on open connections, idle and body timeouts, and one log line per condition."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from controller.actuator import Actuator
from controller.aws import AutoScaling
from controller.http.connections import HttpLimits, connection_cap
from controller.http.server import Server, ServerContext, make_app
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.spec import parse_desired_state
from controller.store import ReportStore
from tests.support.fake_autoscaling import FakeAutoScaling, ManualClock
from tests.support.report_auth import SharedTokenAuth

TOKEN = "s3cret-token"
INSTANCE = "i-0fffffffffffffff0"
POOL = """\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {name: recorders}
spec:
  autoScalingGroupName: jibri
  capacity: {min: 0, max: 10}
  targetFree: 1
"""
REPORT = json.dumps(
    {
        "instanceId": INSTANCE,
        "bootId": "b",
        "seq": 1,
        "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
    }
).encode()
HEAD = (
    b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REPORT)
)


@dataclass
class Running:
    server: Server
    url: str
    host: str
    port: int
    clock: ManualClock

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


async def start(limits: HttpLimits) -> Running:
    """The real app (no pool running) on a Server bound to 127.0.0.1:0."""
    fake = FakeAutoScaling()
    clock = ManualClock()
    metrics = Metrics()

    async def autoscaling(region: str | None) -> AutoScaling:
        return fake

    controller = Controller(
        state=parse_desired_state(POOL, "pools.yaml"),
        store=ReportStore(),
        metrics=metrics,
        autoscaling=autoscaling,
        actuator=Actuator(metrics=metrics, clock=clock, dry_run=False),
        clock=clock.as_clock(),
    )
    context = ServerContext(
        controller=controller,
        metrics=metrics,
        auth=SharedTokenAuth(TOKEN),
        clock=clock,
        body_timeout=limits.body_timeout,
    )
    server = Server(make_app(context), "127.0.0.1", 0, limits, clock=clock)
    await server.start()
    host, _, port = server.addresses[0].rpartition(":")
    return Running(server, f"http://{server.addresses[0]}", host, int(port), clock)


@pytest.fixture
async def small() -> AsyncIterator[Running]:
    running = await start(HttpLimits(max_connections=8, idle_timeout=30.0, body_timeout=0.2))
    try:
        yield running
    finally:
        await running.server.close()


async def wait_until(check: Callable[[], object], what: str) -> None:
    """Yield to the server until `check()` holds; fail naming `what` after 10 s."""
    try:
        async with asyncio.timeout(10):
            while not check():  # noqa: ASYNC110 - the state lives in the server, no event
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == text]


async def test_idle_flood_beyond_the_cap_leaves_healthz_and_reports_served(
    small: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """40 idle connections against a cap of 8: open connections stay at the cap, /healthz
    answers, a report gets through, and the limit is logged once with no ERROR lines."""
    caplog.set_level(logging.INFO)
    idle = [await small.connect() for _ in range(40)]
    await wait_until(lambda: small.server.guard.open_count == 8, "the cap to fill")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{small.url}/healthz") as health:
            assert health.status == 200
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with session.post(f"{small.url}/v1/reports", data=REPORT, headers=headers) as r:
            assert r.status == 202
    assert small.server.guard.open_count <= 8
    assert len(messages(caplog, "connection limit reached")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for _, writer in idle:
        writer.close()


async def test_connection_over_a_busy_cap_is_answered_503(small: Running) -> None:
    """When every connection under the cap is mid-request, a new one gets 503 with a JSON
    reason at once and is closed."""
    stalled = []
    for _ in range(8):
        reader, writer = await small.connect()
        writer.write(HEAD + REPORT[:10])
        stalled.append((reader, writer))
    await wait_until(lambda: small.server.guard.busy_count == 8, "8 requests under way")
    reader, writer = await small.connect()
    answer = await reader.read()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert "too many connections" in json.loads(content)["error"]
    writer.close()
    for _, other in stalled:
        other.close()


async def test_limit_logged_once_then_below_once(
    small: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Reaching the cap logs one line, however many connections follow; once the idle ones
    are gone, the next connection logs one "below limit" line with what was evicted."""
    caplog.set_level(logging.INFO)
    flood = [await small.connect() for _ in range(20)]
    await wait_until(lambda: small.server.guard.open_count == 8, "the cap to fill")
    for _, writer in flood:
        writer.close()
    # Each connection closed by its client (or evicted) ends on the server side too.
    for reader, _ in flood:
        await reader.read()
    small.clock.advance(2.0)  # past the guard's grace for handlers not yet connected
    reader, writer = await small.connect()
    await wait_until(lambda: messages(caplog, "connections below limit"), "the below line")
    (reached,) = messages(caplog, "connection limit reached")
    (below,) = messages(caplog, "connections below limit")
    assert below.fields["evicted"] == 12  # type: ignore[attr-defined]
    assert reached.levelno == logging.WARNING
    writer.close()


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthor", id="half-a-head"),
    ],
)
async def test_connection_without_a_request_head_is_closed_after_idle_timeout(
    sent: bytes,
) -> None:
    """A connection that sends no request head, or only part of one, is closed once the
    idle timeout passes."""
    running = await start(HttpLimits(idle_timeout=0.2))
    try:
        reader, writer = await running.connect()
        writer.write(sent)
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()
    finally:
        await running.server.close()


async def test_body_not_sent_in_time_is_408_and_closed(small: Running) -> None:
    """A client that sends its headers and stalls mid-body gets 408 with a JSON reason once
    the body timeout passes, and the connection is closed soon after."""
    reader, writer = await small.connect()
    writer.write(HEAD + REPORT[:10])
    async with asyncio.timeout(10):
        answer = await reader.read()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(content)["error"] == "body not received within 0.2 s"
    writer.close()


@pytest.mark.parametrize(
    ("requested", "soft_limit", "cap"),
    [
        pytest.param(1024, 256, 176, id="lowered-to-fit-256-fds"),
        pytest.param(1024, 1_048_576, 1024, id="plenty-of-fds"),
        pytest.param(1024, resource.RLIM_INFINITY, 1024, id="unlimited"),
        pytest.param(1024, 10, 1, id="at-least-one"),
    ],
)
def test_connection_cap_fits_the_file_descriptor_limit(
    requested: int, soft_limit: int, cap: int
) -> None:
    """The cap leaves file descriptors for AWS clients and files under a low fd limit."""
    assert connection_cap(requested, soft_limit) == cap

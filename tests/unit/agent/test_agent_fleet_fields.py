"""What the agent reports for fleet operations (docs/fleet-operations.md): recordings finished
since boot, its image and version, and its uptime; and that the controller's wire contract
still takes a report without them (older agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from agent.about import AGENT_VERSION, image_id, uptime_seconds
from agent.jibri import UNKNOWN, Outcome, Probe
from agent.status import Board, LocalState
from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from tests.support.fake_controller import FakeController
from tests.support.loopback import eventually, serving
from tests.unit.agent.test_agent_reporter import Rig, running

IDLE = JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY)
BUSY = JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY)
EXPIRED = JibriStatus(busyStatus=BusyStatus.EXPIRED, healthStatus=HealthStatus.HEALTHY)


@pytest.mark.parametrize(
    ("statuses", "finished"),
    [
        pytest.param([IDLE, BUSY, IDLE], 1, id="busy-then-idle"),
        pytest.param([IDLE, BUSY, BUSY, IDLE, IDLE], 1, id="repeats-count-once"),
        pytest.param([BUSY, IDLE, BUSY, IDLE], 2, id="two"),
        pytest.param([BUSY, UNKNOWN, IDLE], 1, id="gap-of-unknown-counts-once"),
        pytest.param([BUSY, EXPIRED], 1, id="single-use-expires"),
        pytest.param([IDLE, IDLE, UNKNOWN, IDLE], 0, id="never-busy"),
        pytest.param([BUSY, UNKNOWN], 0, id="still-unfinished"),
    ],
)
def test_board_counts_recordings_finished(statuses: list[JibriStatus], finished: int) -> None:
    """Each BUSY followed by IDLE or EXPIRED counts one finished recording."""
    board = Board()
    for at, status in enumerate(statuses):
        board.observe(Probe(status, Outcome.OK, float(at)))
    assert board.recordings_finished == finished


def test_agent_knows_its_version_and_uptime() -> None:
    """The version comes from the installed package metadata, the uptime from the OS."""
    assert AGENT_VERSION is not None and AGENT_VERSION[0].isdigit()
    up = uptime_seconds()
    assert up is not None and up > 0


def test_report_without_the_new_fields_still_validates() -> None:
    """A report from an agent older than the fleet fields is taken, with their defaults."""
    old = Report.model_validate_json(
        b'{"instanceId":"i-0123456789abcdef0","bootId":"b","seq":1,'
        b'"jibri":{"busyStatus":"IDLE","healthStatus":"HEALTHY"}}'
    )
    assert (old.recordingsFinished, old.amiId, old.agentVersion, old.uptimeSeconds) == (
        0,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(b'"recordingsFinished":"3"', id="count-as-string"),
        pytest.param(b'"recordingsFinished":-1', id="negative-count"),
        pytest.param(b'"amiId":"ubuntu"', id="not-an-ami"),
        pytest.param(b'"uptimeSeconds":1.5', id="fractional-uptime"),
        pytest.param(b'"agentVersion":""', id="empty-version"),
    ],
)
def test_bad_fleet_fields_are_refused(fields: bytes) -> None:
    """The strict contract refuses a malformed fleet field rather than guessing."""
    body = (
        b'{"instanceId":"i-0123456789abcdef0","bootId":"b","seq":1,'
        b'"jibri":{"busyStatus":"IDLE","healthStatus":"HEALTHY"},' + fields + b"}"
    )
    with pytest.raises(ValueError):
        Report.model_validate_json(body)


class _Imds:
    """IMDSv2 on loopback serving only a token and the AMI id (`ami` None: 404)."""

    def __init__(self, ami: str | None) -> None:
        self.ami = ami

    def app(self) -> web.Application:
        async def token(request: web.Request) -> web.Response:
            return web.Response(text="t")

        async def ami(request: web.Request) -> web.Response:
            if request.headers.get("X-aws-ec2-metadata-token") != "t" or self.ami is None:
                return web.Response(status=404)
            return web.Response(text=self.ami)

        app = web.Application()
        app.router.add_put("/latest/api/token", token)
        app.router.add_get("/latest/meta-data/ami-id", ami)
        return app


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        pytest.param("ami-0123456789abcdef0", "ami-0123456789abcdef0", id="valid"),
        pytest.param("not-an-ami", None, id="invalid-is-dropped"),
        pytest.param(None, None, id="missing-is-none"),
    ],
)
async def test_image_id_from_imds(served: str | None, expected: str | None) -> None:
    """The AMI id comes from IMDSv2's meta-data; an invalid or missing one is None, not fatal."""
    async with serving(_Imds(served).app()) as url, aiohttp.ClientSession() as session:
        assert await image_id(session, url, 2.0) == expected


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    controller = FakeController()
    async with serving(controller.app()) as url, aiohttp.ClientSession() as session:
        yield Rig(controller, url, session)


async def test_reports_carry_the_fleet_fields(rig: Rig) -> None:
    """The reporter sends what the local state says of recordings, image, version and uptime."""
    rig.state = LocalState(
        IDLE,
        draining=False,
        drained=False,
        pending_uploads=0,
        recordings_finished=7,
        ami_id="ami-0123456789abcdef0",
        agent_version="1.2.3",
        uptime_seconds=3600,
    )
    async with running(rig.reporter(interval=3600)):
        await eventually(lambda: len(rig.controller.reports) == 1, what="the first report")
    sent = rig.controller.reports[0]
    assert (sent.recordingsFinished, sent.amiId, sent.agentVersion, sent.uptimeSeconds) == (
        7,
        "ami-0123456789abcdef0",
        "1.2.3",
        3600,
    )

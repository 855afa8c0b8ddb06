"""The fake Jibri the agent's end-to-end tests and the sandbox rely on."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sandbox.fake_jibri import FakeJibri, NotIdle
from tests.support.loopback import eventually, serving


class Subscriber:
    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        async def status(request: web.Request) -> web.Response:
            self.pushes.append(await request.json())
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/v1/status", status)
        return app

    def busy(self) -> list[str]:
        return [p["status"]["busyStatus"] for p in self.pushes]


@pytest.fixture
async def subscriber() -> AsyncIterator[tuple[Subscriber, str]]:
    sub = Subscriber()
    async with serving(sub.app()) as url:
        yield sub, url


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post(url: str, body: dict[str, Any] | None = None) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status


async def test_health_shape_follows_jibri(subscriber: tuple[Subscriber, str]) -> None:
    """Health has status.busyStatus/health; environmentContext only while recording."""
    _, url = subscriber
    fake = FakeJibri(subscribers=[url])
    await fake.start()
    try:
        _, idle = await get_json(fake.health_url)
        await fake.start_recording("s1")
        _, busy = await get_json(fake.health_url)
        fake.set_healthy(False, "chrome crashed")
        _, sick = await get_json(fake.health_url)
    finally:
        await fake.close()
    assert idle == {
        "status": {"busyStatus": "IDLE", "health": {"healthStatus": "HEALTHY", "details": {}}}
    }
    assert busy["status"]["busyStatus"] == "BUSY" and busy["environmentContext"] == {"name": "s1"}
    assert sick["status"]["health"] == {
        "healthStatus": "UNHEALTHY",
        "details": {"reason": "chrome crashed"},
    }


async def test_every_change_is_pushed_in_order(subscriber: tuple[Subscriber, str]) -> None:
    """Each status change reaches the webhook subscriber as {jibriId, status}, in order."""
    sub, url = subscriber
    fake = FakeJibri(jibri_id="j1", subscribers=[url], single_use=True)
    await fake.start()
    try:
        await fake.start_recording("s1")
        await fake.stop_recording()
        await eventually(lambda: len(sub.pushes) == 2, what="two pushes")
    finally:
        await fake.close()
    assert sub.busy() == ["BUSY", "EXPIRED"]
    assert sub.pushes[0]["jibriId"] == "j1"
    with pytest.raises(NotIdle):
        await fake.start_recording("s2")


async def test_graceful_shutdown_when_idle_stops_serving() -> None:
    """An idle Jibri exits on gracefulShutdown: its port stops answering."""
    fake = FakeJibri()
    await fake.start()
    try:
        assert await post(fake.shutdown_url) == 200
        await eventually(fake.exited.is_set, what="exit")
        with pytest.raises(aiohttp.ClientConnectorError):
            await get_json(fake.health_url)
    finally:
        await fake.close()


async def test_graceful_shutdown_waits_for_the_recording() -> None:
    """A busy Jibri keeps serving after gracefulShutdown until its recording ends."""
    fake = FakeJibri()
    await fake.start()
    try:
        await fake.start_recording("s1")
        assert await post(fake.shutdown_url) == 200
        status, body = await get_json(fake.health_url)
        assert (status, body["status"]["busyStatus"]) == (200, "BUSY")
        assert not fake.exited.is_set()
        with pytest.raises(NotIdle):
            await fake.start_recording("s2")
        await fake.stop_recording()
        assert fake.exited.is_set()
    finally:
        await fake.close()


async def test_before_shutdown_hook_models_the_drain_race() -> None:
    """A recording started by the hook, just before the shutdown lands, delays the exit."""
    fake = FakeJibri()

    async def race() -> None:
        await fake.start_recording("late", duration=0.2)

    fake.before_shutdown.append(race)
    await fake.start()
    try:
        assert await post(fake.shutdown_url) == 200
        assert fake.busy_status == "BUSY"
        await eventually(fake.exited.is_set, what="exit after the recording")
        assert fake.busy_status == "IDLE"
    finally:
        await fake.close()


async def test_finalize_command_gets_a_recording_dir(tmp_path: Path) -> None:
    """At a recording's end the finalize command runs with a dir holding media and metadata."""
    seen = tmp_path / "seen.txt"
    script = f"import sys; open({str(seen)!r}, 'w').write(sys.argv[1])"
    fake = FakeJibri(
        finalize_command=[sys.executable, "-c", script], recordings_dir=tmp_path / "recordings"
    )
    await fake.start()
    try:
        await fake.start_recording("s1", duration=0.05)
        await eventually(lambda: fake.busy_status == "IDLE", what="the end of the recording")
    finally:
        await fake.close()
    directory = Path(seen.read_text())
    assert directory == tmp_path / "recordings" / "s1"
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["meeting_url"].startswith("https://")
    assert ".mp4" in suffixes(directory)


def suffixes(directory: Path) -> set[str]:
    return {p.suffix for p in directory.iterdir()}


async def test_control_api_drives_it_from_another_process() -> None:
    """The control API starts and stops recordings, flips health, and shows the state."""
    fake = FakeJibri(control_port=0)  # binds a free port itself; control_url names it
    await fake.start()
    control = fake.control_url + "/control"
    try:
        assert await post(control + "/start", {"sessionId": "s1"}) == 200
        assert await post(control + "/start", {"sessionId": "s2"}) == 409
        assert await post(control + "/start", {"duration": 1}) == 400
        assert await post(control + "/health", {"healthy": False}) == 200
        _, state = await get_json(control + "/state")
        assert (state["busyStatus"], state["sessionId"]) == ("BUSY", "s1")
        assert state["health"]["healthStatus"] == "UNHEALTHY"
        assert await post(control + "/stop") == 200
        assert await post(control + "/stop") == 409
        assert await post(control + "/malformed", {"on": True}) == 200
        async with aiohttp.ClientSession() as session, session.get(fake.health_url) as response:
            with pytest.raises(ValueError):
                json.loads(await response.text())
    finally:
        await fake.close()


async def test_restart_serves_again_on_the_same_port() -> None:
    """After an exit, restart() brings Jibri back idle on its old port."""
    fake = FakeJibri()
    await fake.start()
    try:
        port = fake.port
        await post(fake.shutdown_url)
        await eventually(fake.exited.is_set, what="exit")
        await fake.restart()
        status, body = await get_json(fake.health_url)
        assert (fake.port, status, body["status"]["busyStatus"]) == (port, 200, "IDLE")
    finally:
        await fake.close()

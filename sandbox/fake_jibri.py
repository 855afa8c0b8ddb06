"""A fake Jibri that speaks the real Jibri's local HTTP API, for tests and the sandbox.

Real endpoints:
    GET  /jibri/api/v1.0/health                     busyStatus, health, environmentContext
    POST /jibri/api/internal/v1.0/gracefulShutdown  stop serving once idle
    webhook: POST {subscriber}/v1/status {"jibriId", "status"} on every change

Driven in-process (`await fake.start_recording("s1", duration=5)`, `set_healthy(False)`, …) or
from another process through the control API on its own port:
    GET /control/state
    POST /control/start {"sessionId": "s1", "duration": 5}    409 if not idle
    POST /control/stop                                       409 if not recording
    POST /control/health {"healthy": false, "reason": "…"}
    POST /control/malformed {"on": true}                     health answers garbage

When a recording ends and a finalize command is set, the fake writes a recording directory
(a small media file and metadata.json with a meeting_url) and runs `COMMAND DIR`, staying BUSY
until the command returns, as Jibri does with its finalize script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("fake_jibri")

HEALTH_PATH = "/jibri/api/v1.0/health"
SHUTDOWN_PATH = "/jibri/api/internal/v1.0/gracefulShutdown"


class NotIdle(Exception):
    """A recording cannot start: Jibri is busy, expired, shutting down or gone."""


@dataclass
class _Recording:
    session_id: str
    started_at: float
    timer: asyncio.Task[None] | None


class FakeJibri:
    def __init__(
        self,
        *,
        jibri_id: str = "fake-jibri",
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int | None = None,
        subscribers: Sequence[str] = (),
        single_use: bool = False,
        finalize_command: Sequence[str] | None = None,
        recordings_dir: Path | None = None,
        meeting_base_url: str = "https://meet.example.com",
    ) -> None:
        self.jibri_id = jibri_id
        self.host = host
        self.port = port
        self.control_port = control_port
        self.single_use = single_use
        self.finalize_command = list(finalize_command) if finalize_command else None
        self.recordings_dir = recordings_dir
        self.meeting_base_url = meeting_base_url
        self.busy_status = "IDLE"
        self.healthy = True
        self.unhealthy_reason = ""
        self.malformed = False
        self.shutdown_requested = False
        self.exited = asyncio.Event()
        self.recording: _Recording | None = None
        self.finalized: list[Path] = []
        self.history: list[tuple[str, float, float]] = []
        """Finished recordings: (session id, start, end) in wall-clock seconds."""
        self.shutdown_calls = 0
        self.before_shutdown: list[Callable[[], Awaitable[None]]] = []
        """Awaited when a gracefulShutdown arrives, before Jibri acts on it (races in tests)."""
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._pushers: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._api: web.AppRunner | None = None
        self._control: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        for url in subscribers:
            self.subscribe(url)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.base_url + HEALTH_PATH

    @property
    def shutdown_url(self) -> str:
        return self.base_url + SHUTDOWN_PATH

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    async def start(self) -> None:
        """Serve the Jibri API (and the control API, if it has a port)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._start_pushers()
        if self.control_port is not None and self._control is None:
            self._control, self.control_port = await _serve(
                self._control_app(), self.host, self.control_port
            )
        await self._serve_api()

    async def _serve_api(self) -> None:
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_post(SHUTDOWN_PATH, self._graceful_shutdown)
        self._api, self.port = await _serve(app, self.host, self.port)
        self.exited.clear()

    async def restart(self) -> None:
        """Come back after an exit, idle and fresh, on the same port (a service restart)."""
        if self._api is not None:
            return
        self.busy_status = "IDLE"
        self.shutdown_requested = False
        await self._serve_api()
        self._changed()

    @property
    def pushing(self) -> bool:
        """Every subscriber has its pusher running (changes from now on reach them)."""
        return all(url in self._pushers for url in self._queues)

    async def crash(self) -> None:
        """Stop serving at once, mid-recording or not, as a killed Jibri process would."""
        await self._exit()

    async def close(self) -> None:
        """Stop everything, in-flight recordings included, without finalizing."""
        if self.recording is not None and self.recording.timer is not None:
            self.recording.timer.cancel()
        await self._exit()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _exit(self) -> None:
        if self._api is not None:
            runner, self._api = self._api, None
            await runner.cleanup()
            log.info("%s exited", self.jibri_id)
        self.exited.set()

    # -- behaviour ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        health: dict[str, Any] = {"healthStatus": "HEALTHY" if self.healthy else "UNHEALTHY"}
        health["details"] = {} if self.healthy else {"reason": self.unhealthy_reason}
        return {"busyStatus": self.busy_status, "health": health}

    def subscribe(self, url: str) -> None:
        """Push every status change to `url` + /v1/status, in order."""
        self._queues.setdefault(url, asyncio.Queue())
        if self._session is not None:
            self._start_pushers()

    def unsubscribe(self, url: str) -> None:
        """Stop pushing to `url` (a restarted subscriber listens elsewhere)."""
        self._queues.pop(url, None)
        pusher = self._pushers.pop(url, None)
        if pusher is not None:
            pusher.cancel()

    def _start_pushers(self) -> None:
        for url, queue in self._queues.items():
            if url not in self._pushers:
                task = asyncio.get_running_loop().create_task(self._push(url, queue))
                self._pushers[url] = task
                self._tasks.append(task)

    async def start_recording(self, session_id: str, duration: float | None = None) -> None:
        if self._api is None or self.shutdown_requested or self.busy_status != "IDLE":
            raise NotIdle(f"{self.jibri_id} is {self._describe()}")
        timer = None
        if duration is not None:
            timer = asyncio.get_running_loop().create_task(self._end_after(duration))
            self._tasks.append(timer)
        self.recording = _Recording(session_id, time.time(), timer)
        self.busy_status = "BUSY"
        log.info("%s recording %s", self.jibri_id, session_id)
        self._changed()

    async def stop_recording(self) -> None:
        """End the recording: finalize (still BUSY), then IDLE or EXPIRED, then maybe exit."""
        recording = self.recording
        if recording is None:
            raise NotIdle(f"{self.jibri_id} is not recording")
        self.recording = None
        current = asyncio.current_task()
        if recording.timer is not None and recording.timer is not current:
            recording.timer.cancel()
        if self.finalize_command is not None:
            await self._finalize(recording)
        self.busy_status = "EXPIRED" if self.single_use else "IDLE"
        self.history.append((recording.session_id, recording.started_at, time.time()))
        log.info("%s finished %s", self.jibri_id, recording.session_id)
        self._changed()
        if self.shutdown_requested:
            await self._exit()

    def set_healthy(self, healthy: bool, reason: str = "set unhealthy by the test") -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            self.unhealthy_reason = "" if healthy else reason
            self._changed()

    def set_malformed(self, on: bool) -> None:
        self.malformed = on

    def _describe(self) -> str:
        if self._api is None:
            return "not running"
        return "shutting down" if self.shutdown_requested else self.busy_status

    def _changed(self) -> None:
        body = {"jibriId": self.jibri_id, "status": self.status()}
        for queue in self._queues.values():
            queue.put_nowait(body)

    async def _end_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.stop_recording()

    async def _finalize(self, recording: _Recording) -> None:
        assert self.finalize_command is not None and self.recordings_dir is not None
        directory = self.recordings_dir / recording.session_id
        directory.mkdir(parents=True, exist_ok=True)
        room = f"room-{recording.session_id}"
        (directory / f"{room}_{int(recording.started_at)}.mp4").write_bytes(b"\0" * 4096)
        metadata = {
            "meeting_url": f"{self.meeting_base_url}/{room}",
            "participants": [],
            "started": recording.started_at,
        }
        (directory / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        process = await asyncio.create_subprocess_exec(*self.finalize_command, str(directory))
        code = await process.wait()
        if code != 0:
            log.warning("%s: finalize command exited %s for %s", self.jibri_id, code, directory)
        self.finalized.append(directory)

    async def _push(self, url: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        target = url.rstrip("/") + "/v1/status"
        while True:
            body = await queue.get()
            assert self._session is not None
            try:
                async with self._session.post(target, json=body) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("%s: webhook %s failed: %r", self.jibri_id, target, exc)

    # -- HTTP --------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        if self.malformed:
            return web.Response(text='{"status": {"busyStatus": ', content_type="application/json")
        body: dict[str, Any] = {"status": self.status()}
        if self.recording is not None:
            body["environmentContext"] = {"name": self.recording.session_id}
        return web.json_response(body)

    async def _graceful_shutdown(self, request: web.Request) -> web.Response:
        self.shutdown_calls += 1
        for hook in list(self.before_shutdown):
            await hook()
        if not self.shutdown_requested:
            log.info("%s: graceful shutdown requested (%s)", self.jibri_id, self.busy_status)
        self.shutdown_requested = True
        if self.busy_status != "BUSY":
            # Answer first, then exit, as Jibri does.
            asyncio.get_running_loop().call_later(0.05, self._spawn_exit)
        return web.Response(status=200)

    def _spawn_exit(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._exit()))

    def _control_app(self) -> web.Application:
        async def state(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    **self.status(),
                    "sessionId": self.recording.session_id if self.recording else None,
                    "shutdownRequested": self.shutdown_requested,
                    "running": self._api is not None,
                    "finalized": [str(p) for p in self.finalized],
                }
            )

        async def start(request: web.Request) -> web.Response:
            body = await _json(request)
            try:
                session_id = str(body["sessionId"])
                duration = None if body.get("duration") is None else float(body["duration"])
            except (KeyError, TypeError, ValueError):
                return web.json_response(
                    {"error": "need sessionId and an optional numeric duration"}, status=400
                )
            try:
                await self.start_recording(session_id, duration)
            except NotIdle as exc:
                return web.json_response({"error": str(exc)}, status=409)
            return web.json_response({})

        async def stop(request: web.Request) -> web.Response:
            try:
                await self.stop_recording()
            except NotIdle as exc:
                return web.json_response({"error": str(exc)}, status=409)
            return web.json_response({})

        async def health(request: web.Request) -> web.Response:
            body = await _json(request)
            self.set_healthy(bool(body.get("healthy", True)), str(body.get("reason", "")))
            return web.json_response({})

        async def malformed(request: web.Request) -> web.Response:
            self.set_malformed(bool((await _json(request)).get("on", True)))
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/control/state", state)
        app.router.add_post("/control/start", start)
        app.router.add_post("/control/stop", stop)
        app.router.add_post("/control/health", health)
        app.router.add_post("/control/malformed", malformed)
        return app


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text="the body is not JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object")
    return body


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.fake_jibri", description="A fake Jibri on loopback."
    )
    parser.add_argument("--jibri-id", default="fake-jibri")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2222, help="health and internal API")
    parser.add_argument("--control-port", type=int, default=None, help="control API")
    parser.add_argument(
        "--webhook", action="append", default=[], metavar="URL", help="subscriber base URL"
    )
    parser.add_argument("--single-use", action="store_true", help="EXPIRED after a recording")
    parser.add_argument(
        "--finalize-command", default=None, metavar="CMD", help="run as CMD DIR after a recording"
    )
    parser.add_argument("--recordings-dir", type=Path, default=None, metavar="DIR")
    return parser


async def _main(args: argparse.Namespace) -> int:
    fake = FakeJibri(
        jibri_id=args.jibri_id,
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        subscribers=args.webhook,
        single_use=args.single_use,
        finalize_command=shlex.split(args.finalize_command) if args.finalize_command else None,
        recordings_dir=args.recordings_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await fake.start()
    log.info("%s serving on %s (control %s)", fake.jibri_id, fake.base_url, fake.control_port)
    # A graceful shutdown ends the process, as it ends Jibri's.
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(fake.exited.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    await fake.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.finalize_command and args.recordings_dir is None:
        _parser().error("--finalize-command needs --recordings-dir")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())

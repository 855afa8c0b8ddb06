"""A fake jicofo REST API on loopback: `/metrics` in Prometheus text (a real prometheus_client
registry, so the exposition format is the library's) and `/stats` in JSON, with the Jibri
counter and gauge under jicofo's names. A test drives it: `fail(n)` counts n requests that
found no Jibri, `restart()` starts the counter again from zero, `broken` serves an error.

It stands in for jicofo, which needs XMPP and a brewery to run; only the metric names and
formats matter to the controller, and those are jicofo's own (JibriStats.kt,
JibriDetectorMetrics.kt in jitsi/jicofo).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tests.support.loopback import serving


class FakeJicofo:
    def __init__(self) -> None:
        self.broken: int | None = None
        """An HTTP status to answer with instead of the metrics."""
        self.body: str | None = None
        """A body to serve instead of the metrics (garbage, for error tests)."""
        self.url = ""
        self.requests = 0
        self._available = 0.0
        self.restart()

    def restart(self) -> None:
        self.registry = CollectorRegistry()
        self._failures = Counter(
            "jitsi_jicofo_jibri_no_instance_failures",
            "Number of failures to start a jibri session because no instance was available",
            registry=self.registry,
        )
        self._gauge = Gauge(
            "jitsi_jicofo_jibri_instances_available",
            "Current number of available (not in use) jibri instances",
            registry=self.registry,
        )
        self._gauge.set(self._available)
        self.failures = 0.0

    def fail(self, count: int = 1) -> None:
        self._failures.inc(count)
        self.failures += count

    def available(self, count: int) -> None:
        self._available = float(count)
        self._gauge.set(count)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.broken is not None:
            return web.Response(status=self.broken, text="broken")
        if self.body is not None:
            return web.Response(text=self.body, content_type="text/plain")
        if request.headers.get("Accept", "").startswith("application/json"):
            return await self._stats(request)
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _stats(self, request: web.Request) -> web.Response:
        if request.path == "/stats":
            self.requests += 1
            if self.broken is not None:
                return web.Response(status=self.broken, text="broken")
        return web.json_response(
            {
                "jibri_no_instance_failures": self.failures,
                "jibri_detector": {"count": 4, "available": self._available},
                "conferences": 3,
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stats", self._stats)
        return app


@asynccontextmanager
async def running_jicofo() -> AsyncIterator[FakeJicofo]:
    """A fake jicofo listening on a port of its own choosing; `.url` is its base URL."""
    jicofo = FakeJicofo()
    async with serving(jicofo.app()) as url:
        jicofo.url = url
        yield jicofo

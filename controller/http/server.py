"""The controller's HTTP side: agent reports in (docs/design.md §7), metrics, health and
status out."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from common.logs import event
from common.wire import MAX_NESTING, MAX_REPORT_BYTES, REPORTS_PATH, Report, nesting_exceeds
from controller.http.body import read_body, schema_error
from controller.http.connections import (
    LINGER_SECONDS,
    ConnectionGuard,
    GuardedSite,
    HttpLimits,
    connection_cap,
)
from controller.http.register import ReportAuth
from controller.http.status import health, status
from controller.pools import Controller
from controller.prometheus import Metrics

log = logging.getLogger("controller.http.server")


@dataclass(frozen=True)
class ServerContext:
    controller: Controller
    metrics: Metrics
    auth: ReportAuth
    """Judges each report's Authorization: per-instance credentials (docs/identity.md)."""
    clock: Callable[[], float]
    dry_run: bool = False
    body_timeout: float = 10.0
    """Seconds a client has to send a report's body once its headers are in."""


CONTEXT = web.AppKey("context", ServerContext)


def _reject(metrics: Metrics, outcome: str, status: int, error: str, **extra: Any) -> web.Response:
    metrics.agent_reports_total.labels(outcome).inc()
    return web.json_response({"error": error, **extra}, status=status)


async def _parse_report(request: web.Request, ctx: ServerContext) -> Report | web.Response:
    """The authenticated, well-formed report, or the 4xx answer that says what is wrong.

    The credential is checked before the body is read, and bound to the report's instance
    and boot once it is parsed (docs/identity.md)."""
    metrics = ctx.metrics
    credential = ctx.auth.authenticate(request.headers.get("Authorization"))
    if isinstance(credential, web.Response):
        metrics.agent_reports_total.labels("unauthorized").inc()
        return credential
    if request.content_type != "application/json":
        return _reject(
            metrics,
            "invalid",
            415,
            "a report is sent as application/json",
            reason=f"Content-Type is {request.content_type}",
        )
    too_large = f"a report is at most {MAX_REPORT_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_REPORT_BYTES:
        return _reject(metrics, "too-large", 413, too_large)
    try:
        async with asyncio.timeout(ctx.body_timeout):
            body = await read_body(request, MAX_REPORT_BYTES)
    except TimeoutError:
        answer = _reject(
            metrics, "too-slow", 408, f"body not received within {ctx.body_timeout:g} s"
        )
        answer.force_close()
        return answer
    if body is None:
        return _reject(metrics, "too-large", 413, too_large)
    if nesting_exceeds(body):
        return _reject(metrics, "invalid", 400, f"body nests deeper than {MAX_NESTING} levels")
    try:
        report = Report.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            return _reject(metrics, "invalid", 400, "body is not valid JSON", reason=first["msg"])
        return _reject(
            metrics, "invalid", 400, "report does not match the schema", **schema_error(exc)
        )
    refusal = ctx.auth.authorize(credential, report)
    if refusal is not None:
        metrics.agent_reports_total.labels("unauthorized").inc()
        return refusal
    return report


async def post_report(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    received_at = ctx.clock()
    metrics = ctx.metrics
    parsed = await _parse_report(request, ctx)
    if isinstance(parsed, web.Response):
        return parsed
    report = parsed

    receipt = ctx.controller.accept_report(report, received_at)
    metrics.agent_reports_total.labels(receipt.outcome).inc()
    return web.json_response(receipt.answer.model_dump(), status=200 if receipt.managed else 202)


async def get_metrics(request: web.Request) -> web.Response:
    body = request.app[CONTEXT].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ok, document = health(ctx.controller, ctx.clock())
    return web.json_response(document, status=200 if ok else 503)


async def get_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    document = status(ctx.controller, ctx.clock(), dry_run=ctx.dry_run)
    return web.json_response(document, dumps=lambda d: json.dumps(d, indent=2))


def make_app(context: ServerContext) -> web.Application:
    # The body limit is enforced in the handler (413 with a JSON reason); this is a backstop.
    app = web.Application(client_max_size=4 * MAX_REPORT_BYTES)
    app[CONTEXT] = context
    app.router.add_post(REPORTS_PATH, post_report)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/status", get_status)
    return app


class Server:
    """The app on a guarded TCP site (see controller/http/connections.py), started and stopped
    by the `run` command."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: HttpLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = limits or HttpLimits()
        cap = connection_cap(limits.max_connections, _fd_soft_limit())
        self.guard = ConnectionGuard(cap, clock)
        app.middlewares.append(self.guard.middleware)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=limits.idle_timeout,
            lingering_time=LINGER_SECONDS,
            # Bounds each of aiohttp's two shutdown waits: for handlers to finish, then for
            # the cancelled ones to unwind.
            shutdown_timeout=limits.shutdown_grace,
        )
        self._host, self._port, self._limits = host, port, limits

    @property
    def addresses(self) -> list[str]:
        return [_address(a) for a in self._runner.addresses]

    async def start(self) -> None:
        await self._runner.setup()
        await GuardedSite(self._runner, self._host, self._port, self.guard).start()
        event(
            log,
            "listening",
            addresses=self.addresses,
            max_connections=self.guard.limit,
            idle_timeout=self._limits.idle_timeout,
            body_timeout=self._limits.body_timeout,
        )

    async def close(self) -> None:
        """Stop accepting, let requests under way finish within the grace, then close."""
        await self._runner.cleanup()


def _fd_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)

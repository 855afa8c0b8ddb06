"""The controller's HTTP side: agent reports in (DESIGN §7), metrics, health and status out."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from common.logs import event
from common.wire import MAX_REPORT_BYTES, REPORTS_PATH, Report
from controller.http.status import health, status
from controller.loop import Controller
from controller.prometheus import Metrics
from controller.store import Outcome

log = logging.getLogger("controller.http.server")


@dataclass(frozen=True)
class ServerContext:
    controller: Controller
    metrics: Metrics
    token: str
    clock: Callable[[], float]
    dry_run: bool = False


CONTEXT = web.AppKey("context", ServerContext)


def _reject(metrics: Metrics, outcome: str, status: int, error: str, **extra: Any) -> web.Response:
    metrics.agent_reports_total.labels(outcome).inc()
    return web.json_response({"error": error, **extra}, status=status)


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _schema_error(exc: ValidationError) -> dict[str, str]:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "(body)"
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown field"
    return {"field": field, "reason": reason}


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` (chunked bodies included)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


async def post_report(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    received_at = ctx.clock()
    metrics = ctx.metrics
    if not _authorized(request.headers.get("Authorization"), ctx.token):
        return _reject(metrics, "unauthorized", 401, "missing or wrong bearer token")
    if request.content_length is not None and request.content_length > MAX_REPORT_BYTES:
        return _reject(metrics, "too-large", 413, f"a report is at most {MAX_REPORT_BYTES} bytes")
    body = await _read_body(request, MAX_REPORT_BYTES)
    if body is None:
        return _reject(metrics, "too-large", 413, f"a report is at most {MAX_REPORT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _reject(metrics, "invalid", 400, "body is not valid JSON", reason=str(exc))
    try:
        report = Report.model_validate(document)
    except ValidationError as exc:
        return _reject(
            metrics, "invalid", 400, "report does not match the schema", **_schema_error(exc)
        )

    controller = ctx.controller
    runner = controller.owner(report.instanceId)
    accepted = controller.store.accept(report, received_at, managed=runner is not None)
    if runner is None:
        outcome = "unmanaged" if accepted.outcome is Outcome.ACCEPTED else accepted.outcome.value
        metrics.agent_reports_total.labels(outcome).inc()
        if accepted.changed:
            # Likely a new instance of some pool: a pass adopts it (and protects it if it is
            # already busy) now rather than at the next resync. Repeats of an unchanged held
            # report do not trigger, so stray agents cannot keep the pools busy.
            for candidate in controller.pools.values():
                candidate.trigger(received_at)
        return web.json_response({"drain": False}, status=202)
    metrics.agent_reports_total.labels(accepted.outcome.value).inc()
    if accepted.changed:
        runner.trigger(received_at)
    held = controller.store.get(report.instanceId)
    drain = report.instanceId in runner.memory.drain_requested or (
        held is not None and held.draining
    )
    return web.json_response({"drain": drain})


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
    """The app on an AppRunner/TCPSite, started and stopped by the `run` command."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host, self._port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        event(log, "listening", addresses=[_address(a) for a in self._runner.addresses])

    async def close(self) -> None:
        await self._runner.cleanup()


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)

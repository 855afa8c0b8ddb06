"""Jibri's webhook subscriber: `POST /v1/status` with `{"jibriId": …, "status": {…}}`.

Jibri pushes its status here on every change, so the agent learns of a recording that starts
or ends within milliseconds instead of at the next poll. Point Jibri's
`jibri.webhook.subscribers` at this server's base URL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiohttp import web

from agent.jibri import MalformedStatus, Outcome, Probe, parse_status
from agent.metrics import AgentMetrics
from common.logs import event

log = logging.getLogger(__name__)

STATUS_PATH = "/v1/status"
_MAX_BODY = 64 * 1024


def webhook_app(
    on_probe: Callable[[Probe], None],
    metrics: AgentMetrics,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """An app that turns each valid status push into a Probe handed to `on_probe`."""

    def reject(reason: str) -> web.Response:
        metrics.webhook_events.labels("rejected").inc()
        event(log, "status push rejected", level=logging.WARNING, reason=reason)
        return web.json_response({"error": reason}, status=400)

    async def status(request: web.Request) -> web.Response:
        received = monotonic()
        try:
            document = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return reject("the body is not JSON")
        if not isinstance(document, dict):
            return reject("the body is not a JSON object")
        try:
            jibri = parse_status(document.get("status"))
        except MalformedStatus as exc:
            return reject(str(exc))
        metrics.webhook_events.labels("ok").inc()
        event(
            log,
            "status push",
            level=logging.DEBUG,
            jibri_id=document.get("jibriId"),
            busy=jibri.busyStatus.value,
            health=jibri.healthStatus.value,
        )
        on_probe(Probe(jibri, Outcome.OK, received, "pushed"))
        return web.json_response({})

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post(STATUS_PATH, status)
    return app

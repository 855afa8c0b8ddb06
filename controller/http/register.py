"""POST /v1/register, and the credential check of every report (docs/identity.md).

`mount` adds the route to the controller's app; `authenticate_report` is the one place a
report's `Authorization` header is judged. Both count each outcome, answer a refusal with its
status and reason, and change nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from common.logs import event
from common.wire import MAX_REGISTER_BYTES, REGISTER_PATH, RegisterAnswer, RegisterRequest
from controller.identity.credentials import authenticate_report as verify_report_credential
from controller.identity.errors import Refused, malformed
from controller.identity.registrar import NOT_MANAGED_RETRY_SECONDS, Registrar, Registration
from controller.prometheus import Metrics

log = logging.getLogger("controller.http.register")


@dataclass(frozen=True)
class IdentityContext:
    registrar: Registrar
    metrics: Metrics
    wall_clock: Callable[[], float]
    """Unix time: credential expiry and the document's pendingTime."""
    clock: Callable[[], float]
    """The pools' monotonic clock."""
    registration_token: str | None = None
    """When set, /v1/register also requires `Authorization: Bearer <token>`."""


IDENTITY = web.AppKey("identity", IdentityContext)


def mount(app: web.Application, context: IdentityContext) -> None:
    app[IDENTITY] = context
    app.router.add_post(REGISTER_PATH, post_register)


def authenticate_report(
    context: IdentityContext, authorization: str | None, instance_id: str, boot_id: str
) -> web.Response | None:
    """None when the report carries this instance's and this boot's live credential."""
    try:
        verify_report_credential(context.registrar.issuer, authorization, instance_id, boot_id)
    except Refused as refused:
        context.metrics.report_auth_total.labels(refused.outcome).inc()
        return _refusal(refused)
    context.metrics.report_auth_total.labels("ok").inc()
    return None


def _refusal(refused: Refused, **headers: str) -> web.Response:
    return web.json_response(
        {"error": refused.outcome, "reason": refused.reason},
        status=refused.status,
        headers=headers or None,
    )


def _token_matches(header: str | None, token: str) -> bool:
    scheme, _, presented = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` (chunked bodies included)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


async def _registration(request: web.Request) -> Registration:
    too_large = Refused("too-large", 413, f"a registration is at most {MAX_REGISTER_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_REGISTER_BYTES:
        raise too_large
    body = await _read_body(request, MAX_REGISTER_BYTES)
    if body is None:
        raise too_large
    try:
        parsed = RegisterRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "(body)"
        reason = f"the registration does not match the schema: {field}: {first['msg']}"
        raise malformed(reason) from None
    try:
        document = base64.b64decode(parsed.document, validate=True)
    except (binascii.Error, ValueError):
        raise malformed("document is not base64") from None
    return Registration(parsed.instanceId, parsed.bootId, document, parsed.signature)


async def post_register(request: web.Request) -> web.Response:
    ctx = request.app[IDENTITY]
    counter = ctx.metrics.registrations_total
    instance: str | None = None
    try:
        if ctx.registration_token is not None and not _token_matches(
            request.headers.get("Authorization"), ctx.registration_token
        ):
            raise Refused("unauthorized", 401, "missing or wrong registration bearer token")
        registration = await _registration(request)
        instance = registration.instance_id
        credential = ctx.registrar.register(registration, wall=ctx.wall_clock(), now=ctx.clock())
    except Refused as refused:
        counter.labels(refused.outcome).inc()
        event(
            log,
            "registration refused",
            level=logging.WARNING,
            instance=instance,
            outcome=refused.outcome,
            reason=refused.reason,
        )
        headers = {}
        if refused.outcome == "not-managed":
            headers["Retry-After"] = str(NOT_MANAGED_RETRY_SECONDS)
        return _refusal(refused, **headers)
    counter.labels("issued").inc()
    ttl = ctx.registrar.issuer.ttl
    answer = RegisterAnswer(
        credential=credential.token,
        expiresIn=max(1, int(credential.expires_at - ctx.wall_clock())),
        renewIn=max(1, int(ttl / 2)),
    )
    return web.json_response(text=answer.model_dump_json())

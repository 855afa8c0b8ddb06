"""POST /v1/register, and the credential check of every report (docs/identity.md).

`mount` adds the route to the controller's app; `CredentialAuth` is the one place a report's
`Authorization` header is judged: the credential before the body is read (401 costs no
parsing), its binding to the instance and boot once the report is parsed. Both count each
outcome, answer a refusal with its status and reason, and change nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from pydantic import ValidationError

from common.logs import event
from common.wire import (
    MAX_REGISTER_BYTES,
    REGISTER_PATH,
    RegisterAnswer,
    RegisterRequest,
    Report,
)
from controller.http.body import read_body, schema_error
from controller.identity.credentials import Credential, bearer, bind
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
    body_timeout: float = 10.0
    """Seconds a registration's body may take to arrive (then 408), as for reports."""


IDENTITY = web.AppKey("identity", IdentityContext)


def mount(app: web.Application, context: IdentityContext) -> None:
    app[IDENTITY] = context
    app.router.add_post(REGISTER_PATH, post_register)


class ReportAuth(Protocol):
    """How a report proves who sent it: its header before the body is read, then the report."""

    def authenticate(self, authorization: str | None) -> Credential | web.Response:
        """The credential the header carries, or the 401 that says why there is none."""
        ...

    def authorize(self, credential: Credential, report: Report) -> web.Response | None:
        """None when `credential` was issued to the report's instance and boot."""
        ...


@dataclass(frozen=True)
class CredentialAuth:
    """Reports authenticated by the per-instance credentials this controller issues."""

    identity: IdentityContext

    def _refused(self, refused: Refused, instance: str | None = None) -> web.Response:
        self.identity.metrics.report_auth_total.labels(refused.outcome).inc()
        if refused.outcome == "wrong-instance":
            # One agent speaking for another is what identity exists to stop: say it each time.
            event(
                log,
                "report refused",
                level=logging.WARNING,
                instance=instance,
                outcome=refused.outcome,
                reason=refused.reason,
            )
        return _refusal(refused)

    def authenticate(self, authorization: str | None) -> Credential | web.Response:
        try:
            return self.identity.registrar.issuer.open(bearer(authorization))
        except Refused as refused:
            return self._refused(refused)

    def authorize(self, credential: Credential, report: Report) -> web.Response | None:
        try:
            bind(credential, report.instanceId, report.bootId)
        except Refused as refused:
            return self._refused(refused, report.instanceId)
        self.identity.metrics.report_auth_total.labels("ok").inc()
        return None


def _refusal(refused: Refused, **headers: str) -> web.Response:
    return web.json_response(
        {"error": refused.outcome, "reason": refused.reason},
        status=refused.status,
        headers=headers or None,
    )


def _token_matches(header: str | None, token: str) -> bool:
    scheme, _, presented = (header or "").partition(" ")
    presented = presented.strip()
    # Other bytes than ASCII arrive as surrogates and cannot be a token (RFC 6750).
    return (
        scheme.lower() == "bearer"
        and presented.isascii()
        and hmac.compare_digest(presented.encode(), token.encode())
    )


async def _registration(request: web.Request, body_timeout: float) -> Registration:
    too_large = Refused("too-large", 413, f"a registration is at most {MAX_REGISTER_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_REGISTER_BYTES:
        raise too_large
    try:
        async with asyncio.timeout(body_timeout):
            body = await read_body(request, MAX_REGISTER_BYTES)
    except TimeoutError:
        raise Refused("too-slow", 408, f"body not received within {body_timeout:g} s") from None
    if body is None:
        raise too_large
    try:
        parsed = RegisterRequest.model_validate_json(body)
    except ValidationError as exc:
        problem = schema_error(exc)
        reason = (
            f"the registration does not match the schema: {problem['field']}: {problem['reason']}"
        )
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
        registration = await _registration(request, ctx.body_timeout)
        instance = registration.instance_id
        credential = ctx.registrar.register(registration, wall=ctx.wall_clock(), now=ctx.clock())
    except Refused as refused:
        counter.labels(refused.outcome).inc()
        # A new instance is refused until its group is re-read: expected, not a warning.
        quiet = refused.outcome == "not-managed"
        event(
            log,
            "registration refused",
            level=logging.INFO if quiet else logging.WARNING,
            instance=instance,
            outcome=refused.outcome,
            reason=refused.reason,
        )
        headers = {}
        if refused.outcome == "not-managed":
            headers["Retry-After"] = str(NOT_MANAGED_RETRY_SECONDS)
        refusal = _refusal(refused, **headers)
        if refused.outcome == "too-slow":
            refusal.force_close()  # the rest of a stalled body is not worth waiting for
        return refusal
    counter.labels("issued").inc()
    ttl = ctx.registrar.issuer.ttl
    answer = RegisterAnswer(
        credential=credential.token,
        expiresIn=max(1, int(credential.expires_at - ctx.wall_clock())),
        renewIn=max(1, int(ttl / 2)),
    )
    return web.json_response(text=answer.model_dump_json())

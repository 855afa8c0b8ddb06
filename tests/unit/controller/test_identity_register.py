"""POST /v1/register over HTTP, and the credential check a report goes through."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from common.wire import REGISTER_PATH, RegisterAnswer, Report
from controller.http.register import IDENTITY, CredentialAuth, IdentityContext, mount
from controller.identity.credentials import CredentialIssuer
from controller.identity.document import load_certificates
from controller.identity.registrar import Policy, Registrar
from controller.prometheus import Metrics
from tests.support.fake_imds import SigningAuthority, identity_document, shared_authority

INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fffffffffffffff0"
WALL_TIME = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
WALL = WALL_TIME.timestamp()


@dataclass
class Fleet:
    ids: set[str] = field(default_factory=lambda: {INSTANCE, OTHER})
    asked: list[float] = field(default_factory=list)

    def managed(self, instance_id: str) -> bool:
        return instance_id in self.ids

    def look_again(self, now: float) -> None:
        self.asked.append(now)


@dataclass
class Harness:
    client: TestClient[Any, Any]
    metrics: Metrics
    fleet: Fleet

    def count(self, name: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            f"jibri_autoscaler_{name}_total", {"outcome": outcome}
        )
        return 0.0 if value is None else value


async def _report(request: web.Request) -> web.Response:
    """A stand-in for POST /v1/reports: the credential first, then its binding to the report."""
    auth = CredentialAuth(request.app[IDENTITY])
    credential = auth.authenticate(request.headers.get("Authorization"))
    if isinstance(credential, web.Response):
        return credential
    report = Report.model_validate_json(await request.read())
    return auth.authorize(credential, report) or web.json_response({"drain": False})


async def _harness(tmp_path: Path, token: str | None = None, body_timeout: float = 10.0) -> Harness:
    shared_authority().write_certificate(tmp_path)
    metrics, fleet = Metrics(), Fleet()
    registrar = Registrar(
        verifier=load_certificates(tmp_path, datetime.fromtimestamp(WALL, UTC)),
        policy=Policy(allowed_accounts=frozenset({"123456789012"})),
        membership=fleet,
        issuer=CredentialIssuer([b"k" * 32], ttl=3600, wall_clock=lambda: WALL),
    )
    app = web.Application()
    mount(
        app,
        IdentityContext(
            registrar=registrar,
            metrics=metrics,
            wall_clock=lambda: WALL,
            clock=lambda: 42.0,
            registration_token=token,
            body_timeout=body_timeout,
        ),
    )
    app.router.add_post("/report", _report)
    client = TestClient(TestServer(app))
    await client.start_server()
    return Harness(client, metrics, fleet)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await _harness(tmp_path)
    yield harness
    await harness.client.close()


def _body(
    instance: str = INSTANCE, boot: str = "boot-1", authority: SigningAuthority | None = None
) -> dict[str, str]:
    # Launched a few minutes before the controller's (fixed) clock reads WALL.
    document = identity_document(instance, pending=WALL_TIME - timedelta(minutes=3))
    return {
        "instanceId": instance,
        "bootId": boot,
        "document": base64.b64encode(document).decode(),
        "signature": (authority or shared_authority()).sign(document),
    }


def _report_body(instance: str, boot: str) -> dict[str, Any]:
    return {
        "instanceId": instance,
        "bootId": boot,
        "seq": 1,
        "jibri": {"busyStatus": "IDLE", "healthStatus": "HEALTHY"},
    }


async def _register(h: Harness, **kw: Any) -> str:
    response = await h.client.post(REGISTER_PATH, json=_body(**kw))
    assert response.status == 200, await response.text()
    return RegisterAnswer.model_validate_json(await response.text()).credential


async def test_registration_issues_a_credential(h: Harness) -> None:
    """A signed document of a managed instance gets a credential, expiry and renewal time."""
    response = await h.client.post(REGISTER_PATH, json=_body())
    assert response.status == 200
    answer = RegisterAnswer.model_validate_json(await response.text())
    assert (answer.expiresIn, answer.renewIn) == (3600, 1800)
    assert h.count("registrations", "issued") == 1


def _forged() -> dict[str, str]:
    return _body(authority=SigningAuthority.generate())


def _with(**changes: Any) -> dict[str, Any]:
    return {**_body(), **changes}


@pytest.mark.parametrize(
    ("payload", "status", "outcome"),
    [
        pytest.param(_forged(), 403, "bad-signature", id="another-key"),
        pytest.param(_with(instanceId=OTHER), 403, "instance-mismatch", id="foreign-document"),
        pytest.param(_with(document="%%%"), 400, "malformed", id="document-not-base64"),
        pytest.param(_with(bootId=""), 400, "malformed", id="empty-boot"),
        pytest.param(_with(extra=1), 400, "malformed", id="unknown-field"),
        pytest.param({"instanceId": INSTANCE}, 400, "malformed", id="missing-fields"),
        pytest.param("not json", 400, "malformed", id="not-json"),
        pytest.param(_with(signature="x" * 9000), 413, "too-large", id="too-large"),
    ],
)
async def test_bad_registrations_are_refused_with_a_reason(
    h: Harness, payload: Any, status: int, outcome: str
) -> None:
    """Each bad registration gets its 4xx, a JSON reason and a count; no credential."""
    response = await h.client.post(REGISTER_PATH, json=payload)
    assert response.status == status
    body = await response.json()
    assert body["error"] == outcome and body["reason"]
    assert "credential" not in body
    assert h.count("registrations", outcome) == 1
    assert h.count("registrations", "issued") == 0


async def test_an_unmanaged_instance_is_told_when_to_retry(h: Harness) -> None:
    """An instance in no managed group gets 403 with Retry-After, and the pools look again."""
    h.fleet.ids.discard(INSTANCE)
    response = await h.client.post(REGISTER_PATH, json=_body())
    assert response.status == 403
    assert response.headers["Retry-After"] == "5"
    assert h.fleet.asked == [42.0]


async def test_a_configured_registration_token_is_required(tmp_path: Path) -> None:
    """With a registration token set, a registration without it is 401 and one with it passes."""
    h = await _harness(tmp_path, token="shared")
    try:
        refused = await h.client.post(REGISTER_PATH, json=_body())
        assert refused.status == 401
        assert h.count("registrations", "unauthorized") == 1
        accepted = await h.client.post(
            REGISTER_PATH, json=_body(), headers={"Authorization": "Bearer shared"}
        )
        assert accepted.status == 200
    finally:
        await h.client.close()


async def test_a_report_with_its_own_credential_is_accepted(h: Harness) -> None:
    """A report carrying its instance's and boot's credential passes the check."""
    credential = await _register(h)
    response = await h.client.post(
        "/report",
        json=_report_body(INSTANCE, "boot-1"),
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert response.status == 200
    assert h.count("report_auth", "ok") == 1


@pytest.mark.parametrize(
    ("instance", "boot", "header", "status", "outcome"),
    [
        pytest.param(OTHER, "boot-9", "own", 403, "wrong-instance", id="attack-other-instance"),
        pytest.param(INSTANCE, "boot-2", "own", 401, "wrong-boot", id="other-boot"),
        pytest.param(INSTANCE, "boot-1", None, 401, "missing", id="no-credential"),
        pytest.param(INSTANCE, "boot-1", "Bearer s3cret", 401, "malformed", id="shared-token"),
        pytest.param(INSTANCE, "boot-1", "Bearer \u00e9t\u00e9", 401, "malformed", id="non-ascii"),
    ],
)
async def test_reports_without_their_own_credential_are_refused(
    h: Harness, instance: str, boot: str, header: str | None, status: int, outcome: str
) -> None:
    """A credential opens only its own instance's and boot's reports; everything else is 4xx."""
    credential = await _register(h)
    headers = {"Authorization": f"Bearer {credential}" if header == "own" else header or ""}
    response = await h.client.post("/report", json=_report_body(instance, boot), headers=headers)
    assert response.status == status
    assert (await response.json())["error"] == outcome
    assert h.count("report_auth", outcome) == 1


async def _raw(h: Harness, request: bytes) -> bytes:
    """Send raw bytes to the app's (port 0) server and return the status line."""
    server = h.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=30)
    finally:
        writer.close()


async def test_a_non_ascii_registration_token_is_401(tmp_path: Path) -> None:
    """A registration token with a 0xff byte is refused 401 (never a 500)."""
    h = await _harness(tmp_path, token="shared")
    try:
        status = await _raw(
            h,
            b"POST " + REGISTER_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n\r\n",
        )
        assert status.startswith(b"HTTP/1.1 401"), status
        assert h.count("registrations", "unauthorized") == 1
    finally:
        await h.client.close()


async def test_a_stalled_registration_body_is_408(tmp_path: Path) -> None:
    """A registration whose body stalls after its headers is answered 408 within body_timeout."""
    h = await _harness(tmp_path, body_timeout=0.2)
    try:
        status = await _raw(
            h,
            b"POST " + REGISTER_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        assert status.startswith(b"HTTP/1.1 408"), status
        assert h.count("registrations", "too-slow") == 1
    finally:
        await h.client.close()

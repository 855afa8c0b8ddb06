"""The agent's registration: evidence from IMDSv2, a credential, renewal and re-registration."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.registration import Registration
from common.aiokits.clock import ManualClock
from common.wire import REGISTER_PATH, RegisterRequest
from tests.support.fake_imds import FakeImds, shared_authority
from tests.support.loopback import eventually, serving

INSTANCE = "i-0123456789abcdef0"


@dataclass
class Controller:
    """The register endpoint alone: records requests, answers from a script, then issues."""

    requests: list[RegisterRequest] = field(default_factory=list)
    headers: list[str | None] = field(default_factory=list)
    replies: deque[tuple[int, str, dict[str, str]]] = field(default_factory=deque)
    renew_in: int = 30

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(REGISTER_PATH, self._register)
        return app

    async def _register(self, request: web.Request) -> web.Response:
        self.requests.append(RegisterRequest.model_validate_json(await request.read()))
        self.headers.append(request.headers.get("Authorization"))
        if self.replies:
            status, text, headers = self.replies.popleft()
            return web.Response(
                status=status, text=text, content_type="application/json", headers=headers
            )
        credential = f"credential-{len(self.requests)}"
        return web.json_response(
            {"credential": credential, "expiresIn": 2 * self.renew_in, "renewIn": self.renew_in}
        )


@dataclass
class Rig:
    controller: Controller
    imds: FakeImds
    clock: ManualClock
    registration: Registration


@contextlib.asynccontextmanager
async def _rig(token: str | None = None, request_timeout: float = 2.0) -> AsyncIterator[Rig]:
    controller, imds, clock = Controller(), FakeImds(INSTANCE), ManualClock()
    async with (
        serving(controller.app()) as controller_url,
        serving(imds.app()) as imds_url,
        aiohttp.ClientSession() as session,
    ):
        registration = Registration(
            session,
            controller_url=controller_url,
            imds_url=imds_url,
            instance_id=INSTANCE,
            boot_id="boot-1",
            timeout=request_timeout,
            token=token,
            clock=clock,
        )
        task = asyncio.create_task(registration.run())
        try:
            yield Rig(controller, imds, clock, registration)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured event with its structured fields."""
    return "\n".join(f"{r.getMessage()} {getattr(r, 'fields', {})}" for r in caplog.records)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with _rig() as rig:
        yield rig


async def test_registration_presents_the_signed_document_from_imds(rig: Rig) -> None:
    """The request carries the document's exact bytes and a signature that verifies."""
    credential = await asyncio.wait_for(rig.registration.ready(), 10)
    assert credential == "credential-1"
    request = rig.controller.requests[0]
    assert (request.instanceId, request.bootId) == (INSTANCE, "boot-1")
    document = base64.b64decode(request.document)
    assert document == rig.imds.document
    certificate = x509.load_pem_x509_certificate(shared_authority().certificate_pem())
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    signature = base64.b64decode("".join(request.signature.split()))
    key.verify(signature, document, padding.PKCS1v15(), hashes.SHA256())
    assert rig.imds.calls[0] == "/latest/api/token"


async def test_the_credential_is_renewed_after_renew_in(rig: Rig) -> None:
    """After `renewIn` seconds the agent registers again and holds the new credential."""
    await asyncio.wait_for(rig.registration.ready(), 10)
    await eventually(lambda: rig.clock.sleepers == 1, what="waiting to renew")
    await rig.clock.advance(29)
    assert len(rig.controller.requests) == 1
    await rig.clock.advance(1)
    await eventually(lambda: rig.registration.credential == "credential-2", what="renewal")


async def test_an_invalidated_credential_is_replaced_at_once(rig: Rig) -> None:
    """A report turned down with the credential makes the agent register again without delay."""
    first = await asyncio.wait_for(rig.registration.ready(), 10)
    rig.registration.invalidate(first)
    assert rig.registration.credential is None
    await eventually(lambda: rig.registration.credential == "credential-2", what="re-register")


async def test_an_outdated_invalidation_is_ignored(rig: Rig) -> None:
    """Invalidating a credential already replaced leaves the current one alone."""
    await asyncio.wait_for(rig.registration.ready(), 10)
    rig.registration.invalidate("credential-0")
    assert rig.registration.credential == "credential-1"


async def test_refusals_are_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """A 403 (say, a certificate missing on the controller) is logged and retried later."""
    async with _rig() as rig:
        rig.controller.replies.append((403, '{"error": "bad-signature"}', {}))
        await eventually(lambda: rig.clock.sleepers == 1, what="backing off")
        assert rig.registration.credential is None
        assert "bad-signature" in _logged(caplog)
        await rig.clock.advance(10)
        await asyncio.wait_for(rig.registration.ready(), 10)
        assert len(rig.controller.requests) == 2


@pytest.mark.parametrize(
    ("breakage", "request_timeout"),
    [
        pytest.param({"token_status": 403}, 2.0, id="imds-disabled"),
        pytest.param({"token_hangs": True}, 0.2, id="hop-limit-in-container"),
    ],
)
async def test_imds_trouble_is_named_and_retried(
    caplog: pytest.LogCaptureFixture, breakage: dict[str, object], request_timeout: float
) -> None:
    """Without IMDS the failure names the hop limit and IMDS settings, and registration retries."""
    async with _rig(request_timeout=request_timeout) as rig:
        for name, value in breakage.items():
            setattr(rig.imds, name, value)
        await eventually(lambda: rig.clock.sleepers == 1, what="backing off")
        assert "hop limit" in _logged(caplog)
        assert rig.controller.requests == []
        rig.imds.token_status, rig.imds.token_hangs = 200, False
        await rig.clock.advance(10)
        await asyncio.wait_for(rig.registration.ready(), 10)


async def test_the_shared_token_is_sent_when_configured() -> None:
    """With a registration token configured, it goes as the bearer of /v1/register."""
    async with _rig(token="shared") as rig:
        await asyncio.wait_for(rig.registration.ready(), 10)
        assert rig.controller.headers == ["Bearer shared"]


async def test_not_yet_managed_is_retried_when_the_controller_says() -> None:
    """A 403 with Retry-After is retried after that many seconds, not earlier."""
    async with _rig() as rig:
        for _ in range(3):
            rig.controller.replies.append((403, '{"error": "not-managed"}', {"Retry-After": "5"}))
        for attempt in (1, 2, 3):
            await eventually(lambda: rig.clock.sleepers == 1, what="waiting to retry")
            assert len(rig.controller.requests) == attempt
            await rig.clock.advance(4.9)
            assert len(rig.controller.requests) == attempt
            await rig.clock.advance(0.1)
        await asyncio.wait_for(rig.registration.ready(), 10)
        assert len(rig.controller.requests) == 4


async def test_each_new_credential_is_announced() -> None:
    """`on_registered` runs once per credential, so a report can go out at once."""
    controller, imds, clock = Controller(), FakeImds(INSTANCE), ManualClock()
    announced: list[str | None] = []
    async with (
        serving(controller.app()) as controller_url,
        serving(imds.app()) as imds_url,
        aiohttp.ClientSession() as session,
    ):
        registration = Registration(
            session,
            controller_url=controller_url,
            imds_url=imds_url,
            instance_id=INSTANCE,
            boot_id="boot-1",
            timeout=2,
            clock=clock,
            on_registered=lambda: announced.append(registration.credential),
        )
        await registration.register()
        registration.invalidate("credential-1")
        await registration.register()
    assert announced == ["credential-1", "credential-2"]


async def test_the_fake_imds_serves_on_a_port_of_its_own() -> None:
    """`FakeImds.start` binds a loopback port and serves the document there until `close`."""
    imds = FakeImds(INSTANCE)
    url = await imds.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.put(
                url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
            ) as response:
                token = await response.text()
            async with session.get(
                url + "/latest/dynamic/instance-identity/document",
                headers={"X-aws-ec2-metadata-token": token},
            ) as response:
                assert (await response.read()) == imds.document
    finally:
        await imds.close()


async def test_an_identity_the_wire_refuses_is_retried_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An identity document too long for the wire is named and retried; the task keeps running."""
    async with _rig() as rig:
        good = rig.imds.document
        rig.imds.document = good + b" " * 8192
        await eventually(lambda: rig.clock.sleepers == 1, what="backing off")
        assert "refuses" in _logged(caplog)
        assert rig.controller.requests == []
        rig.imds.document = good
        await rig.clock.advance(10)
        await asyncio.wait_for(rig.registration.ready(), 10)

"""This boot's credential: register with the instance identity document, renew, re-register.

The agent reads the identity document (exact bytes) and its RSA signature from IMDSv2 and
posts them with its instance id and boot id to /v1/register. The controller answers with a
credential bound to this instance and this boot, which every report carries. It is renewed
by registering again after `renewIn` (half its life), and at once when the controller turns
a report down with 401/403 (`invalidate`): a restarted controller with a new secret, say.
Every failure is retried with jittered exponential back-off, without end: the agent keeps
serving Jibri and its fallback while it cannot register (docs/identity.md, failure modes).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential_jitter

from agent.identity import IdentityError, ImdsClient, TransientImdsError
from common.aiokits.clock import Clock, MonotonicClock
from common.logs import Transitions, event
from common.wire import REGISTER_PATH, RegisterAnswer, RegisterRequest

log = logging.getLogger(__name__)

DOCUMENT_PATH: Final = "/latest/dynamic/instance-identity/document"
SIGNATURE_PATH: Final = "/latest/dynamic/instance-identity/signature"
_IMDS_HINT: Final = (
    "is IMDS enabled, and is the hop limit at least 2 when the agent runs in a container?"
)


class CredentialSource(Protocol):
    """What the reporter needs: the credential to send, and a way to say it was refused."""

    @property
    def credential(self) -> str | None:
        """The credential for the next report; None while there is none (no report is sent)."""
        ...

    def invalidate(self, credential: str | None) -> None:
        """The controller refused `credential` (401/403): replace it."""
        ...


@dataclass(frozen=True)
class StaticCredential:
    """A fixed bearer token, for talking to a stand-in controller in tests."""

    token: str

    @property
    def credential(self) -> str | None:
        return self.token

    def invalidate(self, credential: str | None) -> None:
        pass


@dataclass(frozen=True)
class Evidence:
    document: bytes
    signature: str


@dataclass(frozen=True)
class Failure:
    kind: str
    """imds, unreachable, timeout, refused, server-error or bad-answer."""
    detail: str
    retry_after: float | None = None
    """The controller's Retry-After (an instance not yet seen in its group): try then."""


async def read_evidence(
    session: aiohttp.ClientSession, imds_url: str, request_timeout: float
) -> Evidence:
    """The identity document and its signature, with a fresh IMDSv2 session token."""
    imds = ImdsClient(session, imds_url, request_timeout)
    document = await imds.get_bytes(DOCUMENT_PATH)
    signature = await imds.get(SIGNATURE_PATH)
    return Evidence(document, signature)


class Registration:
    """Keeps a live credential for (instance id, boot id); `run` is its background task."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        controller_url: str,
        imds_url: str,
        instance_id: str,
        boot_id: str,
        timeout: float,
        token: str | None = None,
        clock: Clock | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        evidence: Callable[[], Awaitable[Evidence]] | None = None,
        on_registered: Callable[[], None] = lambda: None,
    ) -> None:
        self._session = session
        self._url = controller_url.rstrip("/") + REGISTER_PATH
        self._instance_id = instance_id
        self.boot_id = boot_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._clock = clock or MonotonicClock()
        self._wait = wait_exponential_jitter(initial=backoff, max=max_backoff, jitter=backoff)
        self._evidence = evidence or (lambda: read_evidence(session, imds_url, timeout))
        self._credential: str | None = None
        self._renew_at = 0.0
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._on_registered = on_registered
        """Called with each new credential, so the next report need not wait its turn."""
        self._log = Transitions(log, "registration", url=self._url, instance=instance_id)

    @property
    def credential(self) -> str | None:
        """The credential to send, or None before the first registration succeeds."""
        return self._credential

    async def ready(self) -> str:
        """Wait for a credential."""
        await self._ready.wait()
        assert self._credential is not None
        return self._credential

    def invalidate(self, credential: str | None) -> None:
        """The controller turned `credential` down: drop it (if still current), register now."""
        if credential is not None and credential == self._credential:
            self._credential = None
            self._ready.clear()
            self._renew_at = 0.0
            self._wake.set()

    async def run(self) -> None:
        while True:
            delay = self._renew_at - self._clock.now()
            if self._credential is not None and delay > 0:
                self._wake.clear()
                await self._clock.sleep(delay, self._wake)
                continue
            await self.register()

    async def register(self) -> RegisterAnswer:
        """Register, retrying every failure until it succeeds."""
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda outcome: isinstance(outcome, Failure)),
            wait=self._next_try,
            sleep=self._sleep,
        )
        answer: RegisterAnswer | Failure = await retrying(self._attempt)
        assert isinstance(answer, RegisterAnswer)
        return answer

    def _next_try(self, state: RetryCallState) -> float:
        # An instance the controller has not yet seen in its group is retried at the pace
        # the controller asks for, not at a back-off grown while it was unreachable.
        last = state.outcome.result() if state.outcome is not None else None
        if isinstance(last, Failure) and last.retry_after is not None:
            return last.retry_after
        return float(self._wait(state))

    async def _sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)

    async def _attempt(self) -> RegisterAnswer | Failure:
        outcome = await self._post()
        if isinstance(outcome, Failure):
            self._log.failed(outcome.kind, outcome.detail + "; retrying")
            return outcome
        renewing = self._credential is not None
        self._credential = outcome.credential
        self._renew_at = self._clock.now() + outcome.renewIn
        self._ready.set()
        self._on_registered()
        self._log.ok("registered")
        event(
            log,
            "registration renewed" if renewing else "registered",
            instance=self._instance_id,
            boot=self.boot_id,
            expires_in=outcome.expiresIn,
        )
        return outcome

    async def _post(self) -> RegisterAnswer | Failure:
        try:
            evidence = await self._evidence()
        except (TransientImdsError, IdentityError) as exc:
            return Failure(
                "imds", f"cannot read the identity document from IMDS ({exc}); " + _IMDS_HINT
            )
        try:
            body = RegisterRequest(
                instanceId=self._instance_id,
                bootId=self.boot_id,
                document=base64.b64encode(evidence.document).decode("ascii"),
                signature=evidence.signature,
            ).model_dump_json()
        except ValidationError as exc:
            # A document or signature IMDS should never serve (too long, wrong shape): retry
            # later rather than end the task, which would stop the whole agent.
            return Failure("imds", f"IMDS served an identity the wire refuses: {exc}")
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            return Failure("unreachable", f"cannot connect ({exc.os_error})")
        except TimeoutError:
            return Failure("timeout", "no answer in time")
        except aiohttp.ClientError as exc:
            return Failure("unreachable", f"request failed ({exc!r})")
        if status == 200:
            try:
                return RegisterAnswer.model_validate_json(text)
            except ValidationError:
                return Failure("bad-answer", "HTTP 200 with an unexpected body")
        kind = "server-error" if status >= 500 or status in (408, 429) else "refused"
        return Failure(kind, f"HTTP {status}: {text.strip()[:300]}", _retry_after(retry_after))


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the controller sends whole seconds), within reason."""
    if header is None or not header.strip().isdigit():
        return None
    return float(min(int(header), 300))

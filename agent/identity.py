"""Who this agent speaks for: the EC2 instance id and region, from overrides or IMDSv2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from common.wire import INSTANCE_ID_RE

TOKEN_TTL_SECONDS: Final = 300
_TOKEN_PATH: Final = "/latest/api/token"
_INSTANCE_ID_PATH: Final = "/latest/meta-data/instance-id"
_REGION_PATH: Final = "/latest/meta-data/placement/region"
_HINT: Final = (
    "run on EC2 with IMDS enabled, or set --instance-id and --region "
    "(JIBRI_AGENT_INSTANCE_ID, JIBRI_AGENT_REGION)"
)


class IdentityError(Exception):
    """Neither an override nor the instance metadata service gave this agent its identity."""


class TransientImdsError(Exception):
    """The metadata service did not answer, or answered 5xx/429: worth retrying."""


class MissingPathError(Exception):
    """The metadata service has no such path (404), as `get_optional` asked to be told."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str | None
    """None when nothing needs it (no AWS calls) and no override gave it."""


class ImdsClient:
    """IMDSv2: one session token (PUT), then GETs that carry it."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None

    async def _call(
        self, method: str, path: str, headers: dict[str, str], *, missing_ok: bool = False
    ) -> bytes:
        url = self._base + path
        try:
            async with self._session.request(
                method, url, headers=headers, timeout=self._timeout
            ) as response:
                body = await response.read()
                if response.status >= 500 or response.status == 429:
                    raise TransientImdsError(f"{method} {url}: HTTP {response.status}")
                if missing_ok and response.status == 404:
                    raise MissingPathError(path)
                if response.status != 200:
                    raise IdentityError(
                        f"the instance metadata service answered {method} {url} with HTTP "
                        f"{response.status}; {_HINT}"
                    )
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientImdsError(f"{method} {url}: {exc!r}") from exc

    async def get(self, path: str) -> str:
        return (await self.get_bytes(path)).decode(errors="replace").strip()

    async def get_bytes(self, path: str, *, missing_ok: bool = False) -> bytes:
        """The exact bytes served (the identity document's signature covers them as served)."""
        if self._token is None:
            token = await self._call(
                "PUT", _TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}
            )
            self._token = token.decode(errors="replace").strip()
        try:
            return await self._call(
                "GET", path, {"X-aws-ec2-metadata-token": self._token}, missing_ok=missing_ok
            )
        except IdentityError:
            # An expired token answers 401: the next call takes a new one.
            self._token = None
            raise

    async def get_optional(self, path: str) -> str | None:
        """The text at `path`, or None where the service has no such path (404)."""
        try:
            body = await self.get_bytes(path, missing_ok=True)
        except MissingPathError:
            return None
        return body.decode(errors="replace").strip()


async def resolve_identity(
    session: aiohttp.ClientSession,
    *,
    instance_id: str | None,
    region: str | None,
    imds_url: str,
    need_region: bool = True,
    request_timeout: float = 2.0,
    attempts: int = 3,
) -> Identity:
    """Take the overrides as given and ask IMDSv2 for whatever is missing."""
    if instance_id is not None and not INSTANCE_ID_RE.match(instance_id):
        raise IdentityError(f"instance id {instance_id!r} is not an EC2 instance id (i-…)")
    if instance_id is not None and (region is not None or not need_region):
        return Identity(instance_id, region)
    imds = ImdsClient(session, imds_url, request_timeout)
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientImdsError),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        ):
            with attempt:
                found_id = instance_id or await imds.get(_INSTANCE_ID_PATH)
                found_region = region or (await imds.get(_REGION_PATH) if need_region else None)
    except TransientImdsError as exc:
        raise IdentityError(
            f"the instance metadata service did not answer ({exc}); {_HINT}"
        ) from exc
    if not INSTANCE_ID_RE.match(found_id):
        raise IdentityError(f"the metadata service gave an invalid instance id {found_id!r}")
    if need_region and not found_region:
        raise IdentityError("the metadata service gave an empty region")
    return Identity(found_id, found_region)

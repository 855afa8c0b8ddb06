from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from agent.identity import Identity, IdentityError, resolve_identity
from tests.support.loopback import free_port, serving

INSTANCE = "i-0123456789abcdef0"


class _Imds:
    """IMDSv2 on loopback: a token from PUT, metadata only with that token."""

    def __init__(self) -> None:
        self.instance_id = INSTANCE
        self.region = "eu-west-1"
        self.failures_left = 0
        self.calls: list[str] = []

    def app(self) -> web.Application:
        async def token(request: web.Request) -> web.Response:
            self.calls.append("token")
            if self.failures_left:
                self.failures_left -= 1
                return web.Response(status=503)
            if not request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
                return web.Response(status=400)
            return web.Response(text="secret-token")

        def metadata(value: str):  # type: ignore[no-untyped-def]
            async def handler(request: web.Request) -> web.Response:
                self.calls.append(request.path)
                if request.headers.get("X-aws-ec2-metadata-token") != "secret-token":
                    return web.Response(status=401)
                return web.Response(text=getattr(self, value))

            return handler

        app = web.Application()
        app.router.add_put("/latest/api/token", token)
        app.router.add_get("/latest/meta-data/instance-id", metadata("instance_id"))
        app.router.add_get("/latest/meta-data/placement/region", metadata("region"))
        return app


@pytest.fixture
async def imds() -> AsyncIterator[tuple[_Imds, str, aiohttp.ClientSession]]:
    fake = _Imds()
    async with serving(fake.app()) as url, aiohttp.ClientSession() as session:
        yield fake, url, session


async def test_identity_comes_from_imdsv2(
    imds: tuple[_Imds, str, aiohttp.ClientSession],
) -> None:
    """Without overrides, the instance id and region come from IMDSv2 with a session token."""
    fake, url, session = imds
    identity = await resolve_identity(session, instance_id=None, region=None, imds_url=url)
    assert identity == Identity(INSTANCE, "eu-west-1")
    assert fake.calls[0] == "token"


async def test_overrides_skip_imds(imds: tuple[_Imds, str, aiohttp.ClientSession]) -> None:
    """Both overrides given: the metadata service is not asked at all."""
    fake, url, session = imds
    identity = await resolve_identity(
        session, instance_id="i-0aaaaaaaaaaaaaaaa", region="us-west-2", imds_url=url
    )
    assert identity == Identity("i-0aaaaaaaaaaaaaaaa", "us-west-2")
    assert fake.calls == []


async def test_one_override_fills_in_the_other(
    imds: tuple[_Imds, str, aiohttp.ClientSession],
) -> None:
    """An overridden instance id is kept, and only the region is fetched."""
    fake, url, session = imds
    identity = await resolve_identity(
        session, instance_id="i-0aaaaaaaaaaaaaaaa", region=None, imds_url=url
    )
    assert identity == Identity("i-0aaaaaaaaaaaaaaaa", "eu-west-1")
    assert "/latest/meta-data/instance-id" not in fake.calls


async def test_region_is_not_needed_without_aws() -> None:
    """With an instance id given and no AWS use, an absent metadata service is fine."""
    async with aiohttp.ClientSession() as session:
        identity = await resolve_identity(
            session,
            instance_id=INSTANCE,
            region=None,
            imds_url=f"http://127.0.0.1:{free_port()}",
            need_region=False,
        )
    assert identity == Identity(INSTANCE, None)


async def test_transient_imds_errors_are_retried(
    imds: tuple[_Imds, str, aiohttp.ClientSession],
) -> None:
    """A 503 from the metadata service is retried before giving up."""
    fake, url, session = imds
    fake.failures_left = 2
    identity = await resolve_identity(session, instance_id=None, region=None, imds_url=url)
    assert identity.instance_id == INSTANCE


async def test_no_imds_and_no_override_is_a_clear_error() -> None:
    """With nothing answering and no override, the error says which flags to set."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(IdentityError, match="--instance-id and --region"):
            await resolve_identity(
                session,
                instance_id=None,
                region=None,
                imds_url=f"http://127.0.0.1:{free_port()}",
                attempts=2,
            )


@pytest.mark.parametrize(
    ("override", "served"),
    [
        pytest.param("web-1", INSTANCE, id="bad-override"),
        pytest.param(None, "<html>not an id</html>", id="bad-imds-answer"),
    ],
)
async def test_invalid_instance_ids_are_rejected(
    imds: tuple[_Imds, str, aiohttp.ClientSession], override: str | None, served: str
) -> None:
    """An instance id that is not i-… is refused, wherever it came from."""
    fake, url, session = imds
    fake.instance_id = served
    with pytest.raises(IdentityError, match="instance id"):
        await resolve_identity(session, instance_id=override, region="us-east-1", imds_url=url)


async def test_imds_refusal_is_a_clear_error(
    imds: tuple[_Imds, str, aiohttp.ClientSession],
) -> None:
    """A metadata service that refuses (here: no token route) says so, with the override hint."""
    _, url, session = imds
    with pytest.raises(IdentityError, match=r"HTTP 404.*--instance-id"):
        await resolve_identity(session, instance_id=None, region=None, imds_url=url + "/nope")

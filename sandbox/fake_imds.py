"""A fake EC2 instance metadata service (IMDSv2) that signs identity documents with a test key.

It stands in for AWS where nothing else can: no emulator serves IMDS or signs identity
documents. `SigningAuthority` is a test RSA key pair with a self-signed certificate playing
AWS's regional certificate; the controller is given that certificate (`write_certificate`) the
way it is given AWS's. `FakeImds` serves the token, the instance id, the region, the document
and its signature over HTTP on loopback, and can refuse the way a real IMDS does (disabled:
403 on the token; hop limit 1 in a container: the token request gets no answer). The sandbox
gives one to each simulated VM; tests use it through tests/support/fake_imds.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ACCOUNT = "123456789012"
REGION = "eu-west-1"
TOKEN_PATH = "/latest/api/token"
DOCUMENT_PATH = "/latest/dynamic/instance-identity/document"
SIGNATURE_PATH = "/latest/dynamic/instance-identity/signature"
TARGET_STATE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"


class SigningAuthority:
    """A test RSA key and its self-signed certificate, in the role of AWS's regional one."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test, not AWS")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )

    @classmethod
    def generate(cls) -> SigningAuthority:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def from_key_file(cls, path: Path) -> SigningAuthority:
        """The key in `path`, created there first if the file does not exist."""
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        return cls(loaded)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write_certificate(self, directory: Path, region: str = REGION) -> Path:
        """Put the certificate where the controller's --identity-certs looks for `region`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{region}.pem"
        path.write_bytes(self.certificate_pem())
        return path

    def sign(self, document: bytes) -> str:
        """What IMDS serves at .../signature: base64 RSA-SHA256, wrapped at 64 columns."""
        raw = self.key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        return "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 64))


def identity_document(
    instance_id: str,
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    pending: datetime | None = None,
) -> bytes:
    """A document laid out the way IMDS serves it (pretty-printed, `" : "` separators)."""
    started = pending or datetime.now(UTC) - timedelta(minutes=5)
    fields = {
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": f"{region}a",
        "imageId": "ami-0123456789abcdef0",
        "instanceId": instance_id,
        "instanceType": "c5.xlarge",
        "pendingTime": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": "10.0.0.10",
        "region": region,
        "version": "2017-09-30",
    }
    return json.dumps(fields, indent=2, separators=(",", " : ")).encode()


class FakeImds:
    """IMDSv2 for one instance; attributes change what it serves or how it refuses."""

    def __init__(
        self,
        instance_id: str,
        *,
        authority: SigningAuthority | None = None,
        account: str = ACCOUNT,
        region: str = REGION,
    ) -> None:
        self.instance_id = instance_id
        self.region = region
        self.authority = authority or SigningAuthority.generate()
        self.document = identity_document(instance_id, account=account, region=region)
        self.signature: str | None = None
        """Served instead of the real signature when set (a forgery, for tests)."""
        self.token_status = 200
        """403: IMDS disabled on the instance."""
        self.target_lifecycle_state: str | None = None
        """Served at autoscaling/target-lifecycle-state (Warmed:Stopped, InService, ...);
        None: 404, as for an instance in no Auto Scaling group."""
        self.target_status = 200
        """Another status (500, say) to serve at that path instead."""
        self._answered = asyncio.Event()
        self._answered.set()
        self.calls: list[str] = []
        self._token = "fake-imds-token"
        self._runner: web.AppRunner | None = None
        self.url = ""
        """Where `start` serves it (loopback, port 0)."""

    @property
    def token_hangs(self) -> bool:
        """True: the token answer does not arrive (hop limit 1 seen from a container)."""
        return not self._answered.is_set()

    @token_hangs.setter
    def token_hangs(self, hangs: bool) -> None:
        if hangs:
            self._answered.clear()
        else:
            self._answered.set()

    async def start(self) -> str:
        """Serve on a loopback port of its own; the URL to give the agent as --imds-url."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        self.token_hangs = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put(TOKEN_PATH, self._token_route)
        app.router.add_get("/latest/meta-data/instance-id", self._get(lambda: self.instance_id))
        app.router.add_get("/latest/meta-data/placement/region", self._get(lambda: self.region))
        app.router.add_get(DOCUMENT_PATH, self._get(lambda: self.document.decode()))
        app.router.add_get(SIGNATURE_PATH, self._get(self._signature))
        app.router.add_get(TARGET_STATE_PATH, self._target_route)
        return app

    async def _target_route(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        if request.headers.get("X-aws-ec2-metadata-token") != self._token:
            return web.Response(status=401)
        if self.target_status != 200:
            return web.Response(status=self.target_status)
        if self.target_lifecycle_state is None:
            return web.Response(status=404)
        return web.Response(text=self.target_lifecycle_state)

    def _signature(self) -> str:
        return self.signature if self.signature is not None else self.authority.sign(self.document)

    async def _token_route(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        # Held until `token_hangs` is cleared, so the server can still shut down promptly.
        await self._answered.wait()
        if self.token_status != 200:
            return web.Response(status=self.token_status)
        if not request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
            return web.Response(status=400)
        return web.Response(text=self._token)

    def _get(self, value: Callable[[], str]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            self.calls.append(request.path)
            if request.headers.get("X-aws-ec2-metadata-token") != self._token:
                return web.Response(status=401)
            return web.Response(text=value())

        return handler

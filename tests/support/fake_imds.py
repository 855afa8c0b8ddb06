"""The fake IMDS for tests: one signing key per test process, and a runnable server.

The fake itself lives in sandbox/fake_imds.py (the sandbox gives one to each simulated VM).
Run it as a process for end-to-end tests: `python -m tests.support.fake_imds --instance-id
i-… --key-file KEY --cert-dir DIR` binds port 0 and prints `listening http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from pathlib import Path

from aiohttp import web

from sandbox.fake_imds import (
    ACCOUNT,
    DOCUMENT_PATH,
    REGION,
    SIGNATURE_PATH,
    TARGET_STATE_PATH,
    TOKEN_PATH,
    SigningAuthority,
    identity_document,
)
from sandbox.fake_imds import FakeImds as _FakeImds

__all__ = [
    "ACCOUNT",
    "DOCUMENT_PATH",
    "REGION",
    "SIGNATURE_PATH",
    "TARGET_STATE_PATH",
    "TOKEN_PATH",
    "FakeImds",
    "SigningAuthority",
    "identity_document",
    "shared_authority",
]


@functools.cache
def shared_authority() -> SigningAuthority:
    """One key pair per test process: RSA key generation is the slow part."""
    return SigningAuthority.generate()


class FakeImds(_FakeImds):
    """The sandbox's fake IMDS, signing with the test process's shared key by default."""

    def __init__(
        self,
        instance_id: str,
        *,
        authority: SigningAuthority | None = None,
        account: str = ACCOUNT,
        region: str = REGION,
    ) -> None:
        super().__init__(
            instance_id, authority=authority or shared_authority(), account=account, region=region
        )


async def _serve(args: argparse.Namespace) -> None:
    authority = SigningAuthority.from_key_file(args.key_file)
    if args.cert_dir is not None:
        authority.write_certificate(args.cert_dir, args.region)
    fake = FakeImds(args.instance_id, authority=authority, account=args.account, region=args.region)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_imds")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--account", default=ACCOUNT)
    parser.add_argument("--region", default=REGION)
    parser.add_argument("--key-file", type=Path, required=True, help="created if missing")
    parser.add_argument("--cert-dir", type=Path, help="write <region>.pem here")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()

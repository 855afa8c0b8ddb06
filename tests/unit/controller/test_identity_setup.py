"""The run command's identity options and the registrar they build."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import NoCredentialsError

from controller.identity.credentials import CredentialIssuer
from controller.identity.document import SignedDocuments, UnsignedDocuments
from controller.identity.setup import (
    FleetMembership,
    IdentityOptions,
    IdentitySetupError,
    add_arguments,
    build_registrar,
    options_from,
)
from tests.support.fake_imds import shared_authority


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


class _Always:
    def managed(self, instance_id: str) -> bool:
        return True

    def look_again(self, now: float) -> None:
        pass


async def _account() -> str:
    return "123456789012"


async def _no_account() -> str:
    raise NoCredentialsError()


def test_identity_needs_certificates_or_an_explicit_insecure_mode() -> None:
    """Without --identity-certs the controller refuses to start unless told it is insecure."""
    with pytest.raises(IdentitySetupError, match="--insecure-identity"):
        options_from(_parse(), {})
    assert options_from(_parse("--insecure-identity"), {}).insecure


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--identity-account", "12345"], id="short-account"),
        pytest.param(["--credential-ttl", "10s"], id="ttl-under-a-minute"),
        pytest.param(["--max-clock-skew", "soon"], id="not-a-duration"),
    ],
)
def test_bad_identity_flags_are_usage_errors(argv: list[str]) -> None:
    """A malformed account, a too-short lifetime or a bad duration is refused by the parser."""
    with pytest.raises(SystemExit):
        _parse(*argv)


async def test_certificates_secret_and_accounts_are_loaded(tmp_path: Path) -> None:
    """With certificates and accounts given, signatures are checked against them."""
    shared_authority().write_certificate(tmp_path / "certs")
    (tmp_path / "secret").write_text("s" * 32)
    args = _parse(
        "--identity-certs",
        str(tmp_path / "certs"),
        "--identity-account",
        "111111111111",
        "--identity-secret-file",
        str(tmp_path / "secret"),
        "--credential-ttl",
        "10m",
    )
    registrar = await build_registrar(options_from(args, {}), _Always(), own_account=_no_account)
    assert isinstance(registrar.verifier, SignedDocuments)
    assert registrar.policy.allowed_accounts == {"111111111111"}
    assert registrar.issuer.ttl == 600


async def test_the_default_account_is_the_controllers_own() -> None:
    """Without --identity-account, the controller's own account is the allow-list."""
    options = IdentityOptions(certs=None, accounts=(), secret_file=None, insecure=True)
    registrar = await build_registrar(options, _Always(), own_account=_account)
    assert registrar.policy.allowed_accounts == {"123456789012"}
    assert isinstance(registrar.verifier, UnsignedDocuments)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            IdentityOptions(certs=None, accounts=(), secret_file=None, insecure=True),
            "give --identity-account",
            id="own-account-unknown",
        ),
        pytest.param(
            IdentityOptions(certs=Path("/nonexistent"), accounts=("1" * 12,), secret_file=None),
            "not a directory",
            id="no-certificates",
        ),
        pytest.param(
            IdentityOptions(
                certs=None, accounts=("1" * 12,), secret_file=Path("/nonexistent"), insecure=True
            ),
            "cannot read the credential secret file",
            id="no-secret-file",
        ),
    ],
)
async def test_setup_problems_stop_the_start(options: IdentityOptions, message: str) -> None:
    """Each unusable identity setting is one clear error naming what to change."""
    with pytest.raises(IdentitySetupError, match=message):
        await build_registrar(options, _Always(), own_account=_no_account)


@dataclass
class _Runner:
    triggered: list[float] = field(default_factory=list)

    def trigger(self, received_at: float) -> None:
        self.triggered.append(received_at)


@dataclass
class _Pools:
    owned: set[str]
    pools: dict[str, _Runner]

    def owner(self, instance_id: str) -> object | None:
        return self.pools["a"] if instance_id in self.owned else None


def test_membership_comes_from_the_pools() -> None:
    """An instance is managed when a pool owns it; looking again triggers every pool."""
    pools = _Pools({"i-0aaaaaaaaaaaaaaaa"}, {"a": _Runner(), "b": _Runner()})
    membership = FleetMembership(pools)
    assert membership.managed("i-0aaaaaaaaaaaaaaaa")
    assert not membership.managed("i-0bbbbbbbbbbbbbbbb")
    membership.look_again(3.0)
    assert [runner.triggered for runner in pools.pools.values()] == [[3.0], [3.0]]


async def test_secrets_may_come_from_the_environment() -> None:
    """Without a secret file, $JIBRI_AUTOSCALER_IDENTITY_SECRET's lines are the secrets."""
    env = {"JIBRI_AUTOSCALER_IDENTITY_SECRET": "n" * 32 + "\n" + "o" * 32}
    options = options_from(_parse("--insecure-identity", "--identity-account", "1" * 12), env)
    registrar = await build_registrar(options, _Always(), own_account=_no_account)
    old = CredentialIssuer([b"o" * 32], ttl=60, wall_clock=time.time).issue(
        "i-0aaaaaaaaaaaaaaaa", "b"
    )
    assert registrar.issuer.verify(old.token, "i-0aaaaaaaaaaaaaaaa", "b")

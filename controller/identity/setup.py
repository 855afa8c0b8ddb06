"""The `run` command's identity options, and the registrar built from them (docs/identity.md)."""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from common.durations import parse_duration
from common.logs import event
from controller.identity.credentials import (
    CredentialIssuer,
    SecretError,
    load_secrets,
    secrets_from_text,
)
from controller.identity.document import (
    CertificateError,
    DocumentVerifier,
    UnsignedDocuments,
    load_certificates,
)
from controller.identity.registrar import Membership, Policy, Registrar

log = logging.getLogger("controller.identity")

_ACCOUNT_RE = re.compile(r"^\d{12}$")


class IdentitySetupError(Exception):
    """The identity options cannot work; the controller does not start."""


@dataclass(frozen=True)
class IdentityOptions:
    certs: Path | None
    accounts: tuple[str, ...]
    """Empty: the account of the controller's own AWS credentials."""
    secret_file: Path | None
    secret_env: str | None = None
    """The secrets from $JIBRI_AUTOSCALER_IDENTITY_SECRET, used when there is no file."""
    credential_ttl: float = 3600.0
    max_clock_skew: float = 300.0
    insecure: bool = False


def _account(value: str) -> str:
    if not _ACCOUNT_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected a 12-digit AWS account id: {value!r}")
    return value


def _duration(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        if seconds < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} s: {value!r}")
        return seconds

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("agent identity (docs/identity.md)")
    group.add_argument(
        "--identity-certs",
        type=Path,
        metavar="DIR",
        help="directory of <region>.pem: AWS's RSA certificates for identity documents",
    )
    group.add_argument(
        "--identity-account",
        type=_account,
        action="append",
        default=[],
        metavar="ID",
        help="account whose instances may register (repeatable; default: the controller's own)",
    )
    group.add_argument(
        "--identity-secret-file",
        type=Path,
        metavar="FILE",
        help=f"credential secrets, one per line, the first signs (else ${SECRET_ENV}, else random)",
    )
    group.add_argument(
        "--credential-ttl",
        type=_duration(60),
        default=3600.0,
        metavar="DUR",
        help="lifetime of an agent credential; agents renew at half of it (default 1h)",
    )
    group.add_argument(
        "--max-clock-skew",
        type=_duration(0),
        default=300.0,
        metavar="DUR",
        help="how far a document's pendingTime may be ahead of this clock (default 5m)",
    )
    group.add_argument(
        "--insecure-identity",
        action="store_true",
        help="INSECURE, development only: accept identity documents without AWS's signature",
    )


SECRET_ENV: Final = "JIBRI_AUTOSCALER_IDENTITY_SECRET"
"""Credential secrets (one per line) when no --identity-secret-file is given (ECS secrets)."""


def options_from(args: argparse.Namespace, environ: Mapping[str, str]) -> IdentityOptions:
    if args.identity_certs is None and not args.insecure_identity:
        raise IdentitySetupError(
            "no --identity-certs: give the directory of AWS's RSA certificates "
            "(the image ships deploy/certs), or --insecure-identity for development"
        )
    return IdentityOptions(
        certs=args.identity_certs,
        accounts=tuple(args.identity_account),
        secret_file=args.identity_secret_file,
        secret_env=environ.get(SECRET_ENV) if args.identity_secret_file is None else None,
        credential_ttl=args.credential_ttl,
        max_clock_skew=args.max_clock_skew,
        insecure=args.insecure_identity,
    )


class _Runner(Protocol):
    def trigger(self, received_at: float) -> None: ...


class Fleet(Protocol):
    """The controller's pools, as far as registration needs them."""

    def owner(self, instance_id: str) -> object | None: ...

    @property
    def pools(self) -> Mapping[str, _Runner]: ...


@dataclass(frozen=True)
class FleetMembership:
    """Membership from the pools: managed when some pool's ASG holds the instance."""

    fleet: Fleet

    def managed(self, instance_id: str) -> bool:
        return self.fleet.owner(instance_id) is not None

    def look_again(self, now: float) -> None:
        # A pass re-reads the groups; passes of a pool are already kept apart in time.
        for runner in self.fleet.pools.values():
            runner.trigger(now)


async def caller_account() -> str:
    """The account of this process's AWS credentials (STS needs no IAM permission for it)."""
    client: Any
    async with get_session().create_client("sts") as client:
        answer = await client.get_caller_identity()
    return str(answer["Account"])


async def build_registrar(
    options: IdentityOptions,
    membership: Membership,
    *,
    wall_clock: Callable[[], float] = time.time,
    own_account: Callable[[], Awaitable[str]] = caller_account,
) -> Registrar:
    """Everything the options name, loaded and checked; IdentitySetupError says what is wrong."""
    verifier: DocumentVerifier
    if options.insecure:
        event(
            log,
            "INSECURE identity: documents are accepted without checking AWS's signature; "
            "any host that can reach the controller may register as any managed instance",
            level=logging.WARNING,
        )
        verifier = UnsignedDocuments()
    else:
        assert options.certs is not None
        try:
            verifier = load_certificates(options.certs, datetime.fromtimestamp(wall_clock(), UTC))
        except CertificateError as exc:
            raise IdentitySetupError(str(exc)) from exc
    accounts = options.accounts
    if not accounts:
        try:
            accounts = (await own_account(),)
        except (BotoCoreError, ClientError) as exc:
            raise IdentitySetupError(
                f"cannot learn the controller's own AWS account for the identity allow-list "
                f"({exc}); give --identity-account"
            ) from exc
    try:
        secrets = (
            secrets_from_text(options.secret_env, SECRET_ENV)
            if options.secret_env
            else load_secrets(options.secret_file)
        )
        issuer = CredentialIssuer(secrets, ttl=options.credential_ttl, wall_clock=wall_clock)
    except SecretError as exc:
        raise IdentitySetupError(str(exc)) from exc
    event(log, "identity ready", accounts=list(accounts), insecure=options.insecure)
    return Registrar(
        verifier=verifier,
        policy=Policy(allowed_accounts=frozenset(accounts), max_clock_skew=options.max_clock_skew),
        membership=membership,
        issuer=issuer,
    )

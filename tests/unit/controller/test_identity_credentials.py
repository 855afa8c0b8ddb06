"""Per-instance credentials: bound to an instance and a boot, expiring, checked in constant time."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from controller.identity.credentials import (
    CredentialIssuer,
    SecretError,
    authenticate_report,
    load_secrets,
)
from controller.identity.errors import Refused

A = "i-0aaaaaaaaaaaaaaaa"
B = "i-0bbbbbbbbbbbbbbbb"
SECRET = b"s" * 32


class Wall:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def issuer(wall: Wall) -> CredentialIssuer:
    return CredentialIssuer([SECRET], ttl=3600, wall_clock=wall)


def test_an_issued_credential_verifies_for_its_instance_and_boot(issuer: CredentialIssuer) -> None:
    """A credential verifies for the instance and boot it was issued to, until its expiry."""
    credential = issuer.issue(A, "boot-1")
    verified = issuer.verify(credential.token, A, "boot-1")
    assert verified.expires_at == credential.expires_at == 1_800_003_600


def _flip_last(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _forged_payload(token: str) -> str:
    payload = base64.urlsafe_b64encode(b'["v1","i-0bbbbbbbbbbbbbbbb","boot-1",1900000000]')
    return payload.decode().rstrip("=") + "." + token.partition(".")[2]


@pytest.mark.parametrize(
    ("mutate", "instance", "boot", "advance", "outcome", "status"),
    [
        pytest.param(lambda t: t, B, "boot-1", 0, "wrong-instance", 403, id="foreign-instance"),
        pytest.param(lambda t: t, A, "boot-2", 0, "wrong-boot", 401, id="other-boot"),
        pytest.param(lambda t: t, A, "boot-1", 3600, "expired", 401, id="expired"),
        pytest.param(_flip_last, A, "boot-1", 0, "bad-signature", 401, id="tampered-mac"),
        pytest.param(_forged_payload, B, "boot-1", 0, "bad-signature", 401, id="forged-payload"),
        pytest.param(lambda t: "x" * 600, A, "boot-1", 0, "malformed", 401, id="too-long"),
        pytest.param(lambda t: "no-dot", A, "boot-1", 0, "malformed", 401, id="no-mac"),
        pytest.param(lambda t: "%%%.%%%", A, "boot-1", 0, "malformed", 401, id="not-base64"),
    ],
)
def test_bad_credentials_are_refused(
    issuer: CredentialIssuer,
    wall: Wall,
    mutate: object,
    instance: str,
    boot: str,
    advance: float,
    outcome: str,
    status: int,
) -> None:
    """Foreign, stale, expired, tampered or unreadable credentials are refused with a reason."""
    token = issuer.issue(A, "boot-1").token
    wall.now += advance
    assert callable(mutate)
    with pytest.raises(Refused) as refused:
        issuer.verify(mutate(token), instance, boot)
    assert (refused.value.outcome, refused.value.status) == (outcome, status)


def test_another_controllers_secret_does_not_verify(wall: Wall) -> None:
    """A credential issued under one secret is refused by a controller with another."""
    token = CredentialIssuer([SECRET], ttl=60, wall_clock=wall).issue(A, "b").token
    other = CredentialIssuer([b"o" * 32], ttl=60, wall_clock=wall)
    with pytest.raises(Refused, match="not issued by this controller"):
        other.verify(token, A, "b")


def test_rotation_verifies_with_every_secret_and_signs_with_the_first(wall: Wall) -> None:
    """After rotation, old credentials still verify and new ones use the new secret."""
    old = CredentialIssuer([SECRET], ttl=60, wall_clock=wall).issue(A, "b").token
    rotated = CredentialIssuer([b"n" * 32, SECRET], ttl=60, wall_clock=wall)
    assert rotated.verify(old, A, "b").instance_id == A
    fresh = rotated.issue(A, "b").token
    with pytest.raises(Refused):
        CredentialIssuer([SECRET], ttl=60, wall_clock=wall).verify(fresh, A, "b")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("Basic abc", id="not-bearer"),
        pytest.param("Bearer ", id="empty"),
    ],
)
def test_a_report_without_a_bearer_credential_is_missing(
    issuer: CredentialIssuer, header: str | None
) -> None:
    """A report with no bearer credential is refused as `missing`, 401."""
    with pytest.raises(Refused) as refused:
        authenticate_report(issuer, header, A, "b")
    assert (refused.value.outcome, refused.value.status) == ("missing", 401)


def test_a_report_with_its_credential_is_authenticated(issuer: CredentialIssuer) -> None:
    """`Bearer <credential>` authenticates a report for the credential's instance and boot."""
    token = issuer.issue(A, "b").token
    assert authenticate_report(issuer, f"Bearer {token}", A, "b").instance_id == A


def test_short_secrets_are_refused(wall: Wall) -> None:
    """A secret under 32 bytes is refused at start."""
    with pytest.raises(SecretError, match="at least 32"):
        CredentialIssuer([b"short"], ttl=60, wall_clock=wall)


def test_secret_files_hold_one_secret_per_line(tmp_path: Path) -> None:
    """A secret file's non-empty lines are the secrets, in order."""
    path = tmp_path / "secret"
    path.write_bytes(b"a" * 32 + b"\n\n" + b"b" * 40 + b"\n")
    assert load_secrets(path) == [b"a" * 32, b"b" * 40]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"short\n", "line 1: a secret must be at least 32", id="short-line"),
        pytest.param(None, "cannot read", id="missing"),
    ],
)
def test_unusable_secret_files_are_clear_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    """An empty, short or unreadable secret file stops the start with the reason."""
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SecretError, match=message):
        load_secrets(path)


def test_without_a_file_a_random_secret_is_used() -> None:
    """No secret file: one random 32-byte secret, different at every start."""
    first, second = load_secrets(None), load_secrets(None)
    assert len(first[0]) == 32 and first != second

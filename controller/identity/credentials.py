"""Per-instance credentials: an HMAC-SHA256 token bound to (instance id, boot id, expiry).

The token is `base64url(payload) "." base64url(mac)` with the payload the canonical JSON
`["v1", instanceId, bootId, expiresAt]` (Unix seconds). Nothing is stored per agent: any
controller holding the secret verifies any token it issued, so a restart or a second
controller keeps agents reporting when the secret comes from a file. A secret file may hold
several secrets, one per line: the first signs, all verify (rotation, docs/identity.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from common.logs import event
from controller.identity.errors import Refused

log = logging.getLogger("controller.identity")

VERSION: Final = "v1"
MIN_SECRET_BYTES: Final = 32
MAX_TOKEN_CHARS: Final = 512
"""A token is about 150 characters; a longer one is refused before any work."""


class SecretError(Exception):
    """The configured secret cannot be used; the controller does not start."""


@dataclass(frozen=True)
class Credential:
    token: str
    instance_id: str
    boot_id: str
    expires_at: float
    """Unix seconds."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _unauthorized(outcome: str, reason: str) -> Refused:
    return Refused(outcome, 401, reason)


class CredentialIssuer:
    """Issues and verifies credentials with the first of `secrets` (all of them verify)."""

    def __init__(
        self, secrets: Sequence[bytes], *, ttl: float, wall_clock: Callable[[], float]
    ) -> None:
        if not secrets:
            raise SecretError("no credential secret")
        for secret in secrets:
            if len(secret) < MIN_SECRET_BYTES:
                raise SecretError(f"a credential secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secrets = tuple(secrets)
        self.ttl = ttl
        self._now = wall_clock

    def _mac(self, secret: bytes, payload: bytes) -> hmac.HMAC:
        mac = hmac.HMAC(secret, hashes.SHA256())
        mac.update(payload)
        return mac

    def issue(self, instance_id: str, boot_id: str) -> Credential:
        expires_at = int(self._now() + self.ttl)
        payload = json.dumps([VERSION, instance_id, boot_id, expires_at], separators=(",", ":"))
        raw = payload.encode()
        token = f"{_b64(raw)}.{_b64(self._mac(self._secrets[0], raw).finalize())}"
        return Credential(token, instance_id, boot_id, expires_at)

    def verify(self, token: str, instance_id: str, boot_id: str) -> Credential:
        """The credential if `token` was issued here for this instance and boot and is live."""
        return bind(self.open(token), instance_id, boot_id)

    def open(self, token: str) -> Credential:
        """The live credential `token` stands for, if this controller issued it."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("malformed", "the credential is too long")
        encoded, dot, encoded_mac = token.partition(".")
        try:
            raw, mac = _unb64(encoded), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise _unauthorized("malformed", "the credential is not base64url") from None
        if not dot or not raw or not mac:
            raise _unauthorized("malformed", "the credential is not <payload>.<mac>")
        if not self._authentic(raw, mac):
            raise _unauthorized(
                "bad-signature",
                "the credential was not issued by this controller (or its secret changed); "
                "register again",
            )
        # Parsed only once authentic: nobody but a holder of the secret reaches this JSON.
        try:
            version, instance_id, boot_id, expires_at = json.loads(raw)
        except (ValueError, TypeError):
            raise _unauthorized("malformed", "the credential's payload is not readable") from None
        if version != VERSION:
            raise _unauthorized("malformed", f"credential version {version!r} is not {VERSION}")
        if expires_at <= self._now():
            raise _unauthorized("expired", "the credential has expired; register again")
        return Credential(token, instance_id, boot_id, float(expires_at))

    def _authentic(self, raw: bytes, mac: bytes) -> bool:
        for secret in self._secrets:
            try:
                # HMAC.verify compares in constant time.
                self._mac(secret, raw).verify(mac)
            except InvalidSignature:
                continue
            return True
        return False


def bind(credential: Credential, instance_id: str, boot_id: str) -> Credential:
    """`credential`, if it was issued to this instance and this boot."""
    if credential.instance_id != instance_id:
        raise Refused(
            "wrong-instance",
            403,
            f"the credential belongs to {credential.instance_id}, not {instance_id}",
        )
    if credential.boot_id != boot_id:
        raise _unauthorized(
            "wrong-boot", "the credential belongs to another boot of this instance; register"
        )
    return credential


def bearer(authorization: str | None) -> str:
    """The bearer token of an Authorization header."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing", "no bearer credential; register at /v1/register first")
    # A bearer token is ASCII (RFC 6750); other bytes arrive as surrogates.
    if not token.isascii():
        raise _unauthorized("malformed", "the credential is not ASCII")
    return token


def load_secrets(path: Path | None) -> list[bytes]:
    """The secrets of `path` (one per non-empty line), or one random secret without a file."""
    if path is None:
        event(
            log,
            "no credential secret file: using a random secret; agents register again after "
            "a controller restart",
            level=logging.WARNING,
        )
        return [os.urandom(MIN_SECRET_BYTES)]
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise SecretError(f"cannot read the credential secret file {path}: {exc.strerror}") from exc
    return _secrets(content, f"the credential secret file {path}")


def secrets_from_text(text: str, where: str) -> list[bytes]:
    """Secrets given as text (one per line), such as an environment variable's value."""
    return _secrets(text.encode(), where)


def _secrets(content: bytes, where: str) -> list[bytes]:
    secrets = [line.strip() for line in content.splitlines() if line.strip()]
    if not secrets:
        raise SecretError(f"{where} is empty")
    for number, secret in enumerate(secrets, start=1):
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(
                f"{where}, line {number}: a secret must be at least {MIN_SECRET_BYTES} bytes "
                "(for example `openssl rand -hex 32`)"
            )
    return secrets


def authenticate_report(
    issuer: CredentialIssuer, authorization: str | None, instance_id: str, boot_id: str
) -> Credential:
    """The report's bearer credential, verified for the instance and boot the report names."""
    return issuer.verify(bearer(authorization), instance_id, boot_id)

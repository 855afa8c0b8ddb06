"""The EC2 instance identity document: verify AWS's signature, then read what it says.

AWS signs the exact bytes IMDS serves at /latest/dynamic/instance-identity/document; the
base64 signature at .../signature is RSA PKCS#1 v1.5 over SHA-256 of those bytes, verifiable
with the region's RSA certificate (deploy/certs/README.md says where AWS publishes them). The
PKCS7 forms (/pkcs7 with DSA-SHA1, /rsa2048) would need a CMS verifier, which `cryptography`
does not offer, so they are not accepted.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, ValidationError

from common.logs import event
from common.wire import InstanceId
from controller.identity.errors import Refused, malformed

log = logging.getLogger("controller.identity")

MAX_DOCUMENT_BYTES: Final = 4096
"""A real document is about 500 bytes; anything far larger is not one."""
_REGION_RE: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class CertificateError(Exception):
    """The configured certificates cannot be used; the controller does not start."""


class IdentityDocument(BaseModel):
    """The fields of the document this controller relies on; AWS may add others."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instanceId: InstanceId
    accountId: Annotated[str, StringConstraints(pattern=r"^\d{12}$")]
    region: Annotated[str, StringConstraints(pattern=_REGION_RE.pattern)]
    pendingTime: AwareDatetime
    """When the instance last entered `pending` (its launch or last start)."""


class DocumentVerifier(Protocol):
    """Turns the bytes and signature an agent presented into a document it may be trusted for."""

    def verify(self, document: bytes, signature: str) -> IdentityDocument:
        """The parsed document, or Refused (malformed, bad-signature, unknown-region)."""
        ...


def parse_document(document: bytes) -> IdentityDocument:
    if len(document) > MAX_DOCUMENT_BYTES:
        raise malformed(f"the identity document is over {MAX_DOCUMENT_BYTES} bytes")
    try:
        return IdentityDocument.model_validate_json(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise malformed(f"the identity document is not valid: {where}: {first['msg']}") from exc


def decode_signature(signature: str) -> bytes:
    try:
        # IMDS serves the signature wrapped over several lines; whitespace is not part of it.
        return base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise malformed("the signature is not base64") from exc


@dataclass(frozen=True)
class SignedDocuments:
    """Verifies with the RSA certificates of each region (several per region during rotation)."""

    keys: Mapping[str, tuple[rsa.RSAPublicKey, ...]]

    def verify(self, document: bytes, signature: str) -> IdentityDocument:
        parsed = parse_document(document)
        raw = decode_signature(signature)
        keys = self.keys.get(parsed.region, ())
        if not keys:
            raise Refused(
                "unknown-region",
                403,
                f"no certificate for region {parsed.region}: add {parsed.region}.pem to the "
                "controller's --identity-certs directory",
            )
        for key in keys:
            try:
                key.verify(raw, document, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            return parsed
        raise Refused(
            "bad-signature",
            403,
            f"the document's signature does not verify with the {parsed.region} certificate",
        )


@dataclass(frozen=True)
class UnsignedDocuments:
    """INSECURE, development only: reads the document and ignores the signature."""

    def verify(self, document: bytes, signature: str) -> IdentityDocument:
        return parse_document(document)


def load_certificates(directory: Path, now: datetime) -> SignedDocuments:
    """`<region>.pem` files of `directory`, each with one or more RSA certificates."""
    if not directory.is_dir():
        raise CertificateError(f"{directory} is not a directory of <region>.pem files")
    try:
        files = sorted(directory.glob("*.pem"))
    except OSError as exc:
        raise CertificateError(f"cannot read {directory}: {exc.strerror}") from exc
    keys: dict[str, tuple[rsa.RSAPublicKey, ...]] = {}
    for path in files:
        region = path.stem
        if not _REGION_RE.match(region):
            raise CertificateError(f"{path}: the name is not <region>.pem (such as us-east-1.pem)")
        keys[region] = tuple(_region_keys(path, now))
    if not keys:
        raise CertificateError(f"{directory} holds no <region>.pem certificate")
    event(log, "identity certificates loaded", regions=sorted(keys))
    return SignedDocuments(keys)


def _region_keys(path: Path, now: datetime) -> list[rsa.RSAPublicKey]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CertificateError(f"{path} is not a PEM certificate ({exc})") from exc
    keys = []
    for certificate in certificates:
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise CertificateError(
                f"{path} holds a {type(key).__name__} certificate; use AWS's RSA certificate "
                "(not DSA or RSA-2048) for the region"
            )
        if certificate.not_valid_after_utc < now:
            # Still used: AWS signs with the key until it rotates, whatever the date says.
            event(
                log,
                "identity certificate expired",
                level=logging.WARNING,
                file=str(path),
                expired=certificate.not_valid_after_utc.isoformat(),
            )
        keys.append(key)
    return keys

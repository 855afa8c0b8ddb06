"""Instance identity documents: AWS's signature verified with the region's certificate."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from controller.identity.document import (
    CertificateError,
    SignedDocuments,
    UnsignedDocuments,
    load_certificates,
)
from controller.identity.errors import Refused
from tests.support.fake_imds import SigningAuthority, identity_document, shared_authority

INSTANCE = "i-0123456789abcdef0"
NOW = datetime(2026, 12, 3, tzinfo=UTC)
SHIPPED = Path(__file__).parents[3] / "deploy" / "certs"


@pytest.fixture
def verifier(tmp_path: Path) -> SignedDocuments:
    shared_authority().write_certificate(tmp_path, "eu-west-1")
    return load_certificates(tmp_path, NOW)


def test_a_signed_document_verifies_and_is_parsed(verifier: SignedDocuments) -> None:
    """A document signed by the region's key verifies and yields its instance and account."""
    document = identity_document(INSTANCE)
    parsed = verifier.verify(document, shared_authority().sign(document))
    assert (parsed.instanceId, parsed.accountId, parsed.region) == (
        INSTANCE,
        "123456789012",
        "eu-west-1",
    )


def _other_key_signature(document: bytes) -> str:
    return SigningAuthority.generate().sign(document)


def _tampered(document: bytes) -> bytes:
    return document.replace(INSTANCE.encode(), b"i-0fffffffffffffff0")


@pytest.mark.parametrize(
    ("document", "signature", "outcome"),
    [
        pytest.param(
            identity_document(INSTANCE),
            _other_key_signature(identity_document(INSTANCE)),
            "bad-signature",
            id="signed-by-another-key",
        ),
        pytest.param(
            _tampered(identity_document(INSTANCE)),
            shared_authority().sign(identity_document(INSTANCE)),
            "bad-signature",
            id="tampered-document",
        ),
        pytest.param(
            identity_document(INSTANCE, region="us-east-1"),
            shared_authority().sign(identity_document(INSTANCE, region="us-east-1")),
            "unknown-region",
            id="region-without-certificate",
        ),
        pytest.param(identity_document(INSTANCE), "not base64 !", "malformed", id="bad-base64"),
        pytest.param(b"{not json", base64.b64encode(b"x").decode(), "malformed", id="bad-json"),
        pytest.param(
            b'{"instanceId": "i-0123456789abcdef0"}', "AAAA", "malformed", id="missing-fields"
        ),
        pytest.param(b"{" + b" " * 5000 + b"}", "AAAA", "malformed", id="oversized"),
    ],
)
def test_bad_documents_are_refused(
    verifier: SignedDocuments, document: bytes, signature: str, outcome: str
) -> None:
    """Forged, tampered, unreadable or unknown-region documents are refused with their outcome."""
    with pytest.raises(Refused) as refused:
        verifier.verify(document, signature)
    assert refused.value.outcome == outcome
    assert refused.value.status in (400, 403)


def test_a_rotated_region_accepts_old_and_new_keys(tmp_path: Path) -> None:
    """With two certificates in one region file, a document signed by either verifies."""
    old, new = shared_authority(), SigningAuthority.generate()
    (tmp_path / "eu-west-1.pem").write_bytes(old.certificate_pem() + new.certificate_pem())
    verifier = load_certificates(tmp_path, NOW)
    document = identity_document(INSTANCE)
    for authority in (old, new):
        assert verifier.verify(document, authority.sign(document)).instanceId == INSTANCE


def test_the_insecure_verifier_ignores_the_signature() -> None:
    """The development-only verifier reads the document and accepts any signature."""
    parsed = UnsignedDocuments().verify(identity_document(INSTANCE), "")
    assert parsed.instanceId == INSTANCE


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({}, "no <region>.pem", id="empty-directory"),
        pytest.param({"eu-west-1.pem": b"garbage"}, "not a PEM certificate", id="not-pem"),
        pytest.param({"ireland.pem": None}, "not <region>.pem", id="bad-file-name"),
    ],
)
def test_unusable_certificates_stop_the_start(
    tmp_path: Path, files: dict[str, bytes | None], message: str
) -> None:
    """A certificate directory that cannot serve is a clear startup error."""
    for name, content in files.items():
        (tmp_path / name).write_bytes(content or shared_authority().certificate_pem())
    with pytest.raises(CertificateError, match=message):
        load_certificates(tmp_path, NOW)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A --identity-certs path that is not a directory is named in the error."""
    with pytest.raises(CertificateError, match="not a directory"):
        load_certificates(tmp_path / "absent", NOW)


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.pem")), ids=lambda p: p.stem)
def test_shipped_aws_certificates_are_intact(path: Path) -> None:
    """Every shipped AWS certificate is RSA, loads, and its self-signature still verifies."""
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    certificate.verify_directly_issued_by(certificate)
    assert load_certificates(SHIPPED, NOW).keys[path.stem]

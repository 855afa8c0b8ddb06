"""Registration decisions: who earns a credential, and every reason for a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.identity.credentials import CredentialIssuer
from controller.identity.document import load_certificates
from controller.identity.errors import Refused
from controller.identity.registrar import Policy, Registrar, Registration
from tests.support.fake_imds import SigningAuthority, identity_document, shared_authority

INSTANCE = "i-0123456789abcdef0"
WALL = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


@dataclass
class Fleet:
    """The pools' view reduced to the Membership protocol: a set of managed ids."""

    ids: set[str] = field(default_factory=lambda: {INSTANCE})
    asked: list[float] = field(default_factory=list)

    def managed(self, instance_id: str) -> bool:
        return instance_id in self.ids

    def look_again(self, now: float) -> None:
        self.asked.append(now)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def registrar(tmp_path: Path, fleet: Fleet) -> Registrar:
    shared_authority().write_certificate(tmp_path)
    return Registrar(
        verifier=load_certificates(tmp_path, WALL),
        policy=Policy(allowed_accounts=frozenset({"123456789012"})),
        membership=fleet,
        issuer=CredentialIssuer([b"k" * 32], ttl=3600, wall_clock=WALL.timestamp),
    )


def _request(
    *,
    instance: str = INSTANCE,
    document_for: str = INSTANCE,
    account: str = "123456789012",
    pending: datetime = WALL - timedelta(minutes=3),
    authority: SigningAuthority | None = None,
) -> Registration:
    document = identity_document(document_for, account=account, pending=pending)
    signature = (authority or shared_authority()).sign(document)
    return Registration(instance, "boot-1", document, signature)


def test_a_managed_instance_with_a_signed_document_gets_a_credential(
    registrar: Registrar,
) -> None:
    """A signed document of a managed instance in an allowed account earns a credential."""
    credential = registrar.register(_request(), wall=WALL.timestamp(), now=5.0)
    assert (credential.instance_id, credential.boot_id) == (INSTANCE, "boot-1")
    assert registrar.issuer.verify(credential.token, INSTANCE, "boot-1")


@pytest.mark.parametrize(
    ("request_", "outcome"),
    [
        pytest.param(
            _request(authority=SigningAuthority.generate()), "bad-signature", id="other-key"
        ),
        pytest.param(
            _request(instance="i-0fffffffffffffff0", document_for=INSTANCE),
            "instance-mismatch",
            id="someone-elses-document",
        ),
        pytest.param(_request(account="210987654321"), "account-not-allowed", id="foreign-account"),
        pytest.param(
            _request(pending=WALL + timedelta(minutes=10)), "clock-skew", id="started-in-future"
        ),
    ],
)
def test_refusals_name_their_reason(
    registrar: Registrar, fleet: Fleet, request_: Registration, outcome: str
) -> None:
    """Each failed check refuses with 403 and its own outcome; no credential is issued."""
    with pytest.raises(Refused) as refused:
        registrar.register(request_, wall=WALL.timestamp(), now=5.0)
    assert (refused.value.outcome, refused.value.status) == (outcome, 403)
    assert fleet.asked == []


def test_an_instance_outside_the_managed_groups_is_refused_and_looked_for(
    registrar: Registrar, fleet: Fleet
) -> None:
    """An unmanaged instance is refused (403 not-managed) and the pools are asked to look again."""
    fleet.ids.clear()
    with pytest.raises(Refused) as refused:
        registrar.register(_request(), wall=WALL.timestamp(), now=7.0)
    assert (refused.value.outcome, refused.value.status) == ("not-managed", 403)
    assert fleet.asked == [7.0]


def test_a_small_clock_difference_is_tolerated(registrar: Registrar) -> None:
    """A pendingTime a minute ahead of the controller's clock is within the allowed skew."""
    request = _request(pending=WALL + timedelta(minutes=1))
    assert registrar.register(request, wall=WALL.timestamp(), now=5.0).instance_id == INSTANCE


def test_an_old_document_still_registers(registrar: Registrar) -> None:
    """A long-running instance's pendingTime is days old; that alone is no reason to refuse."""
    request = _request(pending=WALL - timedelta(days=40))
    assert registrar.register(request, wall=WALL.timestamp(), now=5.0).instance_id == INSTANCE

"""Registration: a verified identity document for a managed instance earns a credential.

`Registrar.register` is the whole decision, with the time passed in; the HTTP handler
(controller/http/register.py) only decodes the request and renders the answer. The checks,
in order, each with the outcome it counts:

    malformed            the request or the document cannot be read (400)
    unknown-region       no certificate configured for the document's region (403)
    bad-signature        AWS's signature does not verify (403)
    instance-mismatch    the document names another instance than the request (403)
    account-not-allowed  the document's account is not in the allow-list (403)
    clock-skew           the document's pendingTime is ahead of the controller's clock (403)
    not-managed          the instance is in no managed Auto Scaling Group (yet) (403)
    issued               a credential bound to the instance id and the boot id (200)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from common.logs import event
from controller.identity.credentials import Credential, CredentialIssuer
from controller.identity.document import DocumentVerifier
from controller.identity.errors import Refused

log = logging.getLogger("controller.identity")

NOT_MANAGED_RETRY_SECONDS: Final = 5


class Membership(Protocol):
    """What the pools know of the fleet: the narrow view registration needs."""

    def managed(self, instance_id: str) -> bool:
        """Whether the instance is in a managed Auto Scaling Group as last observed."""
        ...

    def look_again(self, now: float) -> None:
        """Ask for an observation soon: a new instance registers before its group is re-read."""
        ...


@dataclass(frozen=True)
class Policy:
    allowed_accounts: frozenset[str]
    """Accounts whose instances may register (docs/identity.md says how the default is found)."""
    max_clock_skew: float = 300.0
    """Seconds a document's pendingTime may be ahead of the controller's wall clock."""


@dataclass(frozen=True)
class Registration:
    instance_id: str
    boot_id: str
    document: bytes
    signature: str


class Registrar:
    """Verifies a registration and issues the credential, or raises Refused."""

    def __init__(
        self,
        *,
        verifier: DocumentVerifier,
        policy: Policy,
        membership: Membership,
        issuer: CredentialIssuer,
    ) -> None:
        self.verifier = verifier
        self.policy = policy
        self.membership = membership
        self.issuer = issuer

    def register(self, request: Registration, *, wall: float, now: float) -> Credential:
        """`wall` is Unix time (pendingTime, expiry); `now` the monotonic clock of the pools."""
        document = self.verifier.verify(request.document, request.signature)
        if document.instanceId != request.instance_id:
            raise Refused(
                "instance-mismatch",
                403,
                f"the identity document is {document.instanceId}'s, not {request.instance_id}'s",
            )
        if document.accountId not in self.policy.allowed_accounts:
            raise Refused(
                "account-not-allowed",
                403,
                f"account {document.accountId} is not allowed to register (--identity-account)",
            )
        ahead = document.pendingTime.timestamp() - wall
        if ahead > self.policy.max_clock_skew:
            raise Refused(
                "clock-skew",
                403,
                f"the instance started {ahead:.0f} s after the controller's clock says it is "
                f"now ({datetime.fromtimestamp(wall, UTC).isoformat()}); check NTP on the "
                "controller",
            )
        if not self.membership.managed(request.instance_id):
            self.membership.look_again(now)
            raise Refused(
                "not-managed",
                403,
                f"{request.instance_id} is in no managed Auto Scaling Group (yet); retry in "
                f"{NOT_MANAGED_RETRY_SECONDS} s",
            )
        credential = self.issuer.issue(request.instance_id, request.boot_id)
        event(
            log,
            "agent registered",
            instance=request.instance_id,
            boot=request.boot_id,
            expires=credential.expires_at,
        )
        return credential

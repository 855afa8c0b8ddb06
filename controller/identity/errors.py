"""Why a registration or a report's credential was refused: one outcome, one status, one reason.

The outcome is the label of the counters (`registrations_total`, `report_auth_total`), the
reason goes into the 4xx body and the log line, so the three always agree.
"""

from __future__ import annotations

from typing import Final

REGISTRATION_OUTCOMES: Final = (
    "issued",
    "malformed",
    "unauthorized",
    "too-large",
    "unknown-region",
    "bad-signature",
    "instance-mismatch",
    "account-not-allowed",
    "clock-skew",
    "not-managed",
)
REPORT_AUTH_OUTCOMES: Final = (
    "ok",
    "missing",
    "malformed",
    "bad-signature",
    "expired",
    "wrong-instance",
    "wrong-boot",
)
"""Outcomes of POST /v1/register, and of checking a report's credential."""


class Refused(Exception):
    """A request that identity checks turned down; nothing else changes."""

    def __init__(self, outcome: str, status: int, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.status = status
        self.reason = reason


def malformed(reason: str) -> Refused:
    return Refused("malformed", 400, reason)

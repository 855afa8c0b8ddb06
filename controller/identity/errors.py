"""Why a registration or a report's credential was refused: one outcome, one status, one reason.

The outcome is the label of the counters (`registrations_total`, `report_auth_total`), the
reason goes into the 4xx body and the log line, so the three always agree.
"""

from __future__ import annotations


class Refused(Exception):
    """A request that identity checks turned down; nothing else changes."""

    def __init__(self, outcome: str, status: int, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.status = status
        self.reason = reason


def malformed(reason: str) -> Refused:
    return Refused("malformed", 400, reason)

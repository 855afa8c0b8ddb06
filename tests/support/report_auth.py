"""A stand-in for the controller's report authentication, for tests of the report handler.

Tests of what the handler does with a report (size limits, schemas, the store, drains) need
an Authorization check, not identity: `SharedTokenAuth` accepts one fixed bearer token for
every instance, behind the same `ReportAuth` protocol as the real `CredentialAuth`. Identity
itself is tested with the real thing (tests/unit/controller/test_identity_*.py).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from common.wire import Report
from controller.identity.credentials import Credential


@dataclass(frozen=True)
class SharedTokenAuth:
    token: str

    def authenticate(self, authorization: str | None) -> Credential | web.Response:
        scheme, _, presented = (authorization or "").partition(" ")
        if (
            scheme.lower() == "bearer"
            and presented.isascii()
            and hmac.compare_digest(presented.strip().encode(), self.token.encode())
        ):
            return Credential(self.token, "", "", 0.0)
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)

    def authorize(self, credential: Credential, report: Report) -> web.Response | None:
        return None

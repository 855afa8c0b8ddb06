"""Identity for end-to-end tests: the controller's flags, and registration for simulated agents.

The controller is started with the test authority's certificate in place of AWS's
(`controller_identity_args`); an agent simulated in the test process registers with a
document signed by the same key (`register`), the way a real agent does after reading IMDS.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

from common.wire import REGISTER_PATH, RegisterAnswer
from tests.support.fake_imds import ACCOUNT, REGION, SigningAuthority, identity_document
from tests.support.fake_imds import shared_authority as shared_authority

SECRET = "e2e-identity-secret-0123456789abcdef"


def controller_identity_args(directory: Path) -> list[str]:
    """Flags that make a controller trust the test authority, as it trusts AWS."""
    shared_authority().write_certificate(directory / "certs", REGION)
    secret = directory / "identity-secret"
    secret.write_text(SECRET + "\n")
    return [
        "--identity-certs",
        str(directory / "certs"),
        "--identity-account",
        ACCOUNT,
        "--identity-secret-file",
        str(secret),
    ]


def registration_body(
    instance_id: str, boot_id: str, *, authority: SigningAuthority | None = None, **document: str
) -> dict[str, str]:
    """What an agent on `instance_id` posts to /v1/register (signed by `authority`)."""
    raw = identity_document(instance_id, **document)  # type: ignore[arg-type]
    return {
        "instanceId": instance_id,
        "bootId": boot_id,
        "document": base64.b64encode(raw).decode(),
        "signature": (authority or shared_authority()).sign(raw),
    }


def register(
    base_url: str,
    instance_id: str,
    boot_id: str,
    *,
    authority: SigningAuthority | None = None,
    token: str | None = None,
    **document: str,
) -> tuple[int, RegisterAnswer | dict[str, object]]:
    """POST /v1/register; the answer, or the refusal's JSON body, with the status."""
    body = json.dumps(registration_body(instance_id, boot_id, authority=authority, **document))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        base_url.rstrip("/") + REGISTER_PATH, data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, RegisterAnswer.model_validate_json(response.read())
    except urllib.error.HTTPError as exc:
        refusal: dict[str, object] = json.loads(exc.read() or b"{}")
        return exc.code, refusal

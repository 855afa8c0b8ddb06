"""Reading and judging request bodies, the same way for reports and registrations."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` (chunked bodies included)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


def schema_error(exc: ValidationError) -> dict[str, str]:
    """The first problem pydantic found: the field's dotted path and the reason."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "(body)"
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown field"
    return {"field": field, "reason": reason}

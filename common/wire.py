"""The agent → controller report (docs/design.md §7), defined once and imported by both sides."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

MAX_REPORT_BYTES: Final = 16 * 1024
MAX_NESTING: Final = 8
"""Arrays and objects inside one another that a report may open (it uses two)."""
REPORTS_PATH: Final = "/v1/reports"
TOKEN_ENV: Final = "JIBRI_AUTOSCALER_TOKEN"
INSTANCE_ID_RE: Final = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")
AMI_ID_RE: Final = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")

InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID_RE.pattern)]


class BusyStatus(StrEnum):
    IDLE = "IDLE"
    BUSY = "BUSY"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"


class HealthStatus(StrEnum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


class _Strict(BaseModel):
    # Strict: "5" is not a seq and "yes" is not a boolean; a sloppy client learns at once.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class JibriStatus(_Strict):
    # Lax only so Python callers may pass the plain string; JSON accepts exactly the values.
    busyStatus: Annotated[BusyStatus, Strict(False)]
    healthStatus: Annotated[HealthStatus, Strict(False)]


class Report(_Strict):
    """One agent's view of its instance, sent every few seconds and on every change."""

    instanceId: InstanceId
    bootId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    seq: Annotated[int, Field(ge=0)]
    jibri: JibriStatus
    draining: bool = False
    drained: bool = False
    pendingUploads: Annotated[int, Field(ge=0)] = 0
    # Optional, so that agents older than these fields still validate.
    recordingsFinished: Annotated[int, Field(ge=0)] = 0
    """Recordings finished since this boot (spec.recycle.maxRecordings)."""
    uptimeSeconds: Annotated[int, Field(ge=0)] | None = None
    """Whole seconds since the instance booted (spec.recycle.maxUptime)."""
    amiId: Annotated[str, StringConstraints(pattern=AMI_ID_RE.pattern)] | None = None
    """The image the instance runs, from IMDS (spec.rollout)."""
    agentVersion: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class ReportAnswer(_Strict):
    """The controller's answer; `drain` asks the agent to start the drain handshake
    (docs/design.md §6)."""

    drain: bool


REGISTER_PATH: Final = "/v1/register"
MAX_REGISTER_BYTES: Final = 8 * 1024


class RegisterRequest(_Strict):
    """An agent asks for its credential with the instance identity document IMDS gave it."""

    instanceId: InstanceId
    bootId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    document: Annotated[str, StringConstraints(min_length=1, max_length=6 * 1024)]
    """Base64 of the document's exact bytes: the signature covers bytes, not parsed JSON."""
    signature: Annotated[str, StringConstraints(min_length=1, max_length=2 * 1024)]
    """As IMDS serves /latest/dynamic/instance-identity/signature (base64, RSA-SHA256)."""


class RegisterAnswer(_Strict):
    """The credential to send as `Authorization: Bearer …` with every report of this boot."""

    credential: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    expiresIn: Annotated[int, Field(gt=0)]
    """Seconds: relative, so the agent's clock need not agree with the controller's."""
    renewIn: Annotated[int, Field(gt=0)]
    """Seconds after which the agent registers again, well before the expiry."""


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(document: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON text opens more than `limit` arrays or objects inside one another.

    Checked before parsing, so a deeply nested body is refused without recursing into it.
    A body with few brackets cannot nest deeply, which keeps the common case to two counts."""
    if document.count(b"[") + document.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", document).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False

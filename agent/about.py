"""What the agent says about its instance besides Jibri's status: the image it booted from,
its own version and the time since boot (docs/fleet-operations.md). The controller reads them
for spec.recycle's maxUptime and to tell a rollout's new instances from the old."""

from __future__ import annotations

import importlib.metadata
import logging
import time
from typing import Final

import aiohttp

from agent.identity import IdentityError, ImdsClient, TransientImdsError
from common.logs import event
from common.wire import AMI_ID_RE

log = logging.getLogger("agent.about")
AMI_ID_PATH: Final = "/latest/meta-data/ami-id"


def _version() -> str | None:
    try:
        return importlib.metadata.version("jibri-autoscaler")
    except importlib.metadata.PackageNotFoundError:
        return None


AGENT_VERSION: Final = _version()


def uptime_seconds() -> int | None:
    """Whole seconds since the machine booted (suspend included), where the OS tells."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return None if clock is None else int(time.clock_gettime(clock))


async def image_id(
    session: aiohttp.ClientSession, imds_url: str, request_timeout: float
) -> str | None:
    """The AMI id from IMDSv2, or None (logged) when the service does not give a valid one:
    reports go out without it rather than not at all."""
    try:
        found = await ImdsClient(session, imds_url, request_timeout).get(AMI_ID_PATH)
    except (IdentityError, TransientImdsError) as exc:
        event(log, "image id unknown", level=logging.WARNING, error=str(exc))
        return None
    if not AMI_ID_RE.match(found):
        event(log, "image id unknown", level=logging.WARNING, error=f"invalid {found!r}")
        return None
    return found

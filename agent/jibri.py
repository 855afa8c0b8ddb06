"""Jibri's local HTTP API as the agent sees it: health polling and the graceful shutdown.

Jibri's answers (docs/design.md §7):

    GET  :2222/jibri/api/v1.0/health
         {"status": {"busyStatus": "IDLE|BUSY|EXPIRED",
                     "health": {"healthStatus": "HEALTHY|UNHEALTHY", "details": {...}}},
          "environmentContext": {...}}            # only while busy
    POST :3333/jibri/api/internal/v1.0/gracefulShutdown     # exits once idle

Any failure maps to UNKNOWN/UNKNOWN and never raises; `Outcome` keeps apart a Jibri that is
gone (connection refused: its process exited) from one that answers badly or too slowly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

import aiohttp

from common.logs import Transitions
from common.wire import BusyStatus, HealthStatus, JibriStatus

log = logging.getLogger(__name__)

UNKNOWN: Final = JibriStatus(busyStatus=BusyStatus.UNKNOWN, healthStatus=HealthStatus.UNKNOWN)
_JIBRI_BUSY = {s.value: s for s in (BusyStatus.IDLE, BusyStatus.BUSY, BusyStatus.EXPIRED)}
_JIBRI_HEALTH = {s.value: s for s in (HealthStatus.HEALTHY, HealthStatus.UNHEALTHY)}


_E = TypeVar("_E", BusyStatus, HealthStatus)


class MalformedStatus(ValueError):
    """Jibri answered, but not with the status shape this agent understands."""


class Outcome(StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"
    """Nothing listens: the Jibri process is not running."""
    TIMEOUT = "timeout"
    HTTP_ERROR = "http-error"
    MALFORMED = "malformed"
    ERROR = "error"


@dataclass(frozen=True)
class Probe:
    """One look at Jibri: what it said (or UNKNOWN), how the look went, and when it started."""

    status: JibriStatus
    outcome: Outcome
    started_at: float
    detail: str = ""

    @property
    def answered(self) -> bool:
        """Jibri's process is there and answering HTTP, whatever it said."""
        return self.outcome in (Outcome.OK, Outcome.HTTP_ERROR, Outcome.MALFORMED)


def _lookup(table: Mapping[str, _E], value: object) -> _E | None:
    return table.get(value) if isinstance(value, str) else None


def parse_status(status: Any) -> JibriStatus:
    """Map Jibri's `status` object (health answer and webhook body alike) to the wire enums."""
    if not isinstance(status, Mapping):
        raise MalformedStatus("`status` is not an object")
    busy = _lookup(_JIBRI_BUSY, status.get("busyStatus"))
    if busy is None:
        raise MalformedStatus(f"unknown busyStatus {status.get('busyStatus')!r}")
    health = status.get("health")
    if not isinstance(health, Mapping):
        raise MalformedStatus("`status.health` is not an object")
    healthy = _lookup(_JIBRI_HEALTH, health.get("healthStatus"))
    if healthy is None:
        raise MalformedStatus(f"unknown healthStatus {health.get('healthStatus')!r}")
    return JibriStatus(busyStatus=busy, healthStatus=healthy)


def parse_health(body: bytes) -> JibriStatus:
    """Parse the body of Jibri's health answer."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedStatus(f"not JSON ({exc})") from exc
    if not isinstance(document, Mapping):
        raise MalformedStatus("the answer is not a JSON object")
    return parse_status(document.get("status"))


class JibriClient:
    """Polls Jibri's health and asks it to shut down gracefully; never raises on Jibri's faults."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        health_url: str,
        shutdown_url: str,
        timeout: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._monotonic = monotonic
        self._health_url = health_url
        self._shutdown_url = shutdown_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._health_log = Transitions(log, "jibri health", url=health_url)
        self._shutdown_log = Transitions(log, "jibri graceful shutdown", url=shutdown_url)

    async def probe(self) -> Probe:
        started = self._monotonic()
        probe = await self._probe(started)
        if probe.outcome is Outcome.OK:
            self._health_log.ok(f"answering again ({probe.status.busyStatus.value})")
        else:
            self._health_log.failed(
                probe.outcome.value,
                f"{probe.detail}; reporting UNKNOWN until it answers",
            )
        return probe

    async def _probe(self, started: float) -> Probe:
        try:
            async with self._session.get(self._health_url, timeout=self._timeout) as response:
                body = await response.read()
                if response.status != 200:
                    return Probe(
                        UNKNOWN, Outcome.HTTP_ERROR, started, f"answered HTTP {response.status}"
                    )
        except aiohttp.ClientConnectorError as exc:
            return Probe(UNKNOWN, Outcome.UNREACHABLE, started, f"unreachable ({exc.os_error})")
        except TimeoutError:
            return Probe(UNKNOWN, Outcome.TIMEOUT, started, "no answer in time")
        except aiohttp.ClientError as exc:
            return Probe(UNKNOWN, Outcome.ERROR, started, f"request failed ({exc!r})")
        try:
            status = parse_health(body)
        except MalformedStatus as exc:
            return Probe(UNKNOWN, Outcome.MALFORMED, started, f"malformed answer: {exc}")
        return Probe(status, Outcome.OK, started)

    async def graceful_shutdown(self) -> bool:
        """Ask Jibri to exit once idle; True when it accepted (2xx)."""
        try:
            async with self._session.post(self._shutdown_url, timeout=self._timeout) as response:
                await response.read()
                accepted = 200 <= response.status < 300
                if not accepted:
                    self._shutdown_log.failed(
                        f"http-{response.status}", f"refused with HTTP {response.status}"
                    )
        except aiohttp.ClientConnectorError as exc:
            self._shutdown_log.failed("unreachable", f"unreachable ({exc.os_error})")
            return False
        except TimeoutError:
            self._shutdown_log.failed("timeout", "no answer in time")
            return False
        except aiohttp.ClientError as exc:
            self._shutdown_log.failed("error", f"request failed ({exc!r})")
            return False
        if accepted:
            self._shutdown_log.ok("accepted")
        return accepted

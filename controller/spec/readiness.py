"""spec.readiness (spares learned from demand history) and spec.demand (where demand is
measured beyond the agents' own reports: jicofo's count of requests that found no recorder).

Both default to on-but-inert: with no history and no jicofo, the target in force is exactly
spec.targetFree or the schedule's (docs/readiness.md).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from common.durations import PositiveDuration
from controller.spec.base import SpecModel

DEFAULT_MISS_TARGET: Final = 0.005


class Readiness(SpecModel):
    """Hold, beyond the floor (targetFree or a schedule's), the free recorders that the demand
    expected before a launch now could be ready asks for."""

    enabled: bool = True
    missTarget: Annotated[float, Field(gt=0.0, lt=0.5)] = DEFAULT_MISS_TARGET
    """Accepted chance that the requests of one boot horizon outnumber the spares held."""
    maxSpares: Annotated[int, Field(ge=0)] | None = None
    """Most free recorders the forecast may ask for; defaults to capacity.max. The floor
    (targetFree, a schedule rule or override) is held even above it."""
    horizon: Annotated[PositiveDuration, Field(le=3600.0)] | None = None
    """How far ahead spares must cover demand; defaults to the measured boot time (a high
    percentile of launch → first idle report over recent launches)."""
    lookbackWeeks: Annotated[int, Field(ge=1, le=8)] = 4
    """Same-weekday samples the forecast takes (CloudWatch keeps per-minute data 15 days and
    5-minute data 63 days)."""
    countEndings: bool = True
    """Count on recordings the history expects to end within the horizon (at most those
    running now): their recorders serve the next requests, so fewer spares are held."""
    drainEarly: bool = True
    """Drain idle spares above the forecast without waiting out scaleIn.idleFor, when the
    history says they will not be needed within it."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL such as http://jicofo:8888/metrics")
    return value


HttpUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_http_url)]


class Jicofo(SpecModel):
    """Jicofo's REST API: `/metrics` (Prometheus text) or `/stats` (JSON), one URL per jicofo
    that shares this pool's brewery. Their no-instance failure counters are summed."""

    urls: Annotated[tuple[HttpUrl, ...], Field(min_length=1, max_length=32)]
    interval: Annotated[PositiveDuration, Field(ge=1.0, le=300.0)] = 15.0
    timeout: Annotated[PositiveDuration, Field(le=60.0)] = 5.0
    format: Literal["auto", "prometheus", "json"] = "auto"
    """`auto` reads the response's Content-Type (application/json is JSON)."""


class Demand(SpecModel):
    history: bool = True
    """Publish RecordingsStarted and RecordingsMissed per minute to CloudWatch (the pool's
    namespace, dimension AutoScalingGroupName) and read them back as the forecast's history."""
    jicofo: Jicofo | None = None

"""Requests that found no recorder, as jicofo counts them.

Jicofo (its REST API, port 8888) counts every recording request it could not give a Jibri:
`jitsi_jicofo_jibri_no_instance_failures_total` in Prometheus text on `/metrics`, or
`jibri_no_instance_failures` in JSON (`/stats`). Those requests never reach a recorder, so
the agents cannot see them; they are the demand the pool missed. The scraper reads one or
more jicofos (one per shard sharing the brewery), turns each counter into increments (a
counter that goes down is a restarted jicofo, counting again from zero), and sums them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from common.aiokits.clock import Clock
from common.logs import event
from controller.spec import Jicofo

log = logging.getLogger(__name__)

FAILURES: Final = "jitsi_jicofo_jibri_no_instance_failures"
"""The Prometheus counter's family name (samples carry `_total`)."""
AVAILABLE: Final = "jitsi_jicofo_jibri_instances_available"
JSON_FAILURES: Final = "jibri_no_instance_failures"
JSON_AVAILABLE: Final = "jibri_instances_available"
MAX_BODY: Final = 4 * 1024 * 1024


class JicofoError(Exception):
    """A jicofo answered with something we cannot read; the message says what."""


@dataclass(frozen=True)
class JicofoReading:
    """What one jicofo said: its failure counter, and its available Jibris if it says."""

    failures: float
    available: float | None = None


def parse_prometheus(text: str) -> JicofoReading:
    failures: float | None = None
    available: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (f"{FAILURES}_total", FAILURES) and family.type != "gauge":
                    failures = (failures or 0.0) + sample.value
                elif sample.name == AVAILABLE:
                    available = (available or 0.0) + sample.value
    except ValueError as exc:
        raise JicofoError(f"not Prometheus text: {exc}") from exc
    if failures is None:
        raise JicofoError(f"no {FAILURES}_total in the metrics (is the Jibri brewery set up?)")
    return JicofoReading(_finite(failures), available)


def parse_stats(text: str) -> JicofoReading:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise JicofoError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or JSON_FAILURES not in document:
        raise JicofoError(f"no {JSON_FAILURES} in the stats")
    available = document.get(JSON_AVAILABLE)
    detector = document.get("jibri_detector")
    if available is None and isinstance(detector, dict):
        available = detector.get("available")
    return JicofoReading(
        _finite(document[JSON_FAILURES]),
        _finite(available) if available is not None else None,
    )


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JicofoError(f"{value!r} is not a count")
    if value < 0:
        raise JicofoError(f"{value!r} is negative")
    return float(value)


class CounterDeltas:
    """Increments of several counters, each known by its source; resets handled."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def add(self, source: str, value: float) -> float:
        """The increment since this source's last value. The first value only sets the base
        (what jicofo counted before we watched is not ours to count now); a value below the
        last means a restarted jicofo, whose whole value is new."""
        last = self._last.get(source)
        self._last[source] = value
        if last is None:
            return 0.0
        return value - last if value >= last else value


@dataclass(frozen=True)
class JicofoScrape:
    """One round over every URL."""

    missed: float
    """Requests that found no recorder since the last round, summed over the jicofos."""
    available: float | None
    """Available Jibris as the jicofos that answered see them (summed), or None."""
    errors: Mapping[str, str]
    """URL → why it could not be read this round."""


class JicofoScraper:
    """Reads the pool's jicofos. Each URL is read independently: one unreachable jicofo does
    not hide what the others count."""

    def __init__(self, session: aiohttp.ClientSession, source: Jicofo) -> None:
        self._session = session
        self.source = source
        self._deltas = CounterDeltas()

    async def _read(self, url: str) -> JicofoReading:
        accept = "application/json" if self.source.format == "json" else "text/plain"
        timeout = aiohttp.ClientTimeout(total=self.source.timeout)
        async with self._session.get(url, headers={"Accept": accept}, timeout=timeout) as answer:
            if answer.status != 200:
                raise JicofoError(f"HTTP {answer.status}")
            body = await answer.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise JicofoError(f"answer larger than {MAX_BODY} bytes")
            text = body.decode("utf-8", errors="replace")
            as_json = self.source.format == "json" or (
                self.source.format == "auto" and answer.content_type == "application/json"
            )
        return parse_stats(text) if as_json else parse_prometheus(text)

    async def scrape(self) -> JicofoScrape:
        urls = self.source.urls
        results = await asyncio.gather(*(self._read(u) for u in urls), return_exceptions=True)
        missed = 0.0
        available: float | None = None
        errors: dict[str, str] = {}
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                errors[url] = str(result) or type(result).__name__
                continue
            missed += self._deltas.add(url, result.failures)
            if result.available is not None:
                available = (available or 0.0) + result.available
        return JicofoScrape(missed, available, errors)


async def run_jicofo(
    scraper: JicofoScraper,
    clock: Clock,
    wall_clock: Callable[[], float],
    on_scrape: Callable[[float, JicofoScrape], None],
    *,
    pool: str,
) -> None:
    """Scrape every `interval` and hand each round to `on_scrape(wall_time, scrape)` (which
    records the misses and exports them). Failures are logged once per change of reason and
    retried; the task never ends by itself."""
    reported: dict[str, str] = {}
    while True:
        scrape = await scraper.scrape()
        for url, reason in scrape.errors.items():
            if reported.get(url) != reason:
                event(
                    log,
                    "jicofo unreadable",
                    level=logging.WARNING,
                    pool=pool,
                    url=url,
                    error=reason,
                )
        for url in set(reported) - set(scrape.errors):
            event(log, "jicofo readable again", pool=pool, url=url)
        reported = dict(scrape.errors)
        on_scrape(wall_clock(), scrape)
        await clock.sleep(scraper.source.interval)

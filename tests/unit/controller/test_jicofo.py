"""Jicofo's count of requests that found no recorder: read over HTTP from fake jicofos that
serve jicofo's metric names, summed, with restarts and failures handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from common.aiokits.clock import ManualClock
from controller.demand.history import DemandHistory
from controller.demand.jicofo import (
    CounterDeltas,
    JicofoError,
    JicofoScrape,
    JicofoScraper,
    parse_prometheus,
    parse_stats,
    run_jicofo,
)
from controller.demand.recorder import DemandRecorder
from controller.spec import Jicofo
from tests.support.fake_jicofo import running_jicofo


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def scraper(session: aiohttp.ClientSession, *urls: str, fmt: str = "auto") -> JicofoScraper:
    return JicofoScraper(session, Jicofo(urls=urls, interval=15, format=fmt))


async def test_counts_failures_since_the_first_scrape(session: aiohttp.ClientSession) -> None:
    """The first scrape sets the base; later ones count the failures since, with available
    Jibris as jicofo reports them."""
    async with running_jicofo() as jicofo:
        jicofo.fail(5)
        jicofo.available(2)
        source = scraper(session, f"{jicofo.url}/metrics")
        first = await source.scrape()
        assert (first.missed, first.available, dict(first.errors)) == (0.0, 2.0, {})
        jicofo.fail(3)
        assert (await source.scrape()).missed == 3.0
        assert (await source.scrape()).missed == 0.0


async def test_restarted_jicofo_counts_from_zero(session: aiohttp.ClientSession) -> None:
    """A counter that went down is a restarted jicofo: its whole new value is new misses."""
    async with running_jicofo() as jicofo:
        jicofo.fail(10)
        source = scraper(session, f"{jicofo.url}/metrics")
        await source.scrape()
        jicofo.restart()
        jicofo.fail(2)
        assert (await source.scrape()).missed == 2.0


async def test_several_jicofos_are_summed_and_one_down_hides_nothing(
    session: aiohttp.ClientSession,
) -> None:
    """Misses from every jicofo add up; a jicofo that errors is named, the others still count."""
    async with running_jicofo() as one, running_jicofo() as two:
        source = scraper(session, f"{one.url}/metrics", f"{two.url}/stats")
        await source.scrape()
        one.fail(1)
        two.fail(4)
        assert (await source.scrape()).missed == 5.0
        two.broken = 503
        one.fail(2)
        round_ = await source.scrape()
        assert round_.missed == 2.0
        assert round_.errors == {f"{two.url}/stats": "HTTP 503"}


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        pytest.param("/stats", "auto", id="stats-by-content-type"),
        pytest.param("/metrics", "json", id="metrics-asked-for-json"),
        pytest.param("/metrics", "prometheus", id="metrics-as-prometheus"),
    ],
)
async def test_formats(session: aiohttp.ClientSession, path: str, fmt: str) -> None:
    """JSON stats and Prometheus text give the same counts."""
    async with running_jicofo() as jicofo:
        jicofo.available(3)
        source = scraper(session, f"{jicofo.url}{path}", fmt=fmt)
        await source.scrape()
        jicofo.fail(2)
        assert ((r := await source.scrape()).missed, r.available) == (2.0, 3.0)


async def test_unreadable_answers_are_errors_not_counts(session: aiohttp.ClientSession) -> None:
    """An answer without the counter is a named error, and counts nothing."""
    async with running_jicofo() as jicofo:
        jicofo.body = "conferences 3\n"
        result = await scraper(session, f"{jicofo.url}/metrics").scrape()
    assert result.missed == 0.0
    assert (
        "no jitsi_jicofo_jibri_no_instance_failures_total" in result.errors[f"{jicofo.url}/metrics"]
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("{", "not JSON", id="not-json"),
        pytest.param("[]", "no jibri_no_instance_failures", id="not-an-object"),
        pytest.param('{"jibri_no_instance_failures": "7"}', "is not a count", id="text"),
        pytest.param('{"jibri_no_instance_failures": -1}', "is negative", id="negative"),
        pytest.param('{"jibri_no_instance_failures": true}', "is not a count", id="boolean"),
    ],
)
def test_bad_stats(text: str, reason: str) -> None:
    """Malformed JSON stats fail with the reason."""
    with pytest.raises(JicofoError, match=reason):
        parse_stats(text)


def test_prometheus_counter_without_total_suffix() -> None:
    """An exposition without type lines still yields the counter."""
    assert parse_prometheus("jitsi_jicofo_jibri_no_instance_failures_total 4\n").failures == 4


def test_counter_deltas() -> None:
    """Per source: base first, then increments; a drop is a reset."""
    deltas = CounterDeltas()
    assert [deltas.add("a", v) for v in (5, 7, 7, 2, 3)] == [0, 2, 0, 2, 1]
    assert deltas.add("b", 100) == 0


async def test_task_records_misses_as_demand(session: aiohttp.ClientSession) -> None:
    """Each round goes to the recorder: misses become demand in the minute they were seen,
    and an unreachable jicofo does not stop the task."""
    clock = ManualClock(start=0.0)
    history = DemandHistory()
    recorder = DemandRecorder(history)
    rounds: asyncio.Queue[JicofoScrape] = asyncio.Queue()

    def record(wall: float, scrape: JicofoScrape) -> None:
        recorder.missed(wall, scrape.missed)
        rounds.put_nowait(scrape)

    async def next_round() -> float:
        return (await asyncio.wait_for(rounds.get(), timeout=10)).missed

    async with running_jicofo() as jicofo:
        source = scraper(session, f"{jicofo.url}/metrics")
        task = asyncio.create_task(
            run_jicofo(source, clock, lambda: 6000.0 + clock.now(), record, pool="p")
        )
        assert await next_round() == 0.0
        jicofo.fail(4)
        jicofo.broken = 500
        await clock.advance(15.0)
        assert await next_round() == 0.0
        jicofo.broken = None
        await clock.advance(15.0)
        assert await next_round() == 4.0
        assert not task.done()
        task.cancel()
    assert history.arrivals(100) == 4.0

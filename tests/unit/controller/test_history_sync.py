"""Demand history in CloudWatch: published per minute, read back after a restart, kept
through an outage; and the recorder that counts recordings started. Against the AWS emulator
over HTTP (moto serves PutMetricData and GetMetricData)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from common.aiokits.clock import ManualClock
from controller.cloudwatch.api import AioCloudWatch
from controller.demand.history import DemandHistory
from controller.demand.history_sync import HistorySync, HistoryTarget, run_history_sync
from controller.demand.recorder import DemandRecorder
from controller.prometheus import Metrics
from tests.support.aws import REGION, Emulator
from tests.support.tcp_proxy import running_proxy

TARGET = HistoryTarget(namespace="Jibri", group="jibri-recorders")
# Tuesday 2026-11-24 12:00:00 UTC, an epoch minute boundary.
START = 1_795_089_600.0
MINUTE = int(START // 60)


@asynccontextmanager
async def cloudwatch(endpoint: str) -> AsyncIterator[AioCloudWatch]:
    session = get_session()
    async with session.create_client(
        "cloudwatch",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    ) as client:
        yield AioCloudWatch(client, Metrics(CollectorRegistry()))


def recorded(minutes: dict[int, int], *, covered: range) -> DemandHistory:
    history = DemandHistory()
    for m in covered:
        history.cover(MINUTE + m)
    for m, n in minutes.items():
        history.add_started(MINUTE + m, n)
    return history


async def test_history_survives_a_restart(emulator: Emulator) -> None:
    """Minutes published by one controller are read back, count for count, by the next; the
    minutes nobody watched stay unknown."""
    async with cloudwatch(emulator.endpoint) as api:
        first = recorded({0: 3, 2: 1, 4: 7}, covered=range(0, 6))
        first.add_missed(MINUTE + 4, 2)
        first.add_ended(MINUTE + 5, 4)
        sync = HistorySync(api, first, TARGET, pool="p", started_at=START)
        assert await sync.publish(START + 6 * 60 + 5) == 6

        second = DemandHistory()
        reader = HistorySync(api, second, TARGET, pool="p", started_at=START + 3600)
        assert await reader.backfill(START + 3600, days=1) == 6
    assert [second.arrivals(MINUTE + m) for m in range(-1, 7)] == [None, 3, 0, 1, 0, 9, 0, None]
    assert second.counts(MINUTE + 4).missed == 2  # type: ignore[union-attr]
    assert [second.endings(MINUTE + m) for m in (4, 5, 6)] == [0, 4, None]


async def test_publish_sends_each_minute_once(emulator: Emulator) -> None:
    """A second publish in the same minute sends nothing; the next minute goes out next."""
    async with cloudwatch(emulator.endpoint) as api:
        history = recorded({0: 1}, covered=range(0, 3))
        sync = HistorySync(api, history, TARGET, pool="p", started_at=START)
        assert await sync.publish(START + 2 * 60 + 1) == 2
        assert await sync.publish(START + 2 * 60 + 30) == 0
        assert await sync.publish(START + 3 * 60 + 1) == 1


async def test_old_minutes_come_back_at_five_minute_resolution(emulator: Emulator) -> None:
    """Beyond 15 days CloudWatch keeps 5-minute sums; each is spread over its five minutes."""
    old = START - 20 * 86400
    async with cloudwatch(emulator.endpoint) as api:
        history = DemandHistory()
        for m in range(5):
            history.cover(int(old // 60) + m)
        history.add_started(int(old // 60) + 1, 10)
        await HistorySync(api, history, TARGET, pool="p", started_at=old).publish(old + 301)
        back = DemandHistory()
        await HistorySync(api, back, TARGET, pool="p", started_at=START).backfill(START, days=21)
    assert [back.arrivals(int(old // 60) + m) for m in range(-1, 6)] == [None, 2, 2, 2, 2, 2, None]


async def test_unpublished_minutes_wait_out_an_outage(emulator: Emulator) -> None:
    """While CloudWatch is unreachable publishing fails and nothing is lost; once it is back
    every minute recorded meanwhile is sent."""
    with running_proxy(emulator.endpoint) as proxy:
        async with cloudwatch(proxy.url) as api:
            history = recorded({1: 4, 3: 2}, covered=range(0, 5))
            sync = HistorySync(api, history, TARGET, pool="p", started_at=START)
            proxy.cut()
            with pytest.raises(Exception):  # noqa: B017 (whatever the client raises)
                await sync.publish(START + 5 * 60 + 1)
            proxy.restore()
            assert await sync.publish(START + 5 * 60 + 2) == 5
            back = DemandHistory()
            await HistorySync(api, back, TARGET, pool="p", started_at=START).backfill(
                START + 600, days=1
            )
    assert [back.arrivals(MINUTE + m) for m in range(5)] == [0, 4, 0, 2, 0]


async def test_history_task_keeps_going_through_failures(emulator: Emulator) -> None:
    """The history task logs and retries a failing CloudWatch: the backfill is retried until it
    succeeds, and the task never ends by itself."""
    clock = ManualClock(start=0.0)
    wall: Callable[[], float] = lambda: START + clock.now()  # noqa: E731
    with running_proxy(emulator.endpoint) as proxy:
        async with cloudwatch(proxy.url) as api:
            await HistorySync(
                api, recorded({0: 5}, covered=range(0, 2)), TARGET, pool="p", started_at=START
            ).publish(START + 121)
            sync = HistorySync(api, DemandHistory(), TARGET, pool="p", started_at=START)
            proxy.cut()
            task = asyncio.create_task(run_history_sync(sync, clock, wall, days=1))
            for _ in range(3):
                await clock.advance(61.0)
            assert not sync.backfilled and not task.done()
            proxy.restore()
            await clock.advance(300.0)
            while not sync.backfilled:
                await clock.advance(61.0)
            task.cancel()
    assert sync.history.arrivals(MINUTE) == 5


@pytest.mark.parametrize(
    ("passes", "started"),
    [
        pytest.param([{"a": False}, {"a": True}], 1, id="idle-to-busy"),
        pytest.param([{"a": True}, {"a": True}], 0, id="first-met-busy-is-not-new"),
        pytest.param([{"a": False}, {"a": None}, {"a": True}], 1, id="unknown-spell-keeps-idle"),
        pytest.param(
            [{"a": False}, {"a": True}, {"a": False}, {"a": True}], 2, id="two-recordings"
        ),
        pytest.param([{"a": False}, {}, {"a": True}], 0, id="gone-and-back-is-new-instance"),
        pytest.param([{"a": False, "b": False}, {"a": True, "b": True}], 2, id="two-instances"),
    ],
)
def test_recorder_counts_idle_to_busy(passes: list[dict[str, bool | None]], started: int) -> None:
    """A recording started is a known free → busy change, once."""
    history = DemandHistory()
    recorder = DemandRecorder(history)
    for i, states in enumerate(passes):
        recorder.observe(START + i * 5.0, states)
    assert history.arrivals(MINUTE) == started


def test_recorder_counts_busy_to_idle_as_ended() -> None:
    """A recording ended is a known busy → free change; a busy instance that goes silent or
    leaves has not been seen to end."""
    history = DemandHistory()
    recorder = DemandRecorder(history)
    recorder.observe(START, {"a": True, "b": True, "c": True})
    recorder.observe(START + 5, {"a": False, "b": None})
    assert history.endings(MINUTE) == 1


def test_recorder_counts_missed_as_demand() -> None:
    """Requests jicofo found no recorder for are demand in the minute they were counted."""
    history = DemandHistory()
    recorder = DemandRecorder(history)
    recorder.observe(START, {"a": True})
    recorder.missed(START + 61, 3)
    assert (history.arrivals(MINUTE), history.arrivals(MINUTE + 1)) == (0, 3)
    assert history.counts(MINUTE).busy == 1  # type: ignore[union-attr]

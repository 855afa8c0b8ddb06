from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.drain import Drainer, DrainMarker, DrainRecord
from agent.jibri import UNKNOWN, Outcome, Probe
from common.wire import BusyStatus, HealthStatus, JibriStatus

IDLE = JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY)
BUSY = JibriStatus(busyStatus=BusyStatus.BUSY, healthStatus=HealthStatus.HEALTHY)


class FakeJibri:
    """Counts gracefulShutdown calls; `accepts` says whether it answers 2xx."""

    def __init__(self) -> None:
        self.calls = 0
        self.accepts = True

    async def graceful_shutdown(self) -> bool:
        self.calls += 1
        return self.accepts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answering(status: JibriStatus, at: float) -> Probe:
    return Probe(status, Outcome.OK, at)


def gone(at: float) -> Probe:
    return Probe(UNKNOWN, Outcome.UNREACHABLE, at)


def make(tmp_path: Path, jibri: FakeJibri, clock: Clock) -> Drainer:
    return Drainer(
        DrainMarker(tmp_path / "drain.json"),
        jibri,
        resend_interval=30,
        wall_clock=lambda: 1_700_000_000.0,
        monotonic=clock,
    )


def test_marker_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    """A saved record reads back; saving leaves no temporary file behind."""
    marker = DrainMarker(tmp_path / "state" / "drain.json")
    assert marker.load() is None
    marker.save(DrainRecord(requested_at=1.0))
    marker.save(DrainRecord(requested_at=1.0, shutdown_accepted_at=2.0))
    assert marker.load() == DrainRecord(1.0, 2.0)
    assert [p.name for p in marker.path.parent.iterdir()] == ["drain.json"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param("{not json", id="truncated"),
        pytest.param(json.dumps({"requestedAt": "soon"}), id="bad-field"),
        pytest.param(json.dumps([1, 2]), id="not-an-object"),
    ],
)
def test_unreadable_marker_still_means_draining(tmp_path: Path, content: str) -> None:
    """A marker that exists but cannot be read keeps the drain going (never drops it)."""
    path = tmp_path / "drain.json"
    path.write_text(content)
    drainer = Drainer(DrainMarker(path), FakeJibri(), resend_interval=30)
    assert drainer.active and not drainer.shutdown_accepted


async def test_request_writes_the_marker_before_asking_jibri(tmp_path: Path) -> None:
    """The marker is on disk when request() returns; the shutdown is sent on the next step."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    assert drainer.request() is True
    assert (tmp_path / "drain.json").exists() and jibri.calls == 0
    assert drainer.request() is False
    assert await drainer.step(answering(IDLE, clock.now)) is True
    assert jibri.calls == 1 and drainer.shutdown_accepted
    assert DrainMarker(tmp_path / "drain.json").load() == DrainRecord(1.7e9, 1.7e9)


async def test_not_draining_means_no_shutdown(tmp_path: Path) -> None:
    """Without a drain request, steps never touch Jibri."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    await drainer.step(answering(IDLE, clock.now))
    assert (jibri.calls, drainer.active) == (0, False)
    assert not drainer.drained(gone(clock.now), 0)


async def test_refused_shutdown_is_retried_each_step(tmp_path: Path) -> None:
    """A Jibri that refuses or fails the call is asked again on the next step."""
    jibri, clock = FakeJibri(), Clock()
    jibri.accepts = False
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    for _ in range(3):
        await drainer.step(answering(IDLE, clock.now))
    assert jibri.calls == 3 and not drainer.shutdown_accepted


async def test_busy_jibri_is_reminded_but_not_forced(tmp_path: Path) -> None:
    """While Jibri records, the shutdown is repeated only every resend interval; no drained."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    for _ in range(10):
        clock.now += 2
        await drainer.step(answering(BUSY, clock.now))
        assert not drainer.drained(answering(BUSY, clock.now), 0)
    assert jibri.calls == 1
    clock.now += 30
    await drainer.step(answering(BUSY, clock.now))
    assert jibri.calls == 2


@pytest.mark.parametrize(
    ("probe_outcome", "pending", "drained"),
    [
        pytest.param(Outcome.UNREACHABLE, 0, True, id="stopped-and-empty"),
        pytest.param(Outcome.UNREACHABLE, 1, False, id="uploads-pending"),
        pytest.param(Outcome.TIMEOUT, 0, False, id="slow-is-not-stopped"),
        pytest.param(Outcome.MALFORMED, 0, False, id="answering-is-not-stopped"),
        pytest.param(Outcome.OK, 0, False, id="still-running"),
    ],
)
async def test_drained_needs_jibri_gone_and_spool_empty(
    tmp_path: Path, probe_outcome: Outcome, pending: int, drained: bool
) -> None:
    """Drained only when Jibri stopped listening after accepting, with nothing to upload."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    await drainer.step(answering(IDLE, clock.now))
    clock.now += 1
    probe = Probe(UNKNOWN if probe_outcome is not Outcome.OK else IDLE, probe_outcome, clock.now)
    assert drainer.drained(probe, pending) is drained


async def test_jibri_down_before_accepting_is_not_drained(tmp_path: Path) -> None:
    """A Jibri that was never told (down all along) may come back and record: not drained."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    await drainer.step(gone(clock.now))
    assert jibri.calls == 0
    assert not drainer.drained(gone(clock.now), 0)


async def test_refusal_seen_before_the_accept_does_not_count(tmp_path: Path) -> None:
    """A probe that started before the shutdown was accepted cannot prove Jibri exited."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    clock.now = 1010
    await drainer.step(answering(IDLE, 1009))
    assert not drainer.drained(gone(1005), 0)
    assert drainer.drained(gone(1011), 0)


async def test_restart_resumes_the_drain(tmp_path: Path) -> None:
    """A new agent process with the marker re-sends the shutdown while Jibri answers."""
    jibri, clock = FakeJibri(), Clock()
    first = make(tmp_path, jibri, clock)
    first.request()
    await first.step(answering(BUSY, clock.now))
    second = make(tmp_path, jibri, clock)
    assert second.active and second.shutdown_accepted
    assert not second.drained(answering(BUSY, clock.now), 0)
    await second.step(answering(BUSY, clock.now))
    assert jibri.calls == 2


async def test_restart_after_jibri_exited_is_drained(tmp_path: Path) -> None:
    """An agent restarted after Jibri exited (accepted earlier) reports drained at once."""
    jibri, clock = FakeJibri(), Clock()
    first = make(tmp_path, jibri, clock)
    first.request()
    await first.step(answering(IDLE, clock.now))
    second = make(tmp_path, jibri, Clock())
    assert second.drained(gone(0.0), 0)


async def test_jibri_that_comes_back_is_told_again(tmp_path: Path) -> None:
    """If Jibri restarts after exiting, it is asked to shut down again at once."""
    jibri, clock = FakeJibri(), Clock()
    drainer = make(tmp_path, jibri, clock)
    drainer.request()
    await drainer.step(answering(IDLE, clock.now))
    clock.now += 1
    await drainer.step(gone(clock.now))
    assert drainer.drained(gone(clock.now), 0)
    clock.now += 1
    assert await drainer.step(answering(IDLE, clock.now)) is True
    assert jibri.calls == 2
    assert not drainer.drained(answering(IDLE, clock.now), 0)

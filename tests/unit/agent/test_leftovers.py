"""Recordings that Jibri's finalize left in its recordings directory: counted as pending, adopted
into the real spool (by rename, or by copy from another filesystem) only once provably finished,
and uploaded; the instance is not drained before S3 holds them.

The Jibri seen by `Adopter` is a stand-in behind its one-method Protocol (`probe()`), so each
test decides what the poll after the listing answers; the whole-agent tests use the fake Jibri
over HTTP and the AWS emulator for S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import run_agent
from agent.finalize import FinalizeError
from agent.jibri import UNKNOWN, Outcome, Probe
from agent.leftovers import Adopter, Leftover, adopt, choose, pending_leftovers, session_dirs
from agent.metrics import AgentMetrics
from agent.settings import Settings, load_settings
from agent.spool import MARKER_NAME, EntryInfo, Spool, entry_name, read_info
from common.wire import BusyStatus, HealthStatus, JibriStatus
from sandbox.fake_jibri import FakeJibri
from tests.support.aws import Emulator
from tests.support.fake_controller import FakeController
from tests.support.fake_imds import FakeImds
from tests.support.loopback import eventually, serving

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW = T0.timestamp()
INSTANCE = "i-0123456789abcdef0"
BUCKET = "recordings-leftovers"


def probe(busy: BusyStatus | None, outcome: Outcome = Outcome.OK) -> Probe:
    if busy is None:
        return Probe(UNKNOWN, outcome, 0.0)
    return Probe(JibriStatus(busyStatus=busy, healthStatus=HealthStatus.HEALTHY), outcome, 0.0)


IDLE = probe(BusyStatus.IDLE)
BUSY = probe(BusyStatus.BUSY)
GONE = probe(None, Outcome.UNREACHABLE)


def recording(parent: Path, session: str, *, mtime: float = NOW - 3600) -> Path:
    directory = parent / session
    directory.mkdir(parents=True)
    (directory / f"{session}.mp4").write_bytes(os.urandom(4096))
    (directory / "metadata.json").write_text(json.dumps({"meeting_url": "https://m/x"}))
    for path in (*directory.iterdir(), directory):
        os.utime(path, (mtime, mtime))
    return directory


def contents(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in directory.iterdir() if p.is_file() and p.name != MARKER_NAME
    }


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A directory on another filesystem than tmp_path (/dev/shm is a tmpfs)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary directory")
    directory = Path(tempfile.mkdtemp(dir=shm, prefix="jibri-agent-test-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jibri", "age", "adopted"),
    [
        pytest.param(IDLE, 120.0, True, id="idle-and-quiet"),
        pytest.param(probe(BusyStatus.EXPIRED), 120.0, True, id="expired-and-quiet"),
        pytest.param(GONE, 120.0, True, id="jibri-gone-and-quiet"),
        pytest.param(BUSY, 120.0, False, id="busy"),
        pytest.param(probe(None, Outcome.TIMEOUT), 120.0, False, id="jibri-slow"),
        pytest.param(probe(None, Outcome.MALFORMED), 120.0, False, id="jibri-garbled"),
        pytest.param(IDLE, 30.0, False, id="idle-but-written-recently"),
    ],
)
def test_choose_adopts_only_finished_quiet_directories(
    jibri: Probe, age: float, adopted: bool
) -> None:
    """Only a poll proving Jibri records nothing, and a directory quiet for quiet_for, adopt."""
    listing = [Leftover(Path("/r/s1"), NOW - age)]
    assert choose(listing, jibri, NOW, quiet_for=60) == ([Path("/r/s1")] if adopted else [])


@pytest.mark.parametrize(
    ("jibri", "count", "pending"),
    [
        pytest.param(IDLE, 2, 2, id="idle-all-count"),
        pytest.param(GONE, 1, 1, id="gone-all-count"),
        pytest.param(BUSY, 2, 1, id="busy-one-may-be-the-recording"),
        pytest.param(BUSY, 1, 0, id="busy-only-the-recording"),
        pytest.param(None, 1, 0, id="not-yet-polled"),
    ],
)
def test_pending_count_spares_only_a_recording_under_way(
    jibri: Probe | None, count: int, pending: int
) -> None:
    """While Jibri may record, one directory may be the recording under way; else all count."""
    assert pending_leftovers(count, jibri) == pending


def test_only_non_empty_directories_are_session_dirs(tmp_path: Path) -> None:
    """Empty directories, files, symbolic links and the agent's own directories (a spool put
    inside the recordings directory) are not taken for recordings."""
    recording(tmp_path, "s1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "s1")
    Spool(tmp_path / "agent" / "spool").ensure()
    assert session_dirs(tmp_path, skip=[tmp_path / "agent" / "spool"]) == [tmp_path / "s1"]
    assert session_dirs(tmp_path / "missing") == []


# -- adoption -------------------------------------------------------------------------------


def test_adopt_on_one_filesystem_is_finalize_s_rename(tmp_path: Path) -> None:
    """On the spool's filesystem, a leftover moves into incoming/ whole, with its marker."""
    source = recording(tmp_path / "recordings", "s1")
    files = contents(source)
    spool = Spool(tmp_path / "spool")
    done = adopt(source, spool, T0)
    assert done is not None
    entry, method = done
    assert (method, entry) == ("rename", spool.incoming / entry_name("s1", T0))
    assert not source.exists() and contents(entry) == files
    assert read_info(entry) == EntryInfo("s1", T0, str(source))


def test_adopt_from_another_filesystem_copies_then_removes(tmp_path: Path, other_fs: Path) -> None:
    """From another filesystem, the leftover is copied in whole, then the original removed."""
    source = recording(other_fs, "s1")
    files = contents(source)
    spool = Spool(tmp_path / "spool")
    done = adopt(source, spool, T0)
    assert done is not None
    entry, method = done
    assert method == "copy" and entry.parent == spool.incoming
    assert not source.exists() and contents(entry) == files
    assert read_info(entry).source == str(source)
    assert list(spool.adopting.iterdir()) == []


def test_a_copy_committed_before_a_crash_removes_the_original(tmp_path: Path) -> None:
    """An original whose complete copy is already spooled (crash before the removal) is
    removed, not adopted twice; a different recording of the same name is refused."""
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    source = recording(tmp_path / "recordings", "s1")
    copy = spool.incoming / entry_name("s1", T0)
    shutil.copytree(source, copy)
    (copy / MARKER_NAME).write_text(EntryInfo("s1", T0, str(source)).to_json())
    assert adopt(source, spool, T0) == (copy, "already-copied")
    assert not source.exists() and copy.exists()

    other = recording(tmp_path / "elsewhere", "s1")
    with pytest.raises(FinalizeError, match="already spooled"):
        adopt(other, spool, T0)
    assert other.exists()


class ScriptedJibri:
    """Answers each poll with the next scripted probe; `during` runs inside the poll."""

    def __init__(self, *answers: Probe, during: Callable[[], object] = lambda: None) -> None:
        self.answers = list(answers)
        self.during = during
        self.polls = 0

    async def probe(self) -> Probe:
        self.polls += 1
        self.during()
        return self.answers.pop(0)


def adopter(tmp_path: Path, jibri: ScriptedJibri, metrics: AgentMetrics | None = None) -> Adopter:
    return Adopter(
        tmp_path / "recordings",
        Spool(tmp_path / "spool"),
        jibri,
        metrics or AgentMetrics(),
        quiet_for=60,
        interval=1,
        wall_clock=lambda: NOW,
    )


async def test_nothing_is_adopted_while_jibri_records(tmp_path: Path) -> None:
    """A BUSY poll after the listing leaves every directory where it is."""
    source = recording(tmp_path / "recordings", "s1")
    assert await adopter(tmp_path, ScriptedJibri(BUSY)).step() == 0
    assert source.exists()


async def test_a_directory_created_after_the_listing_is_not_adopted(tmp_path: Path) -> None:
    """A recording that starts while the poll is under way is not in the listing, so it is
    never moved, even though the poll (answered before it started) says IDLE."""
    recording(tmp_path / "recordings", "old")
    late = tmp_path / "recordings" / "late"
    jibri = ScriptedJibri(IDLE, during=lambda: recording(tmp_path / "recordings", "late"))
    assert await adopter(tmp_path, jibri).step() == 1
    assert late.exists() and not (tmp_path / "recordings" / "old").exists()


async def test_no_poll_without_a_quiet_directory(tmp_path: Path) -> None:
    """A directory written within quiet_for is not adopted, and Jibri is not even polled."""
    source = recording(tmp_path / "recordings", "s1", mtime=NOW - 5)
    jibri = ScriptedJibri()
    assert await adopter(tmp_path, jibri).step() == 0
    assert source.exists() and jibri.polls == 0


async def test_adoption_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each adopted leftover increments the metric and logs one "recording adopted" event."""
    caplog.set_level(logging.INFO, logger="agent.leftovers")
    recording(tmp_path / "recordings", "s1")
    metrics = AgentMetrics()
    assert await adopter(tmp_path, ScriptedJibri(IDLE), metrics).step() == 1
    value = metrics.registry.get_sample_value(
        "jibri_agent_recordings_adopted_total", {"method": "rename"}
    )
    assert value == 1.0
    (record,) = [r for r in caplog.records if r.getMessage() == "recording adopted"]
    fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
    assert (fields["session"], fields["method"]) == ("s1", "rename")


async def test_a_failed_adoption_keeps_the_recording_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool that cannot take the recording leaves it in place, logged once, not per try."""
    caplog.set_level(logging.INFO, logger="agent.leftovers")
    source = recording(tmp_path / "recordings", "s1")
    (tmp_path / "spool").write_text("not a directory")
    adopting = adopter(tmp_path, ScriptedJibri(IDLE, IDLE, IDLE))
    for _ in range(3):
        assert await adopting.step() == 0
    assert source.exists() and contents(source)
    failing = [r for r in caplog.records if r.getMessage() == "recording adoption failing"]
    assert len(failing) == 1


# -- the whole agent: finalize fails, the recording still reaches S3 before drained ---------


@contextlib.asynccontextmanager
async def agent_with_uploads(
    tmp_path: Path, recordings: Path, jibri: FakeJibri, controller: FakeController, url: str
) -> AsyncIterator[None]:
    given = {
        "controller_url": url,
        "instance_id": INSTANCE,
        "region": "us-east-1",
        "jibri_health_url": jibri.health_url,
        "jibri_shutdown_url": jibri.shutdown_url,
        "webhook_listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "ready_file": str(tmp_path / "ready.json"),
        "state_dir": str(tmp_path / "state"),
        "spool_dir": str(tmp_path / "spool"),
        "recordings_dir": str(recordings),
        "recordings_quiet_for": "0.2s",
        "report_interval": "0.5s",
        "poll_interval": "0.2s",
        "request_timeout": "2s",
        "upload_bucket": BUCKET,
    }
    async with serving(FakeImds(INSTANCE).app()) as imds_url:
        settings = load_settings(
            {**given, "imds_url": imds_url}, {"JIBRI_AUTOSCALER_TOKEN": controller.token}
        )
        async with _running(settings, tmp_path, jibri):
            yield


@contextlib.asynccontextmanager
async def _running(settings: Settings, tmp_path: Path, jibri: FakeJibri) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(settings, stop))
    try:
        await eventually(lambda: (tmp_path / "ready.json").exists() or task.done())
        ready = json.loads((tmp_path / "ready.json").read_text())
        jibri.subscribe("http://" + ready["webhook"][0])
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) is True


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param("another-filesystem", id="spool-on-another-filesystem"),
        pytest.param("script-fails", id="finalize-script-fails"),
    ],
)
async def test_a_recording_finalize_left_behind_is_uploaded_before_drained(
    tmp_path: Path,
    other_fs: Path,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """Finalize fails and the recording stays in Jibri's directory: the draining instance
    reports it pending and not drained until the agent has adopted and uploaded it."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    s3 = emulator.boto3_client("s3")
    s3.create_bucket(Bucket=BUCKET)
    if failure == "another-filesystem":
        recordings = other_fs
        command = [sys.executable, "-m", "agent.finalize", "--spool-dir", str(tmp_path / "spool")]
    else:
        recordings = tmp_path / "recordings"
        command = [sys.executable, "-c", "import sys; sys.exit(1)"]
    jibri = FakeJibri(finalize_command=command, recordings_dir=recordings)
    await jibri.start()
    controller = FakeController()
    try:
        async with (
            serving(controller.app()) as url,
            agent_with_uploads(tmp_path, recordings, jibri, controller, url),
        ):
            await eventually(lambda: bool(controller.reports), what="the first report")
            await jibri.start_recording("s1")
            controller.drain = True
            await eventually(lambda: jibri.shutdown_requested, what="the graceful shutdown")
            await jibri.stop_recording()
            assert jibri.finalized == [recordings / "s1"] and (recordings / "s1").exists()
            await eventually(lambda: controller.reports[-1].drained, within=60, what="drained")
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    finally:
        await jibri.close()
    names = sorted(k.rsplit("/", 1)[-1] for k in keys)
    assert len(names) == 2 and names[0] == "metadata.json" and names[1].endswith(".mp4")
    assert all("/s1/" in k for k in keys)
    assert not (recordings / "s1").exists()
    held = [r for r in controller.reports if r.pendingUploads > 0 and r.draining]
    assert held and not any(r.drained for r in held)
    gone = [r for r in held if r.jibri.busyStatus is BusyStatus.UNKNOWN]
    assert gone, "Jibri exited with the recording left behind, and drained was held back"

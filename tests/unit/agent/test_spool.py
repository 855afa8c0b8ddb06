from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.spool import (
    FAILURE_NAME,
    MARKER_NAME,
    EntryInfo,
    Spool,
    SpoolBusy,
    entry_name,
    parse_entry_name,
    read_info,
    write_durably,
)

T0 = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _entry(spool: Spool, session: str, at: datetime, *, where: Path | None = None) -> Path:
    entry = (where or spool.incoming) / entry_name(session, at)
    entry.mkdir(parents=True)
    (entry / "recording.mp4").write_bytes(b"video")
    (entry / MARKER_NAME).write_text(EntryInfo(session, at, "/recordings/" + session).to_json())
    return entry


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    return spool


@given(
    session=st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=40),
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_entry_name_round_trips(session: str, at: datetime) -> None:
    """An entry name gives back the session and the enqueue time it was made from."""
    at = at.replace(tzinfo=UTC)
    assert parse_entry_name(entry_name(session, at)) == (at, session)


@given(st.lists(st.datetimes(min_value=datetime(2000, 1, 1)), min_size=2, max_size=10))
def test_entry_names_sort_by_enqueue_time(times: list[datetime]) -> None:
    """Sorting entry names orders recordings oldest first."""
    stamped = [t.replace(tzinfo=UTC) for t in times]
    names = sorted(entry_name("s", t) for t in stamped)
    assert [parse_entry_name(n)[0] for n in names] == sorted(stamped)  # type: ignore[index]


def test_pending_lists_incoming_directories_oldest_first(spool: Spool) -> None:
    """pending() returns incoming recordings oldest first and ignores stray files."""
    newer = _entry(spool, "aaa", T0 + timedelta(seconds=1))
    older = _entry(spool, "zzz", T0)
    (spool.incoming / "stray.tmp").write_text("x")
    assert spool.pending() == [older, newer]


def test_pending_count_includes_failed_recordings(spool: Spool) -> None:
    """A failed recording still counts as pending: it is not in S3 and must not be lost."""
    _entry(spool, "a", T0)
    _entry(spool, "b", T0, where=spool.failed)
    assert spool.pending_count() == 2


def test_pending_count_of_a_missing_spool_is_zero(tmp_path: Path) -> None:
    """A spool that was never created has nothing pending."""
    assert Spool(tmp_path / "nowhere").pending_count() == 0


def test_read_info_uses_the_marker(spool: Spool) -> None:
    """The marker written by finalize is the authority for session and enqueue time."""
    entry = _entry(spool, "sess", T0)
    assert read_info(entry) == EntryInfo("sess", T0, "/recordings/sess")


def test_read_info_of_a_hand_moved_directory(spool: Spool) -> None:
    """A directory moved in by hand takes its name as session and its mtime as enqueue time."""
    entry = spool.incoming / "manual-session"
    entry.mkdir()
    os.utime(entry, (T0.timestamp(), T0.timestamp()))
    assert read_info(entry) == EntryInfo("manual-session", T0)


def test_oldest_enqueued_at(spool: Spool) -> None:
    """The oldest waiting recording's enqueue time is reported; failed ones are not waiting."""
    assert spool.oldest_enqueued_at() is None
    _entry(spool, "new", T0 + timedelta(hours=1))
    _entry(spool, "old", T0)
    _entry(spool, "ancient", T0 - timedelta(days=1), where=spool.failed)
    assert spool.oldest_enqueued_at() == T0


@pytest.mark.parametrize("where", ["incoming", "failed", "done"])
def test_find_session_looks_everywhere(spool: Spool, where: str) -> None:
    """A session is found whether it waits, failed or is being deleted."""
    entry = _entry(spool, "s-1", T0, where=getattr(spool, where))
    assert spool.find_session("s-1") == entry
    assert spool.find_session("s-2") is None


def test_move_to_failed_keeps_files_and_reason(spool: Spool) -> None:
    """Moving to failed/ keeps every file and records why, then requeue brings it back."""
    entry = _entry(spool, "s", T0)
    failed = spool.move_to_failed(entry, "AccessDenied: no", now=T0)
    assert not entry.exists()
    assert (failed / "recording.mp4").read_bytes() == b"video"
    assert json.loads((failed / FAILURE_NAME).read_text())["reason"] == "AccessDenied: no"
    assert spool.requeue_failed() == [entry]
    assert (entry / "recording.mp4").exists() and not (entry / FAILURE_NAME).exists()


def test_remove_uploaded_goes_through_done(spool: Spool) -> None:
    """An uploaded entry leaves incoming/ in one rename and is then deleted."""
    entry = _entry(spool, "s", T0)
    spool.remove_uploaded(entry)
    assert spool.pending() == [] and list(spool.done.iterdir()) == []


def test_purge_done_finishes_an_interrupted_delete(spool: Spool) -> None:
    """A partly deleted entry left in done/ by a crash is removed on the next purge."""
    _entry(spool, "s", T0, where=spool.done)
    spool.purge_done()
    assert list(spool.done.iterdir()) == []
    assert spool.pending_count() == 0


def test_write_durably_replaces_content(tmp_path: Path) -> None:
    """write_durably leaves the new content and no temporary file."""
    path = tmp_path / "state.json"
    write_durably(path, b"one")
    write_durably(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_only_one_uploader_at_a_time(spool: Spool) -> None:
    """A second uploader on the same spool is refused until the first lets go."""
    with spool.lock_uploads(), pytest.raises(SpoolBusy):
        spool.lock_uploads()
    spool.lock_uploads().release()

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.finalize import SPOOL_DIR_ENV, FinalizeError, finalize_main, hand_off
from agent.spool import MARKER_NAME, EntryInfo, Spool, parse_entry_name, read_info

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 6, 7, 8, 9, 10, 111213, tzinfo=UTC)


def make_recording(parent: Path, session: str = "abcdef-session") -> Path:
    directory = parent / session
    directory.mkdir(parents=True)
    (directory / f"{session}.mp4").write_bytes(os.urandom(4096))
    (directory / "metadata.json").write_text(json.dumps({"meeting_url": "https://meet/x"}))
    return directory


def snapshot(directory: Path) -> dict[str, str]:
    """Every file below `directory` with a digest of its content."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str]:
    code = finalize_main(argv, environ=env, now=lambda: T0)
    captured = capsys.readouterr()
    return code, captured.err


def test_finalize_moves_the_recording_into_the_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good hand-off renames the directory into incoming/ with its marker and all files."""
    recording = make_recording(tmp_path / "recordings")
    before = snapshot(recording)
    code, err = run([str(recording), "--spool-dir", str(tmp_path / "spool")], capsys)
    assert (code, err) == (0, "")
    assert not recording.exists()
    [entry] = Spool(tmp_path / "spool").pending()
    assert parse_entry_name(entry.name) == (T0, recording.name)
    assert read_info(entry) == EntryInfo(recording.name, T0, str(recording))
    after = snapshot(entry)
    assert after.pop(MARKER_NAME)
    assert after == before


def test_finalize_reads_the_spool_dir_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --spool-dir the spool root comes from JIBRI_AGENT_SPOOL_DIR."""
    recording = make_recording(tmp_path / "recordings")
    code, _ = run([str(recording)], capsys, **{SPOOL_DIR_ENV: str(tmp_path / "env-spool")})
    assert code == 0
    assert Spool(tmp_path / "env-spool").pending_count() == 1


@dataclass(frozen=True)
class Case:
    """Builds a bad situation under a base dir; returns (argv, the recording dir to watch)."""

    arrange: Callable[[Path], tuple[list[str], Path | None]]
    message: str


def _missing(base: Path) -> tuple[list[str], Path | None]:
    return [str(base / "rec" / "nope"), "--spool-dir", str(base / "spool")], None


def _file(base: Path) -> tuple[list[str], Path | None]:
    path = base / "rec" / "file.mp4"
    path.parent.mkdir()
    path.write_bytes(b"x")
    return [str(path), "--spool-dir", str(base / "spool")], path.parent


def _symlink(base: Path) -> tuple[list[str], Path | None]:
    recording = make_recording(base / "rec")
    link = base / "rec" / "link"
    link.symlink_to(recording)
    return [str(link), "--spool-dir", str(base / "spool")], recording.parent


def _empty(base: Path) -> tuple[list[str], Path | None]:
    (base / "rec" / "empty").mkdir(parents=True)
    return [str(base / "rec" / "empty"), "--spool-dir", str(base / "spool")], base / "rec"


def _same_session_again(base: Path) -> tuple[list[str], Path | None]:
    first = make_recording(base / "rec")
    assert finalize_main([str(first), "--spool-dir", str(base / "spool")]) == 0
    again = make_recording(base / "rec")
    return [str(again), "--spool-dir", str(base / "spool")], again


def _spool_is_a_file(base: Path) -> tuple[list[str], Path | None]:
    recording = make_recording(base / "rec")
    (base / "spool").write_text("not a directory")
    return [str(recording), "--spool-dir", str(base / "spool")], recording


def _no_arguments(base: Path) -> tuple[list[str], Path | None]:
    return [], None


def _two_directories(base: Path) -> tuple[list[str], Path | None]:
    recording = make_recording(base / "rec")
    return [str(recording), str(recording), "--spool-dir", str(base / "spool")], recording


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(_missing, "does not exist"), id="missing"),
        pytest.param(Case(_file, "is not a directory"), id="not-a-directory"),
        pytest.param(Case(_symlink, "is a symbolic link"), id="symlink"),
        pytest.param(Case(_empty, "is empty: nothing to upload"), id="empty"),
        pytest.param(Case(_same_session_again, "is already spooled at"), id="duplicate-session"),
        pytest.param(Case(_spool_is_a_file, "cannot create the spool"), id="spool-not-a-dir"),
        pytest.param(Case(_no_arguments, "the following arguments are required"), id="no-args"),
        pytest.param(Case(_two_directories, "unrecognized arguments"), id="extra-args"),
    ],
)
def test_bad_input_leaves_the_recording_untouched(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad input fails with one clear line and leaves the recording where it was."""
    argv, watched = case.arrange(tmp_path)
    before = snapshot(watched) if watched else None
    spooled_before = Spool(tmp_path / "spool").pending()
    code, err = run(argv, capsys)
    assert code != 0
    assert case.message in err
    assert err.startswith("agent finalize: error: ") and err.count("\n") == 1
    if watched:
        assert snapshot(watched) == before
    assert Spool(tmp_path / "spool").pending() == spooled_before


def test_second_finalize_of_the_same_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finalizing a directory that is already spooled says so and spools nothing twice."""
    recording = make_recording(tmp_path / "rec")
    argv = [str(recording), "--spool-dir", str(tmp_path / "spool")]
    assert run(argv, capsys)[0] == 0
    code, err = run(argv, capsys)
    assert code == 1 and "is already spooled at" in err
    assert Spool(tmp_path / "spool").pending_count() == 1


def test_spool_on_another_filesystem_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spool on another filesystem is refused rather than copied into."""
    if os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm and the test directory share a filesystem")
    recording = make_recording(tmp_path / "rec")
    before = snapshot(recording)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        code, err = run([str(recording), "--spool-dir", other], capsys)
        assert Spool(Path(other)).pending_count() == 0
    assert code == 1 and "is on another filesystem" in err
    assert snapshot(recording) == before


def test_a_full_disk_while_writing_the_marker_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOSPC on the marker (injected at the marker-writing seam) leaves no marker behind."""
    recording = make_recording(tmp_path / "rec")
    before = snapshot(recording)

    def full(directory: Path, info: EntryInfo) -> None:
        (directory / MARKER_NAME).write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(FinalizeError, match="no space left on the device"):
        hand_off(recording, Spool(tmp_path / "spool"), now=T0, write=full)
    assert snapshot(recording) == before


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for real; skipped where mounting is not allowed."""
    mountpoint = Path(tempfile.mkdtemp(prefix="finalize-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        mountpoint.rmdir()


def test_a_really_full_disk_is_refused(
    tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a filesystem that is really full, finalize fails clearly and moves nothing."""
    recording = make_recording(tiny_tmpfs / "rec")
    Spool(tiny_tmpfs / "spool").ensure()
    fd = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    before = snapshot(recording)
    code, err = run([str(recording), "--spool-dir", str(tiny_tmpfs / "spool")], capsys)
    assert code == 1 and "no space left on the device" in err
    assert snapshot(recording) == before
    assert Spool(tiny_tmpfs / "spool").pending_count() == 0


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory every user can traverse, for running finalize as an unprivileged user."""
    base = Path(tempfile.mkdtemp(prefix="finalize-perm-"))
    base.chmod(0o755)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


NOBODY = 65534


@pytest.mark.parametrize(
    "locked",
    [
        pytest.param("spool", id="spool-not-writable"),
        pytest.param("parent", id="recordings-dir-not-writable"),
        pytest.param("recording", id="recording-not-writable"),
    ],
)
def test_permission_denied_is_refused(open_base: Path, locked: str) -> None:
    """Missing write permission anywhere on the path fails clearly and moves nothing."""
    recording = make_recording(open_base / "recordings")
    spool = Spool(open_base / "spool")
    spool.ensure()
    paths = {"spool": spool.incoming, "parent": recording.parent, "recording": recording}
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop privileges")
    if as_root:
        for path in (recording, recording.parent, spool.root, spool.incoming, spool.failed):
            os.chown(path, NOBODY, NOBODY)
        for path in recording.iterdir():
            os.chown(path, NOBODY, NOBODY)
    paths[locked].chmod(0o555)
    before = snapshot(recording)
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    command = [
        sys.executable,
        "-m",
        "agent.finalize",
        str(recording),
        "--spool-dir",
        str(spool.root),
    ]
    result = subprocess.run(
        [*drop, *command] if as_root else command,
        capture_output=True,
        text=True,
        cwd=open_base,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "permission denied" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(recording) == before
    assert not (recording / MARKER_NAME).exists()
    assert spool.pending_count() == 0


def test_finalize_returns_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hand-off is a rename and a few fsyncs; its duration is printed, not asserted."""
    recording = make_recording(tmp_path / "rec")
    (recording / "big.mp4").write_bytes(b"\0" * (8 << 20))
    started = time.perf_counter()
    code = finalize_main([str(recording), "--spool-dir", str(tmp_path / "spool")])
    elapsed = time.perf_counter() - started
    assert code == 0
    with capsys.disabled():
        print(f"\nfinalize (in process): {elapsed * 1000:.1f} ms")


@pytest.mark.parametrize(
    "order",
    [
        pytest.param("options-first", id="options-first"),
        pytest.param("directory-first", id="directory-first"),
    ],
)
def test_python_m_agent_finalize_takes_options_in_any_order(tmp_path: Path, order: str) -> None:
    """`python -m agent finalize` spools the recording whether options come before or after DIR."""
    recording = make_recording(tmp_path / "rec")
    spool = tmp_path / "spool"
    options = ["--spool-dir", str(spool)]
    argv = [*options, str(recording)] if order == "options-first" else [str(recording), *options]
    result = subprocess.run(
        [sys.executable, "-m", "agent", "finalize", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not recording.exists()
    assert Spool(spool).pending_count() == 1

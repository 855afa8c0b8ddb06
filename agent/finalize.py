"""`agent finalize DIR`: hand a finished recording to the spool, and nothing else.

Jibri runs its finalize script inside its stop and stays BUSY until the script returns,
so this never uploads: it writes a small marker into DIR, renames DIR into the spool's
incoming/ (one atomic rename on the same filesystem) and fsyncs. The uploader does the
rest. On any error the recording is left where it was, with one clear message.

Imports only the standard library, so that a cold start stays within a few tens of ms.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NoReturn

from agent.spool import MARKER_NAME, EntryInfo, Spool, entry_name, fsync_dir

SPOOL_DIR_ENV: Final = "JIBRI_AGENT_SPOOL_DIR"
DEFAULT_SPOOL_DIR: Final = "/var/spool/jibri-agent"


class FinalizeError(Exception):
    """A hand-off that did not happen; the recording is still where it was."""


def _describe(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or str(error)


def write_marker(directory: Path, info: EntryInfo) -> None:
    """Write the entry marker into `directory` and make it durable before the rename."""
    path = directory / MARKER_NAME
    with open(path, "w", encoding="utf-8") as f:
        f.write(info.to_json())
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(directory)


def _check_source(source: Path) -> None:
    try:
        st = source.lstat()
    except FileNotFoundError:
        raise FinalizeError(f"recording directory {source} does not exist") from None
    except OSError as error:
        raise FinalizeError(f"cannot read {source}: {_describe(error)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise FinalizeError(f"{source} is a symbolic link, not a recording directory")
    if not stat.S_ISDIR(st.st_mode):
        raise FinalizeError(f"{source} is not a directory")
    try:
        names = [n for n in os.listdir(source) if n != MARKER_NAME]
    except OSError as error:
        raise FinalizeError(f"cannot list {source}: {_describe(error)}") from None
    if not names:
        raise FinalizeError(f"recording directory {source} is empty: nothing to upload")


def hand_off(
    source: Path,
    spool: Spool,
    *,
    now: datetime,
    write: Callable[[Path, EntryInfo], None] = write_marker,
) -> Path:
    """Move the recording `source` into the spool; return its entry. Raises FinalizeError."""
    source = Path(os.path.abspath(source))
    session = source.name
    if not os.path.lexists(source):
        existing = spool.find_session(session)
        if existing is not None:
            raise FinalizeError(f"session {session} is already spooled at {existing}")
    _check_source(source)
    try:
        spool.ensure()
    except OSError as error:
        raise FinalizeError(
            f"cannot create the spool at {spool.root}: {_describe(error)}"
        ) from None
    if source.stat().st_dev != spool.incoming.stat().st_dev:
        raise FinalizeError(
            f"spool {spool.root} is on another filesystem than {source}; "
            "the hand-off must be an atomic rename, so put both on one filesystem"
        )
    existing = spool.find_session(session)
    if existing is not None:
        raise FinalizeError(f"session {session} is already spooled at {existing}")
    target = spool.incoming / entry_name(session, now)
    if target.exists():
        raise FinalizeError(f"spool entry {target} already exists")

    marker = source / MARKER_NAME
    try:
        write(source, EntryInfo(session=session, enqueued_at=now, source=str(source)))
        os.rename(source, target)
    except OSError as error:
        _remove_quietly(marker)
        if error.errno == errno.EXDEV:
            raise FinalizeError(
                f"spool {spool.root} is on another filesystem than {source}"
            ) from None
        raise FinalizeError(
            f"cannot move {source} into {spool.incoming}: {_describe(error)}"
        ) from None
    try:
        fsync_dir(spool.incoming)
        fsync_dir(source.parent)
    except OSError as error:
        print(f"agent finalize: warning: fsync after the move failed: {error}", file=sys.stderr)
    return target


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except OSError:
        pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise FinalizeError(f"{message} (usage: {self.format_usage().strip()[7:]})")


def _parser() -> _Parser:
    parser = _Parser(
        prog="agent finalize",
        description="Hand a finished Jibri recording directory to the upload spool.",
    )
    parser.add_argument("directory", type=Path, help="the session's recording directory")
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=None,
        help=f"spool root (default: ${SPOOL_DIR_ENV}, else {DEFAULT_SPOOL_DIR})",
    )
    return parser


def finalize_main(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    env = os.environ if environ is None else environ
    try:
        args = _parser().parse_args(list(argv))
        root = args.spool_dir or Path(env.get(SPOOL_DIR_ENV) or DEFAULT_SPOOL_DIR)
        target = hand_off(args.directory, Spool(root), now=now())
    except FinalizeError as error:
        print(f"agent finalize: error: {error}", file=sys.stderr)
        return 1
    print(f"agent finalize: spooled {args.directory} as {target}")
    return 0


if __name__ == "__main__":
    sys.exit(finalize_main(sys.argv[1:]))

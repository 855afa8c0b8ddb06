"""The agent's two HTTP servers (metrics and webhook): bound at start, where they listen told
by a "listening" event and, with --ready-file, a JSON file (port 0 takes a free port, so a
supervisor or a test never has to pick one and hope it stays free)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from agent.settings import Listen
from agent.spool import write_durably
from common.logs import event

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The agent cannot start; the message says why and what to change."""


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


@asynccontextmanager
async def serving(
    app: web.Application, listen: Listen, server: str, flag: str
) -> AsyncIterator[list[str]]:
    """Serve `app`; yield the addresses actually bound (port 0 takes a free one)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen.host, listen.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"{flag} {listen}: cannot listen ({exc.strerror})") from exc
        addresses = [_address(a) for a in runner.addresses]
        event(log, "listening", server=server, addresses=addresses)
        yield addresses
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def ready_file(path: Path | None, listening: dict[str, list[str]]) -> Iterator[None]:
    """Write where the servers listen for whoever started the agent; remove it on exit."""
    if path is None:
        yield
        return
    body = json.dumps({"pid": os.getpid(), **listening}).encode()
    try:
        write_durably(path, body)
    except OSError as exc:
        raise StartupError(f"--ready-file {path}: cannot write ({exc.strerror})") from exc
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()

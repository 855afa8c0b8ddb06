"""Small loopback helpers for tests: aiohttp apps served on 127.0.0.1, the address a child
process bound, ports nothing answers on, polling.

No helper here picks a port for a server to bind later: another process could take it in
between. Servers bind port 0 and say where they listen; `bound_address` reads that.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web


def bound_address(
    process: subprocess.Popen[bytes], log_path: Path, pattern: str, *, within: float = 60.0
) -> str:
    """The first group of `pattern` in the log of a child that bound port 0 and logs where it
    listens; fails if the child exits first or after `within` seconds."""
    compiled = re.compile(pattern)
    deadline = time.monotonic() + within
    while True:
        found = compiled.search(log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args!r} exited with {process.returncode}:\n"
                + log_path.read_text(errors="replace")
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {log_path} after {within:.0f} s")
        time.sleep(0.05)


# Sockets bound and never listening: their ports refuse connections for the rest of the run.
_HELD: list[socket.socket] = []


def free_port() -> int:
    """A loopback TCP port that refuses connections, for a URL that must not answer (a
    controller or a Jibri that is down). The port stays bound (not listening) for the rest of
    the test process, so no other server can take it; a server handed it fails to bind, as
    servers must bind port 0 instead."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a loopback port of its own (port 0); yield its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def eventually(
    check: Callable[[], bool], *, within: float = 20.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll `check` until it holds; fail with `what` after a generous `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what or check}")
        await asyncio.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[object]],
    *,
    within: float = 20.0,
    interval: float = 0.1,
    what: str = "",
) -> None:
    """Like `eventually`, for a check that must be awaited (such as an HTTP request)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what or check}")
        await asyncio.sleep(interval)

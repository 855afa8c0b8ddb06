"""Small loopback helpers for tests: free ports, aiohttp apps served on 127.0.0.1, polling."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


def free_port() -> int:
    """A TCP port nothing listens on right now (nothing will answer a connect to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on loopback; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
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

"""A loopback TCP proxy that a test can slow down, cut and restore.

Cutting it is an honest network partition in front of a server that keeps its state (the
AWS emulator keeps S3 in memory, so stopping and restarting it would lose the upload):
open connections are reset and new ones are refused until `restore()` listens again on
the same port. A rate limit makes uploads last long enough to interrupt them mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, rate: float | None = None) -> None:
        self._target = (target_host, target_port)
        self.rate = rate
        """Bytes per second, per direction and connection; None: as fast as it goes."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def cut(self) -> None:
        """Stop listening and reset every open connection."""
        self._run(self._cut())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._run(self._listen())

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        try:
            await asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(64 * 1024):
                if self.rate:
                    await asyncio.sleep(len(chunk) / self.rate)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()


@contextlib.contextmanager
def running_proxy(target: str, *, rate: float | None = None) -> Iterator[TcpProxy]:
    """A proxy in front of `http://host:port`."""
    host, _, port = target.removeprefix("http://").partition(":")
    proxy = TcpProxy(host, int(port), rate=rate).start()
    try:
        yield proxy
    finally:
        proxy.stop()

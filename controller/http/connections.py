"""Bounds on the HTTP side's connections, so slow or idle clients cannot starve agents,
/healthz or the process's file descriptors.

aiohttp closes a connection that has not sent a complete request head within the keep-alive
timeout of opening or of its last answer: that one timer bounds both idle keep-alive
connections and slow headers. The report handler bounds the body (`ServerContext.body_timeout`).
What aiohttp lacks is a cap on open connections; `ConnectionGuard` adds it. At the cap, a new
connection takes the place of the connection idle longest (nginx reuses idle keep-alive
connections the same way), so a flood of idle clients costs agents a reconnect, not their
answer; only when every connection is mid-request is the new one answered 503 and closed. The
cap is logged once when reached and once when the count falls well below it, never per
connection.

`GuardedSite` accepts connections itself rather than through asyncio's server: asyncio accepts
a whole batch before any protocol is made, and on running out of file descriptors logs an
error for every further attempt in the batch. Accepting one at a time, and only while the
descriptors held (connections, and those evicted or refused but not yet closed) leave room,
the process never reaches its descriptor limit.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from common.logs import event

log = logging.getLogger("controller.http.connections")

FD_RESERVE: Final = 64
"""File descriptors kept free of HTTP connections: AWS connection pools, the config file, logs."""

LINGER_SECONDS: Final = 1.0
"""How long the unread rest of a body is drained after an early answer (401, 408, 413, 415)
before the connection closes (aiohttp's default is 10 s), so the client reads the answer but
cannot hold the connection."""

ACCEPT_HEADROOM: Final = 16
"""Descriptors beyond the cap for connections being evicted or refused."""

ACCEPT_RETRY_SECONDS: Final = 0.05
"""How soon accepting resumes after the guard had no room."""

_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_CONNECT_GRACE: Final = 1.0
# asyncio creates the protocol, then connects it a loop iteration later: a handler younger than
# this without a transport is about to connect, not gone.

_REFUSAL_BODY: Final = b'{"error": "too many connections, all of them busy; retry in a moment"}'
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP side's bounds; each is a `run` flag."""

    max_connections: int = 1024
    idle_timeout: float = 30.0
    """Seconds a connection may take to send a request head, from opening or from its last
    answer; longer than the agent's own keep-alive (15 s), so the agent closes first."""
    body_timeout: float = 10.0
    shutdown_grace: float = 3.0
    """Seconds in-flight requests get to finish once the controller stops."""


def connection_cap(requested: int, fd_soft_limit: int) -> int:
    """`requested`, lowered so the connections fit in the process's file descriptors."""
    if fd_soft_limit == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, fd_soft_limit - FD_RESERVE - ACCEPT_HEADROOM))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """The protocol factory for accepted connections: at most `limit` open at a time."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._make: Callable[[], RequestHandler] | None = None
        # Open connections by when they were last active, least recent first.
        self._open: dict[RequestHandler, float] = {}
        # Evicted or refused, still holding a descriptor until their transport is gone.
        self._closing: set[_Refusal | RequestHandler] = set()
        self._busy: set[RequestHandler] = set()
        self._at_limit = False
        self._evicted = 0
        self._refused = 0

    def attach(self, server: web.Server) -> None:
        self._make = server

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def busy_count(self) -> int:
        return len(self._busy)

    def held(self) -> int:
        """Descriptors held by connections, counting evicted and refused ones not yet closed."""
        if len(self._open) + len(self._closing) >= self.limit:
            self._forget_closed()
        return len(self._open) + len(self._closing)

    def __call__(self) -> asyncio.BaseProtocol:
        assert self._make is not None, "attach() the aiohttp server first"
        if self._at_limit or len(self._open) >= self.limit:
            self._forget_closed()
        if len(self._open) >= self.limit:
            evicted = self._evict_idlest()
            if not self._at_limit:
                self._at_limit, self._evicted, self._refused = True, 0, 0
                event(
                    log,
                    "connection limit reached",
                    level=logging.WARNING,
                    limit=self.limit,
                    action="evict the longest idle" if evicted else "refuse with 503",
                )
            if not evicted:
                self._refused += 1
                refusal = _Refusal()
                self._closing.add(refusal)
                return refusal
            self._evicted += 1
        elif self._at_limit and len(self._open) < self.limit * 3 // 4:
            self._at_limit = False
            event(
                log,
                "connections below limit",
                limit=self.limit,
                open=len(self._open),
                evicted=self._evicted,
                refused=self._refused,
            )
        handler = self._make()
        self._open[handler] = self._clock()
        return handler

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while it is served, then most recently active."""
        connection = request.protocol
        self._busy.add(connection)
        try:
            return await handler(request)
        finally:
            self._busy.discard(connection)
            if self._open.pop(connection, None) is not None:
                self._open[connection] = self._clock()

    def _forget_closed(self) -> None:
        born_before = self._clock() - _CONNECT_GRACE
        gone = [h for h, since in self._open.items() if h.transport is None and since < born_before]
        for handler in gone:
            del self._open[handler]
        self._closing.difference_update([p for p in self._closing if _closed(p)])

    def _evict_idlest(self) -> bool:
        for handler in self._open:
            if handler not in self._busy and handler.transport is not None:
                del self._open[handler]
                self._closing.add(handler)
                # Idle between requests: nothing is lost by closing it now.
                handler.force_close()
                return True
        return False


def _closed(protocol: _Refusal | RequestHandler) -> bool:
    if isinstance(protocol, _Refusal):
        return protocol.lost
    # force_close() drops the transport at once; the socket closes on the next loop iteration.
    return protocol.transport is None


class _Refusal(asyncio.Protocol):
    """Answers 503 at once and closes: a refused connection costs one write."""

    lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class GuardedSite(web.BaseSite):
    """A TCP site that accepts one connection at a time, while the guard has room."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard
        self._listener: socket.socket | None = None
        self._reading = False
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._guard.attach(server)
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server(
            (self._host, self._port), family=family, backlog=self._backlog
        )
        listener.setblocking(False)
        self._listener = listener
        # asyncio's Server only holds the socket (addresses, close); this site does the accepting.
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guard, sock=listener, start_serving=False)
        self._resume()

    def _resume(self) -> None:
        listener = self._listener
        if listener is None or listener.fileno() < 0 or self._reading:
            return
        if self._guard.held() >= self._guard.limit + ACCEPT_HEADROOM:
            # Evicted connections are still closing: look again shortly.
            asyncio.get_running_loop().call_later(ACCEPT_RETRY_SECONDS, self._resume)
            return
        self._reading = True
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def _pause(self) -> None:
        listener = self._listener
        if self._reading and listener is not None and listener.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(listener.fileno())
        self._reading = False

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        loop = asyncio.get_running_loop()
        while self._guard.held() < self._guard.limit + ACCEPT_HEADROOM:
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of descriptors after all (something else took them): wait, quietly.
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                break
            self._connect(connection)
        self._pause()
        loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)

    def _connect(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        # Made now, not when asyncio gets to it, so the guard counts it before the next accept.
        protocol = self._guard()

        def made() -> asyncio.BaseProtocol:
            return protocol

        def connected(task: asyncio.Task[object]) -> None:
            self._tasks.discard(task)
            if task.cancelled() or task.exception() is not None:
                # Never connected: a refusal would otherwise count as closing for good.
                if isinstance(protocol, _Refusal):
                    protocol.lost = True
                connection.close()

        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(made, connection))
        self._tasks.add(task)
        task.add_done_callback(connected)

    async def stop(self) -> None:
        self._pause()
        self._listener = None
        await super().stop()

"""Bounds on the HTTP side's connections, so slow or idle clients cannot starve agents,
/healthz or the process's file descriptors.

aiohttp closes a connection that has not sent a complete request head within the keep-alive
timeout of opening or of its last answer: that one timer bounds both idle keep-alive
connections and slow headers. The report handler bounds the body (`ServerContext.body_timeout`).
What aiohttp lacks is a cap on open connections; `ConnectionGuard` adds it as the listening
socket's protocol factory. At the cap, a new connection takes the place of the connection idle
longest (nginx reuses idle keep-alive connections the same way), so a flood of idle clients
costs agents a reconnect, not their answer; only when every connection is mid-request is the
new one answered 503 and closed. Either way is logged once when the cap is reached and once
when the count falls well below it, never per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
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
"""How long the unread rest of a refused request's body is drained before the connection
closes (aiohttp's default is 10 s), so its client reads the answer but cannot hold on."""

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
    return max(1, min(requested, fd_soft_limit - FD_RESERVE))


class _Refusal(asyncio.Protocol):
    """Answers 503 at once and closes: a refused connection costs one write."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """The listening socket's protocol factory: at most `limit` open connections."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._make: Callable[[], RequestHandler] | None = None
        # Open connections by when they were last active, least recent first.
        self._open: dict[RequestHandler, float] = {}
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

    def __call__(self) -> asyncio.BaseProtocol:
        assert self._make is not None, "attach() the aiohttp server first"
        if self._at_limit or len(self._open) >= self.limit:
            self._forget_closed()
        if len(self._open) >= self.limit:
            evicted = self._evict_idlest()
            if not self._at_limit:
                self._at_limit, self._evicted, self._refused = True, 0, 0
                action = "evict the longest idle" if evicted else "refuse with 503"
                event(
                    log,
                    "connection limit reached",
                    level=logging.WARNING,
                    limit=self.limit,
                    action=action,
                )
            if not evicted:
                self._refused += 1
                return _Refusal()
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
            self._open.pop(connection, None)
            if connection.transport is not None:
                self._open[connection] = self._clock()

    def _forget_closed(self) -> None:
        born_before = self._clock() - _CONNECT_GRACE
        for handler, since in list(self._open.items()):
            if handler.transport is None and since < born_before:
                del self._open[handler]

    def _evict_idlest(self) -> bool:
        for handler in self._open:
            if handler not in self._busy and handler.transport is not None:
                del self._open[handler]
                # Idle: closes at once. Had a request just arrived, it is answered first.
                handler.close()
                return True
        return False


class GuardedSite(web.BaseSite):
    """A TCP site whose connections come through a `ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._guard.attach(server)
        self._server = await asyncio.get_running_loop().create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )

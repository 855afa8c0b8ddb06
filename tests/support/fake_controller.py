"""A stand-in for the controller's report and registration endpoints, for the agent's tests.

It validates each report with the shared wire schema and records it, and answers with what
the test scripts: a queue of (status, body) replies, then the default `{"drain": drain}`.
A registration is validated with the wire schema (not the signature: the real check is tested
with the controller) and answered with `token` as the credential, so a report is accepted
when it carries the credential its agent was given.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import web

from common.wire import REGISTER_PATH, REPORTS_PATH, RegisterAnswer, RegisterRequest, Report


class FakeController:
    def __init__(self, token: str = "s3cret") -> None:
        self.token = token
        self.reports: list[Report] = []
        self.arrivals: list[float] = []
        self.drain = False
        self.replies: deque[tuple[int, str]] = deque()
        self.delay = 0.0
        self.attempts = 0
        self.failing_with: int | None = None
        """Answer every report with this HTTP status (e.g. 500) until reset to None."""
        self.registrations: list[RegisterRequest] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(REPORTS_PATH, self._report)
        app.router.add_post(REGISTER_PATH, self._register)
        return app

    async def _register(self, request: web.Request) -> web.Response:
        self.registrations.append(RegisterRequest.model_validate_json(await request.read()))
        answer = RegisterAnswer(credential=self.token, expiresIn=3600, renewIn=1800)
        return web.json_response(text=answer.model_dump_json())

    async def _report(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await asyncio.sleep(self.delay)
        if self.replies:
            status, body = self.replies.popleft()
            return web.Response(status=status, text=body, content_type="application/json")
        if self.failing_with is not None:
            return web.json_response({"error": "scripted failure"}, status=self.failing_with)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        report = Report.model_validate_json(await request.read())
        self.reports.append(report)
        self.arrivals.append(asyncio.get_running_loop().time())
        return web.json_response({"drain": self.drain})

"""The agent's Prometheus metrics (prefix `jibri_agent_`), every label set initialised at start."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent.jibri import UNKNOWN
from agent.jibri import Outcome as ProbeOutcome
from agent.status import LocalState
from common.wire import BusyStatus, HealthStatus

REPORT_OUTCOMES = (
    "ok",
    "unmanaged",
    "unauthorized",
    "unregistered",
    "rejected",
    "server-error",
    "bad-answer",
    "unreachable",
    "timeout",
)
WEBHOOK_OUTCOMES = ("ok", "rejected")
SHUTDOWN_OUTCOMES = ("accepted", "failed")
FALLBACK_ACTIONS = ("publish-jibri-free", "protect", "unprotect", "lookup")
FALLBACK_OUTCOMES = ("ok", "error")
ADOPTION_METHODS = ("rename", "copy", "already-copied")


class AgentMetrics:
    """Metrics in a registry of their own, so tests and extra tasks can read and extend them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.reports = Counter(
            "jibri_agent_reports",
            "Report attempts to the controller, by outcome",
            ["outcome"],
            registry=r,
        )
        self.report_duration = Histogram(
            "jibri_agent_report_duration_seconds",
            "Time from sending a report to the controller's answer",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.last_report_success = Gauge(
            "jibri_agent_last_report_success_timestamp_seconds",
            "Unix time of the last report the controller accepted",
            registry=r,
        )
        self.controller_reachable = Gauge(
            "jibri_agent_controller_reachable",
            "1 while the latest report got a valid answer from the controller",
            registry=r,
        )
        self.jibri_busy = Gauge(
            "jibri_agent_jibri_busy",
            "Jibri's busyStatus (1 for the current one)",
            ["status"],
            registry=r,
        )
        self.jibri_health = Gauge(
            "jibri_agent_jibri_health",
            "Jibri's healthStatus (1 for the current one)",
            ["status"],
            registry=r,
        )
        self.jibri_probes = Counter(
            "jibri_agent_jibri_probes", "Jibri health polls, by outcome", ["outcome"], registry=r
        )
        self.webhook_events = Counter(
            "jibri_agent_webhook_events",
            "Status pushes from Jibri, by outcome",
            ["outcome"],
            registry=r,
        )
        self.draining = Gauge("jibri_agent_draining", "1 while the instance drains", registry=r)
        self.drained = Gauge(
            "jibri_agent_drained", "1 once Jibri has stopped and the spool is empty", registry=r
        )
        self.pending_uploads = Gauge(
            "jibri_agent_pending_uploads",
            "Recordings on the instance not yet verified in S3 (spool and leftovers)",
            registry=r,
        )
        self.recordings_left = Gauge(
            "jibri_agent_recordings_left",
            "Recordings left in Jibri's recordings directory, outside the spool",
            registry=r,
        )
        self.recordings_adopted = Counter(
            "jibri_agent_recordings_adopted",
            "Recordings left in Jibri's recordings directory and adopted into the spool",
            ["method"],
            registry=r,
        )
        self.graceful_shutdowns = Counter(
            "jibri_agent_graceful_shutdown_requests",
            "gracefulShutdown calls to Jibri, by outcome",
            ["outcome"],
            registry=r,
        )
        self.fallback_active = Gauge(
            "jibri_agent_fallback_active",
            "1 while the controller is unreachable and the agent guards its own protection",
            registry=r,
        )
        self.fallback_actions = Counter(
            "jibri_agent_fallback_actions",
            "AWS calls of the classic fallback, by action and outcome",
            ["action", "outcome"],
            registry=r,
        )
        for outcome in REPORT_OUTCOMES:
            self.reports.labels(outcome)
        for busy in BusyStatus:
            self.jibri_busy.labels(busy.value)
        for health in HealthStatus:
            self.jibri_health.labels(health.value)
        for probe in ProbeOutcome:
            self.jibri_probes.labels(probe.value)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_events.labels(outcome)
        for outcome in SHUTDOWN_OUTCOMES:
            self.graceful_shutdowns.labels(outcome)
        for method in ADOPTION_METHODS:
            self.recordings_adopted.labels(method)
        for action in FALLBACK_ACTIONS:
            for outcome in FALLBACK_OUTCOMES:
                self.fallback_actions.labels(action, outcome)
        self.show(LocalState(jibri=UNKNOWN, draining=False, drained=False, pending_uploads=0))

    def show(self, state: LocalState) -> None:
        """Set the state gauges to what the latest report says."""
        for busy in BusyStatus:
            self.jibri_busy.labels(busy.value).set(int(busy is state.jibri.busyStatus))
        for health in HealthStatus:
            self.jibri_health.labels(health.value).set(int(health is state.jibri.healthStatus))
        self.draining.set(int(state.draining))
        self.drained.set(int(state.drained))
        self.pending_uploads.set(state.pending_uploads)


def metrics_app(
    metrics: AgentMetrics, status: Callable[[], Mapping[str, object]]
) -> web.Application:
    """`GET /metrics` (Prometheus text) and `GET /healthz` (this instance as the agent sees it)."""

    async def serve_metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def serve_health(request: web.Request) -> web.Response:
        return web.json_response(dict(status()))

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", serve_health)
    return app

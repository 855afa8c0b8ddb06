"""The controller's Prometheus metrics (docs/design.md §9), on a registry of their own.

Every label set that can occur is created up front (`add_pool`), so a dashboard or an alert
sees a zero instead of a missing series before the first event.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from controller.fleet.launches import CAUSES as LAUNCH_CAUSES
from controller.identity.errors import REGISTRATION_OUTCOMES, REPORT_AUTH_OUTCOMES
from controller.model import InstanceState, Reason
from controller.spec import JibriPool

PREFIX: Final = "jibri_autoscaler"

ACTION_REASONS: Final[dict[str, tuple[Reason, ...]]] = {
    "set-bounds": (Reason.BOUNDS_DRIFT,),
    "scale-out": (Reason.BELOW_MIN, Reason.BELOW_TARGET_FREE),
    "scale-in": (Reason.ABOVE_MAX,),
    "protect": (Reason.BUSY, Reason.DRAINING, Reason.STALE, Reason.CONFLICTED),
    "unprotect": (Reason.NOT_BUSY,),
    "drain": (
        Reason.IDLE_EXCESS,
        Reason.TERMINATION_REQUESTED,
        Reason.RECYCLE_RECORDINGS,
        Reason.RECYCLE_UPTIME,
        Reason.ROLLOUT,
        Reason.CONFIRM_DRAIN,
    ),
    "terminate": (Reason.DRAINED,),
    "replace": (Reason.DRAINED, Reason.UNHEALTHY, Reason.EXPIRED, Reason.FAILED_BOOT),
    "lifecycle-heartbeat": (Reason.UPLOADS_PENDING, Reason.BUSY, Reason.DRAINING),
    "lifecycle-continue": (
        Reason.LIFECYCLE_DRAINED,
        Reason.LIFECYCLE_TIMEOUT,
        Reason.LIFECYCLE_NO_AGENT,
    ),
}
"""The (action, reason) pairs the planner can emit; initialised per pool."""

AWS_ERROR_KINDS: Final = ("throttled", "validation", "not-found", "auth", "transport", "other")
"""How an AWS call failed: the `outcome` of aws_requests_total (besides `success`)."""
ERROR_KINDS: Final = (*AWS_ERROR_KINDS, "internal")
"""`kind` of reconcile_errors_total: the AWS error kinds, and `internal` for anything else."""

REPORT_OUTCOMES: Final = (
    "accepted",
    "unmanaged",
    "out-of-order",
    "invalid",
    "unauthorized",
    "too-large",
    "too-slow",
)
RELOAD_OUTCOMES: Final = ("success", "invalid")

TARGET_PARTS: Final = ("floor", "schedule", "forecast", "reactive", "later", "total")
"""`part` of pool_target_part (docs/readiness.md): `schedule` is the schedule rule's or dated
override's target while one is in force, else 0."""

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All controller metrics, registered on `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.pool_instances = Gauge(
            f"{PREFIX}_pool_instances", "Instances by derived state.", ["pool", "state"], registry=r
        )
        self.pool_desired_capacity = Gauge(
            f"{PREFIX}_pool_desired_capacity",
            "The ASG's desired capacity once the last plan is done.",
            ["pool"],
            registry=r,
        )
        self.pool_capacity_min = Gauge(
            f"{PREFIX}_pool_capacity_min", "capacity.min of the spec.", ["pool"], registry=r
        )
        self.pool_capacity_max = Gauge(
            f"{PREFIX}_pool_capacity_max", "capacity.max of the spec.", ["pool"], registry=r
        )
        self.pool_target_free = Gauge(
            f"{PREFIX}_pool_target_free",
            "targetFree in force: the spec's, or a schedule rule's.",
            ["pool"],
            registry=r,
        )
        self.actions_total = Counter(
            f"{PREFIX}_actions",
            "Actions taken (or, in dry-run mode, planned) by action and reason.",
            ["pool", "action", "reason"],
            registry=r,
        )
        self.reconcile_duration_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one observe-plan-act pass.",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_errors_total = Counter(
            f"{PREFIX}_reconcile_errors",
            "Failed reconcile passes (or failed steps within one) by kind.",
            ["pool", "kind"],
            registry=r,
        )
        self.last_reconcile_success_timestamp_seconds = Gauge(
            f"{PREFIX}_last_reconcile_success_timestamp_seconds",
            "Unix time of the last successful reconcile pass.",
            ["pool"],
            registry=r,
        )
        self.decision_latency_seconds = Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "From receiving the report that triggered a pass to issuing its first AWS call.",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.aws_requests_total = Counter(
            f"{PREFIX}_aws_requests",
            "AWS API requests by outcome (success or an error kind).",
            ["service", "operation", "outcome"],
            registry=r,
        )
        self.aws_request_duration_seconds = Histogram(
            f"{PREFIX}_aws_request_duration_seconds",
            "Duration of AWS API requests, retries included.",
            ["service", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_reports_total = Counter(
            f"{PREFIX}_agent_reports",
            "Agent reports received by outcome.",
            ["outcome"],
            registry=r,
        )
        self.config_reloads_total = Counter(
            f"{PREFIX}_config_reloads",
            "Desired-state reloads by outcome.",
            ["outcome"],
            registry=r,
        )
        self.registrations_total = Counter(
            f"{PREFIX}_registrations",
            "Agent registrations (POST /v1/register) by outcome: issued or why refused.",
            ["outcome"],
            registry=r,
        )
        self.report_auth_total = Counter(
            f"{PREFIX}_report_auth",
            "Credential checks of agent reports by outcome: ok or why refused.",
            ["outcome"],
            registry=r,
        )
        self._readiness_metrics(r)
        self.launch_failures_total = Counter(
            f"{PREFIX}_launch_failures",
            "Failed or cancelled launches in the group's scaling activities, by cause.",
            ["pool", "cause"],
            registry=r,
        )
        for outcome in REGISTRATION_OUTCOMES:
            self.registrations_total.labels(outcome)
        for outcome in REPORT_AUTH_OUTCOMES:
            self.report_auth_total.labels(outcome)
        for outcome in REPORT_OUTCOMES:
            self.agent_reports_total.labels(outcome)
        for outcome in RELOAD_OUTCOMES:
            self.config_reloads_total.labels(outcome)

    def _readiness_metrics(self, r: CollectorRegistry) -> None:
        self.pool_target_part = Gauge(
            f"{PREFIX}_pool_target_part",
            "The free-recorder target in force and its parts (docs/readiness.md).",
            ["pool", "part"],
            registry=r,
        )
        self.pool_boot_horizon_seconds = Gauge(
            f"{PREFIX}_pool_boot_horizon_seconds",
            "Seconds ahead the spares cover: measured launch to first idle report, or the spec's.",
            ["pool"],
            registry=r,
        )
        self.recordings_started_total = Counter(
            f"{PREFIX}_recordings_started",
            "Recordings started: a recorder seen going from free to busy.",
            ["pool"],
            registry=r,
        )
        self.recordings_missed_total = Counter(
            f"{PREFIX}_recordings_missed",
            "Recording requests that found no free recorder, as jicofo counts them.",
            ["pool"],
            registry=r,
        )
        self.demand_history_seconds = Gauge(
            f"{PREFIX}_demand_history_seconds",
            "Demand history held (minutes recorded or read back from CloudWatch), in seconds.",
            ["pool"],
            registry=r,
        )
        self.demand_history_dropped_total = Counter(
            f"{PREFIX}_demand_history_dropped",
            "Minutes of demand history given up on after a CloudWatch outage of over a day.",
            ["pool"],
            registry=r,
        )

    def add_aws_operations(self, service: str, operations: tuple[str, ...]) -> None:
        """Initialise the request series of every operation a client will call."""
        for operation in operations:
            self.aws_request_duration_seconds.labels(service, operation)
            for outcome in ("success", *AWS_ERROR_KINDS):
                self.aws_requests_total.labels(service, operation, outcome)

    def set_pool(self, pool: JibriPool) -> None:
        """Initialise a pool's series (idempotent) and publish its spec gauges."""
        name, spec = pool.name, pool.spec
        for state in InstanceState:
            self.pool_instances.labels(name, state.value)
        for action, reasons in ACTION_REASONS.items():
            for reason in reasons:
                self.actions_total.labels(name, action, reason.value)
        for kind in ERROR_KINDS:
            self.reconcile_errors_total.labels(name, kind)
        for cause in LAUNCH_CAUSES:
            self.launch_failures_total.labels(name, cause)
        self.reconcile_duration_seconds.labels(name)
        self.decision_latency_seconds.labels(name)
        self.last_reconcile_success_timestamp_seconds.labels(name)
        self.pool_desired_capacity.labels(name)
        self.pool_capacity_min.labels(name).set(spec.capacity.min)
        self.pool_capacity_max.labels(name).set(spec.capacity.max)
        self.pool_target_free.labels(name).set(spec.targetFree)
        for part in TARGET_PARTS:
            self.pool_target_part.labels(name, part)
        for metric in (
            self.pool_boot_horizon_seconds,
            self.recordings_started_total,
            self.recordings_missed_total,
            self.demand_history_seconds,
            self.demand_history_dropped_total,
        ):
            metric.labels(name)

    def remove_pool(self, name: str) -> None:
        """Drop every series of a pool that left the desired state."""
        for state in InstanceState:
            _remove(self.pool_instances, name, state.value)
        for metric in (
            self.pool_desired_capacity,
            self.pool_capacity_min,
            self.pool_capacity_max,
            self.pool_target_free,
            self.reconcile_duration_seconds,
            self.decision_latency_seconds,
            self.last_reconcile_success_timestamp_seconds,
            self.pool_boot_horizon_seconds,
            self.recordings_started_total,
            self.recordings_missed_total,
            self.demand_history_seconds,
            self.demand_history_dropped_total,
        ):
            _remove(metric, name)
        for part in TARGET_PARTS:
            _remove(self.pool_target_part, name, part)
        for kind in ERROR_KINDS:
            _remove(self.reconcile_errors_total, name, kind)
        for cause in LAUNCH_CAUSES:
            _remove(self.launch_failures_total, name, cause)
        for action, reasons in ACTION_REASONS.items():
            for reason in reasons:
                _remove(self.actions_total, name, action, reason.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)

"""Time `controller.planner.plan` directly on a large, realistic observation."""

from __future__ import annotations

import time
from typing import Any

from bench.scale.fake_aws import instance_id
from common.wire import BusyStatus, HealthStatus
from controller.model import AsgInstance, AsgView, Observed, ReportView
from controller.planner import plan
from controller.spec import PoolSpec

NOW = 100_000.0


def observation(n: int) -> tuple[PoolSpec, Observed]:
    """n instances: 60 % busy and protected, 38 % idle for various times, 2 % booting; a
    handful whose protection is out of date, so the plan has some work to do."""
    spec = PoolSpec.model_validate(
        {"autoScalingGroupName": "bench", "capacity": {"min": 1, "max": n}, "targetFree": 2}
    )
    rows: list[AsgInstance] = []
    reports: dict[str, ReportView] = {}
    for k in range(1, n + 1):
        iid = instance_id(k)
        kind = k % 50
        if kind == 0:
            rows.append(AsgInstance(iid, "Pending"))
            continue
        busy = kind < 30
        stale_protection = kind == 1 and k % 7 == 0
        rows.append(AsgInstance(iid, "InService", protected=busy != stale_protection))
        reports[iid] = ReportView(
            received_at=NOW - (k % 5),
            busy=BusyStatus.BUSY if busy else BusyStatus.IDLE,
            health=HealthStatus.HEALTHY,
            idle_since=None if busy else NOW - (k % 900),
        )
    observed = Observed(
        asg=AsgView("bench", 1, n, n, tuple(rows)),
        reports=reports,
        first_seen={r.instance_id: 0.0 for r in rows},
        drain_requested={},
        controller_started_at=0.0,
    )
    return spec, observed


def time_plan(n: int, runs: int = 15) -> dict[str, Any]:
    spec, observed = observation(n)
    plan(spec, observed, NOW)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        plan(spec, observed, NOW)
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "instances": n,
        "runs": runs,
        "p50": times[len(times) // 2],
        "min": times[0],
        "max": times[-1],
    }
